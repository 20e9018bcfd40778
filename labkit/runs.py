"""A run folder: its settings, its history (one row per finished cycle), its checkpoints, and resuming it.

    <results_dir>/<run name>/
        config.json                     the settings the run was made with
        history.csv                     one row per finished cycle (COLUMNS)
        checkpoints/cycle_NNN.pt        the head after cycle NNN, kept as the checkpoint policy says
        smallest_within_tolerance.pt    geometric runs: the smallest head within tolerance

Every file is written atomically (labkit.files). Opening a folder that holds finished cycles
resumes after the last of them, provided the settings are the same.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from . import config as cfg
from . import files, model

COLUMNS = ("cycle", "method", "layer", "removed", "widths", "mec_bits", "test_correct", "test_total",
           "test_accuracy", "rho", "parameters", "model_bytes", "train_loss", "seconds")
SMALLEST = "smallest_within_tolerance.pt"  # geometric runs keep the smallest head within tolerance here
_INT = {"cycle", "removed", "mec_bits", "test_correct", "test_total", "parameters", "model_bytes"}
_FLOAT = {"test_accuracy", "rho", "train_loss", "seconds"}


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as CSV text with a header; columns not in `columns` are left out."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_history(path: str | os.PathLike) -> list[dict]:
    """history.csv back as typed rows; a file that does not parse raises ValueError naming it."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            for k in _INT:
                r[k] = int(r[k])
            r["layer"] = int(r["layer"]) if r["layer"].isdigit() else r["layer"]
            for k in _FLOAT:
                r[k] = float(r[k])
    except Exception as err:
        raise ValueError(f"history {path} is unreadable ({type(err).__name__}: {err}); "
                         "delete its run folder to start that run over") from err
    return rows


class RunFolder:
    """The files of one run, named by its config (`config.run_dir`)."""

    def __init__(self, config: cfg.StudyConfig):
        self.config = config
        self.path = config.run_dir

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

    def resume(self, finished: Callable[[list[dict]], bool]) -> tuple[list[dict], model.VGGHead | None]:
        """Rows already finished and the head after the last of them (None when starting fresh or finished).

        `finished(rows)` says whether the rows end the run (a geometric run can stop early).
        """
        c = self.config
        if not self.config_path.exists():
            return [], None
        try:
            saved = json.loads(self.config_path.read_text())
        except Exception as err:
            raise ValueError(f"{self.config_path} is unreadable ({err}); delete {self.path} to start that run over") \
                from err
        now = cfg.config_dict(c)
        defaults = cfg.config_dict(cfg.StudyConfig())  # fields added since a run was saved count as their defaults
        changed = [k for k in now if k not in cfg.RESUME_FREE and saved.get(k, defaults[k]) != now[k]]
        if changed:
            k = changed[0]
            raise ValueError(f"{self.path} holds a run with {k}={saved.get(k)!r}, not {now[k]!r}; "
                             "give this run another name, or delete that folder to start over")
        rows = read_history(self.history_path) if self.history_path.exists() else []
        if not rows:
            return [], None
        last = rows[-1]["cycle"]
        if last + 1 >= c.cycles or finished(rows):
            return rows[:c.cycles], None
        ckpt = self.checkpoint(last)
        if not ckpt.exists():
            raise ValueError(f"{self.path} finished {last + 1} cycles but kept no checkpoint of the last one "
                             f"(checkpoints='none'), so it cannot run more; delete {self.path} to redo it")
        head, _ = model.load_head(ckpt)
        return rows, head

    def start(self) -> None:
        """Make the folder and write config.json."""
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        files.write_atomic(self.config_path, json.dumps(cfg.config_dict(self.config), indent=2) + "\n")

    def write_history(self, rows: Sequence[dict]) -> None:
        files.write_atomic(self.history_path, rows_to_csv(rows))

    def save_checkpoint(self, head: model.VGGHead, cycle: int) -> int:
        """Write the head after `cycle`; returns the file's size in bytes."""
        return model.save_head(head, self.checkpoint(cycle), extra={"cycle": cycle})

    def drop_checkpoint(self, cycle: int) -> None:
        self.checkpoint(cycle).unlink(missing_ok=True)

    def keep_smallest(self, cycle: int) -> None:
        """Keep a link (or copy) of a cycle's checkpoint as the run's smallest head within tolerance."""
        ckpt, target = self.checkpoint(cycle), self.smallest_path

        def link(tmp: Path) -> None:
            try:
                os.link(ckpt, tmp)
            except OSError:
                shutil.copyfile(ckpt, tmp)

        files.write_atomic(target, link)
