"""Tests for torch_utils.custom_ops: cached C++ builds and the warn-once fallback."""

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings

import pytest

from torch_utils import custom_ops

TINY_SRC = """
#include <pybind11/pybind11.h>
static int add(int a, int b) { return a + b; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add", &add, "a + b"); }
"""


@pytest.fixture
def ext_dir(tmp_path, monkeypatch):
    """Private extension cache, so tests never reuse or pollute the user's builds."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    return tmp_path


@pytest.mark.slow  # ~10-25 s: one real C++ compile (pybind11 only, no torch headers).
def test_tiny_cpp_extension_builds_and_is_cached(ext_dir, capsys):
    src_dir = ext_dir / "src"
    src_dir.mkdir()
    (src_dir / "tiny.cpp").write_text(TINY_SRC)
    name = f"tiny_plugin_{uuid.uuid4().hex[:8]}"
    try:
        plugin = custom_ops.get_plugin(name, sources=["tiny.cpp"], source_dir=str(src_dir))
        assert plugin.add(2, 3) == 5
        assert custom_ops.get_plugin(name, sources=["tiny.cpp"], source_dir=str(src_dir)) is plugin
        out = capsys.readouterr().out
        assert f'Compiling the CPU plugin "{name}" (first use in this environment, ~20 s;' in out
        assert f'Setting up PyTorch plugin "{name}"... Done.' in out
        builds = os.listdir(ext_dir / "extensions" / name)
        build_dirs = [b for b in builds if not b.endswith(".lock")]
        assert len(build_dirs) == 1 and build_dirs[0].endswith("-cpu") and len(build_dirs[0]) == 32 + 4
        assert "tiny.cpp" in os.listdir(ext_dir / "extensions" / name / build_dirs[0])
        assert "build_environment.txt" in os.listdir(ext_dir / "extensions" / name / build_dirs[0])
    finally:
        custom_ops._forget_plugin(name)


def test_broken_source_falls_back_with_one_warning(ext_dir):
    src_dir = ext_dir / "src"
    src_dir.mkdir()
    (src_dir / "broken.cpp").write_text("this is not C++ at all\n")
    name = f"broken_plugin_{uuid.uuid4().hex[:8]}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert custom_ops.try_get_plugin(name, sources=["broken.cpp"], source_dir=str(src_dir)) is None
            assert custom_ops.try_get_plugin(name, sources=["broken.cpp"], source_dir=str(src_dir)) is None
        assert len(caught) == 1 and caught[0].category is RuntimeWarning
        message = str(caught[0].message)
        assert "\n" not in message and f'"{name}"' in message
        assert "broken.cpp:1:1: error" in message and "reference implementation" in message
    finally:
        custom_ops._forget_plugin(name)


def test_cuda_sources_without_cuda_fall_back(ext_dir, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (ext_dir / "k.cu").write_text("// kernel\n")
    name = f"cuda_plugin_{uuid.uuid4().hex[:8]}"
    try:
        with pytest.warns(RuntimeWarning, match="has CUDA sources but no CUDA device"):
            assert custom_ops.try_get_plugin(name, sources=["k.cu"], source_dir=str(ext_dir)) is None
    finally:
        custom_ops._forget_plugin(name)


def test_bad_inputs_name_the_argument(ext_dir):
    with pytest.raises(ValueError, match="module_name must be a Python identifier, got 'bad-name'"):
        custom_ops.get_plugin("bad-name", sources=["x.cpp"])
    with pytest.raises(ValueError, match="sources must be a non-empty list"):
        custom_ops.get_plugin("ok_name", sources="x.cpp")
    with pytest.raises(FileNotFoundError, match="missing.cpp"):
        custom_ops.get_plugin("ok_name", sources=["missing.cpp"], source_dir=str(ext_dir))
    assert custom_ops.verbosity == "brief"


# ----------------------------------------------------------------------------
# Locks and the build cache key (issue 19, item 1).

# A plain shared library (no torch or pybind11 headers), loaded with is_python_module=False: compiles in well under a
# second, so the tests below time the locking, not the compiler.
PLAIN_SRC = 'extern "C" int plain_answer() { return 42; }\n'

BUILD_SCRIPT = """
import sys
from torch_utils import custom_ops
path = custom_ops.get_plugin(sys.argv[1], sources=["plain.cpp"], source_dir=sys.argv[2], is_python_module=False)
print("built", path, flush=True)
"""


def _build_in_subprocess(name, src_dir, env, **kwargs):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, name, str(src_dir)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Own process group, so a kill reaches ninja and the compiler too.
        **kwargs,
    )


@pytest.mark.slow  # ~5-15 s: two links against libtorch (most of it the rerun's real build).
def test_kill_9_during_a_build_then_rerun_finishes(ext_dir):
    src_dir = ext_dir / "src"
    src_dir.mkdir()
    (src_dir / "plain.cpp").write_text(PLAIN_SRC)
    # A `c++` first on PATH that announces the compile and then stalls, so the kill lands mid-build.
    bin_dir = ext_dir / "bin"
    bin_dir.mkdir()
    marker = ext_dir / "compiler_started"
    (bin_dir / "c++").write_text(f"#!/bin/sh\ntouch {marker}\nsleep 120\n")
    (bin_dir / "c++").chmod(0o755)
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ext_dir / "extensions"), OMP_NUM_THREADS="1")
    name = f"plain_plugin_{uuid.uuid4().hex[:8]}"

    first = _build_in_subprocess(name, src_dir, dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}"))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert first.poll() is None, f"the build ended before the compiler ran: {first.communicate()[0]}"
            assert time.monotonic() < deadline, "the compiler never started"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    (build_dir,) = [d for d in (ext_dir / "extensions" / name).iterdir() if d.is_dir()]
    assert (build_dir / "lock").exists()  # torch's own build lock, which a kill leaves behind

    start = time.monotonic()
    rerun = _build_in_subprocess(name, src_dir, env)
    try:
        out, _ = rerun.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(rerun.pid, signal.SIGKILL)
        out = rerun.communicate()[0]
        pytest.fail(f"the rerun hung for 90 s after a kill -9 during the build; it printed: {out!r}")
    assert rerun.returncode == 0, out
    assert f"removing stale build lock {build_dir / 'lock'}" in out
    assert f'Compiling the CPU plugin "{name}"' in out and "built " in out
    assert time.monotonic() - start < 60


def test_process_lock_names_its_holder_and_dies_with_it(tmp_path):
    from torch_utils.process_lock import ProcessLock

    path = str(tmp_path / "x.lock")
    holder_script = (
        "import sys, time\n"
        "from torch_utils.process_lock import ProcessLock\n"
        "lock = ProcessLock(sys.argv[1]); assert lock.try_acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script, path, "--some-option"], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = ProcessLock(path)
        assert not lock.try_acquire()
        assert lock.holder().startswith(f"pid {holder.pid} on ") and "--some-option" in lock.holder()
        waits = []
        assert not lock.acquire(timeout=0.3, on_wait=waits.append)
        assert waits == [lock.holder()]
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs in the holder.
        holder.wait()
    start = time.monotonic()
    assert lock.acquire(timeout=5) and time.monotonic() - start < 1
    assert lock.holder() == ProcessLock(path).holder() and lock.holder().startswith(f"pid {os.getpid()} ")
    lock.release()
    assert not lock.held and ProcessLock(path).try_acquire()


def test_process_lock_is_not_kept_alive_by_forked_children(tmp_path):
    # A DataLoader worker forked by a trainer shares the lock's open file; the lock must still die with the trainer.
    from torch_utils.process_lock import ProcessLock

    path = str(tmp_path / "run.lock")
    holder_script = (
        "import os, sys, time\n"
        "from torch_utils.process_lock import ProcessLock\n"
        "lock = ProcessLock(sys.argv[1]); assert lock.try_acquire()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child', os.getpid(), lock.held, flush=True); time.sleep(60); os._exit(0)\n"
        "time.sleep(0.5); print('held', flush=True); time.sleep(60)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", holder_script, path], cwd=repo, stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        tag, child_pid, child_held = holder.stdout.readline().split()
        child_pid = int(child_pid)
        assert (tag, child_held) == ("child", "False")
        assert holder.stdout.readline().strip() == "held"
        assert not ProcessLock(path).try_acquire()  # The parent still holds it.
        holder.kill()
        holder.wait()
        os.kill(child_pid, 0)  # The forked child outlives its parent...
        lock = ProcessLock(path)
        assert lock.acquire(timeout=2)  # ...without keeping the lock.
        lock.release()
    finally:
        holder.kill()
        holder.wait()
        if child_pid is not None:
            try:
                os.kill(child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_build_dir_is_keyed_by_venv_torch_and_flags(ext_dir, monkeypatch):
    (ext_dir / "a.cpp").write_text(PLAIN_SRC)
    files = [str(ext_dir / "a.cpp")]
    base = custom_ops._build_dir("p", files, custom_ops.build_environment({}), uses_cuda=False)
    assert base == custom_ops._build_dir("p", files, custom_ops.build_environment({}), uses_cuda=False)
    assert base != custom_ops._build_dir("p", files, custom_ops.build_environment({"extra_cflags": ["-O3"]}), False)
    monkeypatch.setattr(sys, "prefix", str(ext_dir / "other_venv"))
    assert base != custom_ops._build_dir("p", files, custom_ops.build_environment({}), uses_cuda=False)
    monkeypatch.undo()
    monkeypatch.setattr("torch.__version__", "0.0.0+other")
    assert base != custom_ops._build_dir("p", files, custom_ops.build_environment({}), uses_cuda=False)
