"""Public Python API of LongVideoGAN (Brooks et al., NeurIPS 2022) generation: load pickles, stream frames, write files.

Example:
    from long_video_gan import api

    G_lres = api.load_generator("horseback_lres.pkl", device="cpu", phase="lres")
    G_sres = api.load_generator("horseback_sres.pkl", device="cpu", phase="sres")  # optional
    for frame in api.iter_video_frames(G_lres, G_sres, seed=0, num_frames=301):
        ...  # uint8 numpy array [144, 256, 3] (without G_sres: [36, 64, 3])

    api.generate_video_files(G_lres, G_sres, seed=0, num_frames=301, outdir="out", save_indices=[0, -1])

Frames are computed window by window (long_video_gan.streaming) and equal the original generate.py's one-shot
video for the same seed and RNG device, up to float rounding; memory does not grow with the video length.
"""

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

import dnnlib
from long_video_gan import export, streaming, video_io
from long_video_gan.video_io import VideoWriter, check_bitrate, save_png  # Re-exported: part of this API.
from torch_utils import persistence

PHASES = ("lres", "sres")
PHASE_NAMES = dict(lres="low-res", sres="super-res")

# ----------------------------------------------------------------------------
# Loading.


def detect_phase(G: object) -> str | None:
    """'lres' for a low-res generator, 'sres' for a super-res generator, None for anything else.

    Told apart by attributes that both our classes and the original release's have: the low-res generator owns a
    temporal embedding and a total temporal scale (paper Sec. 3.1), the super-res one an `SG3` network and a
    temporal context (paper Sec. 3.2).
    """
    if hasattr(G, "temporal_emb") and hasattr(G, "total_temporal_scale") and hasattr(G, "temporal_layers"):
        return "lres"
    if hasattr(G, "SG3") and hasattr(G, "temporal_context"):
        return "sres"
    return None


def _pick_network(data: object, source: str) -> torch.nn.Module:
    """The generator inside an unpickled object: a network itself, or `G_ema`/`G` of a checkpoint dict."""
    if isinstance(data, torch.nn.Module):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("G_ema"), torch.nn.Module):
            return data["G_ema"]
        if isinstance(data.get("G"), torch.nn.Module):
            # The original's training snapshots hold G, D and optimizer states but no G_ema.
            warnings.warn(
                f"{source}: train pickle without G_ema; using its G (raw training weights, not the EMA)", stacklevel=3
            )
            return data["G"]
        keys = ", ".join(repr(k) for k in list(data)[:8])
        raise ValueError(f"{source} is not a network pickle: a dict without 'G_ema' or 'G' (keys: {keys})")
    raise ValueError(f"{source} is not a network pickle: it holds a {type(data).__name__}, not a torch module")


def load_generator(
    path_or_url: str | os.PathLike, device: torch.device | str = "cpu", phase: str | None = None
) -> torch.nn.Module:
    """Load a generator pickle (ours or the original release's) ready for inference on `device`.

    `path_or_url`: a local path, a file:// URL or an http(s) URL (downloaded once into the dnnlib cache).
    Accepted contents: a pickled generator (a `*-G-ema.pkl` snapshot or a released `*_lres.pkl`/`*_sres.pkl`), or
    a checkpoint dict, from which `G_ema` is taken, else `G` (with a warning: the original's train pickles hold only
    the raw training weights). Tensors saved on a GPU are mapped to `device` while unpickling, so original
    checkpoints load on CPU-only machines.
    A name ending in `.safetensors` is read by `long_video_gan.export.load_generator` instead, which never unpickles
    (a pickle runs the code inside it on load; a `.safetensors` file made by `python -m long_video_gan.export` runs
    none).
    `phase`: 'lres' or 'sres' to insist on a kind of generator (a clear error otherwise); None accepts both.
    Returns the network in eval mode with gradients off.
    """
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES} or None, got {phase!r}")
    source = os.fspath(path_or_url)
    device = torch.device(device)
    if export.is_safetensors(source):
        G = export.load_generator(source, device=device)  # Weights and a JSON header only: nothing is unpickled.
    else:
        with dnnlib.util.open_url(source, verbose=False) as f:
            try:
                data = persistence.load_network_pkl(f, device=device)
            except Exception as err:  # Garbage can fail anywhere in unpickling; name the file and the cause.
                raise ValueError(f"{source} is not a network pickle ({type(err).__name__}: {err})") from err
        G = _pick_network(data, source)
    found = detect_phase(G)
    if found is None:
        raise ValueError(f"{source} holds a {type(G).__name__}, which is not a LongVideoGAN generator")
    if phase is not None and found != phase:
        raise ValueError(
            f"{source} holds a {PHASE_NAMES[found]} generator ({found}), but a {PHASE_NAMES[phase]} one ({phase}) "
            f"was expected"
        )
    return G.eval().requires_grad_(False).to(device)


def check_generator_pair(G_lres: torch.nn.Module, G_sres: torch.nn.Module | None) -> None:
    """Raise ValueError (one line) unless `G_lres` is a low-res generator, `G_sres` None or a super-res one, and
    `G_sres` takes what `G_lres` makes (its low-res input size and channels equal the low-res output's). Checked
    before any generation: either mistake otherwise fails deep inside the networks (`load_generator` without `phase`
    loads either kind)."""
    for name, G, phase in [("G_lres", G_lres, "lres"), ("G_sres", G_sres, "sres")]:
        found = detect_phase(G) if G is not None else phase
        if found != phase:
            what = f"a {PHASE_NAMES[found]} generator" if found else f"a {type(G).__name__}"
            raise ValueError(
                f"{name} must be a {PHASE_NAMES[phase]} generator, got {what} "
                f"(load it with api.load_generator(..., phase={phase!r}) to have this checked on load)"
            )
    if G_sres is None:
        return
    out_size = (int(G_lres.out_height), int(G_lres.out_width))
    in_size = (int(G_sres.lr_height), int(G_sres.lr_width))
    out_channels = int(getattr(G_lres, "img_channels", 3))  # Both phases' generators make and take RGB video.
    in_channels = int(getattr(getattr(G_sres, "SG3", None), "img_channels", 3))
    if (in_size, in_channels) != (out_size, out_channels):
        raise ValueError(
            f"the super-res generator takes {in_size[0]}x{in_size[1]} low-res video with {in_channels} channels, but "
            f"the low-res generator makes {out_size[0]}x{out_size[1]} with {out_channels} channels; use a super-res "
            f"generator trained on {out_size[0]}x{out_size[1]} input (train_sres.py with the same --preset)"
        )


def generator_device(G: torch.nn.Module) -> torch.device:
    """Device of a generator's parameters."""
    return next(G.parameters()).device


# ----------------------------------------------------------------------------
# Frames.


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Video `[N, 3, T, H, W]` → uint8 `[N, T, H, W, 3]` via uint8(clamp(x·127.5 + 128, 0, 255)), as the original."""
    return video_io.float_to_uint8(video.detach()).permute(0, 2, 3, 4, 1).cpu().numpy()


def iter_video_chunks(
    G_lres: torch.nn.Module,
    G_sres: torch.nn.Module | None = None,
    *,
    seed: int = 0,
    num_frames: int = 301,
    generator: torch.Generator | None = None,
    window: int = 128,
    segment_length: int = streaming.ORIGINAL_SEGMENT_LENGTH,
    dtype: torch.dtype | None = None,
    batch_size: int = 1,
) -> Iterator[streaming.VideoChunk]:
    """Stream one video as `VideoChunk`s (float32 `[1, 3, T, H, W]` output frames and the aligned low-res frames).

    The random numbers come from `generator`, or else from a new generator seeded with `seed` on the low-res
    generator's device (the original generate.py's rule, so a seed gives its video). They are drawn when this
    function is called; the frames are computed as the chunks are requested.
    `batch_size` > 1 streams that many videos at once (`[batch_size, 3, T, H, W]` chunks), their noise drawn together
    from the one generator, as the original's batched `G(N, L, generator_emb=gen)` does.
    `dtype`: None (the generators' defaults), torch.float32 (strict fp32) or torch.bfloat16 (strict fp32 but CPU
    convolutions in bfloat16), as generate.py's --dtype; see streaming.stream_video.
    """
    check_generator_pair(G_lres, G_sres)
    if generator is None:
        generator = torch.Generator(device=generator_device(G_lres)).manual_seed(seed)
    return streaming.stream_video(
        G_lres,
        G_sres,
        num_frames=num_frames,
        generator=generator,
        batch_size=batch_size,
        window=window,
        segment_length=segment_length,
        dtype=dtype,
    )


def iter_video_frames(
    G_lres: torch.nn.Module,
    G_sres: torch.nn.Module | None = None,
    *,
    seed: int = 0,
    num_frames: int = 301,
    generator: torch.Generator | None = None,
    window: int = 128,
    segment_length: int = streaming.ORIGINAL_SEGMENT_LENGTH,
    as_tensor: bool = False,
) -> Iterator[np.ndarray | torch.Tensor]:
    """Yield the `num_frames` frames of one video, one at a time, in bounded memory.

    Frames are super-res (144×256 for the release) when `G_sres` is given, else low-res (36×64).
    Default: uint8 numpy arrays `[H, W, 3]` (mapped as `to_uint8`). With `as_tensor=True`: float32 tensors `[3, H, W]`
    on the generator's device, raw generator output (nominally in [-1, 1], not clamped).
    Example: `frames = list(iter_video_frames(G, seed=1, num_frames=16))`.
    """
    chunks = iter_video_chunks(
        G_lres,
        G_sres,
        seed=seed,
        num_frames=num_frames,
        generator=generator,
        window=window,
        segment_length=segment_length,
    )
    for chunk in chunks:
        if as_tensor:
            yield from chunk.video[0].unbind(dim=1)
        else:
            yield from to_uint8(chunk.video)[0]


# ----------------------------------------------------------------------------
# Files.


def output_names(seed: int, num_frames: int) -> dict[str, str]:
    """File names of the original generate.py (the `frame` entry is a format string taking the frame index)."""
    stem = f"seed={seed}_len={num_frames}"
    return dict(sres=f"{stem}_sres.mp4", lres=f"{stem}_lres.mp4", frame=stem + "_frame={:04d}.png")


def normalize_indices(indices: Sequence[int], num_frames: int) -> list[int]:
    """Frame indices with Python's negative indexing resolved; raises ValueError naming any index out of range."""
    result = []
    for index in indices:
        if not -num_frames <= index < num_frames:
            raise ValueError(f"frame index {index} is out of range for a video of {num_frames} frames")
        result.append(index % num_frames)
    return result


def generate_video_files(
    G_lres: torch.nn.Module,
    G_sres: torch.nn.Module | None = None,
    *,
    seed: int,
    num_frames: int,
    outdir: str | os.PathLike,
    save_lres: bool = False,
    save_indices: Sequence[int] = (),
    fps: float = 30,
    bitrate: str | None = "16M",
    quality: float | None = None,
    window: int = 128,
    segment_length: int = streaming.ORIGINAL_SEGMENT_LENGTH,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> list[str]:
    """Generate one video for `seed` and write the original generate.py's files into `outdir`; returns their paths.

    * With `G_sres`: `seed=S_len=L_sres.mp4`, plus `seed=S_len=L_lres.mp4` (the low-res frames aligned with the
      output, i.e. low-res frames 4 … L+3) when `save_lres`.
    * Without: `seed=S_len=L_lres.mp4`, trimmed to `num_frames` (the original wrote nothing unless asked, and then
      the length rounded up to a multiple of 16).
    * `seed=S_len=L_frame=IIII.png` for every index in `save_indices` (negative = from the end; the file name holds
      the resolved index), taken from the output video at its native size, before the mp4 enlargement.
    Every file is written under a temporary name and renamed when complete.
    """
    indices = sorted(set(normalize_indices(save_indices, num_frames)))
    outdir = os.fspath(outdir)
    names = output_names(seed, num_frames)
    main_path = os.path.join(outdir, names["sres" if G_sres is not None else "lres"])
    lres_path = os.path.join(outdir, names["lres"]) if (G_sres is not None and save_lres) else None
    chunks = iter_video_chunks(
        G_lres, G_sres, seed=seed, num_frames=num_frames, window=window, segment_length=segment_length, dtype=dtype
    )
    bar = None
    if progress:
        import tqdm

        bar = tqdm.tqdm(total=num_frames, unit="frame", desc=f"seed {seed}", dynamic_ncols=True)
    written = []
    with VideoWriter(main_path, fps=fps, bitrate=bitrate, quality=quality) as main_writer:
        lres_writer = VideoWriter(lres_path, fps=fps, bitrate=bitrate, quality=quality) if lres_path else None
        try:
            for chunk in chunks:
                frames = to_uint8(chunk.video)[0]  # [T, H, W, 3]
                main_writer.write(frames)
                if lres_writer is not None:
                    lres_writer.write(to_uint8(chunk.lres)[0])
                for index in indices:
                    if chunk.start <= index < chunk.start + len(frames):
                        path = os.path.join(outdir, names["frame"].format(index))
                        save_png(frames[index - chunk.start], path)
                        written.append(path)
                if bar is not None:
                    bar.update(len(frames))
        except BaseException:
            if lres_writer is not None:
                lres_writer.close(keep=False)
            raise
        finally:
            if bar is not None:
                bar.close()
        assert main_writer.num_frames == num_frames, (main_writer.num_frames, num_frames)
        if lres_writer is not None:
            lres_writer.close()
            written.append(lres_path)
    written.append(main_path)
    return written


# ----------------------------------------------------------------------------


def num_lres_frames(num_frames: int, G_sres: torch.nn.Module | None = None) -> int:
    """Frames of the one-shot low-res video behind a `num_frames` output (see streaming.original_lres_length)."""
    ctx = int(G_sres.temporal_context) if G_sres is not None else 0
    return streaming.original_lres_length(num_frames, ctx)


__all__ = [
    "detect_phase",
    "load_generator",
    "check_generator_pair",
    "iter_video_chunks",
    "iter_video_frames",
    "to_uint8",
    "VideoWriter",
    "check_bitrate",
    "save_png",
    "output_names",
    "normalize_indices",
    "generate_video_files",
    "num_lres_frames",
]
