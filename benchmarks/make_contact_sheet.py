"""Contact sheet of a generated long video next to a real clip: one PNG to judge the demo models at a glance.

Columns are frames 0, E, 2E, ... (E = --every) of one video. Rows, top to bottom: the super-res output (144x256), the
low-res frames it was made from (36x64, enlarged 4x with nearest neighbours), then a real dataset clip at both
resolutions (the same clip; frames past the clip's end stay blank). Without a super-res model, only the low-res rows.

Examples:
    python benchmarks/make_contact_sheet.py --dataset /root/lvg_demo/datasets/synth_demo \\
        --out long_video_gan/pretrained/contact_sheet.png                      # the bundled demo models
    python benchmarks/make_contact_sheet.py --dataset DIR --lres lres.pkl --sres sres.pkl --len 301 --out sheet.png
"""

import os
import sys

import click
import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dnnlib  # noqa: E402
from long_video_gan import api, demo  # noqa: E402
from long_video_gan import training_utils as tu  # noqa: E402
from long_video_gan.dataset import VideoDataset  # noqa: E402

LABEL_WIDTH = 150  # Pixels left of the frames for the row labels.
HEADER = 16  # Pixels above the frames for the frame numbers.
GAP = 4  # Pixels between frames.

# ----------------------------------------------------------------------------


def generated_frames(G_lres, G_sres, seed: int, num_frames: int, indices: list[int]) -> tuple[list, list]:
    """(output frames, aligned low-res frames) at `indices` of one streamed video, as uint8 [H, W, 3] arrays."""
    out, low = {}, {}
    wanted = set(indices)
    for chunk in api.iter_video_chunks(G_lres, G_sres, seed=seed, num_frames=num_frames, segment_length=4):
        video, lres = api.to_uint8(chunk.video)[0], api.to_uint8(chunk.lres)[0]
        for t in range(video.shape[0]):
            if chunk.start + t in wanted:
                out[chunk.start + t], low[chunk.start + t] = video[t], lres[t]
    return [out[i] for i in indices], [low[i] for i in indices]


def real_frames(dataset_dir: str, size: tuple[int, int], seed: int, num_frames: int, indices: list[int]) -> list:
    """Frames at `indices` of one real clip of the dataset (the longest window up to `num_frames` frames its
    shortest clip allows); None where the clip is shorter. The same `seed` picks the same clip at every size."""
    probe = VideoDataset(dataset_dir, seq_length=1, height=size[0], width=size[1])
    shortest = min(n for _, _, n in probe.clips)
    probe.close()
    length = min(num_frames, shortest)
    dataset = VideoDataset(dataset_dir, seq_length=length, height=size[0], width=size[1])
    video = api.to_uint8(tu.read_clips(dataset, 1, seed))[0]
    dataset.close()
    return [video[i] if i < length else None for i in indices]


def build_sheet(rows: list[tuple[str, list]], indices: list[int], frame_hw: tuple[int, int]) -> Image.Image:
    """A labelled grid: one row per (label, frames), every frame shown at `frame_hw` (nearest-neighbour enlarged)."""
    h, w = frame_hw
    sheet = Image.new("RGB", (LABEL_WIDTH + len(indices) * (w + GAP), HEADER + len(rows) * (h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, index in enumerate(indices):
        draw.text((LABEL_WIDTH + col * (w + GAP) + 2, 2), f"frame {index}", fill="black")
    for row, (label, frames) in enumerate(rows):
        y = HEADER + row * (h + GAP)
        draw.multiline_text((4, y + h // 2 - 12), label, fill="black")
        for col, frame in enumerate(frames):
            if frame is None:
                continue
            image = Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.NEAREST)
            sheet.paste(image, (LABEL_WIDTH + col * (w + GAP), y))
    return sheet


# ----------------------------------------------------------------------------


@click.command()
@click.option("--dataset", required=True, help="Dataset root (0036x0064/, and 0144x0256/ for the super-res rows).")
@click.option("--lres", "lres_path", default=None, help="Low-res generator. Default: the bundled demo model.")
@click.option("--sres", "sres_path", default=None, help="Super-res generator. Default: the bundled demo model, if any.")
@click.option("--lres-only", is_flag=True, help="No super-res rows.")
@click.option("--out", "out_path", required=True, help="Output PNG.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option("--real-seed", type=int, default=0, show_default=True, help="Seed that picks the real clip.")
@click.option("--len", "num_frames", type=click.IntRange(min=1), default=301, show_default=True, help="Video length.")
@click.option("--every", type=click.IntRange(min=1), default=30, show_default=True, help="Frames between columns.")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
def main(dataset, lres_path, sres_path, lres_only, out_path, seed, real_seed, num_frames, every, device):
    """Contact sheet PNG: generated super-res and low-res rows next to a real clip, every --every frames."""
    device = torch.device(device)
    lres_path = lres_path or demo.bundled_model_path("lres")
    if lres_path is None:
        raise click.ClickException("--lres: not given and no bundled low-res model")
    if not lres_only:
        sres_path = sres_path or demo.bundled_model_path("sres")
    else:
        sres_path = None
    G_lres = api.load_generator(lres_path, device=device, phase="lres")
    G_sres = api.load_generator(sres_path, device=device, phase="sres") if sres_path else None
    indices = list(range(0, num_frames, every))
    out, low = generated_frames(G_lres, G_sres, seed, num_frames, indices)
    lr_size = (int(G_lres.out_height), int(G_lres.out_width))
    if G_sres is not None:
        hr_size = (int(G_sres.hr_height), int(G_sres.hr_width))
        rows = [
            (f"generated\n{hr_size[0]}x{hr_size[1]}\n(super-res)", out),
            (f"generated\n{lr_size[0]}x{lr_size[1]}\n(low-res)", low),
            (f"real clip\n{hr_size[0]}x{hr_size[1]}", real_frames(dataset, hr_size, real_seed, num_frames, indices)),
            (f"real clip\n{lr_size[0]}x{lr_size[1]}", real_frames(dataset, lr_size, real_seed, num_frames, indices)),
        ]
        frame_hw = hr_size
    else:
        rows = [
            (f"generated\n{lr_size[0]}x{lr_size[1]}\n(low-res)", out),
            (f"real clip\n{lr_size[0]}x{lr_size[1]}", real_frames(dataset, lr_size, real_seed, num_frames, indices)),
        ]
        frame_hw = (lr_size[0] * 2, lr_size[1] * 2)
    sheet = build_sheet(rows, indices, frame_hw)
    with dnnlib.util.atomic_write(out_path) as f:  # Creates the directory; PNG whatever the extension, as before.
        sheet.save(f, format="PNG")
    print(f"Saved {os.path.abspath(out_path)} ({sheet.width}x{sheet.height}; lres {lres_path}, sres {sres_path})")


if __name__ == "__main__":
    main()
