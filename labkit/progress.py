"""The reporter: progress bars and messages, chosen once by whoever drives a run (`reporting`, or an entry point's
`progress=` and `log=`) and read by the inner layers (`bar`, `say`); outside any block bars are on and messages
printed. `python -m labkit lab` sets LABKIT_PROGRESS=0 for the notebooks it runs: a bar left in an executed notebook
or a CI log freezes at its first frame."""
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
    """A tqdm bar that disappears when done, drawn only where the reporter draws bars, LABKIT_PROGRESS is not 0
    and `enabled` holds."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=not (enabled and current().bars and wanted()))


def say(text: str) -> None:
    """Send `text` to the reporter's log."""
    log = current().log
    if log is not None:
        log(text)


def entry(fn):
    """Decorate an entry point: its keywords `progress=` (bars) and `log=` (None: silent) open `reporting` for the
    call; left out, they keep the block around."""
    @functools.wraps(fn)
    def reported(*args, progress=KEEP, log=KEEP, **kwargs):
        with reporting(progress, log):
            return fn(*args, **kwargs)

    reported.__doc__ = ((fn.__doc__ or "")
                        + "\n\n    progress=, log=: bars and messages for this call (labkit.progress).")
    return reported
