"""The report's cycle (train, test, measure, prune), its configuration and profiles, results folders, resume.

A run lives in results/<name>/: config.json, history.csv (one row per finished cycle)
and checkpoints/cycle_NNN.pt, each written atomically (temporary file, then rename).
Starting a run whose folder exists resumes after its last finished cycle.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import capacity, features, model, prune, train

CHECKPOINT_POLICIES = ("all", "last", "none")
SCHEDULES = ("fixed", "geometric")
SMALLEST = "smallest_within_tolerance.pt"  # geometric runs keep the smallest head within tolerance here
GEOMETRIC_CYCLES = 12  # cycles bound for knee searches: halving 4,096 neurons reaches 1 in 12 cycles
RESUME_FREE = ("cycles", "device", "checkpoints")  # fields that may change when a run is resumed
COLUMNS = ("cycle", "method", "layer", "removed", "widths", "mec_bits", "test_correct", "test_total",
           "test_accuracy", "rho", "parameters", "model_bytes", "train_loss", "seconds")


@dataclass(frozen=True)
class StudyConfig:
    """Everything one run of the study depends on. Change fields with `make_config(profile, **overrides)`."""

    profile: str = "quick"           # name of the profile these values came from
    method: str = "l2"               # pruning criterion: l1, l2, reservoir, magnitude
    layer: int | str = 0             # hidden layer pruned (0: the 4096-wide first layer), or "all" in proportion
    schedule: str = "fixed"          # "fixed": k neurons a cycle (the report's); "geometric": a fraction of those left
    k: int = 100                     # fixed schedule: neurons removed per cycle (from layer 0 when layer="all")
    fraction: float = 0.5            # geometric schedule: share of each pruned layer's neurons removed per cycle
    tolerance: float = 1.0           # percentage points below the unpruned head's accuracy still counted as no loss;
                                     # a geometric run stops after the first cycle that falls further
    cycles: int = 3                  # cycles of train, test, measure (and prune between them)
    epochs: int = 2                  # training epochs per cycle
    batch_size: int = 128            # training batch (cached features, so large batches are cheap)
    lr: float = 2e-4                 # Adam learning rate
    train_limit: int | None = 2000   # class-balanced training subset (None: all 60,000)
    test_limit: int | None = 2000    # class-balanced test subset (None: all 10,000)
    data_seed: int = 0               # seed of the subsets, fixed across training seeds
    image_size: int = 32             # digits are resized to image_size x image_size (32 or more)
    weights: str = "auto"            # backbone weights: auto, imagenet, none
    head: tuple = (4096, 4096, 256)  # hidden widths of the head
    dropout: float = 0.5             # dropout between hidden layers
    seed: int = 0                    # initialization, shuffling, dropout and reservoir seed
    device: str = "auto"             # auto, cpu, cuda
    results_dir: str = "results"     # parent folder of results/<name>/
    name: str | None = None          # run name; None derives one from the fields above
    start: str | None = None         # a trained head checkpoint: cycle 0 measures it without training
    checkpoints: str = "last"        # keep "all" cycle checkpoints, the "last", or "none" once finished

    def __post_init__(self):
        object.__setattr__(self, "head", tuple(int(w) for w in self.head))
        validate(self)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        start = f"-from-{Path(self.start).stem}" if self.start else ""
        sched = f"k{self.k}" if self.schedule == "fixed" else f"geo{self.fraction:g}-tol{self.tolerance:g}"
        return f"{self.profile}-{self.method}-layer{self.layer}-{sched}-seed{self.seed}{start}"

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run_name


PROFILES = {
    # seconds a cycle on 2 CPU cores: enough to exercise every path in tests and notebooks
    "ci": dict(cycles=3, epochs=1, batch_size=64, train_limit=600, test_limit=500),
    # about 25 s a cycle on a 2-core CPU; the unpruned head reaches 88-90% (random-init backbone)
    "quick": dict(cycles=3, epochs=2, batch_size=128, train_limit=2000, test_limit=2000),
    # the report's run: all 60,000 / 10,000 images, 6 cycles of 3 epochs, 100 neurons a cycle
    "paper": dict(cycles=6, epochs=3, batch_size=256, train_limit=None, test_limit=None),
}


def validate(c: StudyConfig) -> None:
    """Raise ValueError naming the first field out of range and what it may be."""
    if c.profile not in PROFILES:
        raise ValueError(f"profile={c.profile!r} is unknown; choose one of {tuple(PROFILES)}")
    if c.method not in prune.METHODS:
        raise ValueError(f"method={c.method!r} is unknown; choose one of {prune.METHODS}")
    for name in ("cycles", "epochs", "batch_size", "k"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if c.layer != "all" and (not isinstance(c.layer, int) or isinstance(c.layer, bool)
                             or not 0 <= c.layer < len(c.head)):
        raise ValueError(f"layer={c.layer!r} is out of range: the head has {len(c.head)} hidden layers, "
                         f"so layer must be 0..{len(c.head) - 1} or 'all'")
    if any(w <= 0 for w in c.head):
        raise ValueError(f"head={c.head} must hold positive widths")
    if c.schedule not in SCHEDULES:
        raise ValueError(f"schedule={c.schedule!r} is unknown; choose one of {SCHEDULES}")
    if not isinstance(c.fraction, (int, float)) or not 0 < c.fraction < 1:
        raise ValueError(f"fraction={c.fraction!r} must lie strictly between 0 and 1 (0.5 halves a layer each cycle)")
    if not isinstance(c.tolerance, (int, float)) or not c.tolerance >= 0:
        raise ValueError(f"tolerance={c.tolerance!r} must be a non-negative number of percentage points")
    if c.schedule == "fixed":
        for layer in pruned_layers(c):
            removed = fixed_k(c, layer) * (c.cycles - 1)
            if removed >= c.head[layer]:
                raise ValueError(f"k={c.k} x {c.cycles - 1} prune steps removes {removed} neurons, but hidden layer "
                                 f"{layer} has only {c.head[layer]}: lower k or cycles")
    for name in ("train_limit", "test_limit"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name}={value!r} must be None (all images) or a positive integer")
    if not isinstance(c.image_size, int) or c.image_size < 32:
        raise ValueError(f"image_size={c.image_size!r} must be an integer of at least 32 "
                         "(VGG16's five max-pools take 28 x 28 to nothing)")
    if c.weights not in model.WEIGHT_CHOICES:
        raise ValueError(f"weights={c.weights!r} is not one of {model.WEIGHT_CHOICES}")
    if not 0 <= c.dropout < 1:
        raise ValueError(f"dropout={c.dropout!r} must be in [0, 1)")
    if not c.lr > 0:
        raise ValueError(f"lr={c.lr!r} must be positive")
    if c.device not in ("auto", "cpu", "cuda") and not str(c.device).startswith("cuda:"):
        raise ValueError(f"device={c.device!r} must be 'auto', 'cpu' or 'cuda'")
    if c.checkpoints not in CHECKPOINT_POLICIES:
        raise ValueError(f"checkpoints={c.checkpoints!r} is not one of {CHECKPOINT_POLICIES}")


def pruned_layers(c: StudyConfig) -> list[int]:
    """The hidden layers the config prunes."""
    return list(range(len(c.head))) if c.layer == "all" else [c.layer]


def fixed_k(c: StudyConfig, layer: int) -> int:
    """Neurons the fixed schedule removes from `layer` per cycle: k, scaled to the layer's width for "all"."""
    if c.layer != "all":
        return c.k
    return max(1, round(c.k * c.head[layer] / c.head[0]))


def prune_plan(c: StudyConfig, widths: Sequence[int]) -> list[tuple[int, int]]:
    """(layer, neurons to remove) for the next cycle, given the head's current widths [in, n1, .., out].

    Fixed: k per cycle. Geometric: round(fraction x neurons left), at least 1. No layer
    goes below one neuron; an empty plan means nothing is left to prune.
    """
    plan = []
    for layer in pruned_layers(c):
        n = widths[layer + 1]
        k = fixed_k(c, layer) if c.schedule == "fixed" else max(1, round(c.fraction * n))
        k = min(k, n - 1)
        if k >= 1:
            plan.append((layer, k))
    return plan


def within_tolerance(baseline: float, accuracy: float, tolerance: float) -> bool:
    """True when `accuracy` is at most `tolerance` percentage points below `baseline` (both fractions)."""
    return accuracy >= baseline - tolerance / 100 - 1e-12


def smallest_within(rows: Sequence[dict], tolerance: float = 1.0) -> dict:
    """The row with the fewest parameters whose accuracy is within `tolerance` points of cycle 0's."""
    if not rows:
        raise ValueError("no rows: run the study first")
    ok = [r for r in rows if within_tolerance(rows[0]["test_accuracy"], r["test_accuracy"], tolerance)]
    return min(ok, key=lambda r: (r["parameters"], -r["test_accuracy"]))


def make_config(profile: str = "quick", **overrides) -> StudyConfig:
    """The named profile's config with `overrides` applied field by field (unknown fields are an error)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is unknown; choose one of {tuple(PROFILES)}")
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; fields are {sorted(names)}")
    return StudyConfig(profile=profile, **{**PROFILES[profile], **overrides})


def config_dict(c: StudyConfig) -> dict:
    d = dataclasses.asdict(c)
    d["head"] = list(c.head)
    return d


# ---------------------------------------------------------------- data and heads

def prepare_features(c: StudyConfig, progress: bool = True):
    """(train, test) FeatureSets for the config: the backbone runs only where the cache has nothing."""
    if not train.is_lead():
        train.barrier()  # distributed: rank 0 fills the cache first, the others then read it
    sets = (_split_features(c, "train", progress and train.is_lead()), _split_features(c, "test", progress))
    if train.is_lead():
        train.barrier()
    return sets


def _split_features(c: StudyConfig, split: str, progress: bool = True):
    limit = c.train_limit if split == "train" else c.test_limit
    return features.load_features(split, image_size=c.image_size, weights=c.weights, limit=limit, seed=c.data_seed,
                                  device=c.device, progress=progress and train.is_lead())


def new_head(c: StudyConfig, train_set) -> model.VGGHead:
    """A fresh head for the config, initialized from c.seed, standardizing with `train_set` statistics."""
    head = model.build_head(c.head, 10, model.map_size_for(c.image_size), c.dropout, seed=c.seed)
    head.norm.set_stats(*features.feature_stats(train_set.maps))
    return head


def train_start(c: StudyConfig, path: str | os.PathLike, progress: bool = True,
                log: Callable[[str], None] | None = print):
    """Train the unpruned head for c.epochs (cycle 0 of the study) and save it to `path`; returns (head, record).

    record: {"epochs": per-epoch loss / accuracy / test accuracy, "test": evaluate() on the test set,
    "config": the fields that made it}. A file at `path` made with the same fields is reused.
    """
    log = log or (lambda s: None)
    path = Path(path)
    wanted = {k: v for k, v in config_dict(c).items() if k in _START_FIELDS}
    if path.exists():
        head, record = model.load_head(path)
        if record.get("config") == wanted:
            log(f"reusing the trained head in {path} (test accuracy {record['test']['accuracy']:.4f})")
            return head, record
        log(f"{path} was trained with other settings; training a new one")
    train_set, test_set = prepare_features(c, progress)
    head = new_head(c, train_set)
    epochs = train.fit(head, train_set, c.epochs, c.batch_size, c.lr, seed=c.seed * 1000, device=c.device,
                       progress=progress, desc="train", test=test_set)
    result = train.evaluate(head, test_set, device=c.device)
    record = {"epochs": epochs, "test": result, "config": wanted}
    model.save_head(head, path, extra=record)
    log(f"trained head saved to {path} (test accuracy {result['accuracy']:.4f})")
    return head, record


# the fields a trained start depends on (not the pruning ones)
_START_FIELDS = ("epochs", "batch_size", "lr", "train_limit", "test_limit", "data_seed", "image_size", "weights",
                 "head", "dropout", "seed", "device")


# ---------------------------------------------------------------- files

def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rows_to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


_INT = {"cycle", "removed", "mec_bits", "test_correct", "test_total", "parameters", "model_bytes"}
_FLOAT = {"test_accuracy", "rho", "train_loss", "seconds"}


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


def _checkpoint(run_dir: Path, cycle: int) -> Path:
    return run_dir / "checkpoints" / f"cycle_{cycle:03d}.pt"


def _resume_state(c: StudyConfig) -> tuple[list[dict], model.VGGHead | None]:
    """Rows already finished and the head after the last of them (None when starting fresh)."""
    run_dir = c.run_dir
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        return [], None
    try:
        saved = json.loads(cfg_path.read_text())
    except Exception as err:
        raise ValueError(f"{cfg_path} is unreadable ({err}); delete {run_dir} to start that run over") from err
    now = config_dict(c)
    defaults = config_dict(StudyConfig())  # fields added since a run was saved count as their defaults
    changed = [k for k in now if k not in RESUME_FREE and saved.get(k, defaults[k]) != now[k]]
    if changed:
        k = changed[0]
        raise ValueError(f"{run_dir} holds a run with {k}={saved.get(k)!r}, not {now[k]!r}; "
                         "give this run another name, or delete that folder to start over")
    hist = run_dir / "history.csv"
    rows = read_history(hist) if hist.exists() else []
    if not rows:
        return [], None
    last = rows[-1]["cycle"]
    if last + 1 >= c.cycles or _stopped(c, rows):
        return rows[:c.cycles], None
    ckpt = _checkpoint(run_dir, last)
    if not ckpt.exists():
        raise ValueError(f"{run_dir} finished {last + 1} cycles but kept no checkpoint of the last one "
                         f"(checkpoints='none'), so it cannot run more; delete {run_dir} to redo it")
    head, _ = model.load_head(ckpt)
    return rows, head


# ---------------------------------------------------------------- the cycle

def _stopped(c: StudyConfig, rows: Sequence[dict]) -> bool:
    """A geometric run ends after the first cycle whose accuracy fell out of tolerance."""
    return (c.schedule == "geometric" and len(rows) > 1
            and not within_tolerance(rows[0]["test_accuracy"], rows[-1]["test_accuracy"], c.tolerance))


def _save_smallest(run_dir: Path, ckpt: Path) -> None:
    """Keep a link (or copy) of a cycle checkpoint as the run's smallest head within tolerance."""
    import shutil

    tmp = run_dir / (SMALLEST + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt, tmp)
    except OSError:
        shutil.copyfile(ckpt, tmp)
    os.replace(tmp, run_dir / SMALLEST)


def run_study(c: StudyConfig, progress: bool = True, log: Callable[[str], None] | None = print) -> list[dict]:
    """Run (or resume) the study for `c`; returns one row per cycle (see COLUMNS).

    Cycle 0 trains the fresh head (or measures `c.start` as it is); every later cycle removes
    neurons of the pruned layer(s) by c.method (see `prune_plan`), then trains c.epochs epochs.
    Each cycle ends with test accuracy, MEC (bits, live neurons), rho = correct / MEC and a
    checkpoint. A geometric run stops after the first cycle that falls out of tolerance (at most
    c.cycles) and keeps its smallest head within tolerance as results/<name>/smallest_within_tolerance.pt.
    """
    lead = train.is_lead()  # under torchrun every rank trains; only rank 0 logs and writes files
    log = log if log and lead else (lambda s: None)
    progress = progress and lead
    rows, head = _resume_state(c)
    if rows and head is None:  # finished earlier
        log(f"{c.run_dir}: all {c.cycles} cycles already finished; reading them back")
        return rows
    train_set, test_set = prepare_features(c, progress)
    run_dir = c.run_dir
    first = len(rows)
    if head is None:
        if c.start:
            head, _ = model.load_head(c.start)
            if head.widths()[1:-1] != list(c.head):
                raise ValueError(f"start={c.start} has hidden widths {head.widths()[1:-1]}, not head={list(c.head)}")
        else:
            head = new_head(c, train_set)
    else:
        log(f"{run_dir}: resuming after cycle {first - 1} ({first} of {c.cycles} finished)")
    if lead:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        _write_atomic(run_dir / "config.json", json.dumps(config_dict(c), indent=2) + "\n")
    if first == 0:
        log(format_table([], COLUMNS_SHOWN, header_only=True))
    for cycle in range(first, c.cycles):
        start = time.perf_counter()
        if cycle > 0:
            plan = prune_plan(c, head.widths())
            if not plan:
                log(f"every pruned layer is down to one neuron: stopping after cycle {cycle - 1}")
                break
            for layer, k in plan:
                # layer 0 keeps the seed the report-style runs always used; other layers get their own
                prune.prune_neurons(head, layer, k, c.method, seed=c.seed * 1000 + cycle + 7919 * layer)
        train_loss = float("nan")
        if cycle > 0 or not c.start:
            epochs = train.fit(head, train_set, c.epochs, c.batch_size, c.lr, seed=c.seed * 1000 + cycle,
                               device=c.device, progress=progress, desc=f"cycle {cycle}")
            train_loss = epochs[-1]["loss"]
        result = train.evaluate(head, test_set, device=c.device)
        mec_bits = capacity.mec_of(head)
        ckpt = _checkpoint(run_dir, cycle)
        size = model.save_head(head, ckpt, extra={"cycle": cycle}) if lead else 0
        widths = head.widths()
        row = {"cycle": cycle, "method": c.method, "layer": c.layer, "removed": sum(c.head) - sum(widths[1:-1]),
               "widths": "-".join(map(str, widths)), "mec_bits": mec_bits, "test_correct": result["correct"],
               "test_total": result["total"], "test_accuracy": result["accuracy"],
               "rho": capacity.generalization_ratio(result["correct"], mec_bits),
               "parameters": sum(p.numel() for p in head.parameters()), "model_bytes": size,
               "train_loss": train_loss, "seconds": time.perf_counter() - start}
        rows.append(row)
        if lead:
            _write_atomic(run_dir / "history.csv", rows_to_csv(rows))
            if cycle > 0 and c.checkpoints != "all":
                _checkpoint(run_dir, cycle - 1).unlink(missing_ok=True)
        log(format_table([row], COLUMNS_SHOWN, rows_only=True))
        if c.schedule == "geometric":
            if within_tolerance(rows[0]["test_accuracy"], row["test_accuracy"], c.tolerance):
                if lead:
                    _save_smallest(run_dir, ckpt)
            else:
                log(f"accuracy {row['test_accuracy']:.2%} is more than {c.tolerance:g} point(s) below the unpruned "
                    f"head's {rows[0]['test_accuracy']:.2%}: the knee lies between cycles {cycle - 1} and {cycle}")
                break
    last_ckpt = _checkpoint(run_dir, rows[-1]["cycle"])
    if c.checkpoints == "none" and lead:
        last_ckpt.unlink(missing_ok=True)
    return rows


def run_grid(base: StudyConfig, methods: Sequence[str] = prune.METHODS, seeds: Sequence[int] = (0,),
             progress: bool = True, log: Callable[[str], None] | None = print) -> list[dict]:
    """run_study for every (method, seed); rows of all runs, each with a `seed` column added."""
    rows = []
    for seed in seeds:
        for method in methods:
            c = dataclasses.replace(base, method=method, seed=seed, name=None)
            if log:
                log(f"--- {c.run_name}")
            rows += [{**r, "seed": seed} for r in run_study(c, progress, log)]
    return rows


# ---------------------------------------------------------------- tables

def seed_table() -> list[dict]:
    """The 2019 study's own history (cycle, first_layer_neurons, test_accuracy, mec_bits), shipped as data."""
    from importlib.resources import files

    text = (files("labkit") / "data_files" / "seed_results.csv").read_text()
    return [{"cycle": int(r["cycle"]), "first_layer_neurons": int(r["first_layer_neurons"]),
             "test_accuracy": float(r["test_accuracy"]), "mec_bits": int(r["mec_bits"])}
            for r in csv.DictReader(io.StringIO(text))]


COLUMNS_SHOWN = ("cycle", "method", "widths", "mec_bits", "test_correct", "test_accuracy", "rho",
                 "parameters", "model_bytes", "seconds")
_WIDTH = {"cycle": 5, "method": 9, "widths": 24, "mec_bits": 13, "test_correct": 12, "test_accuracy": 13,
          "rho": 10, "parameters": 13, "model_bytes": 13, "seconds": 8}


def _cell(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, header_only: bool = False,
                 rows_only: bool = False) -> str:
    """Rows of dicts as an aligned plain-text table; integers get thousands separators."""
    columns = list(columns or (rows[0].keys() if rows else COLUMNS))
    width = {c: max(_WIDTH.get(c, len(c)), len(c), *(len(_cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = [] if rows_only else ["  ".join(c.rjust(width[c]) for c in columns)]
    if not header_only:
        lines += ["  ".join(_cell(r.get(c, "")).rjust(width[c]) for c in columns) for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- the second Deep Compression stage

def compress_smallest(c: StudyConfig, bits: Sequence[int] = (8, 4), progress: bool = True,
                      log: Callable[[str], None] | None = print) -> tuple[list[dict], dict, list[dict]]:
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
    path = c.run_dir / SMALLEST
    if not path.exists():
        raise ValueError(f"{path} is missing; delete {c.run_dir} and run the study again")
    head, _ = model.load_head(path)
    if head.widths() != [int(w) for w in best["widths"].split("-")]:
        raise ValueError(f"{path} holds widths {head.widths()}, not the smallest row's {best['widths']}; "
                         f"delete {c.run_dir} and run the study again")
    test_set = _split_features(c, "test", progress)  # a finished run read nothing: the training set is not needed
    table = compress.compression_table(head, test_set, c.run_dir / "compressed", rows[0]["model_bytes"], bits,
                                       name=f"cycle{best['cycle']:03d}", device=c.device, float32_file=path)
    for r in table:
        r["drop_points"] = 100 * (rows[0]["test_accuracy"] - r["test_accuracy"])
    return rows, best, table
