"""The study's cycle: prune (after cycle 0) -> train -> validate + test -> MEC, rho -> a row (files: labkit.runs).

Controls: "none" (the same start and epochs, nothing removed: the equal-budget control), "scratch" (a fresh head of
the pruned widths trained as many epochs in all). Decisions read validation accuracy only (the knee: labkit.knee)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from . import capacity, features, model, prune, reopen, runs, train
from . import progress as reporter
from . import device
from .device import derive_seed
from .config import CLASSES, CONTROLS, StudyConfig, Widths, config_dict, fields_for, prune_plan
from .runs import RunFolder

# ---------------------------------------------------------------- data and heads

class Splits(NamedTuple):
    """The three FeatureSets of a config: train, val (decisions), test (reported)."""

    train: features.FeatureSet
    val: features.FeatureSet
    test: features.FeatureSet


@reporter.entry
def prepare_features(c: StudyConfig) -> Splits:
    """(train, val, test) FeatureSets for the config: the backbone runs only where the cache has nothing."""
    return Splits(*(split_features(c, split) for split in ("train", "val", "test")))


def features_when_needed(c: StudyConfig) -> Callable[[], Splits]:
    """A function that prepares the config's features the first time it is called and returns them after."""
    held: list[Splits] = []

    def load() -> Splits:
        if not held:
            held.append(prepare_features(c))
        return held[0]

    return load


def split_features(c: StudyConfig, split: str):
    """The FeatureSet of one split ("train", "val", "test") for the config (read from the cache, or computed once)."""
    return features.load_features(split, c.subsets, image_size=c.image_size, weights=c.weights,
                                  device=c.device)


def class_counts(c: StudyConfig) -> dict[str, list[int]]:
    """Images per class in the training, validation and test subsets of the config."""
    names = {"training": "train", "validation": "val", "test": "test"}
    return {name: torch.bincount(c.subsets.load(split)[1], minlength=CLASSES).tolist() for name, split in names.items()}


def new_head(c: StudyConfig, train_set) -> model.VGGHead:
    """A fresh head for the config, initialized from c.seed, standardizing with `train_set` statistics."""
    head = model.build_head(c.hidden, CLASSES, model.map_size_for(c.image_size), c.dropout, seed=c.seed)
    head.norm.set_stats(*train_set.stats())
    return head


# the fields a trained start depends on (config.FIELD_ROLES: not the pruning ones, not the epochs of later cycles)
START_FIELDS = fields_for("start")


def start_phases(c: StudyConfig) -> list[dict]:
    """Cycle 0's schedule for a fresh head, one dict of `train.fit` keyword arguments per phase (its own shuffle seed;
    Adam's moments go on across phases): c.lr_epochs at c.lr, then c.lr x c.lr_drop until validation accuracy has not
    risen for c.patience epochs (c.start_epochs in all at most). "scratch" follows the same rates for exactly c.epochs
    in all, without early stopping."""
    scratch = c.method == "scratch"
    total = c.epochs if scratch else c.start_epochs
    warm = min(c.lr_epochs, total)
    phases = [{"epochs": warm, "lr": c.lr, "seed": derive_seed(c.seed)}]
    if total > warm:
        phases.append({"epochs": total - warm, "lr": c.lr * c.lr_drop, "seed": derive_seed(c.seed, 500),
                       "patience": None if scratch else c.patience})
    return phases


def joined(c: StudyConfig, phases: list[list[dict]]) -> list[dict]:
    """`start_phases`' fit histories as one, epochs numbered from the first; the kept epoch marked "best"
    (not for "scratch" or a single phase)."""
    history, done = [], 0
    for more in phases:
        history += [{**e, "epoch": e["epoch"] + done} for e in more]
        done += len(more)
    if len(phases) > 1 and c.method != "scratch":
        kept = len(phases[0]) + train.best_epoch(phases[1])
        for e in history:
            e["best"] = e["epoch"] == kept
    return history


def train_start(c: StudyConfig, path: str | os.PathLike, progress=reporter.KEEP, log=reporter.KEEP):
    """Train the unpruned head as cycle 0 does (`start_phases`), save it to `path`; (head, record). A file at `path`
    made with the same fields is reused. record: "epochs" (per-epoch rows, the kept one marked "best"), "best_epoch",
    "val" and "test" (evaluate()), "config" (the fields that made it), "backbone", "optimizer" (Adam's moments at the
    kept epoch, so runs starting here go on training). progress=, log=: bars and messages (labkit.progress)."""
    path = Path(path)
    wanted = {k: v for k, v in config_dict(c).items() if k in START_FIELDS}
    with reporter.reporting(progress, log):
        if path.exists():
            head, record = model.load_head(path, fix="delete that file to train the head again")
            if isinstance(record.get("config"), dict) and record["config"] == wanted:
                reporter.say(f"reusing the trained head in {path} (validation accuracy {record['val']['accuracy']:.2%})")
                return head, record
            reporter.say(f"{path} was trained with other settings; training a new one")
        data = prepare_features(c)
        head, state, phases = new_head(c, data.train), train.AdamState(), []
        watch = None if c.method == "scratch" else data.val
        for phase in start_phases(c):
            phases.append(train.fit(head, data.train, batch_size=c.batch_size, device=c.device, desc="train",
                                    val_set=watch, state=state, **phase))
        epochs = joined(c, phases)
        results = train.evaluate_sets(head, {"val": data.val, "test": data.test}, device=c.device)
        record = {"epochs": epochs, "best_epoch": train.best_epoch(epochs), "val": results["val"],
                  "test": results["test"], "config": wanted, "backbone": data.train.weights,
                  "optimizer": state.payload()}
        model.save_head(head, path, extra=record)
        reporter.say(f"trained head saved to {path} ({record['best_epoch']} epochs, the best of {len(epochs)} run; "
                     f"validation accuracy {record['val']['accuracy']:.2%})")
    return head, record


# ---------------------------------------------------------------- the cycle

class Run:
    """One run of the study held in memory: its folder (locked while the block is open), finished rows and head.

        with study.Run(c, data) as run:     # finished cycles are read back
            while not run.done:
                run.step()

    Leaving the block lets go of the head. With checkpoints='off' the rows are read back, but going beyond them
    recomputes them from cycle 0 (history.csv keeps each until it is recomputed). keep_last: the last cycle's head is
    also saved as smallest_within_tolerance.pt before its row is recorded (knee probes use it; written first, so a
    kill never leaves a recorded row without its head).
    """

    def __init__(self, c: StudyConfig, data: Callable[[], Splits], quiet: bool = False, keep_last: bool = False):
        self.c, self._data, self.keep_last = c, data, keep_last
        self.log = (lambda s: None) if quiet else reporter.say  # quiet: a knee search's other seeds, controls
        self.folder = RunFolder(c, self.log)
        self.rows: list[dict] = []
        self.head: model.VGGHead | None = None
        self.adam = train.AdamState()  # the optimizer's moments, carried from cycle to cycle
        self.exhausted = False  # every pruned layer is down to one neuron
        self._start_epochs: int | None = None
        self._known: list[dict] = []  # recorded rows being computed again (see step)
        self._replay_first = False
        self._reload = False  # the head was let go (release) and is read back from the newest checkpoint

    def __enter__(self):
        self.folder.__enter__()  # the lock
        try:
            # checked before anything is written: another run's folder is refused untouched
            self._go_on_from(reopen.Reopening(self.folder).rows())
            self.folder.begin()
        except BaseException:
            self.folder.__exit__(None, None, None)
            raise
        return self

    def _go_on_from(self, rows: list[dict]) -> None:
        """Take up finished `rows`: all done, or go on from the newest checkpoint, or (none kept) replay in `step`."""
        if len(rows) >= self.c.cycles:
            self.rows = rows[:self.c.cycles]
        elif rows:
            self.head, kept, optimizer = self.folder.head_after(rows)
            self.adam = train.AdamState.from_payload(optimizer)
            if self.head is None:
                self.rows, self._replay_first = rows, True
            else:
                self.rows = rows[:kept]
                self.log(f"{self.folder.path}: resuming after cycle {kept - 1} ({kept} of {self.c.cycles} finished)")

    def __exit__(self, *exc):
        self.folder.__exit__(*exc)
        self.head, self.adam = None, train.AdamState()  # the rows stay; the head (480 MB at full width) goes
        device.give_back_memory()

    def release(self) -> None:
        """Let go of the head and Adam's moments (641 MB at full width) until the next cycle reads them back from the
        newest checkpoint (same numbers): a knee search's waiting controls hold none. No-op without checkpoints."""
        if self.head is not None and self.c.checkpoints != "off":
            self.head, self.adam, self._reload = None, train.AdamState(), True
            device.give_back_memory()

    @property
    def done(self) -> bool:
        return len(self.rows) >= self.c.cycles or self.exhausted

    @property
    def data(self) -> Splits:
        """The features, loaded the first time a cycle needs them (a finished run reads none)."""
        return self._data()

    def step(self) -> dict | None:
        """Run the next cycle and record it (`commit`); None when nothing is left to prune. Cycle 0 trains a fresh
        head (`start_phases`) or measures c.start as it is; later cycles prune (`prune_step`) and train for c.epochs
        at `cycle_rate(c)` on the carried Adam moments (with c.recover_patience: until validation accuracy has not
        risen for that many epochs, back to the best)."""
        if self._replay_first:
            self._replay_first, self._known, self.rows = False, self.rows, []
            self.log(f"{self.folder.path}: this run keeps no checkpoints (checkpoints='off'), so going beyond its "
                     f"{len(self._known)} finished cycles means computing them again from cycle 0 (on a CPU the "
                     "same rows come out)")
        if self._reload:
            self._reload = False
            self._go_on_from(self.rows)
        c, cycle, began = self.c, len(self.rows), time.perf_counter()
        if cycle == 0:
            self.folder.begin(backbone=self.data.train.weights)
            if c.start:
                self.head, self.adam, train_loss, self._start_epochs = load_start(c)
            else:
                self.head, self.adam, phases = new_head(c, self.data.train), train.AdamState(), []
                watch = None if c.method == "scratch" else self.data.val
                for phase in start_phases(c):
                    phases.append(train.fit(self.head, self.data.train, batch_size=c.batch_size, device=c.device,
                                            desc="cycle 0", val_set=watch, state=self.adam, **phase))
                history = joined(c, phases)
                self._start_epochs = train.best_epoch(history)
                train_loss = history[self._start_epochs - 1]["loss"]
        elif not prune_step(c, self.head, self.adam, cycle):
            self.exhausted = True
            self.log(f"every pruned layer is down to one neuron: stopping after cycle {cycle - 1}")
            return None
        else:
            watch = self.data.val if c.recover_patience is not None else None
            epochs = train.fit(self.head, self.data.train, c.epochs, c.batch_size, cycle_rate(c),
                               seed=derive_seed(c.seed, cycle), device=c.device, desc=f"cycle {cycle}",
                               state=self.adam, val_set=watch, patience=c.recover_patience)
            trained = train.best_epoch(epochs)  # NaN loss: early stopping kept the head as it came in
            train_loss = epochs[trained - 1]["loss"] if trained else float("nan")
        total = self._start_epochs if cycle == 0 else self.epochs_total(cycle - 1) + trained
        row = measure(c, self.head, self.data, cycle, train_loss, total)
        if c.recover_patience is not None:  # how many epochs early stopping kept, of how many it ran
            row["cycle_epochs"], row["epochs_run"] = (0, 0) if cycle == 0 else (trained, len(epochs))
        # a student's functions pruned it (prune.using)
        if cycle > 0 and c.method not in CONTROLS and prune.ran_on(c.method) != "labkit":
            row[runs.RAN_ON] = prune.ran_on(c.method)
        row["seconds"] = time.perf_counter() - began
        self.rows.append(row)
        self.commit()
        return row

    def commit(self) -> None:
        """Record `step`'s row: on the last cycle with keep_last the smallest head first, then the checkpoint the
        policy keeps, then history.csv."""
        cycle, row = len(self.rows) - 1, self.rows[-1]
        if self.keep_last and len(self.rows) == self.c.cycles:
            self.folder.keep_smallest(self.head, row)
        known = self._known[cycle] if cycle < len(self._known) else None
        if known is not None and any(known[k] != row[k] for k in ("widths", "val_correct", "test_correct")):
            self._known = []  # this machine computes other numbers (a GPU's last digits): the new rows stand
        self.folder.record(self.rows + self._known[len(self.rows):], self.head, cycle, optimizer=self.adam.payload())
        if len(self.rows) >= len(self._known):
            self._known = []  # the replay has caught up

    def epochs_total(self, cycle: int) -> int:
        """Epochs the head has been trained in all after finished `cycle` (the epochs kept, cycle 0's included)."""
        if self._start_epochs is None:  # resumed: cycle 0's row says it
            self._start_epochs = self.rows[0]["epochs_total"]
        return self.rows[cycle]["epochs_total"] if cycle > 0 else self._start_epochs

    def advance_to(self, cycle: int) -> None:
        """Run cycles until `cycle` is finished (the control of a knee search follows its pruned run)."""
        while len(self.rows) <= cycle and not self.done:
            self.step()


def load_start(c: StudyConfig):
    """Cycle 0 from the trained start c.start as it is: (head, its AdamState, NaN training loss, epochs trained)."""
    head, extra = model.load_head(c.start, fix="train it again (notebook 02, or study.train_start)")
    if head.widths()[1:-1] != list(c.hidden):
        raise ValueError(f"start={c.start} has hidden widths {head.widths()[1:-1]}, not hidden={list(c.hidden)}")
    done = extra.get("best_epoch") or len(extra.get("epochs") or []) or c.epochs
    return head, train.AdamState.from_payload(extra.get("optimizer")), float("nan"), int(done)


def prune_step(c: StudyConfig, head: model.VGGHead, state: train.AdamState, cycle: int) -> bool:
    """Remove, in place, the plan's neurons for `cycle` from `head` and their rows from `state` (controls: none,
    True); False when a pruning method has nothing left to remove."""
    if c.method in CONTROLS:
        return True
    plan = prune_plan(c, head.widths())
    for layer, k in plan:
        _, removed = prune.prune_neurons(head, layer, k, c.method, seed=derive_seed(c.seed, cycle, layer=layer))
        state.drop(layer, prune.kept_indices(len(removed) + head.widths()[layer + 1], removed))
    return bool(plan)


def cycle_rate(c: StudyConfig) -> float:
    """The learning rate of every cycle after cycle 0: c.cycle_lr, else the fine-tuning rate c.lr x c.lr_drop."""
    return c.cycle_lr if c.cycle_lr is not None else c.lr * c.lr_drop


def measure(c: StudyConfig, head: model.VGGHead, data: Splits, cycle: int, train_loss: float,
            epochs_total: int) -> dict:
    """A finished cycle's history row: val/test accuracy and right records, MEC (nominal, effective), rho, size."""
    from . import records

    key = _start_key(c, data) if cycle == 0 and c.start else None
    if key is None or key not in _measured_starts:
        results = train.evaluate_sets(head, {"val": data.val, "test": data.test}, device=c.device)
        if key is not None:
            while len(_measured_starts) >= 8:  # a few starts at a time: a grid's or a knee's runs share them
                _measured_starts.pop(next(iter(_measured_starts)))
            _measured_starts[key] = results
    else:
        results = _measured_starts[key]
    val, test = results["val"], results["test"]
    live = capacity.live_widths(head)  # one pass over the 25,088-wide layer for both counts
    mec_bits, mec_effective = capacity.mec(live), capacity.mec_effective(live, head.map_size)
    widths = head.widths()
    return {"cycle": cycle, "method": c.method, "layer": c.layer, "removed": sum(c.hidden) - sum(widths[1:-1]),
            "widths": Widths(widths), "mec_bits": mec_bits, "mec_effective_bits": mec_effective,
            "epochs_total": epochs_total,
            "val_correct": val["correct"], "val_total": val["total"], "val_accuracy": val["accuracy"],
            "test_correct": test["correct"], "test_total": test["total"], "test_accuracy": test["accuracy"],
            "rho": capacity.generalization_ratio(test["correct"], mec_bits),
            "rho_effective": capacity.generalization_ratio(test["correct"], mec_effective),
            "parameters": sum(p.numel() for p in head.parameters()), "model_bytes": model.head_bytes(head),
            "train_loss": train_loss, "seconds": 0.0,
            "val_right": records.pack_right(val["right"]), "test_right": records.pack_right(test["right"])}


# A trained start's evaluation, shared by the runs (a grid's, a knee search's) that all measure it at cycle 0.
_measured_starts: dict[tuple, dict] = {}


def _start_key(c: StudyConfig, data: Splits) -> tuple:
    st = os.stat(c.start)
    sets = tuple((fs.split, len(fs), fs.weights, fs.image_size) for fs in (data.val, data.test))
    return (str(Path(c.start).resolve()), st.st_mtime_ns, st.st_size, sets, c.subsets, str(c.device))


# ---------------------------------------------------------------- the command line's run

@reporter.entry
def run_study(c: StudyConfig) -> list[dict]:
    """Run, resume or read back the study for `c` (`python -m labkit study`): one row per cycle, printed as made."""
    from . import tables

    with Run(c, features_when_needed(c)) as run:
        if run.done:
            reporter.say(f"{run.folder.path}: {len(run.rows)} cycles already finished; reading them back")
        elif not run.rows:
            reporter.say(tables.format_table([], tables.COLUMNS_SHOWN, header_only=True))
        while not run.done:
            row = run.step()
            if row is not None:
                reporter.say(tables.format_table([row], tables.COLUMNS_SHOWN, rows_only=True))
    return run.rows
