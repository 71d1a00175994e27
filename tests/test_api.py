"""Tests for long_video_gan/api.py: loading pickles (ours and original-format), frame iteration, file writing."""

import pickle
from unittest import mock

import av
import numpy as np
import pytest
import torch
from PIL import Image

from long_video_gan import api, generator_lres, generator_sres, streaming
from torch_utils import persistence

# ----------------------------------------------------------------------------
# Helpers.


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def tiny_lres(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = {**generator_lres.TINY_KWARGS, "out_height": 18, "out_width": 32, **overrides}
    return generator_lres.VideoGenerator(**kwargs).eval().requires_grad_(False)


def tiny_sres(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval().requires_grad_(False)


def read_mp4(path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def cuda_located_pickle(obj) -> bytes:
    """Pickle `obj` as the original release did on GPUs: every storage recorded at 'cuda:0' (see test_persistence)."""
    with mock.patch("torch.serialization.location_tag", lambda storage: "cuda:0"):
        return pickle.dumps(obj)


# ----------------------------------------------------------------------------
# Loading.


def test_load_generator_round_trip(tmp_path):
    G = tiny_lres()
    path = tmp_path / "lres.pkl"
    persistence.save(G, path)
    loaded = api.load_generator(str(path), device="cpu", phase="lres")
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    a = torch.cat([c.video for c in api.iter_video_chunks(G, seed=3, num_frames=10)], dim=2)
    b = torch.cat([c.video for c in api.iter_video_chunks(loaded, seed=3, num_frames=10)], dim=2)
    assert torch.equal(a, b)
    assert api.detect_phase(loaded) == "lres"


def test_original_format_pickle_with_cuda_tensors_loads_and_generates_on_cpu(tmp_path):
    G_lres, G_sres = tiny_lres(), tiny_sres()
    for G, name, phase in [(G_lres, "lres.pkl", "lres"), (G_sres, "sres.pkl", "sres")]:
        data = cuda_located_pickle(G)
        assert b"cuda:0" in data  # Tensors recorded on a GPU, as in the original checkpoints.
        assert b"_reconstruct_persistent_obj" in data and b"module_src" in data  # Network source embedded.
        if not torch.cuda.is_available():
            with pytest.raises(RuntimeError):
                pickle.loads(data)  # Plain unpickling cannot place them.
        (tmp_path / name).write_bytes(data)
    loaded_lres = api.load_generator(str(tmp_path / "lres.pkl"), device="cpu", phase="lres")
    assert all(t.device.type == "cpu" for t in [*loaded_lres.parameters(), *loaded_lres.buffers()])
    frames = list(api.iter_video_frames(loaded_lres, seed=1, num_frames=6))
    expected = list(api.iter_video_frames(G_lres, seed=1, num_frames=6))
    assert len(frames) == 6 and all(np.array_equal(a, b) for a, b in zip(frames, expected))

    # The super-res pickle too, through a file:// URL (paths and URLs both go through dnnlib.util.open_url).
    loaded_sres = api.load_generator((tmp_path / "sres.pkl").as_uri(), device="cpu", phase="sres")
    lr_G = tiny_lres(seed=5, out_height=G_sres.lr_height, out_width=G_sres.lr_width)
    got = torch.cat([c.video for c in api.iter_video_chunks(lr_G, loaded_sres, seed=2, num_frames=3)], dim=2)
    want = torch.cat([c.video for c in api.iter_video_chunks(lr_G, G_sres, seed=2, num_frames=3)], dim=2)
    assert torch.equal(got, want)


def test_checkpoint_dicts(tmp_path):
    G = tiny_lres()
    persistence.save(dict(G_ema=G, D=torch.nn.Identity()), tmp_path / "snapshot.pkl")
    assert api.detect_phase(api.load_generator(str(tmp_path / "snapshot.pkl"))) == "lres"
    opt_state = dict(state={}, param_groups=[dict(lr=0.0025, params=[0, 1])])  # Stands in for an optimizer state.
    persistence.save(dict(G=G, D=torch.nn.Identity(), G_opt=opt_state, D_opt=opt_state), tmp_path / "train.pkl")
    with pytest.warns(UserWarning, match="no G_ema|without G_ema"):
        loaded = api.load_generator(str(tmp_path / "train.pkl"), phase="lres")
    assert torch.equal(loaded.spatial_input, G.spatial_input)


def test_load_errors_name_the_input(tmp_path):
    G_sres = tiny_sres()
    sres_path = tmp_path / "sres.pkl"
    persistence.save(G_sres, sres_path)
    with pytest.raises(ValueError, match=r"sres\.pkl.*super-res.*low-res"):
        api.load_generator(str(sres_path), phase="lres")
    lres_path = tmp_path / "lres.pkl"
    persistence.save(tiny_lres(), lres_path)
    with pytest.raises(ValueError, match=r"lres\.pkl.*low-res.*super-res"):
        api.load_generator(str(lres_path), phase="sres")

    text = tmp_path / "notes.txt"
    text.write_text("not a pickle\n")
    with pytest.raises(ValueError, match=r"notes\.txt is not a network pickle"):
        api.load_generator(str(text))
    numbers = tmp_path / "numbers.pkl"
    numbers.write_bytes(pickle.dumps(dict(a=1)))
    with pytest.raises(ValueError, match=r"numbers\.pkl is not a network pickle.*'a'"):
        api.load_generator(str(numbers))
    other = tmp_path / "linear.pkl"
    other.write_bytes(pickle.dumps(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"linear\.pkl holds a Linear"):
        api.load_generator(str(other))
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        api.load_generator(str(tmp_path / "missing.pkl"))
    with pytest.raises(ValueError, match="phase"):
        api.load_generator(str(lres_path), phase="hres")


# ----------------------------------------------------------------------------
# Frames.


def test_iter_video_frames_formats():
    G = tiny_lres()
    frames = list(api.iter_video_frames(G, seed=4, num_frames=21, window=8))
    tensors = list(api.iter_video_frames(G, seed=4, num_frames=21, window=5, as_tensor=True))
    assert len(frames) == len(tensors) == 21
    assert frames[0].dtype == np.uint8 and frames[0].shape == (18, 32, 3)
    assert tensors[0].dtype == torch.float32 and tensors[0].shape == (3, 18, 32)
    # Same as the one-shot video of the original's length ceil(21/16)*16 = 32, mapped to uint8 as the writers do.
    with torch.no_grad():
        ref = G(1, 32, generator_emb=torch.Generator().manual_seed(4))[:, :, :21]
    assert (torch.stack(tensors, dim=1)[None] - ref).abs().max().item() <= 1e-5
    ref_uint8 = (ref * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 3, 0).numpy()
    diff = np.abs(np.stack(frames).astype(int) - ref_uint8.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # Only float rounding at truncation boundaries.


def test_generator_argument_overrides_seed():
    G = tiny_lres()
    gen = torch.Generator().manual_seed(8)
    a = list(api.iter_video_frames(G, num_frames=3, generator=gen, as_tensor=True))
    b = list(api.iter_video_frames(G, seed=8, num_frames=3, as_tensor=True))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = list(api.iter_video_frames(G, seed=9, num_frames=3, as_tensor=True))
    assert not torch.equal(a[0], c[0])


def test_normalize_indices():
    assert api.normalize_indices([0, -1, 5, -10], 10) == [0, 9, 5, 0]
    with pytest.raises(ValueError, match="frame index 10 is out of range"):
        api.normalize_indices([10], 10)
    with pytest.raises(ValueError, match="frame index -11"):
        api.normalize_indices([-11], 10)


# ----------------------------------------------------------------------------
# Files.


def test_video_writer_frame_count_fps_and_enlargement(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(13, 36, 64, 3), dtype=np.uint8)
    path = tmp_path / "v.mp4"
    with api.VideoWriter(path, fps=24) as writer:
        writer.write(frames[:5])
        writer.write(frames[5:])
    decoded, fps = read_mp4(path)
    assert len(decoded) == 13 and fps == 24
    assert decoded[0].shape == (144, 256, 3)  # 36x64 enlarged x4 to macro-block multiples, like the original.
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # No temp file left behind.


def test_video_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with api.VideoWriter(path) as writer:
            writer.write(np.zeros((2, 16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="frames must be a uint8 array"):
        api.VideoWriter(path).write(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="fps"):
        api.VideoWriter(path, fps=0)
    with pytest.raises(ValueError, match="quality must be in"):
        api.VideoWriter(path, bitrate=None, quality=0)


def test_generate_video_files_lres_only(tmp_path):
    G = tiny_lres()
    paths = api.generate_video_files(G, seed=2, num_frames=19, outdir=tmp_path, save_indices=[0, 7, -1], fps=12)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "seed=2_len=19_frame=0000.png",
        "seed=2_len=19_frame=0007.png",
        "seed=2_len=19_frame=0018.png",
        "seed=2_len=19_lres.mp4",
    ]
    assert sorted(str(tmp_path / n) for n in names) == sorted(paths)
    decoded, fps = read_mp4(tmp_path / "seed=2_len=19_lres.mp4")
    assert len(decoded) == 19 and fps == 12
    frames = list(api.iter_video_frames(G, seed=2, num_frames=19))
    for index in [0, 7, 18]:
        png = np.asarray(Image.open(tmp_path / f"seed=2_len=19_frame={index:04d}.png"))
        assert png.shape == (18, 32, 3)  # Native size, not enlarged.
        assert np.array_equal(png, frames[index])  # Exactly the frame sent to the encoder.


def test_generate_video_files_with_sres(tmp_path):
    G_sres = tiny_sres()
    G_lres = tiny_lres(seed=1, out_height=G_sres.lr_height, out_width=G_sres.lr_width)
    api.generate_video_files(
        G_lres, G_sres, seed=0, num_frames=6, outdir=tmp_path, save_lres=True, save_indices=[-2], segment_length=4
    )
    hr, _ = read_mp4(tmp_path / "seed=0_len=6_sres.mp4")
    lr, _ = read_mp4(tmp_path / "seed=0_len=6_lres.mp4")
    assert len(hr) == len(lr) == 6
    png = np.asarray(Image.open(tmp_path / "seed=0_len=6_frame=0004.png"))
    assert png.shape == (G_sres.hr_height, G_sres.hr_width, 3)
    chunks = list(api.iter_video_chunks(G_lres, G_sres, seed=0, num_frames=6))
    assert np.array_equal(png, api.to_uint8(torch.cat([c.video for c in chunks], dim=2))[0, 4])


def test_to_uint8_mapping():
    x = torch.tensor([-2.0, -1.0, -0.0039, 0.0, 0.5, 0.9961, 1.0, 3.0]).reshape(1, 1, 8, 1, 1).expand(1, 3, 8, 1, 1)
    got = api.to_uint8(x)[0, :, 0, 0, 0]
    expected = np.clip(np.array([-2.0, -1.0, -0.0039, 0.0, 0.5, 0.9961, 1.0, 3.0]) * 127.5 + 128, 0, 255)
    assert np.array_equal(got, expected.astype(np.uint8))


def test_streaming_module_is_used_for_lengths():
    assert api.num_lres_frames(301) == streaming.original_lres_length(301) == 304
    assert api.num_lres_frames(301, tiny_sres()) == 312
