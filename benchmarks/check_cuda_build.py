"""Compile and link the CUDA plugins of torch_utils.ops (bias_act, upfirdn2d, filtered_lrelu) with nvcc, without
needing a GPU, then import each built library and run its host loop (the kernels' arithmetic on CPU tensors) against
the reference path.

torch_utils.custom_ops builds for the visible GPU only and refuses CUDA sources without one, so this script calls
torch.utils.cpp_extension.load itself, with the same sources and flags as the ops' `_init()` and an explicit
TORCH_CUDA_ARCH_LIST. Run it with a Python whose torch is a CUDA build, one plugin at a time on small machines:

    CUDA_HOME=/usr/local/cuda-13.0 MAX_JOBS=1 /work/cudavenv/bin/python benchmarks/check_cuda_build.py \\
        --arch-list "8.0;9.0" --build-dir /tmp/lvg_cuda_build 2>&1 | tee cuda_build.log
    python benchmarks/check_cuda_build.py --plugins upfirdn2d      # just one plugin

Exits with status 1 when a build, the import, a library lookup (ldd) or a host-loop comparison fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d  # noqa: E402

OPS = {"bias_act": bias_act, "upfirdn2d": upfirdn2d, "filtered_lrelu": filtered_lrelu}

# ----------------------------------------------------------------------------


def build_plugin(op_name: str, build_root: Path):
    """Build `<op>_plugin` from the op module's source list and build flags, verbosely; return the loaded module."""
    from torch.utils import cpp_extension

    module = OPS[op_name]
    source_dir = Path(module.__file__).resolve().parent
    build_dir = build_root / f"{op_name}_plugin"
    build_dir.mkdir(parents=True, exist_ok=True)
    for name in module._plugin_sources + module._plugin_headers:
        shutil.copyfile(source_dir / name, build_dir / name)
    return cpp_extension.load(
        name=f"{op_name}_plugin",
        sources=[str(build_dir / name) for name in module._plugin_sources],
        build_directory=str(build_dir),
        verbose=True,
        **module._plugin_build_kwargs,
    )


def check_libraries(plugin) -> bool:
    """Print the shared-library dependencies of the built plugin; False when one is not found.

    Like every torch extension, the plugin finds libc10/libtorch through the already imported torch (no rpath), so
    ldd gets torch's library directory on LD_LIBRARY_PATH.
    """
    path = plugin.__file__
    print(f"Library: {path}")
    if shutil.which("ldd") is None:
        print("  (ldd not available; skipped the dependency check)")
        return True
    env = dict(os.environ)
    torch_lib = str(Path(torch.__file__).resolve().parent / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [torch_lib, env.get("LD_LIBRARY_PATH", "")] if p)
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
    needed = None  # The plugin's direct dependencies (ldd also lists theirs).
    if shutil.which("readelf") is not None:
        dynamic = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
        needed = {line.split("[")[1].split("]")[0] for line in dynamic.splitlines() if "(NEEDED)" in line}
    ok = True
    for line in out.splitlines():
        name = line.strip().split(" ")[0]
        if needed is None or name in needed or "not found" in line:
            print("  " + line.strip())
        ok = ok and "not found" not in line
    return ok


def run_host_check(op_name: str, plugin) -> list[str]:
    """Run a few configurations through the plugin's host loop (CPU tensors) and the reference path; return failures.

    This exercises the compiled library and the kernels' per-element code, not the CUDA launches.
    """
    module = OPS[op_name]
    saved = module._plugin
    module._plugin = plugin
    g = torch.Generator().manual_seed(0)
    failures = []

    def compare(label, got, expected, tol):
        err = (got.double() - expected.double()).abs().max().item()
        status = "ok" if err <= tol else "FAILED"
        print(f"  {label:<58} max abs err {err:.2e} {status}")
        if err > tol:
            failures.append(f"{op_name}: {label}: {err:.2e}")

    try:
        for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 1e-2)]:
            x = torch.randn([2, 3, 9, 11], generator=g, dtype=torch.float64).to(dtype).requires_grad_()
            b = torch.randn([3], generator=g, dtype=torch.float64).to(dtype).requires_grad_()
            f = upfirdn2d.setup_filter([1, 3, 3, 1])
            f8 = torch.rand([8], generator=g) + 0.1
            if op_name == "bias_act":
                for act in bias_act.activation_funcs:
                    kwargs = dict(dim=1, act=act, clamp=1.0)
                    fn = lambda x, b: bias_act._bias_act_cuda(**kwargs).apply(x, b)  # noqa: E731
                    ref = lambda x, b: bias_act._bias_act_ref(x, b, **kwargs)  # noqa: E731
                    _compare_with_grads(compare, f"{act} {dtype}", fn, ref, x, b, tol)
            elif op_name == "upfirdn2d":
                for filt, up, down, pad in [(f, 2, 1, [2, 1, 2, 1]), (f8, 1, 2, [3, 4, 3, 4]), (None, [2, 1], 1, -1)]:
                    kwargs = dict(up=up, down=down, padding=pad, gain=2.0)
                    fn = lambda x, b: upfirdn2d._upfirdn2d_cuda(**kwargs).apply(x, filt)  # noqa: E731
                    ref = lambda x, b: upfirdn2d._upfirdn2d_ref(x, filt, **kwargs)  # noqa: E731
                    label = f"f {None if filt is None else list(filt.shape)} up {up} down {down} {dtype}"
                    _compare_with_grads(compare, label, fn, ref, x, b, tol)
            else:
                for fu, fd, up, down, pad in [(f8, f8, 2, 2, [5, 4, 5, 4]), (f, f, 2, 1, 1), (None, None, 1, 1, 0)]:
                    kwargs = dict(up=up, down=down, padding=pad, clamp=0.5)
                    fn = lambda x, b: filtered_lrelu._filtered_lrelu_cuda(**kwargs).apply(x, fu, fd, b)  # noqa: E731
                    ref = lambda x, b: filtered_lrelu._filtered_lrelu_ref(x, fu, fd, b, **kwargs)  # noqa: E731
                    label = f"fu {None if fu is None else list(fu.shape)} up {up} down {down} {dtype}"
                    _compare_with_grads(compare, label, fn, ref, x, b, tol)
    finally:
        module._plugin = saved
    return failures


def _compare_with_grads(compare, label, fn, ref, x, b, tol):
    y, y_ref = fn(x, b), ref(x, b)
    compare(label + " forward", y, y_ref, tol)
    dy = torch.ones_like(y_ref)
    grads = torch.autograd.grad(y, [x, b], dy, allow_unused=True)
    grads_ref = torch.autograd.grad(y_ref, [x, b], dy, allow_unused=True)
    if grads[0] is not None and grads_ref[0] is not None:
        compare(label + " dx", grads[0], grads_ref[0], tol * 10)


# ----------------------------------------------------------------------------


def main(argv=None) -> int:
    """Build the CUDA plugins with nvcc (no GPU needed), check they link and load, and test their host loops."""
    # argparse rather than click: this runs in bare CUDA virtual environments that have only torch and numpy.
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--plugins", default="bias_act,upfirdn2d,filtered_lrelu", help="comma-separated ops")
    parser.add_argument("--arch-list", default="8.0;9.0", help="TORCH_CUDA_ARCH_LIST for the build (default 8.0;9.0)")
    parser.add_argument("--build-dir", default="/tmp/lvg_cuda_build", help="where to build")
    parser.add_argument("--no-host-check", action="store_true", help="skip the host-loop comparison")
    args = parser.parse_args(argv)

    from torch.utils import cpp_extension

    names = [name.strip() for name in args.plugins.split(",") if name.strip()]
    for name in names:
        if name not in OPS:
            parser.error(f"--plugins: unknown op {name!r}; valid: {', '.join(OPS)}")
    if torch.version.cuda is None:
        parser.error(f"torch {torch.__version__} is a CPU build; run with a CUDA build of torch")
    if cpp_extension.CUDA_HOME is None:
        parser.error("no CUDA toolkit found; set CUDA_HOME (e.g. /usr/local/cuda-13.0)")
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch_list
    nvcc = Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc"
    nvcc_version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA_HOME {cpp_extension.CUDA_HOME}")
    print(f"nvcc: {nvcc_version.splitlines()[-1] if nvcc_version else 'not found'}")
    print(f"TORCH_CUDA_ARCH_LIST={args.arch_list}, MAX_JOBS={os.environ.get('MAX_JOBS', '(default)')}")
    print(f"GPU visible: {torch.cuda.is_available()}", flush=True)

    failures = []
    for name in names:
        print(f"\n=== Building {name}_plugin ===", flush=True)
        start = time.time()
        try:
            plugin = build_plugin(name, Path(args.build_dir))
        except Exception as err:  # Report and go on with the other plugins.
            print(f"BUILD FAILED: {name}_plugin: {type(err).__name__}: {err}", flush=True)
            failures.append(f"{name}: build failed")
            continue
        print(f"Built and imported {name}_plugin in {time.time() - start:.0f} s", flush=True)
        functions = sorted(attr for attr in dir(plugin) if not attr.startswith("_"))
        print(f"Functions: {', '.join(functions)}")
        if not check_libraries(plugin):
            failures.append(f"{name}: unresolved shared libraries")
        if not args.no_host_check:
            print("Host-loop check against the reference path:")
            failures += run_host_check(name, plugin)

    print()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"All {len(names)} plugin(s) compiled, linked, imported and passed the host-loop check.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
