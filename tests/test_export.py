"""Tests for long_video_gan/export.py: pickles (ours and original-format) to .safetensors and back, without pickle."""

import contextlib
import copy
import json
import pickle
import struct
from unittest import mock

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from click.testing import CliRunner

import calc_metrics
import generate
from long_video_gan import api, export, generator_lres, generator_sres
from metrics import metric_main
from tests.data_utils import make_tiny_dataset
from torch_utils import persistence

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors

# ----------------------------------------------------------------------------
# Helpers.


def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Tiny low-res and super-res generators whose sizes fit together (lres output = sres input)."""
    torch.manual_seed(0)
    G_sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval().requires_grad_(False)
    torch.manual_seed(1)
    kwargs = {**generator_lres.TINY_KWARGS, "out_height": G_sres.lr_height, "out_width": G_sres.lr_width}
    G_lres = generator_lres.VideoGenerator(**kwargs).eval().requires_grad_(False)
    return G_lres, G_sres


def video(G_lres, G_sres=None, seed=3, num_frames=5) -> torch.Tensor:
    return torch.cat([c.video for c in api.iter_video_chunks(G_lres, G_sres, seed=seed, num_frames=num_frames)], 2)


def original_format_pickle(G: torch.nn.Module) -> bytes:
    """Pickle `G` the way the original release's pickles look to a loader.

    Every persistent class carries a module source that is not byte-identical to ours (the original's
    model/generator_*.py), so loading executes it in a fresh `_imported_module_*` and the object's classes are not
    ours; tensors are recorded on 'cuda:0' (the released checkpoints were written on GPUs); the top-level
    constructor record holds what the original's dataclass recorded: plain fields, some as numpy scalars, and not
    the fields left at their default (here hr_height/hr_width for the super-res one, whose original dataclass
    default 256 differs from ours).
    """
    G = copy.deepcopy(G)
    kwargs = dict(G._init_kwargs)
    if api.detect_phase(G) == "sres":
        kwargs.pop("hr_height")
        kwargs.pop("hr_width")
        kwargs["margin_size"] = np.int64(kwargs["margin_size"])
        kwargs["fourfeats"] = np.bool_(False)
    G._init_kwargs = kwargs
    with contextlib.ExitStack() as stack:
        for cls in {type(m) for m in G.modules() if persistence.is_persistent(m)}:
            src = cls._orig_module_src + "\n# As embedded in the original release's pickles (model/...).\n"
            stack.enter_context(mock.patch.object(cls, "_orig_module_src", src))
        stack.enter_context(mock.patch("torch.serialization.location_tag", lambda storage: "cuda:0"))
        return pickle.dumps(G)


def _refuse(*args, **kwargs):
    raise AssertionError("unpickling was attempted")


@contextlib.contextmanager
def no_unpickling():
    """Make every way this code base could unpickle raise."""
    with contextlib.ExitStack() as stack:
        for target in [
            "pickle.load",
            "pickle.loads",
            "pickle.Unpickler",
            "pickle._Unpickler",
            "torch.load",
            "torch_utils.persistence.load",
            "torch_utils.persistence.load_network_pkl",
            "torch_utils.persistence._MappingUnpickler",
            "torch_utils.persistence._reconstruct_persistent_obj",
        ]:
            stack.enter_context(mock.patch(target, _refuse))
        yield


def rewrite(src, dst, metadata=None, tensors=None, drop_metadata=False):
    """Copy a .safetensors file with metadata entries replaced (None values delete) and/or other tensors."""
    with safetensors.safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    loaded = safetensors.torch.load_file(str(src))
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    safetensors.torch.save_file(tensors if tensors is not None else loaded, str(dst), None if drop_metadata else meta)
    return str(dst)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Our pickles and their .safetensors conversions."""
    root = tmp_path_factory.mktemp("export")
    G_lres, G_sres = tiny_pair()
    persistence.save(G_lres, root / "lres.pkl")
    persistence.save(G_sres, root / "sres.pkl")
    export.export(str(root / "lres.pkl"), str(root / "lres.safetensors"))
    export.export(str(root / "sres.pkl"), str(root / "sres.safetensors"))
    return dict(root=root, G_lres=G_lres, G_sres=G_sres)


# ----------------------------------------------------------------------------
# Round trips.


def test_round_trip_of_our_pickles_gives_the_same_video(files):
    root = files["root"]
    lres = api.load_generator(str(root / "lres.safetensors"), phase="lres")
    sres = api.load_generator((root / "sres.safetensors").as_uri(), phase="sres")  # file:// URLs work too.
    assert not lres.training and all(not p.requires_grad for p in [*lres.parameters(), *sres.parameters()])
    pkl_lres = api.load_generator(str(root / "lres.pkl"))
    pkl_sres = api.load_generator(str(root / "sres.pkl"))
    assert torch.equal(video(lres), video(pkl_lres))
    assert torch.equal(video(lres, sres), video(pkl_lres, pkl_sres))
    assert torch.equal(video(lres, sres), video(files["G_lres"], files["G_sres"]))
    # The header holds the format, our class name and the full constructor kwargs.
    with safetensors.safe_open(str(root / "sres.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "long_video_gan.generator" and meta["format_version"] == "1"
    assert meta["class_name"] == "long_video_gan.generator_sres.VideoGenerator" and meta["source"] == "sres.pkl"
    assert json.loads(meta["init_kwargs"])["hr_height"] == files["G_sres"].hr_height


def test_original_format_pickles_convert_to_the_same_video(tmp_path):
    G_lres, G_sres = tiny_pair()
    for G, name in [(G_lres, "lres"), (G_sres, "sres")]:
        (tmp_path / f"{name}.pkl").write_bytes(original_format_pickle(G))
    pkl_lres = api.load_generator(str(tmp_path / "lres.pkl"), phase="lres")
    pkl_sres = api.load_generator(str(tmp_path / "sres.pkl"), phase="sres")
    for G in [pkl_lres, pkl_sres]:  # Built from the embedded source, not from our modules.
        assert type(G).__bases__[0].__module__.startswith("_imported_module_")
    assert "hr_height" not in pkl_sres.init_kwargs and isinstance(pkl_sres.init_kwargs.margin_size, np.int64)

    result = CliRunner().invoke(
        export.main, [str(tmp_path / "sres.pkl"), str(tmp_path / "sres.safetensors")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "super-res generator" in result.output and "checked" in result.output
    export.export(str(tmp_path / "lres.pkl"), str(tmp_path / "lres.safetensors"))
    with no_unpickling():
        lres = api.load_generator(str(tmp_path / "lres.safetensors"), phase="lres")
        sres = api.load_generator(str(tmp_path / "sres.safetensors"), phase="sres")
    assert type(lres).__bases__[0] is generator_lres.VideoGenerator.__bases__[0]  # Our class now.
    assert (sres.hr_height, sres.hr_width) == (G_sres.hr_height, G_sres.hr_width)  # Read from the attributes.
    expected = video(pkl_lres, pkl_sres)
    assert torch.equal(video(lres, sres), expected)
    assert torch.equal(expected, video(G_lres, G_sres))


def test_checkpoint_dict_converts_its_g_ema(tmp_path):
    G_lres, _ = tiny_pair()
    persistence.save(dict(G_ema=G_lres, D=torch.nn.Identity()), tmp_path / "snapshot.pkl")
    export.export(str(tmp_path / "snapshot.pkl"), str(tmp_path / "snapshot.safetensors"))
    assert torch.equal(video(api.load_generator(str(tmp_path / "snapshot.safetensors"))), video(G_lres))


def test_loading_never_unpickles(files, tmp_path):
    root = files["root"]
    with no_unpickling():
        with pytest.raises(ValueError, match="unpickling was attempted"):
            api.load_generator(str(root / "lres.pkl"))  # The patches do stop pickle loading...
        lres = api.load_generator(str(root / "lres.safetensors"), phase="lres")  # ...and safetensors needs none.
        sres = api.load_generator(str(root / "sres.safetensors"), phase="sres")
        # A pickle renamed to .safetensors is rejected as a bad file, never unpickled.
        (tmp_path / "renamed.safetensors").write_bytes((root / "lres.pkl").read_bytes())
        with pytest.raises(ValueError, match=r"renamed\.safetensors: not a safetensors file"):
            api.load_generator(str(tmp_path / "renamed.safetensors"))
    assert torch.equal(video(lres, sres), video(files["G_lres"], files["G_sres"]))


def test_loading_leaves_the_global_rng_alone(files):
    state = torch.get_rng_state()
    api.load_generator(str(files["root"] / "sres.safetensors"))
    assert torch.equal(torch.get_rng_state(), state)


def test_generate_and_calc_metrics_accept_safetensors(files, tmp_path, monkeypatch):
    root = files["root"]
    lres, sres = str(root / "lres.safetensors"), str(root / "sres.safetensors")
    with no_unpickling():
        result = CliRunner().invoke(
            generate.main,
            ["--outdir", str(tmp_path), "--seed", "3", "--lres", lres, "--sres", sres, "--len", "5", "--device=cpu"],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "seed=3_len=5_sres.mp4").is_file()

    seen = {}

    def fake_calc_metric(name, num_runs=1, **opts):  # The metric itself is tested elsewhere; check what it gets.
        seen.update(opts)
        return dict(results={name: 0.0}, metric=name)

    monkeypatch.setattr(metric_main, "calc_metric", fake_calc_metric)
    dataset = make_tiny_dataset(tmp_path, num_videos=1, num_frames=4, resolutions=((36, 64),))
    args = ["--dataset", str(dataset), "--lres", lres, "--sres", sres, "-m", "fvd2048_16f"]
    with no_unpickling():
        result = CliRunner().invoke(calc_metrics.main, args + ["--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert torch.equal(seen["G"].SG3.mapping.fc0.weight, files["G_sres"].SG3.mapping.fc0.weight)
    assert seen["lr_G"].out_height == files["G_lres"].out_height


# ----------------------------------------------------------------------------
# Bad files fail with a message naming the file and the problem.


def test_bad_files_fail_clearly(files, tmp_path):
    good = files["root"] / "lres.safetensors"

    def fails(path, pattern):
        with pytest.raises(ValueError, match=pattern) as info:
            api.load_generator(str(path))
        assert str(path) in str(info.value)

    (tmp_path / "empty.safetensors").write_bytes(b"")
    fails(tmp_path / "empty.safetensors", "not a safetensors file: 0 bytes")
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    fails(tmp_path / "huge.safetensors", "header size field says 1000000 bytes")
    (tmp_path / "text.safetensors").write_bytes(struct.pack("<Q", 5) + b"hello")
    fails(tmp_path / "text.safetensors", "header is not JSON")
    fails(rewrite(good, tmp_path / "plain.safetensors", drop_metadata=True), "no LongVideoGAN metadata")
    fails(rewrite(good, tmp_path / "v2.safetensors", metadata=dict(format_version="2")), "'format_version' is '2'")
    fails(rewrite(good, tmp_path / "fmt.safetensors", metadata=dict(format="other")), "'format' is 'other'")
    for name in ["torch.nn.Linear", "os.system", None]:
        path = rewrite(good, tmp_path / "class.safetensors", metadata=dict(class_name=name))
        fails(path, rf"class {name!r}, which is not allowed; allowed: long_video_gan\.generator_lres")
    fails(rewrite(good, tmp_path / "kw.safetensors", metadata=dict(init_kwargs="{oops")), "'init_kwargs' is not JSON")
    fails(rewrite(good, tmp_path / "kwl.safetensors", metadata=dict(init_kwargs="[1]")), "JSON list, not an object")
    bad_kwargs = json.dumps(dict(json.loads(_meta(good)["init_kwargs"]), channels=3))
    fails(rewrite(good, tmp_path / "kwn.safetensors", metadata=dict(init_kwargs=bad_kwargs)), "rejects the header's")

    # Shapes: kwargs of a wider network than the tensors.
    wide = json.dumps(dict(json.loads(_meta(good)["init_kwargs"]), latent_w_dim=16))
    fails(
        rewrite(good, tmp_path / "shape.safetensors", metadata=dict(init_kwargs=wide)),
        r"tensor '[\w.]+' has shape \[\d+(, \d+)*\], but generator_lres\.VideoGenerator\(\*\*init_kwargs\) expects",
    )
    # A header asking for an enormous network is refused from the tensor list, before any allocation (tens of GB of
    # weights here if it were built).
    huge = json.dumps(dict(json.loads(_meta(good)["init_kwargs"]), latent_w_dim=2**16, temporal_emb_dim=2**16))
    fails(rewrite(good, tmp_path / "huge_kw.safetensors", metadata=dict(init_kwargs=huge)), "has shape")
    tensors = safetensors.torch.load_file(str(good))
    name = sorted(tensors)[0]
    fails(
        rewrite(good, tmp_path / "missing.safetensors", tensors={k: v for k, v in tensors.items() if k != name}),
        rf"1 missing \({name}\)",
    )
    fails(
        rewrite(good, tmp_path / "extra.safetensors", tensors=dict(tensors, extra=torch.zeros(1))),
        r"1 unexpected \(extra\)",
    )
    fails(
        rewrite(good, tmp_path / "dtype.safetensors", tensors=dict(tensors, **{name: tensors[name].double()})),
        rf"tensor '{name}' has dtype torch.float64",
    )
    # Cut-off tensor data: the header is fine, the library's own check names the problem.
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    fails(tmp_path / "cut.safetensors", "bad safetensors data")
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header[name]["dtype"] = "F8_E4M3"
    text = json.dumps(header).encode()
    (tmp_path / "f8.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    fails(tmp_path / "f8.safetensors", rf"bad safetensors header entry for tensor '{name}'")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        api.load_generator(str(tmp_path / "nowhere" / "missing.safetensors"))
    # The phase check applies as for pickles.
    with pytest.raises(ValueError, match=r"lres\.safetensors holds a low-res generator"):
        api.load_generator(str(good), phase="sres")


def _meta(path) -> dict:
    with safetensors.safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def test_export_cli_errors(files, tmp_path, monkeypatch):
    root = files["root"]
    runner = CliRunner()
    result = runner.invoke(export.main, [str(root / "lres.pkl"), str(tmp_path / "out.pt")])
    assert result.exit_code != 0 and "must end in .safetensors" in result.output
    result = runner.invoke(export.main, [str(root / "lres.safetensors"), str(tmp_path / "out.safetensors")])
    assert result.exit_code != 0 and "already a .safetensors file" in result.output
    result = runner.invoke(export.main, [str(tmp_path / "none.pkl"), str(tmp_path / "out.safetensors")])
    assert result.exit_code != 0 and "none.pkl" in result.output
    # A conversion whose output differs from the pickle's is refused and leaves no file.
    monkeypatch.setattr(export, "max_output_difference", lambda a, b: 0.5)
    result = runner.invoke(export.main, [str(root / "lres.pkl"), str(tmp_path / "out.safetensors")])
    assert result.exit_code != 0 and "differs from" in result.output
    assert not (tmp_path / "out.safetensors").exists()
    result = runner.invoke(export.main, ["--help"])
    assert result.exit_code == 0 and "runs" in result.output and "Examples" in result.output


def test_is_safetensors():
    assert export.is_safetensors("a/b.safetensors") and export.is_safetensors("B.SAFETENSORS")
    assert export.is_safetensors("https://example.com/x.safetensors?download=1")
    assert not export.is_safetensors("x.pkl") and not export.is_safetensors("https://example.com/x.pkl?f=.safetensors")
