"""Progress bars: live in a terminal or a notebook, silent where nobody watches them.

A bar left in an executed notebook (papermill) or a CI log freezes at its first frame, so
`python -m labkit lab` sets LABKIT_PROGRESS=0 for the kernels it runs and shows its own
one line per notebook instead.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def wanted() -> bool:
    """False when LABKIT_PROGRESS=0 (set for notebooks run by papermill)."""
    return os.environ.get("LABKIT_PROGRESS", "1") != "0"


def bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar (a widget in Jupyter, text in a terminal) that disappears when done."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and wanted()), leave=False)
