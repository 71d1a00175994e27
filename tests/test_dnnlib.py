"""Tests for dnnlib: EasyDict, name lookup, time formatting, cache dirs, Logger, atomic writes and open_url."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import dnnlib
from dnnlib import util

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1, nested=dnnlib.EasyDict(b=2))
    d.c = 3
    assert d["c"] == 3 and d.a == 1 and d.nested.b == 2
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError, match="missing"):
        d.missing
    with pytest.raises(AttributeError, match="gone"):
        del d.gone
    assert getattr(d, "missing", "default") == "default"


def test_build_by_name():
    linear = util.construct_class_by_name(class_name="collections.OrderedDict", a=1)
    assert type(linear).__name__ == "OrderedDict" and linear["a"] == 1
    assert util.call_func_by_name(4, func_name="math.sqrt") == 2.0
    assert util.get_obj_by_name("os.path.join") is os.path.join
    module, local = util.get_module_from_obj_name("os.path.join")
    assert module is os.path and local == "join"
    assert util.get_obj_by_name("np.float32").__name__ == "float32"
    assert util.get_module_dir_by_obj_name("dnnlib.util.EasyDict") == os.path.join(REPO_ROOT, "dnnlib")
    assert util.is_top_level_function(util.format_time) and not util.is_top_level_function(lambda: 0)
    assert util.get_top_level_function_name(util.format_time) == "dnnlib.util.format_time"


def test_build_by_name_errors_name_the_input():
    with pytest.raises(ImportError, match="'os.path.no_such_thing'"):
        util.get_obj_by_name("os.path.no_such_thing")
    with pytest.raises(ImportError, match="'no_such_package_xyz.Thing'"):
        util.get_obj_by_name("no_such_package_xyz.Thing")
    with pytest.raises(ValueError, match="class_name must be given"):
        util.construct_class_by_name(a=1)
    with pytest.raises(TypeError, match="func_name 'math.pi' names a float"):
        util.call_func_by_name(func_name="math.pi")
    with pytest.raises(ValueError, match="obj_name must be a non-empty dotted name"):
        util.get_obj_by_name("")


def test_format_time_and_small_helpers():
    assert [util.format_time(s) for s in (42, 185, 7385, 93780)] == ["42s", "3m 05s", "2h 03m 05s", "1d 02h 03m"]
    assert [util.format_time_brief(s) for s in (42, 185, 7385, 93780)] == ["42s", "3m 05s", "2h 03m", "1d 02h"]
    assert util.format_time(59.6) == "1m 00s"
    assert util.tuple_product((2, 3, 4)) == 24 and util.tuple_product(()) == 1
    dtype, ctype = util.get_dtype_and_ctype("float32")
    assert dtype.name == "float32" and ctype.__name__ == "c_float"
    with pytest.raises(TypeError, match="'complex64'"):
        util.get_dtype_and_ctype("complex64")
    assert util.is_pickleable([1, "a"]) and not util.is_pickleable(lambda: 0)
    assert util.is_url("https://example.com/x") and util.is_url("http://127.0.0.1:8000/a")
    assert not util.is_url("file:///tmp/x") and util.is_url("file:///tmp/x", allow_file_urls=True)
    assert not util.is_url("/tmp/x") and not util.is_url(3)


def test_cache_dir_search_order(monkeypatch, tmp_path):
    monkeypatch.setattr(util, "_dnnlib_cache_dir", None)
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert util.make_cache_dir_path("downloads") == str(tmp_path / "env" / "downloads")
    monkeypatch.delenv("DNNLIB_CACHE_DIR")
    assert dnnlib.make_cache_dir_path("a", "b") == str(tmp_path / "home" / ".cache" / "dnnlib" / "a" / "b")
    util.set_cache_dir(str(tmp_path / "explicit"))
    assert util.make_cache_dir_path() == str(tmp_path / "explicit")
    util.set_cache_dir(None)
    monkeypatch.delenv("HOME")
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "profile"))
    assert util.make_cache_dir_path("x") == str(tmp_path / "profile" / ".cache" / "dnnlib" / "x")


def test_logger_tees_stdout_and_stderr(tmp_path, capsys):
    log_path = tmp_path / "run" / "log.txt"
    with util.Logger(str(log_path), file_mode="w"):
        print("Loading dataset...")
        print("warning line", file=sys.stderr)
    assert sys.stdout is not None and not isinstance(sys.stdout, util.Logger)
    print("after close")
    assert log_path.read_text() == "Loading dataset...\nwarning line\n"
    captured = capsys.readouterr()
    assert captured.out == "Loading dataset...\nafter close\n" and captured.err == "warning line\n"
    with util.Logger(str(log_path), file_mode="a"):
        print("resumed")
    assert log_path.read_text().endswith("resumed\n")
    with pytest.raises(ValueError, match="file_mode must be 'w' or 'a', got 'x'"):
        util.Logger(str(log_path), file_mode="x")


def test_logger_streams_act_like_the_console(tmp_path, monkeypatch):
    class _Console(io.StringIO):
        encoding = "utf-8"

        def isatty(self):
            return True

    out, err = _Console(), _Console()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with util.Logger(str(tmp_path / "log.txt"), file_mode="a") as logger:
        # Libraries that colour or animate on a terminal, or ask the stream's encoding, see the console's answers.
        assert sys.stdout.isatty() and sys.stderr.isatty()
        assert sys.stdout.encoding == sys.stderr.encoding == "utf-8"
        assert sys.stdout.write("abc") == 3 and sys.stderr.write("de") == 2 and logger.write("") == 0
    assert sys.stdout is out and sys.stderr is err
    assert out.getvalue() == "abc" and err.getvalue() == "de" and (tmp_path / "log.txt").read_text() == "abcde"


def test_list_and_copy_files(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("a")
    (src / "sub" / "b.py").write_text("b")
    (src / "sub" / "c.pyc").write_text("c")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "d.py").write_text("d")
    files = util.list_dir_recursively_with_ignore(str(src), ignores=["*.pyc", "__pycache__"])
    assert [rel for _abs, rel in files] == ["a.py", os.path.join("sub", "b.py")]
    files = util.list_dir_recursively_with_ignore(str(src), ignores=["*.pyc", "__pycache__"], add_base_to_relative=True)
    assert files[0][1] == os.path.join("src", "a.py")
    util.copy_files_and_create_dirs([(abs_path, str(tmp_path / "dst" / rel)) for abs_path, rel in files])
    assert (tmp_path / "dst" / "src" / "sub" / "b.py").read_text() == "b"
    with pytest.raises(FileNotFoundError, match="'nope'"):
        util.list_dir_recursively_with_ignore("nope")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out" / "data.bin"
    with util.atomic_write(str(path)) as f:
        f.write(b"first")
    with pytest.raises(RuntimeError, match="boom"):
        with util.atomic_write(str(path)) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path / "out") == ["data.bin"]
    with pytest.raises(ValueError, match="mode must be 'w', 'wt' or 'wb', got 'a'"):
        with util.atomic_write(str(path), "a"):
            pass


# ----------------------------------------------------------------------------
# open_url against a loopback HTTP server.


class _Server:
    """ThreadingHTTPServer on 127.0.0.1 (random port) whose per-path behaviour the test sets; counts requests."""

    def __init__(self):
        self.routes = {}  # path -> list of behaviours, consumed one per request; the last one repeats.
        self.counts = {}
        self.stall = threading.Event()
        self.half_sent = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.counts[self.path] = server.counts.get(self.path, 0) + 1
                behaviours = server.routes.get(self.path, [("status", 404)])
                kind, arg = behaviours.pop(0) if len(behaviours) > 1 else behaviours[0]
                if kind == "status":
                    self.send_error(arg)
                    return
                body, headers = arg if isinstance(arg, tuple) else (arg, {})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if kind == "ok":
                    self.wfile.write(body)
                elif kind == "truncate":  # Half the body, then close the connection.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif kind == "stall":  # Half the body, then hang until the test releases us.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.half_sent.set()
                    server.stall.wait(timeout=30)
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    def close(self):
        self.stall.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def _cache_entries(cache_dir, url):
    md5 = hashlib.md5(url.encode()).hexdigest()
    return sorted(name for name in os.listdir(cache_dir) if md5 in name) if os.path.isdir(cache_dir) else []


def test_open_url_local_paths(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"local bytes")
    with util.open_url(str(path)) as f:
        assert f.read() == b"local bytes"
    with util.open_url("file://" + str(path)) as f:
        assert f.read() == b"local bytes"
    assert util.open_url("file://" + str(path), return_filename=True) == str(path)
    with pytest.raises(FileNotFoundError, match="nothing_here.bin"):
        util.open_url(str(tmp_path / "nothing_here.bin"))
    with pytest.raises(FileNotFoundError, match="file:///no/such/file"):
        util.open_url("file:///no/such/file")
    with pytest.raises(TypeError, match="url must be a str, got int"):
        util.open_url(3)
    with pytest.raises(ValueError, match="num_attempts must be a positive int, got 0"):
        util.open_url(str(path), num_attempts=0)


def test_open_url_downloads_once_then_uses_the_cache(server, tmp_path):
    body = os.urandom(5000)
    server.routes["/models/i3d.pt"] = [("ok", body)]
    url = server.base + "/models/i3d.pt"
    cache_dir = str(tmp_path / "cache")
    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == body
    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == body
    assert server.counts["/models/i3d.pt"] == 1
    md5 = hashlib.md5(url.encode()).hexdigest()
    assert util.open_url(url, cache_dir=cache_dir, return_filename=True) == os.path.join(cache_dir, f"{md5}_i3d.pt")
    assert os.listdir(cache_dir) == [f"{md5}_i3d.pt"]

    # cache=False downloads again and writes nothing.
    server.routes["/nocache"] = [("ok", b"fresh")]
    with util.open_url(server.base + "/nocache", cache_dir=cache_dir, verbose=False, cache=False) as f:
        assert f.read() == b"fresh"
    assert _cache_entries(cache_dir, server.base + "/nocache") == []


def test_open_url_default_cache_dir_and_content_disposition(server, tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_dnnlib_cache_dir", str(tmp_path / "dnnlib"))
    server.routes["/get?id=7"] = [("ok", (b"payload", {"Content-Disposition": 'attachment; filename="my net$.pkl"'}))]
    url = server.base + "/get?id=7"
    path = util.open_url(url, verbose=False, return_filename=True)
    md5 = hashlib.md5(url.encode()).hexdigest()
    assert path == str(tmp_path / "dnnlib" / "downloads" / f"{md5}_my_net_.pkl")


def test_open_url_404_explains_how_to_place_the_file(server, tmp_path):
    url = server.base + "/missing/fvd_detector.pt"
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(IOError) as info:
        util.open_url(url, cache_dir=cache_dir, verbose=False)
    message = str(info.value)
    md5 = hashlib.md5(url.encode()).hexdigest()
    assert url in message and "404" in message
    assert cache_dir in message
    assert os.path.join(cache_dir, f"{md5}_fvd_detector.pt") in message
    assert server.counts["/missing/fvd_detector.pt"] == 1  # A 404 is final: no retries.

    # Placing the file by hand as the message says makes open_url work offline.
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, f"{md5}_fvd_detector.pt"), "wb") as f:
        f.write(b"by hand")
    with util.open_url(url, cache_dir=cache_dir) as f:
        assert f.read() == b"by hand"


def test_open_url_truncated_download_leaves_no_cache_entry(server, tmp_path):
    body = os.urandom(4000)
    server.routes["/big.bin"] = [("truncate", body), ("ok", body)]
    url = server.base + "/big.bin"
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(IOError, match="big.bin"):
        util.open_url(url, cache_dir=cache_dir, num_attempts=1, verbose=False)
    assert not os.path.isdir(cache_dir) or os.listdir(cache_dir) == []
    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == body
    assert len(_cache_entries(cache_dir, url)) == 1 and server.counts["/big.bin"] == 2


def test_open_url_retries_transient_failures(server, tmp_path):
    body = os.urandom(3000)
    server.routes["/flaky.bin"] = [("status", 503), ("truncate", body), ("ok", body)]
    with util.open_url(server.base + "/flaky.bin", cache_dir=str(tmp_path), num_attempts=3, verbose=False) as f:
        assert f.read() == body
    assert server.counts["/flaky.bin"] == 3


def test_open_url_killed_mid_download_leaves_no_cache_entry(server, tmp_path):
    body = os.urandom(100_000)
    server.routes["/stall.bin"] = [("stall", body), ("ok", body)]
    url = server.base + "/stall.bin"
    cache_dir = str(tmp_path / "cache")
    script = textwrap.dedent(
        f"""
        from dnnlib import util
        util.open_url({url!r}, cache_dir={cache_dir!r}, num_attempts=1, verbose=False)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        assert server.half_sent.wait(timeout=60), "the download never started"
        time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.isdir(cache_dir) or os.listdir(cache_dir) == []
    server.stall.set()
    with util.open_url(url, cache_dir=cache_dir, verbose=False) as f:
        assert f.read() == body
    assert len(_cache_entries(cache_dir, url)) == 1


def test_open_url_dns_failure_fails_at_once(tmp_path, monkeypatch):
    import socket

    calls = []

    def no_dns(host, *args, **kwargs):  # What an offline machine answers; no real lookup is made.
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(util.time, "sleep", lambda seconds: None)
    start = time.monotonic()
    with pytest.raises(IOError, match="cannot resolve host name 'nonexistent.invalid'") as info:
        util.open_url("https://nonexistent.invalid/i3d_torchscript.pt", cache_dir=str(tmp_path), num_attempts=5)
    assert calls == ["nonexistent.invalid"] and time.monotonic() - start < 5  # One lookup, no retries.
    assert "To work offline" in str(info.value)


def test_open_url_retries_are_announced(tmp_path, monkeypatch, capsys):
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/i3d.pt"
    closed.close()  # Nothing listens there: connection refused, a retryable failure.
    delays = []
    monkeypatch.setattr(util.time, "sleep", delays.append)
    with pytest.raises(IOError, match="Connection refused"):
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=3, verbose=False)
    err = capsys.readouterr().err
    assert delays == [0.5, 1.0]
    assert f"attempt 1 of 3 for {url} failed" in err and "retrying in 0.5 s" in err
    assert "attempt 2 of 3" in err and "retrying in 1 s" in err and "attempt 3 of 3" not in err
