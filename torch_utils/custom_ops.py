"""Build C++/CUDA extensions on first use, cached by source hash, with a quiet fallback when building fails.

`get_plugin` compiles with `torch.utils.cpp_extension.load` (ninja) into `<extensions dir>/<module_name>/<md5 of
all sources>-<gpu name or 'cpu'>`, so edited sources or another GPU model get a fresh build and unchanged ones are
reused across runs. A file lock makes concurrent ranks build once. The extensions dir is `$TORCH_EXTENSIONS_DIR`
when set, else `make_cache_dir_path('torch_extensions')`.

Example (in an op module):
    from torch_utils import custom_ops

    _plugin = None
    def _init():
        global _plugin
        if _plugin is None:
            _plugin = custom_ops.try_get_plugin(
                module_name="bias_act_plugin",
                sources=["bias_act.cpp", "bias_act.cu"],
                headers=["bias_act.h"],
                source_dir=os.path.dirname(__file__),
                extra_cuda_cflags=["--use_fast_math", "--allow-unsupported-compiler"],
            )
        return _plugin is not None  # False: use the reference path
"""

import hashlib
import os
import re
import shutil
import sys
import uuid
import warnings
from typing import Any

import torch

import dnnlib

# ----------------------------------------------------------------------------

verbosity = "brief"  # 'none': silent; 'brief': one line per plugin built or loaded; 'full': compiler output too.

_cached_plugins = dict()  # module_name -> loaded extension module
_failed_plugins = dict()  # module_name -> reason, for try_get_plugin (warned once)

# ----------------------------------------------------------------------------


def _get_mangled_gpu_name() -> str:
    """Current GPU's name reduced to [a-z0-9_-] (part of the build directory name for CUDA plugins)."""
    name = torch.cuda.get_device_name(torch.cuda.current_device()).lower()
    return "".join(c if re.match(r"[a-z0-9_-]", c) else "-" for c in name)


def _extensions_dir() -> str:
    return os.environ.get("TORCH_EXTENSIONS_DIR") or dnnlib.make_cache_dir_path("torch_extensions")


def get_plugin(
    module_name: str,
    sources: list[str],
    headers: list[str] | None = None,
    source_dir: str | None = None,
    **build_kwargs,
) -> Any:
    """Compile (if needed) and import a C++/CUDA extension; raise with the reason if that fails.

    `sources`/`headers` are file paths, relative to `source_dir` when it is given; `build_kwargs` go to
    `torch.utils.cpp_extension.load` (e.g. extra_cflags, extra_cuda_cflags). Sources ending in .cu need CUDA.

    Example:
        >>> plugin = get_plugin("add_one_plugin", sources=["add_one.cpp"], source_dir=os.path.dirname(__file__))
        >>> plugin.add_one(torch.zeros(3))
    """
    if verbosity not in ("none", "brief", "full"):
        raise ValueError(f"custom_ops.verbosity must be 'none', 'brief' or 'full', got {verbosity!r}")
    if not isinstance(module_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module_name):
        raise ValueError(f"get_plugin: module_name must be a Python identifier, got {module_name!r}")
    if isinstance(sources, str) or len(sources) == 0:
        raise ValueError(f"get_plugin: sources must be a non-empty list of file names, got {sources!r}")
    headers = list(headers or [])
    sources = list(sources)
    if source_dir is not None:
        sources = [os.path.join(source_dir, name) for name in sources]
        headers = [os.path.join(source_dir, name) for name in headers]
    for path in sources + headers:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"get_plugin({module_name!r}): source file {path!r} does not exist")

    # Already loaded in this process?
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]

    # Check the tool chain early, so failures say what is missing instead of failing deep inside the build.
    from torch.utils import cpp_extension

    uses_cuda = any(path.endswith(".cu") for path in sources)
    if uses_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"get_plugin({module_name!r}): has CUDA sources but no CUDA device is available")
    if uses_cuda and cpp_extension.CUDA_HOME is None:
        raise RuntimeError(f"get_plugin({module_name!r}): CUDA sources need the CUDA toolkit (CUDA_HOME not found)")
    cpp_extension.verify_ninja_availability()
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise RuntimeError(f"get_plugin({module_name!r}): no C++ compiler found (set $CXX or install g++)")

    # Compile only for the visible GPU, as the original does (faster builds).
    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)

    # Build directory keyed by the contents of every source and header, plus the GPU model for CUDA code.
    all_files = sorted(sources + headers)
    if len({os.path.basename(path) for path in all_files}) != len(all_files):
        raise ValueError(f"get_plugin({module_name!r}): source and header base names must be unique, got {all_files}")
    digest = hashlib.md5()
    for path in all_files:
        digest.update(os.path.basename(path).encode("utf-8"))
        with open(path, "rb") as f:
            digest.update(f.read())
    gpu_tag = _get_mangled_gpu_name() if uses_cuda else "cpu"
    build_top_dir = os.path.join(_extensions_dir(), module_name)
    build_dir = os.path.join(build_top_dir, f"{digest.hexdigest()}-{gpu_tag}")
    os.makedirs(build_top_dir, exist_ok=True)

    import filelock

    verbose_build = verbosity == "full"
    if verbosity == "full":
        print(f'Setting up PyTorch plugin "{module_name}" in {build_dir}...', flush=True)
    with filelock.FileLock(build_dir + ".lock"):
        # Copy the sources in (atomically), so the build directory is self-contained and reused while unchanged.
        if not os.path.isdir(build_dir):
            tmp_dir = os.path.join(build_top_dir, f"srctmp-{uuid.uuid4().hex}")
            os.makedirs(tmp_dir)
            for path in all_files:
                shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
            os.replace(tmp_dir, build_dir)
        build_sources = [os.path.join(build_dir, os.path.basename(path)) for path in sources]
        module = cpp_extension.load(
            name=module_name,
            sources=build_sources,
            build_directory=build_dir,
            verbose=verbose_build,
            **build_kwargs,
        )
    if verbosity in ("brief", "full"):
        print(f'Setting up PyTorch plugin "{module_name}"... Done.', flush=True)
    _cached_plugins[module_name] = module
    return module


def try_get_plugin(
    module_name: str,
    sources: list[str],
    headers: list[str] | None = None,
    source_dir: str | None = None,
    **build_kwargs,
) -> Any | None:
    """`get_plugin`, but on failure warn once (one line naming the plugin and the reason) and return None, so the
    caller uses its reference implementation. Later calls for a failed plugin return None without retrying.
    """
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as err:
        reason = _one_line_reason(err)
        _failed_plugins[module_name] = reason
        warnings.warn(
            f'custom_ops: cannot build plugin "{module_name}" ({reason}); using the slower reference implementation',
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _one_line_reason(err: BaseException) -> str:
    """Short reason for a failed build: the exception type, its first line and the first compiler error, if any."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else "no message"
    match = re.match(r"(Error building extension '[^']*')", first)
    if match:
        first = match.group(1)  # The rest of that line is the full compiler command.
        compiler_errors = [line for line in lines if re.search(r"\berror\b", line) and not line.startswith("Error ")]
        if compiler_errors:
            first += ": " + re.sub(r"^\S*/", "", compiler_errors[0])[:200]  # Drop the leading file path.
    return f"{type(err).__name__}: {first[:300]}"


# ----------------------------------------------------------------------------


def _forget_plugin(module_name: str) -> None:
    """Drop a plugin from this process's caches (tests only; an imported extension stays in sys.modules)."""
    _cached_plugins.pop(module_name, None)
    _failed_plugins.pop(module_name, None)
    sys.modules.pop(module_name, None)


# ----------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------


def try_get_plugin_if_present(
    module_name: str,
    sources: list[str],
    headers: list[str] | None = None,
    source_dir: str | None = None,
    **build_kwargs,
):
    """Like `try_get_plugin`, but return None quietly when any source or header file is absent from `source_dir`.

    Example (an op module's lazy loader):

        plugin = custom_ops.try_get_plugin_if_present("bias_act_plugin", ["bias_act.cpp", "bias_act.cu"],
                                                      ["bias_act.h"], source_dir=os.path.dirname(__file__))
    """
    names = list(sources) + list(headers or [])
    if not all(os.path.isfile(os.path.join(source_dir or "", name)) for name in names):
        return None
    return try_get_plugin(
        module_name=module_name, sources=sources, headers=headers, source_dir=source_dir, **build_kwargs
    )
