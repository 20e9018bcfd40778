"""A run folder: config.json (settings), history.csv (a row per finished cycle, COLUMNS), checkpoints/cycle_NNN.pt
(the head after a cycle, as the checkpoint policy keeps it), smallest_within_tolerance.pt (a knee probe's head) and
.lock. A run is known by its settings, not its path (a moved folder resumes). Files are written atomically; finished
rows are never deleted; a damaged file is refused untouched, named with its fix (labkit.reopen)."""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Sequence

from . import config as cfg
from . import files, model, records

COLUMNS = ("cycle", "method", "layer", "removed", "widths", "mec_bits", "mec_effective_bits", "epochs_total",
           "val_correct", "val_total", "val_accuracy", "test_correct", "test_total", "test_accuracy", "rho",
           "rho_effective", "parameters", "model_bytes", "train_loss", "seconds", "val_right", "test_right")
# written only by runs that recover with early stopping (recover_patience): epochs kept, and run, in the cycle
RECOVERY_COLUMNS = ("cycle_epochs", "epochs_run")
# written only by cycles pruned with a student's functions (notebook 03's exercises, prune.using): whose they were
RAN_ON = "ran_on"
SMALLEST = "smallest_within_tolerance.pt"  # a knee probe within tolerance keeps its head here
# fields a run folder may be opened with, changed: they do not shape its numbers (config.FIELD_ROLES says why)
IDENTITY_FREE = cfg.fields_for("resume", "place", "start file")
POLICY_RANK = {"off": 0, "last": 1, "all": 2}  # checkpoints kept, from fewest to most


class _Missing:
    """A field a saved config.json (or a checkpoint's settings) does not hold."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()
_policy_asked = contextvars.ContextVar("labkit_checkpoint_policy_asked", default=False)


@contextlib.contextmanager
def checkpoint_policy_asked():
    """Within this block a run's `checkpoints` is what the user asked for, even where that keeps fewer checkpoints
    than the folder's policy (`last` on an `all` run); outside it a folder's `all` is never lowered to the default
    `last`."""
    token = _policy_asked.set(True)
    try:
        yield
    finally:
        _policy_asked.reset(token)

Log = Callable[[str], None]


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] = COLUMNS, keep_extra: bool = True) -> str:
    """Rows as CSV text with a header: `columns`, then (keep_extra) any other columns the rows hold (records)."""
    return records.write_text(rows, columns, keep_extra)


def parse_history(text: str) -> list[dict]:
    """Typed rows (labkit.records) from history.csv text, extra columns kept; ValueError saying what is wrong."""
    rows = records.parse(text, COLUMNS)
    if [r["cycle"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"its cycles run {[r['cycle'] for r in rows]}, not 0, 1, 2, ...")
    return rows


def extra_columns(rows: Sequence[dict]) -> list[str]:
    """The columns of `rows` that labkit does not write (kept as they are when history.csv is written again)."""
    return list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS and k not in (*RECOVERY_COLUMNS, RAN_ON)))


def read_history(path: str | os.PathLike) -> list[dict]:
    """history.csv back as typed rows; a damaged file raises FileProblem naming it."""
    path = Path(path)
    try:
        return parse_history(_text(path))
    except ValueError as err:
        raise files.FileProblem(f"history {path} is damaged ({err})") from None


def _text(path: Path) -> str:
    try:
        return files.contents(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("it is not text") from None


def start_identity(start: str | None):
    """What a start file was trained with (the settings train_start records), or its file name for other files."""
    if not start:
        return None
    settings = model.read_extra(start).get("config")
    return settings if isinstance(settings, dict) else Path(start).name


def identity(c: cfg.StudyConfig, saved: dict | None = None) -> dict:
    """The settings that shape a run's numbers: config.json less the free fields (and, for controls, the pruning
    ones), the start by what it was trained with (its file name for other files). With `saved` (a config.json),
    that run's view: a field it lacks reads as MISSING, never as a default (an older labkit's folder is a different
    run)."""
    now = cfg.config_dict(c)
    if saved is None:
        values = now
        values["start_trained_with"] = start_identity(c.start)
    else:
        values = {k: saved.get(k, MISSING) for k in now}
        trained_with = saved.get("start_trained_with", Path(saved["start"]).name if saved.get("start") else None)
        values["start_trained_with"] = trained_with
    ignored = set(IDENTITY_FREE)
    if values["method"] in cfg.CONTROLS:
        ignored |= set(cfg.PRUNING_FIELDS)
    return {k: v for k, v in values.items() if k not in ignored}


# ---------------------------------------------------------------- the lock: one process a folder

class RunBusy(RuntimeError):
    """Another process holds the folder's lock."""


class Lock:
    """An exclusive lock on folder/.lock (`filelock`) held until `close()`, its holder (pid, host, start time) written
    to folder/.lock-holder for others' messages. A lock whose holder died (even by kill -9) is taken over."""

    def __init__(self, folder: Path, what: str, fix: str):
        import warnings

        with warnings.catch_warnings():  # without fcntl (not Windows) filelock warns that it falls back
            warnings.simplefilter("ignore")
            from filelock import FileLock, Timeout
        self.holder_path = folder / ".lock-holder"
        self._lock = FileLock(str(folder / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunBusy(f"{folder} is in use by {self.holder()}: {what}. {fix}") from None
        except OSError as err:
            raise files.write_failure(folder / ".lock", err) from None
        text = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        try:
            files.write_atomic(self.holder_path, text)
        except files.WriteFailed:
            self._lock.release()
            raise

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("pid 123 on host since ..."), else "another process"."""
        try:
            return self.holder_path.read_text().strip() or "another process"
        except (OSError, UnicodeDecodeError):
            return "another process"

    def close(self) -> None:
        if self._lock.is_locked:
            try:
                self.holder_path.unlink()
            except OSError:
                pass
            self._lock.release()


def take_lock(folder: Path, what: str = "two processes must not run one study at once",
              fix: str = "Wait for it to finish (or stop it), or give this run another name (--name) or "
                         "results folder") -> Lock:
    """Lock `folder` (see Lock); RunBusy (naming the holder, `what` and `fix`) if another process holds it."""
    files.writable_folder(folder, "the run folder", "choose a results folder you can write to "
                                                           "(--results on the command line, or LABKIT_RESULTS)")
    return Lock(folder, what, fix)


class RunFolder:
    """The files of one run (`config.run_dir`); a context manager holds its lock (and removes dead temporaries on
    entry). Reading the rows back (checked to be this run's) is labkit.reopen's `Reopening(folder).rows()`."""

    def __init__(self, config: cfg.StudyConfig, log: Log | None = None):
        self.config = config
        self.path = Path(config.run_dir).expanduser().resolve()
        self.log = log or (lambda s: None)
        self._lock = None

    # ------------------------------------------------------------ paths

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def smallest_path(self) -> Path:
        return self.path / SMALLEST

    def checkpoint(self, cycle: int) -> Path:
        return self.path / "checkpoints" / f"cycle_{cycle:03d}.pt"

    def checkpoints(self) -> list[int]:
        """Cycles with a checkpoint file, newest first."""
        folder = self.path / "checkpoints"
        found = [p.stem[len("cycle_"):] for p in folder.glob("cycle_*.pt")] if folder.is_dir() else []
        return sorted((int(n) for n in found if n.isdigit()), reverse=True)

    # ------------------------------------------------------------ the lock

    def __enter__(self):
        self._lock = take_lock(self.path)
        removed = [r for place in (self.path, self.path / "checkpoints", self.path / "compressed")
                   for r in files.remove_dead_temporaries(place)]
        if removed:
            self.log(files.said_removed(removed))
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    # ------------------------------------------------------------ reading back (labkit.reopen checks the rows)

    def head_after(self, rows: Sequence[dict]) -> tuple[model.VGGHead | None, int, dict | None]:
        """Returns (head, n, optimizer) from the newest checkpoint at or before the last finished cycle: n rows it
        follows (the rest are computed again), optimizer its AdamState.payload() or None. With none: (None, 0, None)
        under checkpoints 'off', else FileProblem."""
        last = rows[-1]["cycle"]
        for cycle in (n for n in self.checkpoints() if n <= last):
            head, extra = model.load_head(self.checkpoint(cycle), fix=(
                f"move that file aside and run again: the run then goes on from an earlier checkpoint or, "
                f"with --checkpoints off, from cycle 0; the {len(rows)} finished rows in history.csv stay"))
            if cycle < last:
                self.log(f"{self.path}: the head after cycle {last} is missing; going on from the checkpoint of "
                         f"cycle {cycle} and computing cycles {cycle + 1}-{last} again")
            return head, cycle + 1, extra.get("optimizer")
        if self.config.checkpoints == "off":
            return None, 0, None
        raise files.FileProblem(
            f"{self.checkpoint(last)}, the head after cycle {last}, is missing, and no earlier checkpoint is kept "
            f"(checkpoints={self.config.checkpoints!r}), so {self.path} cannot go on from its {len(rows)} finished "
            f"cycles (they stay in history.csv). Fix: restore that file, or run again with --checkpoints off to "
            f"compute the run from cycle 0 again (its rows are replaced as they are recomputed)")

    # ------------------------------------------------------------ writing

    def begin(self, backbone: str | None = None) -> None:
        """Make the folder and write config.json: the settings, what the start file was trained with and (once
        known) which backbone weights the features came from ("imagenet" or "random-seed0"). Call it after
        `Reopening(folder).rows()` has checked the folder and settled the checkpoint policy."""
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise files.write_failure(self.path / "checkpoints", err) from None
        settings = {**cfg.config_dict(self.config), "start_trained_with": start_identity(self.config.start)}
        if backbone:
            settings["backbone"] = backbone
        elif self.config_path.exists():
            try:
                settings["backbone"] = files.json_object(self.config_path).get("backbone")
            except ValueError:
                pass
        files.write_atomic(self.config_path, json.dumps(settings, indent=2) + "\n")

    def record(self, rows: Sequence[dict], head: model.VGGHead, cycle: int | None = None,
               optimizer: dict | None = None) -> None:
        """Write finished `cycle` (default: the last row's): its checkpoint where the policy keeps one, then the
        history `rows`, then (under 'last') deletes older checkpoints; in this order a crash between steps loses
        nothing."""
        cycle = rows[-1]["cycle"] if cycle is None else cycle
        if self.config.checkpoints != "off":
            model.save_head(head, self.checkpoint(cycle), extra={
                "cycle": cycle, "rows": [records.plain(r) for r in rows[:cycle + 1]],
                "config": cfg.config_dict(self.config),
                "optimizer": optimizer})
        self._write_rows(rows)
        if self.config.checkpoints == "last":
            for old in self.checkpoints():
                if old < cycle:
                    self.checkpoint(old).unlink(missing_ok=True)

    def _write_rows(self, rows: Sequence[dict]) -> None:
        files.write_atomic(self.history_path, rows_to_csv(rows))

    def keep_smallest(self, head: model.VGGHead, row: dict) -> None:
        """Save `head` as the run's smallest head within tolerance (whatever the checkpoint policy), with the run's
        settings for `check_smallest`."""
        model.save_head(head, self.smallest_path, extra={
            "cycle": row["cycle"], "row": records.plain(row), "config": cfg.config_dict(self.config),
            "start_trained_with": start_identity(self.config.start)})

    def check_smallest(self, cycle: int) -> None:
        """FileProblem unless smallest_within_tolerance.pt holds this run's head after `cycle`, so a file copied
        in from another run never reaches a compression table."""
        path, fix = self.smallest_path, f"move {self.smallest_path} aside and run the same command again"
        extra = model.read_extra(path)
        settings = extra.get("config")
        if not isinstance(settings, dict) or extra.get("cycle") != cycle:
            raise files.FileProblem(f"{path} does not hold this run's head after cycle {cycle} (it says cycle "
                                    f"{extra.get('cycle')!r}); {fix}")
        mine, theirs = identity(self.config), identity(self.config, {**settings, **{
            "start_trained_with": extra.get("start_trained_with")}})
        changed = [k for k in mine if mine[k] != theirs.get(k)]
        if changed:
            raise files.FileProblem(f"{path} was written by a run with {changed[0]}={theirs.get(changed[0])!r}, not "
                                    f"{mine[changed[0]]!r}: it is not this run's smallest head; {fix}")
