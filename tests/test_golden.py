"""Golden outputs of the four tiny networks: fixed seeds -> values stored in tests/data/golden_tiny.json.

The equality tests (test_fast_paths.py, test_streaming.py, ...) compare two of our own code paths with each other, so
a change that moves both the same way (a new default, a changed filter, a reordered random draw) passes them. This
test pins the numbers themselves: each tiny network (the `TINY_KWARGS` of its file) is built from a fixed seed, with
its biases set to fixed random values, fed fixed random input, and run through the fast CPU path and through the
reference path (`fast_cpu.disabled()`). For every output it stores the shape, the mean, the mean absolute value and
48 values at evenly spaced flat indices, and checks them to 1e-5 (absolute and relative). Takes about 3 s.

When a change of numerics is intended (and explained in its commit), regenerate the file and commit it with the
change:

    OMP_NUM_THREADS=1 .venv/bin/python tests/test_golden.py --regenerate

A failure prints every value that moved, so the size of a change is visible before the file is regenerated.
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch

if __name__ == "__main__":  # Run as a script from anywhere: import the repository's packages.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib import util
from long_video_gan import discriminator_lres, discriminator_sres, generator_lres, generator_sres
from torch_utils.ops import fast_cpu

GOLDEN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_tiny.json")
NUM_VALUES = 48  # Values stored per output, at evenly spaced flat indices.
TOLERANCE = 1e-5  # Absolute and relative.

# ----------------------------------------------------------------------------
# The tiny networks and their inputs.


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _set_biases(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Add N(0, 0.1) to every bias (zero biases would leave whole code paths untested)."""
    gen = _gen(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "bias" in name.rsplit(".", 1)[-1]:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    return net.eval().requires_grad_(False)


def _lres_G() -> torch.Tensor:
    torch.manual_seed(0)
    G = _set_biases(generator_lres.VideoGenerator(**generator_lres.TINY_KWARGS), seed=100)
    return G(2, 17, generator_emb=_gen(1))  # [2, 3, 17, 36, 64]


def _sres_G() -> torch.Tensor:
    torch.manual_seed(0)
    G = _set_biases(generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS), seed=101)
    frames = 3 + 2 * G.temporal_context
    lr = torch.rand([2, 3, frames, G.lr_height, G.lr_width], generator=_gen(2)) * 2 - 1
    return G(lr, z=G.sample_latent_z(2, generator_z=_gen(3)))  # [2, 3, 3, 36, 64]


def _lres_D() -> torch.Tensor:
    torch.manual_seed(0)
    D = _set_biases(
        discriminator_lres.VideoDiscriminator(seq_length=16, max_edge=64, **discriminator_lres.TINY_KWARGS), seed=102
    )
    return D(torch.rand([4, 3, 16, 36, 64], generator=_gen(4)) * 2 - 1)  # [4, 1]


def _sres_D() -> torch.Tensor:
    torch.manual_seed(0)
    D = _set_biases(discriminator_sres.VideoDiscriminator(**discriminator_sres.TINY_KWARGS), seed=103)
    T = D.seq_length
    lr = torch.rand([4, 3, T, D.lr_height, D.lr_width], generator=_gen(5)) * 2 - 1
    hr = torch.rand([4, 3, T, D.hr_height, D.hr_width], generator=_gen(6)) * 2 - 1
    return D(lr, hr)  # [4, 1]


NETWORKS = dict(lres_G=_lres_G, sres_G=_sres_G, lres_D=_lres_D, sres_D=_sres_D)
PATHS = ("fast", "ref")

# ----------------------------------------------------------------------------


def summarize(output: torch.Tensor) -> dict:
    """Shape, mean, mean |x| and NUM_VALUES values at evenly spaced flat indices (all of them if fewer)."""
    flat = output.detach().double().flatten()
    return dict(
        shape=list(output.shape),
        mean=flat.mean().item(),
        mean_abs=flat.abs().mean().item(),
        values=[flat[i].item() for i in sample_indices(flat.numel())],
    )


def sample_indices(numel: int) -> list[int]:
    """The flat indices whose values are stored: NUM_VALUES evenly spaced ones from 0 (all of them if fewer)."""
    count = min(NUM_VALUES, numel)
    return [i * numel // count for i in range(count)]


def compute(name: str, path: str) -> dict:
    """Summary of network `name` on the CPU through `path` ('fast' or 'ref'), single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            if path == "ref":
                with fast_cpu.disabled():
                    return summarize(NETWORKS[name]())
            return summarize(NETWORKS[name]())
    finally:
        torch.set_num_threads(threads)


def differences(expected: dict, actual: dict) -> list[str]:
    """Human-readable list of what moved beyond TOLERANCE (empty when everything agrees)."""
    if expected["shape"] != actual["shape"]:
        return [f"shape {expected['shape']} -> {actual['shape']}"]
    indices = sample_indices(math.prod(expected["shape"]))
    pairs = [("mean", expected["mean"], actual["mean"]), ("mean_abs", expected["mean_abs"], actual["mean_abs"])]
    pairs += [(f"[{i}]", e, a) for i, e, a in zip(indices, expected["values"], actual["values"])]
    return [
        f"{label}: {e:.8g} -> {a:.8g} (diff {a - e:.2e})"
        for label, e, a in pairs
        if not math.isclose(a, e, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    ]


def regenerate(path: str = GOLDEN_PATH) -> None:
    note = "Golden outputs of the tiny networks; regenerate: python tests/test_golden.py --regenerate"
    outputs = {f"{name}/{p}": compute(name, p) for name in NETWORKS for p in PATHS}
    # One line per output, so that a regenerated file's diff shows which networks moved.
    lines = [f"  {json.dumps(key)}: {json.dumps(entry)}" for key, entry in outputs.items()]
    text = f'{{\n "note": {json.dumps(note)},\n "torch": {json.dumps(torch.__version__)},\n "outputs": {{\n'
    text += ",\n".join(lines) + "\n }\n}\n"
    with util.atomic_write(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden() -> dict:
    with open(GOLDEN_PATH) as f:
        return json.load(f)["outputs"]


def test_golden_file_covers_every_network_and_path(golden):
    assert sorted(golden) == sorted(f"{name}/{p}" for name in NETWORKS for p in PATHS)
    for key, entry in golden.items():
        assert len(entry["values"]) == min(NUM_VALUES, math.prod(entry["shape"])), key
        assert entry["mean_abs"] > 1e-3, f"{key}: a degenerate (all-zero) output pins nothing"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_tiny_network_matches_golden_values(golden, name, path):
    moved = differences(golden[f"{name}/{path}"], compute(name, path))
    assert not moved, f"{name} ({path} path) moved from tests/data/golden_tiny.json:\n" + "\n".join(moved[:20])


def test_differences_reports_a_small_change():
    # The comparison itself: a change of 1e-4 in one value is reported, one of 1e-7 is not.
    entry = dict(shape=[2], mean=0.5, mean_abs=0.5, values=[0.25, 0.75])
    assert differences(entry, dict(entry, values=[0.25, 0.75 + 1e-7])) == []
    moved = differences(entry, dict(entry, values=[0.25 + 1e-4, 0.75]))
    assert len(moved) == 1 and moved[0].startswith("[0]")
    assert differences(entry, dict(entry, shape=[3])) == ["shape [2] -> [3]"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(f"usage: {sys.argv[0]} --regenerate   (rewrites {GOLDEN_PATH})")
    regenerate()
