"""Build C++/CUDA extensions on first use, cached by source hash, with a quiet fallback when building fails.

`get_plugin` compiles with `torch.utils.cpp_extension.load` (ninja) into `<extensions dir>/<module_name>/<md5 of
all sources, build flags and the Python environment>-<gpu name or 'cpu'>`, so edited sources, other flags, another
GPU model, another torch build or another venv (build.ninja holds absolute include paths) each get their own build,
and unchanged ones are reused across runs. A lock that dies with its process (flock, torch_utils.process_lock) makes
concurrent ranks build once; a `kill -9` during a build leaves nothing that blocks the next run (torch's own
`lock` file, left behind by such a kill, is removed under our lock with a one-line note). A build prints one line
before it starts. The extensions dir is `$TORCH_EXTENSIONS_DIR` when set, else
`make_cache_dir_path('torch_extensions')`.

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
import time
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

    # Build directory keyed by the contents of every source and header, the build flags and the Python environment
    # (torch build, venv), plus the GPU model for CUDA code.
    all_files = sorted(sources + headers)
    if len({os.path.basename(path) for path in all_files}) != len(all_files):
        raise ValueError(f"get_plugin({module_name!r}): source and header base names must be unique, got {all_files}")
    environment = build_environment(build_kwargs)
    build_dir = _build_dir(module_name, all_files, environment, uses_cuda)
    build_top_dir = os.path.dirname(build_dir)
    os.makedirs(build_top_dir, exist_ok=True)

    from torch_utils.process_lock import ProcessLock

    verbose_build = verbosity == "full"
    if verbosity == "full":
        print(f'Setting up PyTorch plugin "{module_name}" in {build_dir}...', flush=True)
    lock = ProcessLock(build_dir + ".lock")

    def say_waiting(holder):
        if verbosity != "none":
            print(f'Waiting for {holder}, which is building plugin "{module_name}" (lock {lock.path})...', flush=True)

    lock.acquire(on_wait=say_waiting)
    try:
        # Copy the sources in (atomically), so the build directory is self-contained and reused while unchanged.
        if not os.path.isdir(build_dir):
            tmp_dir = os.path.join(build_top_dir, f"srctmp-{uuid.uuid4().hex}")
            os.makedirs(tmp_dir)
            for path in all_files:
                shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
            with open(os.path.join(tmp_dir, "build_environment.txt"), "w", encoding="utf-8") as f:
                f.writelines(f"{key}: {value}\n" for key, value in sorted(environment.items()))
            os.replace(tmp_dir, build_dir)
        _remove_stale_torch_baton(build_dir, module_name)
        compiling = not os.path.isfile(os.path.join(build_dir, _library_file_name(module_name)))
        if compiling and verbosity != "none":
            duration = "~1-2 min" if uses_cuda else "~20 s"
            kind = "CUDA" if uses_cuda else "CPU"
            print(
                f'Compiling the {kind} plugin "{module_name}" (first use in this environment, {duration}; '
                f"cached in {build_dir})...",
                flush=True,
            )
        start = time.monotonic()
        build_sources = [os.path.join(build_dir, os.path.basename(path)) for path in sources]
        module = cpp_extension.load(
            name=module_name,
            sources=build_sources,
            build_directory=build_dir,
            verbose=verbose_build,
            **build_kwargs,
        )
        if compiling and verbosity != "none":
            print(f'Compiled plugin "{module_name}" in {time.monotonic() - start:.0f} s.', flush=True)
    finally:
        lock.release()
    if verbosity in ("brief", "full"):
        print(f'Setting up PyTorch plugin "{module_name}"... Done.', flush=True)
    _cached_plugins[module_name] = module
    return module


def build_environment(build_kwargs: dict | None = None) -> dict[str, str]:
    """What a compiled plugin depends on besides its sources: the torch build, the Python environment (venv) and
    the build flags. Part of the build directory's key, so two checkouts with different venvs never share (and
    rebuild) one build: build.ninja holds absolute include paths of the torch it was written for."""
    return {
        "python": sys.version.split()[0],
        "python_prefix": os.path.realpath(sys.prefix),
        "torch_version": torch.__version__,
        "torch_git": str(getattr(torch.version, "git_version", "")),
        "torch_cuda": str(torch.version.cuda),
        "torch_dir": os.path.realpath(os.path.dirname(torch.__file__)),
        "build_kwargs": repr(sorted((build_kwargs or {}).items())),
        "cxx": os.environ.get("CXX", "c++"),
    }


def _build_dir(module_name: str, all_files: list[str], environment: dict[str, str], uses_cuda: bool) -> str:
    """`<extensions dir>/<module_name>/<md5 of file names, contents and environment>-<gpu name or 'cpu'>`."""
    digest = hashlib.md5()
    for path in all_files:
        digest.update(os.path.basename(path).encode("utf-8"))
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(repr(sorted(environment.items())).encode("utf-8"))
    gpu_tag = _get_mangled_gpu_name() if uses_cuda else "cpu"
    return os.path.join(_extensions_dir(), module_name, f"{digest.hexdigest()}-{gpu_tag}")


def _library_file_name(module_name: str) -> str:
    """File name torch.utils.cpp_extension gives the library it builds."""
    return module_name + (".pyd" if sys.platform == "win32" else ".so")


def _remove_stale_torch_baton(build_dir: str, module_name: str) -> None:
    """Remove torch's `<build_dir>/lock` left by a process killed during a build (called while holding our lock).

    torch.utils.cpp_extension guards each build with a plain lock file that only its creator removes: after a
    `kill -9` every later load waits for it forever. Our flock serialises all builds into `build_dir`, so whoever
    holds it knows such a file is stale.
    """
    baton = os.path.join(build_dir, "lock")
    if os.path.exists(baton):
        if verbosity != "none":
            print(
                f"custom_ops: removing stale build lock {baton} (left by a process that stopped while building plugin "
                f'"{module_name}")',
                flush=True,
            )
        try:
            os.remove(baton)
        except FileNotFoundError:
            pass


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


# ----------------------------------------------------------------------------


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
