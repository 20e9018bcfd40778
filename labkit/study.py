"""The study's cycle and its controls: train, validate, test, measure, prune, again; the knee; compression.

One cycle of a run:   prune (after cycle 0) -> train c.epochs -> validate + test -> MEC, rho -> row
Its controls:         "none": the same start and epochs, nothing removed (the equal-budget control);
                      "scratch": a fresh head of the pruned widths trained as many epochs in all.
Decisions (stop, smallest within tolerance, best): validation accuracy only; test accuracy is reported.

Files are the run folder's business (labkit.runs), settings the config's (labkit.config).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch

from . import capacity, distributed, features, model, prune, train
from .config import CONTROLS, StudyConfig, config_dict, control_of, prune_plan, scratch_of
from .runs import RunFolder

Log = Callable[[str], None]


# ---------------------------------------------------------------- data and heads

class Splits(NamedTuple):
    """The three FeatureSets of a config: train, val (decisions), test (reported)."""

    train: features.FeatureSet
    val: features.FeatureSet
    test: features.FeatureSet


def prepare_features(c: StudyConfig, progress: bool = True) -> Splits:
    """(train, val, test) FeatureSets for the config: the backbone runs only where the cache has nothing.

    Under torchrun rank 0 decides which weights the backbone uses and fills the cache while the
    other ranks wait for it; then they read the cache.
    """
    weights = c.weights
    if distributed.world()[1] > 1:
        tag = distributed.from_lead(model.resolve_weights(c.weights) if distributed.is_lead() else None)
        weights = "imagenet" if tag == "imagenet" else "none"
    if not distributed.is_lead():
        distributed.barrier("rank 0 to compute the VGG16 features of this profile")
    sets = Splits(*(split_features(c, split, progress, weights) for split in ("train", "val", "test")))
    if distributed.is_lead():
        distributed.barrier("the other ranks")
    return sets


def loader(c: StudyConfig, progress: bool = True) -> Callable[[], Splits]:
    """A function that prepares the config's features the first time it is called and returns them after."""
    held: list[Splits] = []

    def load() -> Splits:
        if not held:
            held.append(prepare_features(c, progress))
        return held[0]

    return load


def split_features(c: StudyConfig, split: str, progress: bool = True, weights: str | None = None):
    """The FeatureSet of one split ("train", "val", "test") for the config (read from the cache, or computed once)."""
    limit = {"train": c.train_limit, "val": c.val_limit, "test": c.test_limit}[split]
    return features.load_features(split, image_size=c.image_size, weights=weights or c.weights, limit=limit,
                                  seed=c.data_seed, device=c.device, progress=progress and distributed.is_lead(),
                                  val_limit=c.val_limit)


def class_counts(c: StudyConfig) -> dict[str, list[int]]:
    """Images per class (0-9) in the training, validation and test subsets of the config."""
    from . import data

    limits = {"training": ("train", c.train_limit), "validation": ("val", c.val_limit), "test": ("test", c.test_limit)}
    counts = {}
    for name, (split, limit) in limits.items():
        _, labels = data.load_mnist(split, limit=limit, seed=c.data_seed, val_limit=c.val_limit)
        counts[name] = torch.bincount(labels, minlength=10).tolist()
    return counts


def requirement_progressions(c: StudyConfig, fractions=(0.05, 0.1, 0.2, 0.4, 1.0)) -> dict[str, list[dict]]:
    """The thresholds method (capacity.requirement_progression) on the config's training images, as raw pixels
    and as backbone features: the same images, on growing nested shares of them."""
    from . import data

    images, labels = data.load_mnist("train", limit=c.train_limit, seed=c.data_seed, val_limit=c.val_limit)
    train_set = split_features(c, "train", progress=False)
    if not torch.equal(train_set.labels, labels):
        raise RuntimeError("the cached training features do not follow the training images' order; delete "
                           f"the feature cache in {data.data_root() / 'features'} to recompute it")
    return {f"raw pixels (d = {images[0].numel()})": capacity.requirement_progression(images.float(), labels,
                                                                                      fractions),
            f"backbone features (d = {train_set.maps[0].numel():,})":
                capacity.requirement_progression(train_set.maps.float(), labels, fractions)}


def new_head(c: StudyConfig, train_set) -> model.VGGHead:
    """A fresh head for the config, initialized from c.seed, standardizing with `train_set` statistics."""
    head = model.build_head(c.head, 10, model.map_size_for(c.image_size), c.dropout, seed=c.seed)
    head.norm.set_stats(*train_set.stats())
    return head


# the fields a trained start depends on (not the pruning ones)
START_FIELDS = ("epochs", "batch_size", "lr", "train_limit", "val_limit", "test_limit", "data_seed", "image_size",
                "weights", "head", "dropout", "seed", "device")


def train_start(c: StudyConfig, path: str | os.PathLike, progress: bool = True, log: Log | None = print):
    """Train the unpruned head for c.epochs (cycle 0 of the study) and save it to `path`; returns (head, record).

    record: {"epochs": per-epoch loss / accuracy / validation accuracy, "val" and "test": evaluate() on
    those splits, "config": the fields that made it}. A file at `path` made with the same fields is reused.
    """
    log = log or (lambda s: None)
    path = Path(path)
    wanted = {k: v for k, v in config_dict(c).items() if k in START_FIELDS}
    if path.exists():
        head, record = model.load_head(path, fix="delete that file to train the head again")
        if record.get("config") == wanted:
            log(f"reusing the trained head in {path} (validation accuracy {record['val']['accuracy']:.2%})")
            return head, record
        log(f"{path} was trained with other settings; training a new one")
    data = prepare_features(c, progress)
    head = new_head(c, data.train)
    epochs = train.fit(head, data.train, c.epochs, c.batch_size, c.lr, seed=c.seed * 1000, device=c.device,
                       progress=progress, desc="train", val_set=data.val)
    record = {"epochs": epochs, "val": train.evaluate(head, data.val, device=c.device),
              "test": train.evaluate(head, data.test, device=c.device), "config": wanted,
              "backbone": data.train.weights}
    model.save_head(head, path, extra=record)
    log(f"trained head saved to {path} (validation accuracy {record['val']['accuracy']:.2%})")
    return head, record


# ---------------------------------------------------------------- decisions (validation only)

def within_tolerance(baseline: float, accuracy: float, tolerance: float) -> bool:
    """True when `accuracy` is at most `tolerance` percentage points below `baseline` (both fractions)."""
    return accuracy >= baseline - tolerance / 100 - 1e-12


def by_cycle(rows: Sequence[dict]) -> dict[int, dict]:
    return {r["cycle"]: r for r in rows}


def in_tolerance(rows: Sequence[dict], control: Sequence[dict], tolerance: float) -> list[dict]:
    """The rows whose validation accuracy is within `tolerance` points of the control's at the same cycle."""
    ctl = by_cycle(control)
    return [r for r in rows if r["cycle"] in ctl
            and within_tolerance(ctl[r["cycle"]]["val_accuracy"], r["val_accuracy"], tolerance)]


def smallest_within(rows: Sequence[dict], control: Sequence[dict], tolerance: float = 1.0) -> dict:
    """The row with the fewest parameters whose validation accuracy is within `tolerance` points of the
    equal-budget control's at the same cycle (cycle 0, the unpruned head itself, always is)."""
    if not rows:
        raise ValueError("no rows: run the study first")
    ok = in_tolerance(rows, control, tolerance)
    if not ok:
        raise ValueError("no row is within tolerance of the control: the control rows do not cover these cycles")
    return min(ok, key=lambda r: (r["parameters"], -r["val_accuracy"]))


def stop_cycle(rows: Sequence[dict], control: Sequence[dict], tolerance: float) -> int | None:
    """The first cycle whose validation accuracy is more than `tolerance` points below the control's, or None."""
    ctl = by_cycle(control)
    for r in rows:
        c = ctl.get(r["cycle"])
        if c is not None and not within_tolerance(c["val_accuracy"], r["val_accuracy"], tolerance):
            return r["cycle"]
    return None


# ---------------------------------------------------------------- the cycle

class Run:
    """One run of the study held in memory: its folder (locked), its finished rows, its head.

    `step()` runs the next cycle: prune (after cycle 0), train, validate, test, measure, record.
    Use as a context manager: the run folder stays locked while it is open.

    A run that kept no checkpoint (checkpoints='none') still reads its finished rows back; only when
    it must go beyond them does it compute them again from cycle 0 (`_replay`), keeping the recorded
    rows in history.csv until each is recomputed.
    """

    def __init__(self, c: StudyConfig, data: Callable[[], Splits], progress: bool = True, log: Log | None = None):
        self.c, self._data, self.progress = c, data, progress and distributed.is_lead()
        self.log = log if log and distributed.is_lead() else (lambda s: None)
        self.folder = RunFolder(c, self.log, write=distributed.is_lead())
        self.rows: list[dict] = []
        self.head: model.VGGHead | None = None
        self.exhausted = False  # every pruned layer is down to one neuron
        self._start_epochs: int | None = None
        self._known: list[dict] = []  # recorded rows being computed again (see _replay)
        self._replay_first = False

    def __enter__(self):
        self.folder.__enter__()
        try:
            rows = self.folder.open()
            if len(rows) >= self.c.cycles:
                self.rows = rows[:self.c.cycles]
            elif rows:
                self.head, kept = self.folder.head_after(rows)
                if self.head is None:  # nothing kept to go on from: the rows stand until more are needed
                    self.rows, self._replay_first = rows, True
                else:
                    self.rows = rows[:kept]
                    self.log(f"{self.folder.path}: resuming after cycle {kept - 1} ({kept} of {self.c.cycles} "
                             "finished)")
            self.folder.begin()
        except BaseException:
            self.folder.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        self.folder.__exit__(*exc)

    @property
    def done(self) -> bool:
        return len(self.rows) >= self.c.cycles or self.exhausted

    @property
    def data(self) -> Splits:
        """The features, loaded the first time a cycle needs them (a finished run reads none)."""
        return self._data()

    def step(self) -> dict | None:
        """Run the next cycle and record it; None when nothing is left to prune."""
        if self._replay_first:
            self._replay()
        c, cycle, began = self.c, len(self.rows), time.perf_counter()
        if cycle == 0:
            self.head = first_head(c, self.data.train)
            self.folder.begin(backbone=self.data.train.weights)
        elif not prune_step(c, self.head, cycle):
            self.exhausted = True
            self.log(f"every pruned layer is down to one neuron: stopping after cycle {cycle - 1}")
            return None
        train_loss = train_step(c, self.head, self.data.train, cycle, self.progress)
        row = measure(c, self.head, self.data, cycle, train_loss, self.epochs_total(cycle))
        row["seconds"] = time.perf_counter() - began
        self.rows.append(row)
        known = self._known[cycle] if cycle < len(self._known) else None
        if known is not None and any(known[k] != row[k] for k in ("widths", "val_correct", "test_correct")):
            self._known = []  # this machine computes other numbers (a GPU's last digits): the new rows stand
        self.folder.record(self.rows + self._known[len(self.rows):], self.head, cycle)
        return row

    def _replay(self) -> None:
        """Compute the recorded cycles again from cycle 0, to hold the head after the last of them."""
        self._replay_first, self._known, self.rows = False, self.rows, []
        self.log(f"{self.folder.path}: this run keeps no checkpoints (checkpoints='none'), so going beyond its "
                 f"{len(self._known)} finished cycles means computing them again from cycle 0 (on a CPU the same "
                 "rows come out)")
        while len(self.rows) < len(self._known) and not self.exhausted:
            self.step()
        self._known = []

    def epochs_total(self, cycle: int) -> int:
        """Epochs the head has been trained in all after `cycle` (a start counts the epochs it was trained)."""
        if self._start_epochs is None:
            done = model.read_extra(self.c.start).get("epochs") if self.c.start else None
            self._start_epochs = len(done) if isinstance(done, list) and done else self.c.epochs
        return self._start_epochs + cycle * self.c.epochs

    def advance_to(self, cycle: int) -> None:
        """Run cycles until `cycle` is finished (the control of a knee search follows its pruned run)."""
        while len(self.rows) <= cycle and not self.done:
            self.step()


def first_head(c: StudyConfig, train_set) -> model.VGGHead:
    """The head cycle 0 starts from: the trained start c.start, measured as it is, or a fresh one."""
    if not c.start:
        return new_head(c, train_set)
    head, _ = model.load_head(c.start, fix="train it again (notebook 02, or study.train_start)")
    if head.widths()[1:-1] != list(c.head):
        raise ValueError(f"start={c.start} has hidden widths {head.widths()[1:-1]}, not head={list(c.head)}")
    return head


def prune_step(c: StudyConfig, head: model.VGGHead, cycle: int) -> bool:
    """Remove the neurons the plan names for `cycle` (controls remove none); False when a pruning method
    has nothing left to remove (every pruned layer is down to one neuron)."""
    if c.method in CONTROLS:
        return True
    plan = prune_plan(c, head.widths())
    for layer, k in plan:
        # layer 0 keeps the seed the report-style runs always used; other layers get their own
        prune.prune_neurons(head, layer, k, c.method, seed=c.seed * 1000 + cycle + 7919 * layer)
    return bool(plan)


def train_step(c: StudyConfig, head: model.VGGHead, train_set, cycle: int, progress: bool) -> float:
    """c.epochs of training for `cycle` (none for a measured start); the last epoch's mean loss, or NaN."""
    if cycle == 0 and c.start:
        return float("nan")
    epochs = train.fit(head, train_set, c.epochs, c.batch_size, c.lr, seed=c.seed * 1000 + cycle,
                       device=c.device, progress=progress, desc=f"cycle {cycle}")
    return epochs[-1]["loss"]


def measure(c: StudyConfig, head: model.VGGHead, data: Splits, cycle: int, train_loss: float,
            epochs_total: int) -> dict:
    """The history row of a finished cycle: validation and test accuracy, MEC (live neurons), rho, size."""
    val = train.evaluate(head, data.val, device=c.device)
    test = train.evaluate(head, data.test, device=c.device)
    mec_bits = capacity.mec_of(head)
    widths = head.widths()
    return {"cycle": cycle, "method": c.method, "layer": c.layer, "removed": sum(c.head) - sum(widths[1:-1]),
            "widths": "-".join(map(str, widths)), "mec_bits": mec_bits, "epochs_total": epochs_total,
            "val_correct": val["correct"], "val_total": val["total"], "val_accuracy": val["accuracy"],
            "test_correct": test["correct"], "test_total": test["total"], "test_accuracy": test["accuracy"],
            "rho": capacity.generalization_ratio(test["correct"], mec_bits),
            "parameters": sum(p.numel() for p in head.parameters()), "model_bytes": model.head_bytes(head),
            "train_loss": train_loss, "seconds": 0.0}


# ---------------------------------------------------------------- runs, grids, controls

def run_study(c: StudyConfig, progress: bool = True, log: Log | None = print) -> list[dict]:
    """Run (or resume, or read back) the study for `c`; returns one row per cycle (see labkit.runs.COLUMNS).

    Cycle 0 trains the fresh head (or measures `c.start` as it is); every later cycle removes
    neurons of the pruned layer(s) by c.method (see `config.prune_plan`), then trains c.epochs epochs,
    and ends with validation and test accuracy, MEC (bits, live neurons) and rho = correct test points / MEC.
    A geometric run goes on beside its equal-budget control and stops after the first cycle whose
    validation accuracy falls more than c.tolerance points below the control's (see `knee_search`).
    """
    if c.schedule == "geometric" and c.method not in CONTROLS:
        return knee_search(c, progress, log)[0]
    with Run(c, loader(c, progress), progress, log) as run:
        _announce(run, log)
        while not run.done:
            _show(run.step(), log)
        return run.rows


def _announce(run: Run, log: Log | None) -> None:
    from . import report

    if log and distributed.is_lead():
        if run.done:
            log(f"{run.folder.path}: {len(run.rows)} cycles already finished; reading them back")
        elif not run.rows:
            log(report.format_table([], report.COLUMNS_SHOWN, header_only=True))


def _show(row: dict | None, log: Log | None) -> None:
    from . import report

    if row is not None and log and distributed.is_lead():
        log(report.format_table([row], report.COLUMNS_SHOWN, rows_only=True))


def knee_search(c: StudyConfig, progress: bool = True, log: Log | None = print) -> tuple[list[dict], list[dict]]:
    """Prune geometrically beside the equal-budget control until validation accuracy drops; (rows, control rows).

    After each cycle the control (the same start trained as long, nothing removed) is brought to the
    same cycle; the run stops after the first cycle whose validation accuracy is more than c.tolerance
    points below the control's. The smallest head within tolerance is kept as
    <run folder>/smallest_within_tolerance.pt whatever the checkpoint policy.
    """
    data = loader(c, progress)
    with Run(c, data, progress, log) as arm, Run(control_of(c), data, progress, None) as control:
        _announce(arm, log)
        control.advance_to(len(arm.rows) - 1)
        stopped = distributed.from_lead(stop_cycle(arm.rows, control.rows, c.tolerance))
        while stopped is None and not arm.done:
            row = arm.step()
            if row is None:
                break
            control.advance_to(row["cycle"])
            _show(row, log)
            stopped = distributed.from_lead(stop_cycle([row], control.rows, c.tolerance))
            if stopped is None:  # within tolerance, and smaller than every head before it
                arm.folder.keep_smallest(arm.head, row, same_as=c.start if row["cycle"] == 0 else None)
            elif log and distributed.is_lead():
                ctl = by_cycle(control.rows)[row["cycle"]]
                log(f"validation accuracy {row['val_accuracy']:.2%} is more than {c.tolerance:g} point(s) below the "
                    f"control's {ctl['val_accuracy']:.2%} (the unpruned head trained as long): the knee lies "
                    f"between cycles {row['cycle'] - 1} and {row['cycle']}")
        return arm.rows, control.rows[:len(arm.rows)]


def run_grid(base: StudyConfig, methods: Sequence[str] = prune.METHODS, seeds: Sequence[int] = (0,),
             progress: bool = True, log: Log | None = print) -> list[dict]:
    """run_study for every (method, seed); rows of all runs, each with a `seed` column added."""
    rows = []
    for seed in seeds:
        for method in methods:
            c = dataclasses.replace(base, method=method, seed=seed, name=None)
            if log:
                log(f"--- {c.run_name}")
            rows += [{**r, "seed": seed} for r in run_study(c, progress, log)]
    return rows


def scratch_control(c: StudyConfig, like: dict, progress: bool = True, log: Log | None = print) -> dict:
    """A fresh head of the widths of row `like`, trained as many epochs in all (the from-scratch control).

    Returns its row, marked method="scratch", with `cycle` set to the cycle of `like` it matches.
    """
    hidden = [int(w) for w in like["widths"].split("-")[1:-1]]
    s = scratch_of(c, hidden, like["epochs_total"])
    if log:
        log(f"--- {s.run_name} (from scratch, {like['epochs_total']} epochs, as cycle {like['cycle']} had)")
    row = run_study(s, progress, log)[0]
    return {**row, "cycle": like["cycle"], "layer": c.layer, "removed": like["removed"]}


def compare_methods(base: StudyConfig, methods: Sequence[str] = prune.METHODS, seed: int = 0,
                    progress: bool = True, log: Log | None = print) -> list[dict]:
    """Every method from the same start, its equal-budget control ("none"), and the last cycle's widths
    trained from scratch ("scratch", once per distinct widths); rows with a `seed` column."""
    rows = run_grid(base, (*methods, "none"), (seed,), progress, log)
    last = {}
    for r in rows:
        if r["method"] not in CONTROLS:
            last[r["method"]] = r
    done = set()
    for r in last.values():
        if r["widths"] not in done and r["cycle"] > 0:
            done.add(r["widths"])
            rows.append({**scratch_control(dataclasses.replace(base, seed=seed), r, progress, log), "seed": seed})
    return rows


def knee_table(rows: Sequence[dict], control: Sequence[dict], tolerance: float,
               scratch: dict | None = None) -> list[dict]:
    """One row per cycle of a knee search: the pruned head beside the control at the same cycle.

    Columns: the pruned row's, then control_val_accuracy, control_test_accuracy, within_tolerance
    (validation, against the control) and smallest (the head kept); a last row for the from-scratch
    head at the smallest widths when `scratch` is given (method "scratch", its matched cycle).
    """
    ctl = by_cycle(control)
    best = smallest_within(rows, control, tolerance)

    def beside_control(r: dict) -> dict:
        k = ctl[r["cycle"]]
        return {**r, "control_val_accuracy": k["val_accuracy"], "control_test_accuracy": k["test_accuracy"],
                "tolerance": tolerance,
                "within_tolerance": within_tolerance(k["val_accuracy"], r["val_accuracy"], tolerance),
                "smallest": r is best}

    return [beside_control(r) for r in rows] + ([beside_control(scratch)] if scratch is not None else [])


# ---------------------------------------------------------------- the second Deep Compression stage

def compress_smallest(c: StudyConfig, bits: Sequence[int] = (8, 4), progress: bool = True,
                      log: Log | None = print, scratch: bool = True) -> dict:
    """Search the knee (`knee_search`), then store its smallest head within tolerance at `bits`.

    The smallest head is chosen on validation accuracy against the equal-budget control; every stored
    file is loaded back and evaluated on the validation and test sets. Returns a dict:
      rows, control: the knee search's rows and its control's;  smallest: the chosen row;
      scratch: the same widths trained from scratch as long (or None);  knee: `knee_table`;
      table: one row per stored file (storage, bytes, ratio to the unpruned float32 head's file,
             val_accuracy, test_accuracy, control_test_accuracy, drop_points = the control's test
             accuracy minus this one's, in points, at the same training budget, path).
    """
    from . import compress

    if c.schedule != "geometric":
        raise ValueError(f"schedule={c.schedule!r}: compression takes the smallest head of a geometric run "
                         "(schedule='geometric'), which keeps that head on disk")
    compress.check_bits(bits)
    rows, control = knee_search(c, progress, log)
    best = smallest_within(rows, control, c.tolerance)
    folder = RunFolder(c)
    fix = f"move {folder.path} aside and run again to search the knee anew"
    head, extra = model.load_head(folder.smallest_path, fix=fix)
    if head.widths() != [int(w) for w in best["widths"].split("-")]:
        raise ValueError(f"{folder.smallest_path} holds widths {head.widths()}, not the smallest row's "
                         f"{best['widths']}; {fix}")
    from_scratch = scratch_control(c, best, progress, log) if scratch and best["cycle"] > 0 else None
    sets = {s: split_features(c, s, progress) for s in ("val", "test")}  # the training set is not needed
    table = compress.compression_table(head, sets, folder.path / "compressed", rows[0]["model_bytes"], bits,
                                       name=f"cycle{best['cycle']:03d}", device=c.device,
                                       float32_file=folder.smallest_path)
    reference = by_cycle(control)[best["cycle"]]
    for r in table:
        r["control_test_accuracy"] = reference["test_accuracy"]
        r["drop_points"] = 100 * (reference["test_accuracy"] - r["test_accuracy"])
    return {"rows": rows, "control": control, "smallest": best, "scratch": from_scratch,
            "knee": knee_table(rows, control, c.tolerance, from_scratch), "table": table}
