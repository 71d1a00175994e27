"""Tests for torch_utils.custom_ops: cached C++ builds and the warn-once fallback."""

import os
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
        assert f'Setting up PyTorch plugin "{name}"... Done.' in capsys.readouterr().out
        builds = os.listdir(ext_dir / "extensions" / name)
        build_dirs = [b for b in builds if not b.endswith(".lock")]
        assert len(build_dirs) == 1 and build_dirs[0].endswith("-cpu") and len(build_dirs[0]) == 32 + 4
        assert "tiny.cpp" in os.listdir(ext_dir / "extensions" / name / build_dirs[0])
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
