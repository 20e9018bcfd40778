"""The study's cycle: train, test, measure, prune, and again; grids of runs; compressing the smallest head.

Files are the run folder's business (labkit.runs), settings the config's (labkit.config);
here is what one cycle computes and in which order.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from . import capacity, distributed, features, model, prune, report, train
from .config import StudyConfig, config_dict, prune_plan
from .runs import RunFolder

Log = Callable[[str], None]


# ---------------------------------------------------------------- data and heads

def prepare_features(c: StudyConfig, progress: bool = True):
    """(train, test) FeatureSets for the config: the backbone runs only where the cache has nothing."""
    if not distributed.is_lead():
        distributed.barrier()  # rank 0 fills the cache first, the others then read it
    sets = (split_features(c, "train", progress), split_features(c, "test", progress))
    if distributed.is_lead():
        distributed.barrier()
    return sets


def split_features(c: StudyConfig, split: str, progress: bool = True):
    """The FeatureSet of one split for the config (read from the cache, or computed once)."""
    limit = c.train_limit if split == "train" else c.test_limit
    return features.load_features(split, image_size=c.image_size, weights=c.weights, limit=limit, seed=c.data_seed,
                                  device=c.device, progress=progress and distributed.is_lead())


def new_head(c: StudyConfig, train_set) -> model.VGGHead:
    """A fresh head for the config, initialized from c.seed, standardizing with `train_set` statistics."""
    head = model.build_head(c.head, 10, model.map_size_for(c.image_size), c.dropout, seed=c.seed)
    head.norm.set_stats(*features.feature_stats(train_set.maps))
    return head


# the fields a trained start depends on (not the pruning ones)
START_FIELDS = ("epochs", "batch_size", "lr", "train_limit", "test_limit", "data_seed", "image_size", "weights",
                "head", "dropout", "seed", "device")


def train_start(c: StudyConfig, path: str | os.PathLike, progress: bool = True, log: Log | None = print):
    """Train the unpruned head for c.epochs (cycle 0 of the study) and save it to `path`; returns (head, record).

    record: {"epochs": per-epoch loss / accuracy / test accuracy, "test": evaluate() on the test set,
    "config": the fields that made it}. A file at `path` made with the same fields is reused.
    """
    log = log or (lambda s: None)
    path = Path(path)
    wanted = {k: v for k, v in config_dict(c).items() if k in START_FIELDS}
    if path.exists():
        head, record = model.load_head(path)
        if record.get("config") == wanted:
            log(f"reusing the trained head in {path} (test accuracy {record['test']['accuracy']:.4f})")
            return head, record
        log(f"{path} was trained with other settings; training a new one")
    train_set, test_set = prepare_features(c, progress)
    head = new_head(c, train_set)
    epochs = train.fit(head, train_set, c.epochs, c.batch_size, c.lr, seed=c.seed * 1000, device=c.device,
                       progress=progress, desc="train", test_set=test_set)
    result = train.evaluate(head, test_set, device=c.device)
    record = {"epochs": epochs, "test": result, "config": wanted}
    model.save_head(head, path, extra=record)
    log(f"trained head saved to {path} (test accuracy {result['accuracy']:.4f})")
    return head, record


# ---------------------------------------------------------------- decisions

def within_tolerance(baseline: float, accuracy: float, tolerance: float) -> bool:
    """True when `accuracy` is at most `tolerance` percentage points below `baseline` (both fractions)."""
    return accuracy >= baseline - tolerance / 100 - 1e-12


def smallest_within(rows: Sequence[dict], tolerance: float = 1.0) -> dict:
    """The row with the fewest parameters whose accuracy is within `tolerance` points of cycle 0's."""
    if not rows:
        raise ValueError("no rows: run the study first")
    ok = [r for r in rows if within_tolerance(rows[0]["test_accuracy"], r["test_accuracy"], tolerance)]
    return min(ok, key=lambda r: (r["parameters"], -r["test_accuracy"]))


def stopped(c: StudyConfig, rows: Sequence[dict]) -> bool:
    """A geometric run ends after the first cycle whose accuracy fell out of tolerance."""
    return (c.schedule == "geometric" and len(rows) > 1
            and not within_tolerance(rows[0]["test_accuracy"], rows[-1]["test_accuracy"], c.tolerance))


# ---------------------------------------------------------------- the cycle

def prune_step(c: StudyConfig, head: model.VGGHead, cycle: int) -> bool:
    """Remove the neurons the plan names for `cycle`; False when every pruned layer is down to one neuron."""
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


def measure(c: StudyConfig, head: model.VGGHead, test_set, cycle: int, train_loss: float, model_bytes: int,
            seconds: float) -> dict:
    """The history row of a finished cycle: accuracy, MEC (live neurons), rho, size."""
    result = train.evaluate(head, test_set, device=c.device)
    mec_bits = capacity.mec_of(head)
    widths = head.widths()
    return {"cycle": cycle, "method": c.method, "layer": c.layer, "removed": sum(c.head) - sum(widths[1:-1]),
            "widths": "-".join(map(str, widths)), "mec_bits": mec_bits, "test_correct": result["correct"],
            "test_total": result["total"], "test_accuracy": result["accuracy"],
            "rho": capacity.generalization_ratio(result["correct"], mec_bits),
            "parameters": sum(p.numel() for p in head.parameters()), "model_bytes": model_bytes,
            "train_loss": train_loss, "seconds": seconds}


def first_head(c: StudyConfig, train_set) -> model.VGGHead:
    """The head cycle 0 starts from: the trained start c.start, measured as it is, or a fresh one."""
    if not c.start:
        return new_head(c, train_set)
    head, _ = model.load_head(c.start)
    if head.widths()[1:-1] != list(c.head):
        raise ValueError(f"start={c.start} has hidden widths {head.widths()[1:-1]}, not head={list(c.head)}")
    return head


def run_study(c: StudyConfig, progress: bool = True, log: Log | None = print) -> list[dict]:
    """Run (or resume) the study for `c`; returns one row per cycle (see labkit.runs.COLUMNS).

    Cycle 0 trains the fresh head (or measures `c.start` as it is); every later cycle removes
    neurons of the pruned layer(s) by c.method (see `config.prune_plan`), then trains c.epochs epochs.
    Each cycle ends with test accuracy, MEC (bits, live neurons), rho = correct / MEC and a
    checkpoint. A geometric run stops after the first cycle that falls out of tolerance (at most
    c.cycles) and keeps its smallest head within tolerance as <run folder>/smallest_within_tolerance.pt.
    """
    lead = distributed.is_lead()  # under torchrun every rank trains; only rank 0 logs and writes files
    log = log if log and lead else (lambda s: None)
    progress = progress and lead
    folder = RunFolder(c)
    rows, head = folder.resume(lambda done: stopped(c, done))
    if rows and head is None:  # finished earlier
        log(f"{folder.path}: all {c.cycles} cycles already finished; reading them back")
        return rows
    train_set, test_set = prepare_features(c, progress)
    first = len(rows)
    if head is None:
        head = first_head(c, train_set)
    else:
        log(f"{folder.path}: resuming after cycle {first - 1} ({first} of {c.cycles} finished)")
    if lead:
        folder.start()
    if first == 0:
        log(report.format_table([], report.COLUMNS_SHOWN, header_only=True))
    for cycle in range(first, c.cycles):
        began = time.perf_counter()
        if cycle > 0 and not prune_step(c, head, cycle):
            log(f"every pruned layer is down to one neuron: stopping after cycle {cycle - 1}")
            break
        train_loss = train_step(c, head, train_set, cycle, progress)
        size = folder.save_checkpoint(head, cycle) if lead else 0
        row = measure(c, head, test_set, cycle, train_loss, size, 0.0)
        row["seconds"] = time.perf_counter() - began
        rows.append(row)
        if lead:
            folder.write_history(rows)
            if cycle > 0 and c.checkpoints != "all":
                folder.drop_checkpoint(cycle - 1)
        log(report.format_table([row], report.COLUMNS_SHOWN, rows_only=True))
        if c.schedule == "geometric":
            if within_tolerance(rows[0]["test_accuracy"], row["test_accuracy"], c.tolerance):
                if lead:
                    folder.keep_smallest(cycle)
            else:
                log(f"accuracy {row['test_accuracy']:.2%} is more than {c.tolerance:g} point(s) below the unpruned "
                    f"head's {rows[0]['test_accuracy']:.2%}: the knee lies between cycles {cycle - 1} and {cycle}")
                break
    if c.checkpoints == "none" and lead:
        folder.drop_checkpoint(rows[-1]["cycle"])
    return rows


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


# ---------------------------------------------------------------- the second Deep Compression stage

def compress_smallest(c: StudyConfig, bits: Sequence[int] = (8, 4), progress: bool = True,
                      log: Log | None = print) -> tuple[list[dict], dict, list[dict]]:
    """Run (or read back) the geometric study `c`, then store its smallest head within tolerance at `bits`.

    Every stored file is loaded back and evaluated on the test set. Returns (the run's rows, the smallest row,
    one row per stored file: storage, bytes, ratio to the unpruned float32 head's file,
    test_correct, test_accuracy, drop_points below the unpruned head, path).
    """
    from . import compress

    if c.schedule != "geometric":
        raise ValueError(f"schedule={c.schedule!r}: compression takes the smallest head of a geometric run "
                         "(schedule='geometric'), which keeps that head on disk")
    rows = run_study(c, progress, log)
    best = smallest_within(rows, c.tolerance)
    folder = RunFolder(c)
    path = folder.smallest_path
    if not path.exists():
        raise ValueError(f"{path} is missing; delete {c.run_dir} and run the study again")
    head, _ = model.load_head(path)
    if head.widths() != [int(w) for w in best["widths"].split("-")]:
        raise ValueError(f"{path} holds widths {head.widths()}, not the smallest row's {best['widths']}; "
                         f"delete {c.run_dir} and run the study again")
    test_set = split_features(c, "test", progress)  # a finished run read nothing: the training set is not needed
    table = compress.compression_table(head, test_set, c.run_dir / "compressed", rows[0]["model_bytes"], bits,
                                       name=f"cycle{best['cycle']:03d}", device=c.device, float32_file=path)
    for r in table:
        r["drop_points"] = 100 * (rows[0]["test_accuracy"] - r["test_accuracy"])
    return rows, best, table
