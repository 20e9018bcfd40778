"""The reporter: progress bars and messages, set once by whoever drives a run, read by the layers inside.

The inner layers (train, features, prune, capacity, finegrained) take no `progress` or `log` parameter: they
ask this module for a bar (`bar`) and say what a person should read (`say`). The driver (the command line, a
notebook's Session, a benchmark, a test) chooses once, with `reporting(bars=..., log=...)`; study's entry
points (run_study, train_start, prepare_features, ...) accept `progress=` and `log=` for the
same choice and open that block themselves. Outside any block bars are on and messages are printed.

No bar is drawn where nobody watches it: a bar left in an executed notebook (papermill) or a CI log freezes at its
first frame, so `python -m labkit lab` sets LABKIT_PROGRESS=0 for the kernels it runs and shows its own one
line per notebook instead.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

Log = Callable[[str], None]


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()  # "as the block around says" (the default of every entry point's progress= and log=)


@dataclass(frozen=True)
class Reporter:
    """Whether bars are drawn and where messages go (None: nowhere)."""

    bars: bool = True
    log: Log | None = print


_current: contextvars.ContextVar[Reporter] = contextvars.ContextVar("labkit_reporter", default=Reporter())


def current() -> Reporter:
    """The reporter in force here."""
    return _current.get()


@contextlib.contextmanager
def reporting(bars=KEEP, log=KEEP):
    """Within the block: bars drawn or not (`bars`), messages sent to `log` (None: silent); KEEP (or None for
    bars) leaves that half as the block around has it."""
    now = current()
    token = _current.set(Reporter(now.bars if bars is KEEP or bars is None else bool(bars),
                                  now.log if log is KEEP else log))
    try:
        yield current()
    finally:
        _current.reset(token)


def wanted() -> bool:
    """False when LABKIT_PROGRESS=0 (set for notebooks run by papermill)."""
    return os.environ.get("LABKIT_PROGRESS", "1") != "0"


def bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar (a widget in Jupyter, text in a terminal) that disappears when done; drawn only where the
    reporter draws bars, LABKIT_PROGRESS is not 0 and `enabled` (a caller's own condition) holds."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=not (enabled and current().bars and wanted()))


def say(text: str) -> None:
    """Send `text` to the reporter's log."""
    log = current().log
    if log is not None:
        log(text)


def entry(fn):
    """For an entry point (study.run_study, ...): its keyword arguments `progress=` (bars on or off) and `log=`
    (where messages go, None: silent) open `reporting` for the call; left out, they keep the block around."""
    @functools.wraps(fn)
    def reported(*args, progress=KEEP, log=KEEP, **kwargs):
        with reporting(progress, log):
            return fn(*args, **kwargs)

    reported.__doc__ = ((fn.__doc__ or "")
                        + "\n\n    progress=, log=: bars and messages for this call (labkit.progress).")
    return reported
