"""Pickles that carry their own source code: save a network, load it later without the defining source tree.

Format (version 6, identical to the original release so that its pickles load here and ours load there):
a persistent object is reduced to `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` is a
plain dict with exactly the keys `type` ("class"), `version` (6), `module_src` (full source text of the module that
defines the class), `class_name` and `state` (the instance `__dict__`). On load the source is executed once into a
fresh module named `_imported_module_<32 hex digits>` and the object is rebuilt from its state, so the loader needs
only `torch_utils`, `dnnlib` and the third-party packages the embedded source imports.

Example:
    # my_nets.py
    from torch_utils import persistence

    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.fc = torch.nn.Linear(channels, channels)

    # elsewhere
    net = my_nets.Net(channels=8)
    persistence.save(net, "net.pkl")                         # atomic write, all tensors on CPU
    net2 = persistence.load_network_pkl("net.pkl", device="cpu")  # works even where my_nets is not importable
    net2.init_kwargs                                          # EasyDict(channels=8)

Checkpoints of the original release hold CUDA tensors; `load`/`load_network_pkl` remap them to any device
(e.g. a CPU-only machine), which plain `pickle.load` cannot do.

Limitations: the class must be defined at the top level of a module whose source `inspect` can read (not a REPL or
`python -c`), and anything else in the object's state is pickled by reference, so it must be importable on load.
"""

import copy
import functools
import io
import os
import pickle
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

import torch

import dnnlib

# ----------------------------------------------------------------------------

_version = 6  # Pickle format version; bumping it breaks loading of the original release's pickles.
_decorators = set()  # Every class returned by persistent_class().
_import_hooks = []  # Callables meta -> meta, run before each reconstruction.
_module_to_src_dict = dict()  # Module object -> its source text.
_src_to_module_dict = dict()  # Source text -> module object (shared by all objects with byte-identical source).

# ----------------------------------------------------------------------------


def persistent_class(orig_class: type) -> type:
    """Class decorator: instances pickle together with the source of the class's whole module.

    Also records deep copies of the constructor arguments (`obj.init_args`, `obj.init_kwargs`), so a loaded
    object can be rebuilt with the same configuration; set `self._record_init_args = False` in `__init__` (before
    or after calling the base constructor) to opt out (both then read None). Apply after `@dataclass` when
    combining the two.

    Example:
        >>> @persistence.persistent_class
        ... class MappingNetwork(torch.nn.Module):
        ...     def __init__(self, z_dim, w_dim): ...
        >>> G = MappingNetwork(z_dim=512, w_dim=512)
        >>> G.init_kwargs.w_dim
        512
    """
    if not isinstance(orig_class, type):
        raise TypeError(f"persistent_class: expected a class, got {type(orig_class).__name__}")
    if is_persistent(orig_class):
        return orig_class  # Idempotent: decorating twice changes nothing.
    if orig_class.__module__ not in sys.modules:
        raise ValueError(
            f"persistent_class: class {orig_class.__name__!r} is defined in module {orig_class.__module__!r}, "
            f"which is not in sys.modules; define persistent classes in an imported module"
        )
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            record_init_args = getattr(self, "_record_init_args", True)
            self._init_args = copy.deepcopy(args) if record_init_args else None
            self._init_kwargs = copy.deepcopy(kwargs) if record_init_args else None
            if orig_class.__name__ not in orig_module.__dict__:
                raise TypeError(
                    f"persistent_class: {orig_class.__name__!r} must be defined at the top level of module "
                    f"{orig_module.__name__!r} so that it can be found again on load"
                )
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self) -> tuple | None:
            # None when recording was turned off.
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict | None:
            # None when recording was turned off.
            return None if self._init_kwargs is None else dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            # Start from the default (copyreg) reduction and swap in our reconstructor. A class derived from
            # another persistent class already gets the reconstructor from its base; keep that tuple as is.
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(
                    type="class",
                    version=_version,
                    module_src=self._orig_module_src,
                    class_name=self._orig_class_name,
                    state=fields[2],
                )
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    _decorators.add(Decorator)
    return Decorator


# ----------------------------------------------------------------------------


def is_persistent(obj: Any) -> bool:
    """True for a class returned by `persistent_class` or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # Unhashable objects cannot be decorator classes.
        pass
    return type(obj) in _decorators


def import_hook(hook: Callable[[dnnlib.EasyDict], dnnlib.EasyDict]) -> None:
    """Register `hook(meta) -> meta`, run on every persistent object before it is rebuilt.

    Hooks may patch `meta.module_src` (e.g. rename an API the embedded source calls) or `meta.state`.

    Example:
        >>> def fix_typo(meta):
        ...     meta.module_src = meta.module_src.replace("spatail_scale", "spatial_scale")
        ...     return meta
        >>> persistence.import_hook(fix_typo)
    """
    if not callable(hook):
        raise TypeError(f"import_hook: hook must be callable, got {type(hook).__name__}")
    _import_hooks.append(hook)


# ----------------------------------------------------------------------------


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Rebuild a persistent object from its meta dict; every pickle of this format calls this by name."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state) if meta.state is not None else None
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise TypeError(f"persistence import hook {hook!r} returned None; hooks must return the meta")

    if meta.version != _version:
        raise ValueError(f"persistent object meta: version must be {_version}, got {meta.version!r}")
    if meta.type != "class":
        raise ValueError(f"persistent object meta: type must be 'class', got {meta.type!r}")
    module = _src_to_module(meta.module_src)
    if meta.class_name not in module.__dict__:
        raise ValueError(f"persistent object meta: class_name {meta.class_name!r} is not defined in its module_src")
    decorator_class = persistent_class(module.__dict__[meta.class_name])
    obj = decorator_class.__new__(decorator_class)

    # nn.Module.__setstate__ fills in hook dicts that pickles from older torch versions lack.
    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(meta.state)
    elif meta.state is not None:
        obj.__dict__.update(meta.state)
    return obj


# ----------------------------------------------------------------------------


def _module_to_src(module: types.ModuleType) -> str:
    """Source text of a module, read once and cached (modules created from pickles are cached on creation)."""
    src = _module_to_src_dict.get(module, None)
    if src is None:
        import inspect

        try:
            src = inspect.getsource(module)
        except (OSError, TypeError) as err:
            raise ValueError(
                f"persistent_class: cannot read the source of module {module.__name__!r} ({err}); "
                f"persistent classes must live in a module file"
            ) from err
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _src_to_module(src: str) -> types.ModuleType:
    """Module for a source text: the cached one, else a fresh `_imported_module_<hex>` executing the source."""
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = "_imported_module_" + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        # Register before executing: persistent_class inside the source looks the module and its source up.
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        exec(src, module.__dict__)  # noqa: S102
    return module


# ----------------------------------------------------------------------------


def _check_pickleable(obj: Any) -> None:
    """Raise if `obj` cannot be pickled; tensors, arrays and nested persistent objects are skipped (cheap)."""

    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)):
            return None  # Python primitive types are pickleable.
        if f"{type(obj).__module__}.{type(obj).__name__}" in [
            "numpy.ndarray",
            "torch.Tensor",
            "torch.nn.parameter.Parameter",
        ]:
            return None  # Tensors and arrays are pickleable; skip the expensive dump.
        if is_persistent(obj):
            return None  # Checked by its own constructor.
        return obj

    with io.BytesIO() as stream:
        try:
            pickle.dump(recurse(obj), stream)
        except Exception as err:
            raise TypeError(f"persistent object is not pickleable: {err}") from err


# ----------------------------------------------------------------------------
# Loading with device remapping, and saving with CPU tensors.


def _load_from_bytes_mapped(b: bytes, map_location: Any) -> Any:
    """Stand-in for `torch.storage._load_from_bytes` that honours `map_location` (a device, str, dict or callable)."""
    return torch.load(io.BytesIO(b), map_location=map_location, weights_only=False)


class _MappingUnpickler(pickle.Unpickler):
    """Unpickler that sends every pickled tensor storage to `map_location`."""

    def __init__(self, file: Any, map_location: Any):
        super().__init__(file)
        self.map_location = map_location

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return functools.partial(_load_from_bytes_mapped, map_location=self.map_location)
        return super().find_class(module, name)


def load(f: Any, map_location: Any = "cpu") -> Any:
    """Unpickle a file object or path, placing all tensors on `map_location`.

    `map_location` takes what `torch.load` takes: a device or device string ("cpu", "cuda:1"), a dict such as
    {"cuda:0": "cpu"}, or a callable; None keeps the recorded devices (plain pickle behaviour).

    Example:
        >>> with open("ckpt-00050000-train.pkl", "rb") as f:   # written on GPUs by the original release
        ...     data = persistence.load(f, map_location="cpu")
        >>> data["G"], data["D"], data["G_opt"]
    """
    if isinstance(f, (str, os.PathLike)):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"persistence.load: no such file {os.fspath(f)!r}")
        with open(f, "rb") as stream:
            return load(stream, map_location=map_location)
    if not hasattr(f, "read"):
        raise TypeError(f"persistence.load: f must be a path or a binary file object, got {type(f).__name__}")
    if isinstance(map_location, torch.device):
        map_location = str(map_location)
    return _MappingUnpickler(f, map_location).load()


def load_network_pkl(f: Any, device: torch.device | str = "cpu") -> Any:
    """Load a network pickle (a G-EMA pickle = one module, or a train pickle = dict of G, D, optimizer states)
    with every tensor on `device`.

    Example:
        >>> G_ema = persistence.load_network_pkl("ckpt-00005000-G-ema.pkl", device="cpu").eval()
        >>> with dnnlib.util.open_url("https://example.com/lres.pkl") as f:
        ...     G = persistence.load_network_pkl(f, device=torch.device("cuda", 0))
    """
    device = torch.device(device)
    return load(f, map_location=device)


class _CPUPickler(pickle.Pickler):
    """Pickler that writes every tensor as its CPU copy, leaving the objects being saved untouched."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            if isinstance(obj, torch.nn.Parameter):
                cpu_obj = torch.nn.Parameter(obj.detach().cpu(), requires_grad=obj.requires_grad)
            else:
                cpu_obj = obj.detach().cpu().requires_grad_(obj.requires_grad)
            return cpu_obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle to bytes with all tensors on CPU (see `save`)."""
    with io.BytesIO() as stream:
        _CPUPickler(stream, protocol=pickle.DEFAULT_PROTOCOL).dump(obj)
        return stream.getvalue()


def save(obj: Any, path: str | os.PathLike) -> None:
    """Pickle `obj` to `path` atomically (temp file + rename) with every tensor stored on CPU.

    The live object is not modified or copied (tensors are copied to CPU one at a time while writing), so the
    file loads on any machine; pass it through `load_network_pkl(path, device=...)` to put it back on a GPU.
    Note: distinct GPU tensors that are views of one storage become independent CPU tensors.

    Example:
        >>> persistence.save(copy.deepcopy(G_ema).eval().requires_grad_(False), "ckpt-00005000-G-ema.pkl")
        >>> persistence.save(dict(G=G, D=D, G_opt=G_opt.state_dict(), D_opt=D_opt.state_dict()), "train.pkl")
    """
    with dnnlib.util.atomic_write(os.fspath(path), "wb") as f:
        _CPUPickler(f, protocol=pickle.DEFAULT_PROTOCOL).dump(obj)


# ----------------------------------------------------------------------------
