"""Tests for torch_utils.persistence: the original release's pickle format, loading without source, device remapping."""

import copy
import importlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from unittest import mock

import pytest
import torch

import dnnlib
from torch_utils import persistence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET_SRC = textwrap.dedent(
    '''
    """A tiny network family used by the persistence tests."""
    import dataclasses

    import torch

    from torch_utils import persistence


    @persistence.persistent_class
    class Inner(torch.nn.Module):
        def __init__(self, channels, generator=None):
            super().__init__()
            self.fc = torch.nn.Linear(channels, channels)
            with torch.no_grad():
                self.fc.weight.copy_(torch.randn(channels, channels, generator=generator))
                self.fc.bias.copy_(torch.randn(channels, generator=generator))

        def forward(self, x):
            return torch.nn.functional.leaky_relu(self.fc(x), 0.2)


    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, channels, depth=2, seed=0):
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.layers = torch.nn.ModuleList([Inner(channels, generator=generator) for _ in range(depth)])
            self.register_buffer("scale", torch.full([channels], 0.5))
            self.note = "plain attribute"

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x * self.scale


    @persistence.persistent_class
    @dataclasses.dataclass(eq=False)
    class DataNet(torch.nn.Module):
        channels: int = 3
        gain: float = 2.0

        def __post_init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(self.channels, self.channels)

        def forward(self, x):
            return self.fc(x) * self.gain


    @persistence.persistent_class
    class NoRecord(torch.nn.Module):
        def __init__(self, channels):
            self._record_init_args = False
            super().__init__()
            self.fc = torch.nn.Linear(channels, channels)


    @persistence.persistent_class
    class HoldsLambda(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fn = lambda x: x


    def make_local_class():
        @persistence.persistent_class
        class Local(torch.nn.Module):
            pass

        return Local()
    '''
)


@pytest.fixture
def net_module(tmp_path, monkeypatch):
    """Import NET_SRC as a uniquely named real module from tmp_path."""
    name = f"persist_net_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(NET_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def scoped_hooks(monkeypatch):
    """Run the test with an empty, private list of import hooks."""
    hooks = []
    monkeypatch.setattr(persistence, "_import_hooks", hooks)
    return hooks


def _reimport_hook(meta):
    """Make the source differ from the real module's, forcing a fresh `_imported_module_*` on load."""
    meta.module_src = meta.module_src + "\n# reloaded by test\n"
    return meta


# ----------------------------------------------------------------------------


def _run(script: str, pythonpath: list[str], cwd: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"subprocess failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_pickle_loads_in_process_without_the_source_module(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "vanishing_net.py").write_text(NET_SRC)
    pkl = tmp_path / "net.pkl"
    out = tmp_path / "out.pt"
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")

    save_script = textwrap.dedent(
        f"""
        import torch, vanishing_net
        from torch_utils import persistence
        net = vanishing_net.Net(6, depth=3, seed=7)
        x = torch.load({str(tmp_path / "x.pt")!r})
        torch.save(net(x), {str(out)!r})
        persistence.save(net, {str(pkl)!r})
        """
    )
    _run(save_script, [REPO_ROOT, str(src_dir)], cwd=str(src_dir))

    load_script = textwrap.dedent(
        f"""
        import importlib.util, torch
        from torch_utils import persistence
        assert importlib.util.find_spec("vanishing_net") is None, "the source module must not be importable here"
        net = persistence.load_network_pkl({str(pkl)!r}, device="cpu")
        x = torch.load({str(tmp_path / "x.pt")!r})
        assert torch.equal(net(x), torch.load({str(out)!r})), "outputs differ after loading"
        base = type(net).__bases__[0]
        inner_base = type(net.layers[0]).__bases__[0]
        shared = base.__module__ == inner_base.__module__
        print(type(net).__name__, base.__module__.startswith("_imported_module_"), shared)
        print(dict(net.init_kwargs), net.init_args)
        """
    )
    stdout = _run(load_script, [REPO_ROOT], cwd=str(tmp_path))
    assert stdout.splitlines() == ["Net True True", "{'depth': 3, 'seed': 7} (6,)"]


def test_meta_format_matches_spec(net_module):
    net = net_module.Net(4, depth=2)
    fn, args, state = net.__reduce__()[:3]
    assert fn is persistence._reconstruct_persistent_obj
    assert state is None
    meta = args[0]
    assert type(meta) is dict
    assert list(meta.keys()) == ["type", "version", "module_src", "class_name", "state"]
    assert meta["type"] == "class" and meta["version"] == 6 and meta["class_name"] == "Net"
    assert meta["module_src"] == NET_SRC
    keys = list(meta["state"].keys())
    assert keys[0] == "training" and keys[-2:] == ["_init_args", "_init_kwargs"]
    assert meta["state"]["_init_args"] == (4,) and meta["state"]["_init_kwargs"] == {"depth": 2}
    assert type(meta["state"]["_init_kwargs"]) is dict

    # The pickle names the reconstructor by its global path and stores the shared source once.
    data = pickle.dumps(net)
    assert b"torch_utils.persistence" in data and b"_reconstruct_persistent_obj" in data
    assert data.count(b"A tiny network family used by the persistence tests") == 1

    # Loaded objects: original class name, decorator's qualname/module, same outputs.
    loaded = pickle.loads(data)
    assert type(loaded) is type(net)  # Byte-identical source: the real, already imported module is reused.
    assert type(loaded).__name__ == "Net"
    assert type(loaded).__module__ == "torch_utils.persistence"
    assert type(loaded).__qualname__ == "persistent_class.<locals>.Decorator"
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), net(x))


def test_nested_submodules_share_one_imported_module(net_module, scoped_hooks):
    scoped_hooks.append(_reimport_hook)
    net = net_module.Net(4, depth=3)
    loaded = pickle.loads(pickle.dumps(net))
    modules = {type(m).__bases__[0].__module__ for m in [loaded, *loaded.layers]}
    assert len(modules) == 1
    (module_name,) = modules
    assert module_name.startswith("_imported_module_") and len(module_name) == len("_imported_module_") + 32
    assert module_name in sys.modules
    assert persistence.is_persistent(loaded) and persistence.is_persistent(loaded.layers[2])


def test_deepcopy_goes_through_the_reconstructor_and_hooks(net_module, scoped_hooks):
    seen = []

    def hook(meta):
        assert isinstance(meta, dnnlib.EasyDict) and isinstance(meta.state, dnnlib.EasyDict)
        seen.append(meta.class_name)
        return meta

    scoped_hooks.append(hook)
    net = net_module.Net(4, depth=2)
    clone = copy.deepcopy(net)
    assert sorted(seen) == ["Inner", "Inner", "Net"]
    assert clone.scale is not net.scale and clone.layers[0].fc.weight is not net.layers[0].fc.weight
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(clone(x), net(x))
    with torch.no_grad():
        clone.scale.fill_(1.0)
    assert torch.equal(net.scale, torch.full([4], 0.5))


def test_import_hook_can_patch_the_source(net_module, scoped_hooks):
    def hook(meta):
        if meta.class_name == "Net":
            meta.module_src = meta.module_src.replace("return x * self.scale", "return x * self.scale * 2")
        return meta

    net = net_module.Net(4)
    data = pickle.dumps(net)
    persistence.import_hook(hook)
    assert scoped_hooks == [hook]
    loaded = pickle.loads(data)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(loaded(x), net(x) * 2)


def test_loading_calls_setstate_so_old_states_get_new_hook_dicts(net_module, scoped_hooks):
    # Pickles from torch 1.12 lack hook dicts that newer torch needs; __setstate__ must add them back.
    def strip_new_hooks(meta):
        for key in ["_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"]:
            meta.state.pop(key, None)
        return meta

    scoped_hooks.append(strip_new_hooks)
    loaded = pickle.loads(pickle.dumps(net_module.Net(4)))
    assert "_forward_hooks_always_called" in loaded.__dict__
    loaded(torch.zeros(1, 4))


def test_dataclass_persistent_class_round_trip(net_module, scoped_hooks):
    scoped_hooks.append(_reimport_hook)
    torch.manual_seed(0)
    net = net_module.DataNet(channels=5, gain=3.0)
    state_keys = list(net.__reduce__()[1][0]["state"].keys())
    assert state_keys[:3] == ["channels", "gain", "training"]
    loaded = pickle.loads(pickle.dumps(net))
    assert type(loaded).__bases__[0].__module__.startswith("_imported_module_")
    assert loaded.channels == 5 and loaded.gain == 3.0 and loaded.init_kwargs == {"channels": 5, "gain": 3.0}
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loaded(x), net(x))


def test_decorator_is_idempotent_and_records_init_args(net_module):
    assert persistence.persistent_class(net_module.Net) is net_module.Net
    assert persistence.is_persistent(net_module.Net) and not persistence.is_persistent(torch.nn.Linear)
    assert not persistence.is_persistent({"unhashable": []})
    net = net_module.Net(4, depth=1)
    kwargs = net.init_kwargs
    kwargs.depth = 99  # A copy: the recorded value must not change.
    assert net.init_kwargs.depth == 1

    quiet = net_module.NoRecord(3)
    assert quiet._init_args is None and quiet._init_kwargs is None
    assert quiet.init_args is None and quiet.init_kwargs is None


def test_bad_inputs_raise_errors_naming_them(net_module, scoped_hooks, tmp_path):
    with pytest.raises(TypeError, match="expected a class, got int"):
        persistence.persistent_class(42)
    with pytest.raises(TypeError, match="not pickleable"):
        net_module.HoldsLambda()
    with pytest.raises(TypeError, match="'Local' must be defined at the top level"):
        net_module.make_local_class()
    with pytest.raises(TypeError, match="hook must be callable"):
        persistence.import_hook("not a function")

    meta = copy.deepcopy(net_module.Net(2).__reduce__()[1][0])
    with pytest.raises(ValueError, match="version must be 6, got 5"):
        persistence._reconstruct_persistent_obj(dict(meta, version=5))
    with pytest.raises(ValueError, match="class_name 'Nope'"):
        persistence._reconstruct_persistent_obj(dict(meta, class_name="Nope"))
    scoped_hooks.append(lambda meta: None)
    with pytest.raises(TypeError, match="returned None"):
        persistence._reconstruct_persistent_obj(meta)

    missing = tmp_path / "missing.pkl"
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        persistence.load(missing)
    with pytest.raises(TypeError, match="f must be a path or a binary file object, got int"):
        persistence.load(3)


# ----------------------------------------------------------------------------


def _cuda_located_pickle(obj) -> bytes:
    """Pickle `obj` exactly as on a GPU machine: each storage goes through torch.storage._load_from_bytes with
    legacy torch.save bytes whose recorded location is 'cuda:0' (torch.save asks location_tag for it)."""
    with mock.patch("torch.serialization.location_tag", lambda storage: "cuda:0"):
        return pickle.dumps(obj)


def test_cuda_recorded_pickle_loads_on_cpu(net_module, tmp_path):
    net = net_module.Net(4, depth=2)
    opt_state = torch.optim.Adam(net.parameters()).state_dict()
    data = _cuda_located_pickle(dict(G=net, G_opt=opt_state, extra=torch.arange(3)))
    assert b"torch.storage" in data and b"_load_from_bytes" in data
    assert data.count(b"cuda:0") >= 6  # 4 Linear tensors + buffer + extra, each with its own location record.

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(data)

    loaded = persistence.load(io.BytesIO(data), map_location="cpu")
    assert all(t.device.type == "cpu" for t in [*loaded["G"].parameters(), *loaded["G"].buffers(), loaded["extra"]])
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(loaded["G"](x), net(x))
    assert torch.equal(loaded["extra"], torch.arange(3))

    path = tmp_path / "gpu_ckpt.pkl"
    path.write_bytes(data)
    G = persistence.load_network_pkl(str(path), device=torch.device("cpu"))["G"]
    assert torch.equal(G(x), net(x))
    assert isinstance(G.layers[0].fc.weight, torch.nn.Parameter)


def test_save_is_atomic_and_loadable(net_module, tmp_path):
    net = net_module.Net(3)
    out_dir = tmp_path / "out"
    path = out_dir / "snap.pkl"
    persistence.save(net, path)  # Also creates the missing directory.
    assert sorted(os.listdir(out_dir)) == ["snap.pkl"]
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(persistence.load(path)(x), net(x))

    # A failing save keeps the previous file intact and leaves no temp file behind.
    before = path.read_bytes()
    with pytest.raises(Exception):
        persistence.save(dict(G=net, bad=lambda: None), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(out_dir)) == ["snap.pkl"]


@pytest.mark.gpu
def test_save_writes_cpu_tensors_from_a_cuda_module(net_module, tmp_path):
    net = net_module.Net(4).cuda()
    path = tmp_path / "cuda_net.pkl"
    persistence.save(net, path)
    assert next(net.parameters()).device.type == "cuda"  # The live module is untouched.
    data = path.read_bytes()
    assert b"cuda" not in data
    loaded = persistence.load_network_pkl(path, device="cuda")
    assert loaded.scale.device.type == "cuda"
    x = torch.randn(2, 4, device="cuda")
    assert torch.equal(loaded(x), net(x))
