"""Reading a run folder back (`Reopening(folder).rows()`, which study.Run calls). labkit.runs has the folder's
layout."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import config as cfg
from . import files, model, records
from .runs import MISSING, POLICY_RANK, _policy_asked, _text, extra_columns, identity, parse_history

if TYPE_CHECKING:
    from .runs import RunFolder


class Reopening:
    """Checks every file of a run folder is this run's before anything is written.

    A history.csv that lacks the rows of its newest checkpoint (a crash between the two writes) is completed from
    it; a damaged history.csv or config.json, or anything that disagrees with this run, is refused untouched, naming
    the file or field and the fix."""

    def __init__(self, folder: "RunFolder"):
        self.folder = folder  # its config may change here (the checkpoint policy it keeps)
        self.path, self.config_path, self.history_path = folder.path, folder.config_path, folder.history_path
        self.log = folder.log
        self.saved_policy = None  # the checkpoint policy config.json holds, once read

    @property
    def config(self) -> cfg.StudyConfig:
        return self.folder.config

    def rows(self) -> list[dict]:
        """The rows finished so far; a folder of another run is refused untouched."""
        has_config, has_history = self.config_path.exists(), self.history_path.exists()
        if not has_config and not has_history and not self.folder.checkpoints():
            return []
        self._check_settings()
        self.check_checkpoints()  # before anything is written: a foreign checkpoint leaves the folder untouched
        rows, repair = self._rows(self._newest_checkpoint_extra())
        self._keep_policy(self.saved_policy)
        if repair:
            repair()
        extra = extra_columns(rows)
        if extra:
            self.log(f"{self.history_path} has column(s) {', '.join(map(repr, extra))} that labkit does not write: "
                     "kept as they are (rows computed from now on leave them empty)")
        return rows

    def check_checkpoints(self) -> None:
        """Check every checkpoint in the folder is this run's (its settings, its cycle); FileProblem naming the
        first foreign one and what differs. Unreadable files are left to `head_after`, which names them."""
        for cycle in self.folder.checkpoints():
            path = self.folder.checkpoint(cycle)
            extra = model.read_extra(path)
            if extra:
                self.check_checkpoint(path, extra, cycle)

    def check_checkpoint(self, path: Path, extra: dict, cycle: int | None = None) -> None:
        """FileProblem unless checkpoint `path` (its `extra`) holds the head after `cycle` of this very run."""
        problem = self._foreign(extra, cycle)
        if problem:
            raise files.FileProblem(
                f"checkpoint {path} {problem}, so it is not this run's: nothing of it is used. Fix: move it aside "
                f"(mv {path} {path}.foreign) and run again; the run then goes on from its own checkpoints (or "
                f"computes that cycle again); {self.path} is otherwise left as it is")

    def _foreign(self, extra: dict, cycle: int | None) -> str | None:
        settings, rows = extra.get("config"), extra.get("rows")
        if not isinstance(settings, dict) or not isinstance(rows, list):
            return ("holds no run settings or history rows (a trained head, a compressed head or another file "
                    "saved under a checkpoint's name?)")
        if cycle is not None and extra.get("cycle") != cycle:
            return f"holds the head after cycle {extra.get('cycle')!r}, not after cycle {cycle} (a renamed file?)"
        mine, theirs = identity(self.config), identity(self.config, settings)
        if "start_trained_with" not in settings:  # checkpoints name the start by path only
            mine.pop("start_trained_with", None)
        for k in mine:
            if theirs.get(k, MISSING) is MISSING:
                return f"records no {k} (this run has {k}={mine[k]!r})"
            if mine[k] != theirs[k]:
                return f"was written by a run with {k}={theirs[k]!r}, not {mine[k]!r}"
        got = [r.get("cycle") if isinstance(r, dict) else None for r in rows]
        want = list(range((extra.get("cycle") if isinstance(extra.get("cycle"), int) else len(rows) - 1) + 1))
        if got != want:
            return f"holds history rows of cycles {got}, not {want}"
        return None

    def _newest_checkpoint_extra(self) -> dict | None:
        """The extra data (rows, settings) of the newest readable checkpoint, or None."""
        for cycle in self.folder.checkpoints():
            extra = model.read_extra(self.folder.checkpoint(cycle))
            if isinstance(extra.get("rows"), list):
                return extra
        return None

    def _rows(self, evidence: dict | None) -> tuple[list[dict], Callable[[], None] | None]:
        """The finished rows, and what to write to complete history.csv (None when it is whole)."""
        saved = [records.typed(r) for r in evidence["rows"]] if evidence else []
        try:
            rows = parse_history(_text(self.history_path)) if self.history_path.exists() else []
        except ValueError as err:
            again = ("its rows are then read back from the newest checkpoint" if saved else
                     "its cycles are then computed anew")
            raise files.FileProblem(
                f"history {self.history_path} is damaged ({err}). Fix: move it aside (mv {self.history_path} "
                f"{self.history_path}.damaged) and run again: {again}") from None
        if len(saved) > len(rows) and [r["cycle"] for r in rows] == [r["cycle"] for r in saved[:len(rows)]]:
            missing = f"{len(rows)}-{len(saved) - 1}"
            rows = rows + saved[len(rows):]

            def restore():
                self.log(f"{self.history_path} lacked the rows of cycles {missing}, which the checkpoint of cycle "
                         f"{saved[-1]['cycle']} holds; restored them")
                self.folder._write_rows(rows)

            return rows, restore
        return rows, None

    def _check_settings(self) -> None:
        """FileProblem if config.json is unreadable; ValueError naming the first setting it lacks or differs in."""
        c = self.config
        fix = (f"give this run another name (--name) or another results folder, or repeat the settings that made "
               f"it; {self.path} is left as it is")
        try:
            saved = files.json_object(self.config_path)
        except ValueError as err:
            raise files.FileProblem(
                f"settings {self.config_path} are unreadable ({err}), so nothing shows that {self.path} holds this "
                f"run. Fix: restore that file, or move the folder aside (mv {self.path} {self.path}.damaged) and "
                "run again to compute the run anew") from None
        mine, theirs = identity(c), identity(c, saved)
        changed = [k for k in mine if mine[k] != theirs.get(k, MISSING)]
        if changed:
            k = changed[0]
            if theirs.get(k, MISSING) is MISSING:
                raise ValueError(
                    f"settings {self.config_path} have no field {k!r} (this run asks {k}={mine[k]!r}), so it cannot "
                    f"be told whether {self.path} holds this run: the file was edited or written by another program. "
                    f"Fix: add \"{k}\": <the value the run was made with> to it, or {fix}")
            raise ValueError(f"{self.path} holds a run with {k}={theirs[k]!r}, not {mine[k]!r}; {fix}")
        self.saved_policy = saved.get("checkpoints")

    def _keep_policy(self, saved) -> None:
        """Never lower the folder's checkpoint policy silently: only when asked (--checkpoints), and said."""
        now = self.config.checkpoints
        if saved not in POLICY_RANK or saved == now or POLICY_RANK[saved] < POLICY_RANK[now]:
            return
        default = cfg.StudyConfig.__dataclass_fields__["checkpoints"].default
        kept = self.folder.checkpoints()
        if now == default and not _policy_asked.get():
            self.folder.config = dataclasses.replace(self.config, checkpoints=saved)
            self.log(f"{self.path} keeps checkpoints={saved!r}, as its config.json says: every checkpoint it holds "
                     f"stays (--checkpoints {now} keeps only the newest from now on)")
        elif now == "off":
            self.log(f"{self.path}: checkpoints='off' as asked (the run kept {saved!r}): no checkpoint is written "
                     f"from now on; the {len(kept)} it holds stay")
        else:
            self.log(f"{self.path}: checkpoints={now!r} as asked (the run kept {saved!r}): each new cycle's "
                     f"checkpoint replaces those before it, so the {len(kept)} it holds go as the next cycle finishes")
