"""Readers of the reference data under tests/data/ (see tests/data/README.md).

Example (in a test)::

    from tests.reference_data import read_state_dict_table
    assert state_dict_layout(G) == read_state_dict_table("lres_G.tsv")
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent / "data"

# ----------------------------------------------------------------------------


def read_state_dict_table(name: str) -> list[tuple[str, str, str]]:
    """The original release's state dict listing ``tests/data/state_dicts/<name>`` as (name, shape, dtype) rows,
    e.g. ``("mapping.fc0.weight", "(512, 512)", "torch.float32")``. A missing file is an error, never a skip."""
    path = DATA_DIR / "state_dicts" / name
    rows = [tuple(line.split("\t")) for line in path.read_text().splitlines() if line.strip()]
    bad = [row for row in rows if len(row) != 3]
    assert not bad, f"{path}: expected 3 tab-separated columns (name, shape, dtype), got {bad[0]!r}"
    return rows


def state_dict_layout(module: torch.nn.Module) -> list[tuple[str, str, str]]:
    """(name, shape, dtype) rows of ``module.state_dict()`` in the same text form as the reference tables."""
    return [(k, str(tuple(v.shape)), str(v.dtype)) for k, v in module.state_dict().items()]
