"""A run folder: its lock, its settings, its history (one row per finished cycle), its checkpoints, resuming it.

    <run folder>/
        config.json                     the settings the run was made with
        history.csv                     one row per finished cycle (COLUMNS)
        checkpoints/cycle_NNN.pt        the head after cycle NNN, as the checkpoint policy keeps it,
                                        with the history up to that cycle and the settings inside
        smallest_within_tolerance.pt    geometric runs: the smallest head within tolerance
        .lock                           held by the process running the study (pid and host inside)

A run is known by its settings, not by its path: a folder reached by another spelling, moved or
renamed resumes, as long as the settings that shape its numbers are the same. Every file is written
atomically; every file read back is checked, and what can be rebuilt from another file (a history
missing rows that a checkpoint holds, settings that a checkpoint or the history confirm) is rebuilt,
saying so, with the damaged file kept beside it. Nothing finished is ever deleted.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Sequence

from . import config as cfg
from . import files, model

COLUMNS = ("cycle", "method", "layer", "removed", "widths", "mec_bits", "epochs_total", "val_correct", "val_total",
           "val_accuracy", "test_correct", "test_total", "test_accuracy", "rho", "parameters", "model_bytes",
           "train_loss", "seconds")
SMALLEST = "smallest_within_tolerance.pt"  # geometric runs keep the smallest head within tolerance here
_INT = ("cycle", "removed", "mec_bits", "epochs_total", "val_correct", "val_total", "test_correct", "test_total",
        "parameters", "model_bytes")
_FLOAT = ("val_accuracy", "test_accuracy", "rho", "train_loss", "seconds")
# fields a run folder may be opened with, changed: they do not shape its numbers (start is compared by
# what the start file was trained with, not by its path)
IDENTITY_FREE = (*cfg.RESUME_FREE, "results_dir", "name", "start")
# fields older labkit versions did not write, with the value they meant
_LEGACY = {"val_limit": None}

Log = Callable[[str], None]


class RunBusy(RuntimeError):
    """Another process holds the run folder's lock."""


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as CSV text with a header; columns not in `columns` are left out."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def parse_history(text: str) -> list[dict]:
    """Typed rows from history.csv text; ValueError saying what is wrong (missing column, bad number, ...)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"no column {missing[0]!r}" if reader.fieldnames else "no header line")
    rows = []
    for n, r in enumerate(reader, start=2):
        if None in r or any(r[c] is None for c in COLUMNS):
            raise ValueError(f"line {n} is cut short")
        try:
            for k in _INT:
                r[k] = int(r[k])
            for k in _FLOAT:
                r[k] = float(r[k])
        except ValueError as err:
            raise ValueError(f"line {n}: {err}") from None
        r["layer"] = int(r["layer"]) if r["layer"].isdigit() else r["layer"]
        rows.append(r)
    if [r["cycle"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"its cycles run {[r['cycle'] for r in rows]}, not 0, 1, 2, ...")
    return rows


def read_history(path: str | os.PathLike) -> list[dict]:
    """history.csv back as typed rows; a damaged file raises FileProblem naming it."""
    path = Path(path)
    try:
        return parse_history(_text(path))
    except ValueError as err:
        raise files.FileProblem(f"history {path} is damaged ({err})") from None


def _text(path: Path) -> str:
    try:
        return files.contents(path).decode()
    except UnicodeDecodeError:
        raise ValueError("it is not text") from None


def start_identity(start: str | None):
    """What a start file was trained with (the settings train_start records), or its file name for other files."""
    if not start:
        return None
    return model.read_extra(start).get("config") or Path(start).name


def identity(c: cfg.StudyConfig, saved: dict | None = None) -> dict:
    """The settings that shape a run's numbers (config.json without the free fields, the start by content).

    With `saved` (a config.json's contents), the same view of that run, fields it lacks read as their
    legacy or default values. Controls ("none", "scratch") do not prune, so pruning fields do not count.
    """
    now = cfg.config_dict(c)
    if saved is None:
        values = now
        values["start_trained_with"] = start_identity(c.start)
    else:
        defaults = cfg.config_dict(cfg.StudyConfig())
        values = {k: saved.get(k, _LEGACY.get(k, defaults[k])) for k in now}
        values["start_trained_with"] = saved.get("start_trained_with", Path(saved["start"]).name
                                                 if saved.get("start") else None)
    ignored = set(IDENTITY_FREE)
    if values["method"] in cfg.CONTROLS:
        ignored |= set(cfg.PRUNING_FIELDS)
    return {k: v for k, v in values.items() if k not in ignored}


class RunFolder:
    """The files of one run (`config.run_dir`); use as a context manager to hold its lock.

    open() returns the finished rows after checking the folder holds this run; record() writes a
    finished cycle; head_after() loads the head to go on from.
    """

    def __init__(self, config: cfg.StudyConfig, log: Log | None = None, write: bool = True):
        self.config = config
        self.path = Path(config.run_dir).expanduser().resolve()
        self.log = log or (lambda s: None)
        self.write = write  # False on the ranks of a torchrun job that are not rank 0
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
        if self.write:
            self._lock = _take_lock(self.path)
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    # ------------------------------------------------------------ reading back

    def open(self) -> list[dict]:
        """The rows finished so far, after checking this folder holds this run (repairing what can be).

        Nothing is written before the settings are checked: a folder of another run is refused untouched.
        """
        has_config, has_history = self.config_path.exists(), self.history_path.exists()
        if not has_config and not has_history and not self.checkpoints():
            return []
        evidence = self._newest_checkpoint_extra()
        rows, repair = self._rows(evidence)
        self._check_settings(rows, evidence)
        if repair:
            repair()
        return rows

    def _newest_checkpoint_extra(self) -> dict | None:
        """The extra data (rows, settings) of the newest readable checkpoint, or None."""
        for cycle in self.checkpoints():
            extra = model.read_extra(self.checkpoint(cycle))
            if isinstance(extra.get("rows"), list):
                return extra
        return None

    def _rows(self, evidence: dict | None) -> tuple[list[dict], Callable[[], None] | None]:
        """The finished rows, and what to write to repair history.csv (None when it is whole)."""
        saved = [dict(r) for r in evidence["rows"]] if evidence else []
        try:
            rows = parse_history(_text(self.history_path)) if self.history_path.exists() else []
        except ValueError as err:
            problem = str(err)
            if not saved:
                raise files.FileProblem(
                    f"history {self.history_path} is damaged ({problem}), and no checkpoint in {self.path} holds its "
                    f"rows (checkpoints={self.config.checkpoints!r}), so its finished cycles cannot be read back. "
                    f"Fix: move it aside (mv {self.history_path} {self.history_path}.damaged) and run again to "
                    "compute those cycles anew") from None

            def rebuild():
                self._keep_damaged(self.history_path)
                self.log(f"{self.history_path} was damaged ({problem}); rebuilt its {len(saved)} rows from the "
                         f"checkpoint of cycle {saved[-1]['cycle']} (the damaged file is kept as history.csv.damaged)")
                self._write_rows(saved)

            return saved, rebuild
        if len(saved) > len(rows) and [r["cycle"] for r in rows] == [r["cycle"] for r in saved[:len(rows)]]:
            missing = f"{len(rows)}-{len(saved) - 1}"
            rows = rows + saved[len(rows):]

            def restore():
                self.log(f"{self.history_path} lacked the rows of cycles {missing}, which the checkpoint of cycle "
                         f"{saved[-1]['cycle']} holds; restored them")
                self._write_rows(rows)

            return rows, restore
        return rows, None

    def _check_settings(self, rows: list[dict], evidence: dict | None) -> None:
        c = self.config
        fix = (f"give this run another name (--name) or another results folder, or repeat the settings that made "
               f"it; {self.path} is left as it is")
        try:
            saved = files.json_object(self.config_path)
        except ValueError as err:
            witness = evidence.get("config") if evidence else None
            if isinstance(witness, dict):
                mine, theirs = identity(c), identity(c, witness)
                changed = [k for k in mine if mine[k] != theirs.get(k)]
                if changed:
                    k = changed[0]
                    raise files.FileProblem(
                        f"settings {self.config_path} are unreadable ({err}), and the newest checkpoint in "
                        f"{self.path} says the run was made with {k}={theirs.get(k)!r}, not {mine[k]!r}; {fix}"
                    ) from None
                how = "the settings kept in its newest checkpoint"
            elif rows and _rows_agree(c, rows):
                how = (f"history.csv's {len(rows)} rows, as far as rows can tell (method, layer, widths, image "
                       "counts; no checkpoint is kept to check the rest)")
            else:
                raise files.FileProblem(
                    f"settings {self.config_path} are unreadable ({err}), and nothing in {self.path} shows "
                    f"that this run was made with these settings; {fix}") from None
            if self.config_path.exists():
                self._keep_damaged(self.config_path)
            self.log(f"{self.config_path} was unreadable ({err}); these settings agree with {how}, "
                     "so it is written again from them")
            self.begin()
            return
        mine, theirs = identity(c), identity(c, saved)
        changed = [k for k in mine if mine[k] != theirs.get(k)]
        if changed:
            k = changed[0]
            raise ValueError(f"{self.path} holds a run with {k}={theirs.get(k)!r}, not {mine[k]!r}; {fix}")

    def _keep_damaged(self, path: Path) -> None:
        if self.write:
            os.replace(path, path.with_name(path.name + ".damaged"))

    def head_after(self, rows: Sequence[dict]) -> tuple[model.VGGHead | None, int]:
        """The head to go on from and the number of rows it follows (the rest are computed again).

        The newest checkpoint at or before the last finished cycle is used; with none, (None, 0) under
        policy 'none' (the run computes its cycles again when it must go on), and a message under a
        policy that should have kept one.
        """
        last = rows[-1]["cycle"]
        for cycle in (n for n in self.checkpoints() if n <= last):
            head, _ = model.load_head(self.checkpoint(cycle), fix=(
                f"move that file aside and run again: the run then goes on from an earlier checkpoint or, "
                f"with --checkpoints none, from cycle 0; the {len(rows)} finished rows in history.csv stay"))
            if cycle < last:
                self.log(f"{self.path}: the head after cycle {last} is missing; going on from the checkpoint of "
                         f"cycle {cycle} and computing cycles {cycle + 1}-{last} again")
            return head, cycle + 1
        if self.config.checkpoints == "none":
            return None, 0
        raise files.FileProblem(
            f"{self.checkpoint(last)}, the head after cycle {last}, is missing, and no earlier checkpoint is kept "
            f"(checkpoints={self.config.checkpoints!r}), so {self.path} cannot go on from its {len(rows)} finished "
            f"cycles (they stay in history.csv). Fix: restore that file, or run again with --checkpoints none to "
            f"compute the run from cycle 0 again (its rows are replaced as they are recomputed)")

    # ------------------------------------------------------------ writing

    def begin(self, backbone: str | None = None) -> None:
        """Make the folder and write config.json: the settings, what the start file was trained with, and
        (once known) which backbone weights the features came from ("imagenet" or "random-seed0")."""
        if not self.write:
            return
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        settings = {**cfg.config_dict(self.config), "start_trained_with": start_identity(self.config.start)}
        if backbone:
            settings["backbone"] = backbone
        elif self.config_path.exists():
            try:
                settings["backbone"] = files.json_object(self.config_path).get("backbone")
            except ValueError:
                pass
        files.write_atomic(self.config_path, json.dumps(settings, indent=2) + "\n")

    def record(self, rows: Sequence[dict], head: model.VGGHead, cycle: int | None = None) -> None:
        """Write finished cycle `cycle` (default: the last row's): its checkpoint where the policy keeps one,
        then the history `rows`, then drop the previous checkpoint under 'last'. A crash between the steps
        loses nothing (see `open`)."""
        if not self.write:
            return
        cycle = rows[-1]["cycle"] if cycle is None else cycle
        if self.config.checkpoints != "none":
            model.save_head(head, self.checkpoint(cycle), extra={
                "cycle": cycle, "rows": [dict(r) for r in rows[:cycle + 1]], "config": cfg.config_dict(self.config)})
        self._write_rows(rows)
        if self.config.checkpoints == "last":
            for old in self.checkpoints():
                if old < cycle:
                    self.checkpoint(old).unlink(missing_ok=True)

    def _write_rows(self, rows: Sequence[dict]) -> None:
        if self.write:
            files.write_atomic(self.history_path, rows_to_csv(rows))

    def keep_smallest(self, head: model.VGGHead, row: dict, same_as: str | None = None) -> None:
        """Keep `head` as the run's smallest head within tolerance (whatever the checkpoint policy).

        `same_as`: a file that already holds this very head (the trained start at cycle 0): linked
        (or copied) instead of written again.
        """
        if not self.write:
            return
        if same_as:
            def link(tmp: Path) -> None:
                try:
                    os.link(same_as, tmp)
                except OSError:
                    shutil.copyfile(same_as, tmp)

            files.write_atomic(self.smallest_path, link)
        else:
            model.save_head(head, self.smallest_path, extra={"cycle": row["cycle"], "row": dict(row)})


def _rows_agree(c: cfg.StudyConfig, rows: Sequence[dict]) -> bool:
    """Whether history rows could have come from settings `c` (method, layer, first widths, image counts)."""
    first = rows[0]
    widths = [int(w) for w in str(first["widths"]).split("-")]
    return (all(r["method"] == c.method and str(r["layer"]) == str(c.layer) for r in rows)
            and widths[1:-1] == list(c.head) and first["val_total"] == (c.val_limit or first["val_total"])
            and first["test_total"] == (c.test_limit or 10_000))


def _take_lock(folder: Path):
    """An exclusive lock on folder/.lock, held until the returned file is closed; RunBusy if another holds it.

    The operating system drops the lock when its holder dies (even by kill -9), so a lock left by a
    dead process is simply taken over. The holder's pid, host and start time are written inside.
    """
    files.writable_folder(folder, "the run folder", "choose a results folder you can write to "
                                                     "(--results on the command line, or LABKIT_RESULTS)")
    path = folder / ".lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunBusy(f"{folder} is in use by {holder}: two processes must not run one study at once. Wait for "
                      f"it to finish (or stop it), or give this run another name (--name) or results folder")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle

