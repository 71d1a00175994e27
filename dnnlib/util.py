"""Small, stable helpers shared by all LongVideoGAN code: EasyDict, build-by-name, URL open/cache, log tee.

Network pickles of the original release refer to this module by name, so names here are part of the pickle
format: rename nothing.
"""

import contextlib
import ctypes
import fnmatch
import hashlib
import html
import importlib
import inspect
import io
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import time
import types
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------


class EasyDict(dict):
    """Dict whose items can also be read and written as attributes.

    Example:
        >>> d = EasyDict(lr=0.002, betas=(0.0, 0.99))
        >>> d.lr
        0.002
        >>> d.batch = 64  # same as d["batch"] = 64
    A missing attribute raises AttributeError (not KeyError), so `getattr(d, name, default)` works.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


# ----------------------------------------------------------------------------


class Logger:
    """Tee everything written to stdout and stderr into a log file (e.g. `<run_dir>/log.txt`).

    Example:
        >>> with Logger(os.path.join(run_dir, "log.txt"), file_mode="a"):
        ...     print("Loading dataset...")  # goes to the console and to log.txt
    Without a context manager, call `close()` to restore the original streams.
    """

    def __init__(
        self,
        file_name: str | None = None,  # Log file path; None = no file (the streams are still wrapped).
        file_mode: str = "w",  # "w" to start a fresh log, "a" to append (e.g. on resume).
        should_flush: bool = True,  # Flush the file and console after every write, so a crash loses nothing.
    ):
        if file_mode not in ("w", "a"):
            raise ValueError(f"Logger: file_mode must be 'w' or 'a', got {file_mode!r}")
        self.file_name = file_name
        self.file_mode = file_mode
        self.should_flush = should_flush
        self.file = None
        if file_name is not None:
            os.makedirs(os.path.dirname(os.path.abspath(file_name)), exist_ok=True)
            self.file = open(file_name, file_mode + "t", encoding="utf-8")
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        self._stderr_tee = _StreamTee(self, self.stderr)
        sys.stdout = self
        sys.stderr = self._stderr_tee

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.close()

    def write(self, text: str | bytes, console: Any = None) -> int:
        """Write to the log file and to `console` (default: the original stdout); returns the characters written."""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if len(text) == 0:  # Some libraries write empty strings to probe the stream.
            return 0
        console = self.stdout if console is None else console
        if self.file is not None:
            self.file.write(text)
        console.write(text)
        if self.should_flush:
            self.flush(console)
        return len(text)

    def flush(self, console: Any = None) -> None:
        if self.file is not None:
            self.file.flush()
        (self.stdout if console is None else console).flush()

    def isatty(self) -> bool:
        """As the console's, so libraries that colour or animate their output on a terminal still do."""
        return self.stdout.isatty()

    def __getattr__(self, name: str) -> Any:
        # Anything else a stream offers (encoding, fileno, errors, ...) is the console's.
        if name in ("stdout", "stderr", "file"):  # Not set yet (failure inside __init__): no recursion.
            raise AttributeError(name)
        return getattr(self.stdout, name)

    def close(self) -> None:
        """Flush, close the file and put the original stdout/stderr back (only if they are still ours)."""
        self.flush()
        self.stderr.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self._stderr_tee:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


class _StreamTee:
    """Stand-in for sys.stderr while a Logger is active: log file plus the original stderr."""

    def __init__(self, logger: Logger, console: Any):
        self.logger = logger
        self.console = console

    def write(self, text: str | bytes) -> int:
        return self.logger.write(text, console=self.console)

    def flush(self) -> None:
        self.logger.flush(self.console)

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str) -> Any:
        if name in ("logger", "console"):
            raise AttributeError(name)
        return getattr(self.console, name)


# ----------------------------------------------------------------------------
# Cache directory.

_dnnlib_cache_dir = None


def set_cache_dir(path: str | None) -> None:
    """Override the cache base directory for this process (None = back to the default search order)."""
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = None if path is None else os.fspath(path)


def make_cache_dir_path(*paths: str) -> str:
    """Path under the dnnlib cache directory; nothing is created.

    The base is the first of: the value given to `set_cache_dir`, `$DNNLIB_CACHE_DIR`, `$HOME/.cache/dnnlib`,
    `%USERPROFILE%/.cache/dnnlib`, `<system temp dir>/.cache/dnnlib`.

    Example:
        >>> make_cache_dir_path("downloads")  # e.g. '/home/me/.cache/dnnlib/downloads'
    """
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if "DNNLIB_CACHE_DIR" in os.environ:
        return os.path.join(os.environ["DNNLIB_CACHE_DIR"], *paths)
    if "HOME" in os.environ:
        return os.path.join(os.environ["HOME"], ".cache", "dnnlib", *paths)
    if "USERPROFILE" in os.environ:
        return os.path.join(os.environ["USERPROFILE"], ".cache", "dnnlib", *paths)
    return os.path.join(tempfile.gettempdir(), ".cache", "dnnlib", *paths)


# ----------------------------------------------------------------------------
# Small conveniences.


def format_time(seconds: int | float) -> str:
    """Human-readable duration: '42s', '3m 05s', '2h 03m 05s', '1d 02h 03m'."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def format_time_brief(seconds: int | float) -> str:
    """Like `format_time` but with the two most significant units only: '42s', '3m 05s', '2h 03m', '1d 02h'."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def ask_yes_no(question: str) -> bool:
    """Ask on the console until the user answers y or n."""
    while True:
        answer = input(f"{question} [y/n] ").strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def tuple_product(t: tuple) -> Any:
    """Product of all elements (1 for an empty tuple), e.g. the element count of a shape."""
    result = 1
    for v in t:
        result *= v
    return result


_str_to_ctype = {
    "uint8": ctypes.c_ubyte,
    "uint16": ctypes.c_uint16,
    "uint32": ctypes.c_uint32,
    "uint64": ctypes.c_uint64,
    "int8": ctypes.c_byte,
    "int16": ctypes.c_int16,
    "int32": ctypes.c_int32,
    "int64": ctypes.c_int64,
    "float32": ctypes.c_float,
    "float64": ctypes.c_double,
}


def get_dtype_and_ctype(type_obj: Any) -> tuple[np.dtype, Any]:
    """Numpy dtype and matching ctypes type for a dtype-like (str, numpy type, dtype, or ctypes type)."""
    if isinstance(type_obj, type) and issubclass(type_obj, ctypes._SimpleCData):
        for name, ctype in _str_to_ctype.items():
            if ctypes.sizeof(ctype) == ctypes.sizeof(type_obj) and ctype._type_ == type_obj._type_:
                return np.dtype(name), ctype
        raise TypeError(f"get_dtype_and_ctype: unsupported ctypes type {type_obj!r}")
    try:
        dtype = np.dtype(type_obj)
    except TypeError:
        raise TypeError(f"get_dtype_and_ctype: {type_obj!r} is not a dtype-like; expected e.g. 'float32'") from None
    if dtype.name not in _str_to_ctype:
        raise TypeError(
            f"get_dtype_and_ctype: dtype {dtype.name!r} has no ctypes counterpart; "
            f"supported: {', '.join(_str_to_ctype)}"
        )
    ctype = _str_to_ctype[dtype.name]
    assert dtype.itemsize == ctypes.sizeof(ctype)
    return dtype, ctype


def is_pickleable(obj: Any) -> bool:
    """True if `pickle.dumps(obj)` succeeds."""
    try:
        with io.BytesIO() as stream:
            pickle.dump(obj, stream)
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------
# Looking up objects by dotted name, e.g. "long_video_gan.generator_lres.VideoGenerator".


def get_module_from_obj_name(obj_name: str) -> tuple[types.ModuleType, str]:
    """Split a dotted name into (imported module, attribute path inside it), importing the longest module prefix.

    Example:
        >>> get_module_from_obj_name("torch.nn.functional.conv2d")  # (<module torch.nn.functional>, 'conv2d')
    """
    if not isinstance(obj_name, str) or not obj_name:
        raise ValueError(f"obj_name must be a non-empty dotted name such as 'package.module.Class', got {obj_name!r}")
    # Map the legacy "np." / "tf." abbreviations used in old configs to the real packages.
    obj_name = re.sub(r"^np\.", "numpy.", obj_name)
    obj_name = re.sub(r"^tf\.", "tensorflow.", obj_name)
    parts = obj_name.split(".")

    # Try the longest module prefix first, so "a.b.c" prefers module a.b with attribute c over module a.
    for i in range(len(parts), 0, -1):
        module_name, local_name = ".".join(parts[:i]), ".".join(parts[i:])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # This prefix is not a module; try a shorter one.
            raise  # The module exists but one of its own imports is missing: show that error.
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            continue
        return module, local_name
    raise ImportError(f"obj_name {obj_name!r}: no importable module prefix has that attribute path")


# ----------------------------------------------------------------------------


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Follow a dotted attribute path inside a module ('' = the module itself)."""
    if obj_name == "":
        return module
    obj = module
    for part in obj_name.split("."):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    """Object (class, function, constant) for a fully qualified dotted name."""
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)


def call_func_by_name(*args, func_name: str | None = None, **kwargs) -> Any:
    """Look up `func_name` and call it with the remaining arguments."""
    if func_name is None:
        raise ValueError("call_func_by_name: func_name must be given, got None")
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError(f"func_name {func_name!r} names a {type(func_obj).__name__}, expected something callable")
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: str | None = None, **kwargs) -> Any:
    """Instantiate a class given by its dotted name; the config-dict idiom.

    Example:
        >>> opt_kwargs = EasyDict(class_name="torch.optim.Adam", lr=0.002, betas=(0, 0.99))
        >>> opt = construct_class_by_name(G.parameters(), **opt_kwargs)
    """
    if class_name is None:
        raise ValueError("construct_class_by_name: class_name must be given, got None")
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    """Directory of the source file of the module that holds the named object."""
    module, _local_name = get_module_from_obj_name(obj_name)
    return os.path.dirname(inspect.getfile(module))


def is_top_level_function(obj: Any) -> bool:
    """True for a function defined at the top level of its module (so it can be found again by name)."""
    return callable(obj) and obj.__name__ in sys.modules[obj.__module__].__dict__


def get_top_level_function_name(obj: Any) -> str:
    """Dotted name of a top-level function; for `__main__` the script's file name stands in for the module."""
    if not is_top_level_function(obj):
        raise ValueError(f"get_top_level_function_name: {obj!r} is not a top-level function of its module")
    module = obj.__module__
    if module == "__main__":
        main_file = getattr(sys.modules[module], "__file__", None)
        if main_file is None:
            raise ValueError(f"get_top_level_function_name: {obj.__name__} lives in __main__, which has no file")
        module = os.path.splitext(os.path.basename(main_file))[0]
    return module + "." + obj.__name__


# ----------------------------------------------------------------------------
# File-system helpers.


def list_dir_recursively_with_ignore(
    dir_path: str, ignores: list[str] | None = None, add_base_to_relative: bool = False
) -> list[tuple[str, str]]:
    """All files under `dir_path` as (absolute path, relative path) pairs, skipping names matching any glob in
    `ignores` (applied to both directory and file names). With `add_base_to_relative`, relative paths start with
    the basename of `dir_path`."""
    if not os.path.isdir(dir_path):
        raise FileNotFoundError(f"dir_path {dir_path!r} is not a directory")
    base_name = os.path.basename(os.path.normpath(dir_path))
    ignores = ignores or []
    result = []
    for root, dirs, files in os.walk(dir_path, topdown=True):
        dirs[:] = sorted(d for d in dirs if not any(fnmatch.fnmatch(d, pattern) for pattern in ignores))
        for name in sorted(files):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignores):
                continue
            abs_path = os.path.join(root, name)
            rel_path = os.path.relpath(abs_path, dir_path)
            if add_base_to_relative:
                rel_path = os.path.join(base_name, rel_path)
            result.append((abs_path, rel_path))
    return result


def copy_files_and_create_dirs(files: list[tuple[str, str]]) -> None:
    """Copy each (source, destination) pair, creating destination directories as needed."""
    for src, dst in files:
        dst_dir = os.path.dirname(dst)
        if dst_dir:
            os.makedirs(dst_dir, exist_ok=True)
        shutil.copyfile(src, dst)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to `path` for writing and move it onto `path` only if the block succeeds.

    A crash or kill mid-write leaves either the old file or no file, never a truncated one.

    Example:
        >>> with atomic_write(os.path.join(run_dir, "checkpoints", "ckpt-00005000-G-ema.pkl")) as f:
        ...     pickle.dump(G_ema, f)
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    path = os.fspath(path)
    dir_name = os.path.dirname(os.path.abspath(path))
    os.makedirs(dir_name, exist_ok=True)
    tmp_path = os.path.join(dir_name, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp_path, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


# ----------------------------------------------------------------------------
# URLs and the download cache.


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True if `obj` is a string URL with a scheme and a host (file:// URLs count only with allow_file_urls)."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    if allow_file_urls and obj.startswith("file://"):
        return True
    try:
        res = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    if not res.scheme or not res.netloc:
        return False
    return res.scheme != "file"


def _sanitize_file_name(name: str) -> str:
    """Keep only [0-9a-zA-Z-._] (others become '_') and at most 128 characters."""
    name = re.sub(r"[^0-9a-zA-Z\-._]", "_", name)
    return name[:128]


def _url_to_file_name(url: str) -> str:
    """Default download name: the last component of the URL path (without query), sanitised."""
    path = urllib.parse.urlparse(url).path
    name = urllib.parse.unquote(path.rstrip("/").split("/")[-1]) if path else ""
    return _sanitize_file_name(name or "download")


def _file_url_to_path(url: str) -> str:
    """Local path of a file:// URL (handles 'file:///C:/x' on Windows)."""
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    if re.match(r"^/[a-zA-Z]:", path):
        path = path[1:]
    return path


class _RetryableError(IOError):
    """A failed attempt that may succeed if tried again (network hiccup, truncated body, server error)."""


def _is_name_resolution_error(err: BaseException) -> bool:
    """True if a requests/urllib3 connection error was caused by a failed DNS lookup (``socket.gaierror``, or
    urllib3's NameResolutionError, found anywhere in the chain of causes and arguments)."""
    seen = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return False


def _download_once(session: Any, url: str) -> tuple[bytes, str | None]:
    """One download attempt: (body bytes, name from Content-Disposition or None)."""
    import requests  # Deferred: network pickles import dnnlib, and loading them must not need requests.

    try:
        with session.get(url, timeout=(30, 120), stream=True) as res:
            if res.status_code in (408, 429) or res.status_code >= 500:
                raise _RetryableError(f"HTTP {res.status_code} {res.reason}")
            res.raise_for_status()  # Other 4xx codes are final: retrying a 404 wastes time.
            data = b"".join(res.iter_content(chunk_size=1 << 20))
            expected = res.headers.get("Content-Length")
            if expected is not None and res.headers.get("Content-Encoding") in (None, "identity"):
                if len(data) != int(expected):
                    raise _RetryableError(f"truncated body: got {len(data)} of {expected} bytes")
            content_type = res.headers.get("Content-Type", "")
            disposition = res.headers.get("Content-Disposition", "")
    except requests.HTTPError:
        raise
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
        if _is_name_resolution_error(err):  # No network or a wrong host name: retrying does not help.
            host = urllib.parse.urlparse(url).hostname
            raise IOError(f"cannot resolve host name {host!r} (no network, or a wrong URL?)") from err
        raise _RetryableError(f"{type(err).__name__}: {err}") from err

    # Google Drive serves an HTML page instead of the file when it wants confirmation or is over quota.
    if content_type.startswith("text/html") and "drive.google.com" in url:
        text = data.decode(errors="replace")
        if "Quota exceeded" in text:
            raise IOError("Google Drive download quota exceeded; try again later")
        links = [html.unescape(link) for link in re.findall(r'href="(/uc\?export=download[^"]+)', text)]
        if links:
            return _download_once(session, urllib.parse.urljoin(url, links[0]))
        match = re.search(r'name="confirm" value="([^"]+)"', text)
        if match and "confirm=" not in url:
            return _download_once(session, url + ("&" if "?" in url else "?") + "confirm=" + match.group(1))

    match = re.search(r'filename="?([^";]+)"?', disposition)
    return data, (match.group(1) if match else None)


def open_url(
    url: str,
    cache_dir: str | None = None,
    num_attempts: int = 10,
    verbose: bool = True,
    return_filename: bool = False,
    cache: bool = True,
) -> Any:
    """Open a local path, a file:// URL or an http(s) URL as a binary file object, downloading at most once.

    Downloads are cached as `<cache_dir>/<md5(url)>_<name>` (default cache_dir: `make_cache_dir_path('downloads')`)
    and written atomically (temp file + rename), so an interrupted download leaves no cache entry. To work offline,
    put the file there by hand under that name; the error for a failed download prints the exact path.

    Example:
        >>> with open_url("https://example.com/i3d_torchscript.pt") as f:
        ...     detector = torch.jit.load(f)
        >>> path = open_url("https://example.com/weights.pkl", return_filename=True)  # local cache path

    Returns an open file on a cache hit or a local path, an in-memory BytesIO after a fresh download (or with
    cache=False), or the local file name when return_filename=True (requires cache=True for URLs).
    """
    if not isinstance(url, str):
        raise TypeError(f"open_url: url must be a str, got {type(url).__name__}")
    if not isinstance(num_attempts, int) or num_attempts < 1:
        raise ValueError(f"open_url: num_attempts must be a positive int, got {num_attempts!r}")
    if return_filename and not cache:
        raise ValueError("open_url: return_filename=True needs cache=True (an uncached download has no file)")

    # Local file (anything that does not start with lowercase letters and "://").
    if not re.match(r"^[a-z]+://", url):
        if not os.path.isfile(url):
            raise FileNotFoundError(f"open_url: {url!r} is neither a URL nor an existing file")
        return url if return_filename else open(url, "rb")

    # file:// URL.
    if url.startswith("file://"):
        path = _file_url_to_path(url)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"open_url: {url!r} maps to {path!r}, which is not an existing file")
        return path if return_filename else open(path, "rb")

    # Cache hit?
    if cache_dir is None:
        cache_dir = make_cache_dir_path("downloads")
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    if cache:
        cache_files = [
            name
            for name in (os.listdir(cache_dir) if os.path.isdir(cache_dir) else [])
            if name.startswith(url_md5 + "_") and not name.startswith(".")
        ]
        if len(cache_files) == 1:
            cache_path = os.path.join(cache_dir, cache_files[0])
            return cache_path if return_filename else open(cache_path, "rb")

    # Download, retrying transient failures.
    import requests  # Deferred, see _download_once.

    if verbose:
        print(f"Downloading {url} ...", flush=True)
    data = None
    file_name = None
    last_error: BaseException | None = None
    with requests.Session() as session:
        for attempt in range(num_attempts):
            try:
                data, disposition_name = _download_once(session, url)
                file_name = _sanitize_file_name(disposition_name) if disposition_name else _url_to_file_name(url)
                break
            except _RetryableError as err:
                last_error = err
                if attempt + 1 < num_attempts:
                    delay = min(0.5 * 2**attempt, 10.0)
                    # Always shown (stderr), so a long series of retries is never silent.
                    print(
                        f"open_url: attempt {attempt + 1} of {num_attempts} for {url} failed ({err}); "
                        f"retrying in {delay:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(delay)
            except Exception as err:  # HTTP 4xx, Drive quota, bad URL, unknown host: final.
                last_error = err
                break
    if data is None:
        if verbose:
            print(f"Download of {url} failed.", flush=True)
        expected_path = os.path.join(cache_dir, f"{url_md5}_{_url_to_file_name(url)}")
        raise IOError(
            f"open_url: could not download {url!r} ({last_error}). Cache directory: {cache_dir!r}. "
            f"To work offline, fetch the file by other means and place it at {expected_path!r} "
            f"(file name '<md5 of the URL>_<any name>' = '{url_md5}_*')."
        ) from last_error
    if verbose:
        print(f"Downloaded {url}", flush=True)

    # Store in the cache atomically.
    if cache:
        cache_path = os.path.join(cache_dir, f"{url_md5}_{file_name}")
        with atomic_write(cache_path, "wb") as f:
            f.write(data)
        if return_filename:
            return cache_path
    return io.BytesIO(data)
