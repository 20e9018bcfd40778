"""The study's settings: the frozen StudyConfig, the profiles, their validation and the prune plan. A config is
checked when made: a bad field raises ValueError naming it, what it may be and the fix."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import checks

# the facts the settings are checked against, kept here so that this module imports no torch
METHODS = ("l1", "l2", "reservoir", "magnitude")  # pruning criteria (labkit.prune)
ADDED_CRITERIA: dict[str, str] = {}  # criteria a notebook defined (prune.criterion): name -> its code's fingerprint
WEIGHT_CHOICES = ("auto", "imagenet", "random")  # backbone weights (labkit.backbone.build_backbone)
CLASSES = 10  # MNIST's ten digits: the head's output width, defined here once
# the settings that choose a run's images (`StudyConfig.subsets`); image_size and weights, how they are seen
SUBSET_FIELDS = ("dataset", "train_limit", "val_limit", "test_limit", "data_seed")

CONTROLS = ("none", "scratch")  # the equal-budget control (nothing removed) and a fresh head of given widths
CHECKPOINT_POLICIES = ("all", "last", "off")
SCHEDULES = ("fixed", "geometric", "oneshot")
SEEDS = {"ci": 2, "quick": 3, "paper": 3}  # independently trained heads the notebooks compare (curve and knee)
GEOMETRIC_CYCLES = 12  # steps bound for a knee search (11 halvings take 4,096 neurons to 2)
# A pruned knee probe (labkit.knee) trains at lr x lr_factor until val accuracy has not risen for `patience` epochs
# (at most `epochs`), keeping its best; its control trains as many. lr_factor 1: on the quick profile a tenth of
# the rate left an eighth of the widths 19 points below the control, the full rate about 1 (benchmarks/knee_rate.py)
KNEE_RECOVERY = {"ci": dict(epochs=3, patience=1, lr_factor=1.0),
                 "quick": dict(epochs=10, patience=2, lr_factor=1.0),
                 "paper": dict(epochs=10, patience=2, lr_factor=1.0)}
KNEE_RESOLUTION = 1.15  # refinement stops once the last widths within tolerance are <= 15% above the first outside
# What each setting counts for (runs.identity, run names and study.START_FIELDS read it). All count for a run's
# identity but "resume" (may change on resume), "place" (where and under what name it is kept) and "start file"
# (compared by its record, not its path); a control also ignores "pruning" ones. "start": the trained start
# (cycle 0's head, notebook 02) depends on it.
FIELD_ROLES: dict[str, tuple[str, ...]] = {
    "profile": (), "method": (),
    "layer": ("pruning",), "schedule": ("pruning",), "k": ("pruning",), "fraction": ("pruning",),
    "tolerance": ("pruning",),
    "target": ("pruning",), "cycles": ("resume",), "epochs": (), "recover_patience": (), "cycle_lr": (),
    "lr_epochs": ("start",), "lr_drop": ("start",), "start_epochs": ("start",), "patience": ("start",),
    "batch_size": ("start",), "lr": ("start",), "train_limit": ("start",), "val_limit": ("start",),
    "test_limit": ("start",), "data_seed": ("start",), "dataset": ("start",), "image_size": ("start",),
    "weights": ("start",),
    "hidden": ("start",), "dropout": ("start",), "seed": ("start",),
    "device": ("resume", "start"),  # a start trained on a GPU is another file than one trained on the CPU
    "results_dir": ("place",), "name": ("place",), "start": ("start file",), "checkpoints": ("resume",),
}


def fields_for(*roles: str) -> tuple[str, ...]:
    """The settings that have any of `roles` in FIELD_ROLES, in the config's order."""
    return tuple(f for f, has in FIELD_ROLES.items() if set(has) & set(roles))


PRUNING_FIELDS = fields_for("pruning")  # what a control ignores
RESUME_FREE = fields_for("resume")  # what may change when a run is resumed


@dataclass(frozen=True)
class StudyConfig:
    """Everything one run of the study depends on. Change fields with `make_config(profile, **overrides)`."""

    profile: str = "quick"           # the profile these values came from
    method: str = "l2"               # a pruning criterion (METHODS) or a control: "none" or "scratch" (CONTROLS)
    layer: int | str = 0             # hidden layer pruned (0: the 4096-wide first), or "all" in proportion
    schedule: str = "fixed"          # fixed: k a cycle; geometric: a share of those left; oneshot: to `target`
    k: int = 100                     # fixed: neurons removed per cycle (from layer 0 when layer="all")
    fraction: float = 0.5            # geometric and knee search: share of a layer's neurons removed per step
    tolerance: float = 1.0           # val accuracy points below the equal-budget control counted as no loss
    target: tuple | None = None      # oneshot: the hidden widths cycle 1 prunes to
    cycles: int = 3                  # cycles of train, test, measure (and prune between them)
    epochs: int = 2                  # per cycle after cycle 0 (at most, with recover_patience); scratch: in all
    recover_patience: int | None = None  # None: `epochs` a cycle; n: until val accuracy stalls n epochs, best kept
    cycle_lr: float | None = None    # the rate of every cycle after cycle 0; None: lr x lr_drop (fine-tuning)
    lr_epochs: int = 5               # every head trains lr_epochs epochs at lr, then at lr x lr_drop (the
    lr_drop: float = 0.1             # fine-tuning rate of every cycle after cycle 0)
    start_epochs: int = 20           # cycle 0 fine-tunes until val accuracy has not risen for `patience` epochs (at
    patience: int = 3                # most start_epochs) and keeps its best: pruning starts at a plateau
    batch_size: int = 128            # training batch (cached features, so large batches are cheap)
    lr: float = 2e-4                 # Adam learning rate
    train_limit: int | None = 2000   # class-balanced training subset (None: all training images outside validation)
    val_limit: int | None = 2000     # class-balanced validation split of the official training images, disjoint
                                     # from training; it takes every decision (None: data.DATASETS's own)
    test_limit: int | None = 2000    # class-balanced test subset, never decides (None: all official test images)
    data_seed: int = 0               # seed of the subsets, fixed across training seeds
    dataset: str = "mnist"           # the images (data.DATASETS; MNIST is the one labkit ships offline)
    image_size: int = 32             # digits are resized to image_size x image_size (32 or more)
    weights: str = "auto"            # backbone weights: auto (ImageNet where available), imagenet, random
    hidden: tuple = (4096, 4096, 256)  # hidden widths of the head (--hidden)
    dropout: float = 0.5             # dropout between hidden layers
    seed: int = 0                    # initialization, shuffling, dropout and reservoir seed
    device: str = "auto"             # auto, cpu, cuda, cuda:N
    results_dir: str | None = None   # parent folder of the run's folder; None: $LABKIT_RESULTS/<profile>/runs
    name: str | None = None          # run name; None derives one from the fields above
    start: str | None = None         # a trained head checkpoint: cycle 0 measures it without training
    checkpoints: str = "last"        # "all" kept; "last" keeps the newest (a killed run resumes); "off" writes none

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(checks.integers("hidden", self.hidden, minimum=1, length=1,
                                                               hint="give the hidden widths, e.g. (4096, 4096, 256)")))
        if self.target is not None:
            object.__setattr__(self, "target", tuple(checks.integers("target", self.target, minimum=1, length=1,
                                                                   hint="give the hidden widths to prune to")))
        validate(self)

    @property
    def subsets(self):
        """The images this run uses, as one value (data.Subsets): what every module below the settings reads."""
        from .data import DATASETS, Subsets

        checks.choice("dataset", self.dataset, tuple(DATASETS))
        val = DATASETS[self.dataset]["val"] if self.val_limit is None else self.val_limit
        return Subsets(self.train_limit, val, self.test_limit, self.data_seed, self.dataset)

    @property
    def run_name(self) -> str:
        """`name`, or one derived from the profile, method, what it prunes, seed, start and each other setting that
        differs from the profile's ("-hidden512-512-64-lr0.001"): runs of other settings never share a folder."""
        if self.name:
            return self.name
        start = f"-from-{Path(self.start).stem}" if self.start else ""
        if self.method == "none":
            return f"{self.profile}-none-seed{self.seed}{start}{_differences(self)}"
        if self.method == "scratch":
            return (f"{self.profile}-scratch-{Widths(self.hidden)}-e{self.epochs}-seed{self.seed}"
                    f"{_differences(self, ('hidden', 'epochs'))}")
        sched = {"fixed": f"k{self.k}", "geometric": f"geo{self.fraction:g}-tol{self.tolerance:g}",
                 "oneshot": f"to{Widths(self.target or ())}"}[self.schedule]
        method = f"{self.method}-{ADDED_CRITERIA[self.method]}" if self.method in ADDED_CRITERIA else self.method
        return f"{self.profile}-{method}-layer{self.layer}-{sched}-seed{self.seed}{start}{_differences(self)}"

    @property
    def run_dir(self) -> Path:
        parent = Path(self.results_dir).expanduser() if self.results_dir else results_root() / self.profile / "runs"
        return parent / self.run_name


# how a run name spells a setting that differs from its profile's ("-lr0.001", "-224px"); others by name
_NAME_TAGS = {"hidden": "hidden", "epochs": "e", "batch_size": "b", "lr": "lr", "train_limit": "train",
              "val_limit": "val", "test_limit": "test", "data_seed": "data", "image_size": "px", "weights": "weights-",
              "dropout": "dropout", "recover_patience": "recover", "cycle_lr": "cyclelr"}
# fields a derived name never spells: its first part says them, they may change on resume, or they place it
_UNNAMED = ("profile", "method", "seed", "start", "name", "results_dir", "layer", "schedule", "k", "fraction",
            "tolerance", "target")


def _differences(c: "StudyConfig", spelled: Sequence[str] = ()) -> str:
    """"-<tag><value>" for each setting of `c` that differs from its profile's (see `StudyConfig.run_name`)."""
    base = dataclasses.asdict(make_config(c.profile))
    skip = {*_UNNAMED, *PRUNING_FIELDS, *RESUME_FREE, *spelled}
    parts = []
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if f.name in skip or value == base.get(f.name):
            continue
        if isinstance(value, (tuple, list)):
            text = "-".join(map(str, value))
        elif value is None:
            text = "all"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        text = "".join(ch if ch.isalnum() or ch in "._+-" else "_" for ch in text)
        parts.append(f"{text}px" if f.name == "image_size" else f"{_NAME_TAGS.get(f.name, f.name)}{text}")
    return "".join("-" + p for p in parts)


def check_name(name) -> str:
    """A run name must be one folder name inside the results folder; ValueError saying why else."""
    bad = None
    if not isinstance(name, str) or not name.strip():
        bad = "it is empty"
    elif name in (".", ".."):
        bad = f"{name!r} names a folder that is not a run's own"
    elif any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)):
        bad = "it holds a path separator"
    elif "\0" in name:
        bad = "it holds a NUL character"
    elif len(name.encode(errors="surrogateescape")) > 255:
        bad = "it is longer than a folder name may be (255 bytes)"
    if bad:
        raise ValueError(f"name={name!r} must be one folder name ({bad}): the run's folder goes inside the results "
                         "folder, so give a plain name such as 'my-run' (--name) and choose that folder with "
                         "--results")
    return name


class Widths(tuple):
    """A head's widths, inputs to classes: a tuple of ints that prints "25088-4096-4096-256-10" (a row's `widths`)."""

    def __new__(cls, widths=()):
        return super().__new__(cls, parse_widths(widths) if isinstance(widths, str) else (int(w) for w in widths))

    def __str__(self) -> str:
        return "-".join(map(str, self))

    def __repr__(self) -> str:
        return f"Widths({str(self)!r})"

    @property
    def hidden(self) -> tuple[int, ...]:
        """The hidden widths alone (inputs and classes left out)."""
        return tuple(self[1:-1])


def widths_text(widths: Sequence[int]) -> str:
    """[25088, 4096, 4096, 256, 10] as tables and names write it: "25088-4096-4096-256-10"."""
    return str(Widths(widths))


def parse_widths(widths) -> Widths:
    """Widths from "25088-4096-4096-256-10" or a sequence: the one place a widths string is read back."""
    if isinstance(widths, Widths):
        return widths
    if isinstance(widths, str):
        try:
            return Widths(int(w) for w in widths.split("-"))
        except ValueError:
            raise ValueError(f"widths={widths!r} is not a widths column such as '25088-4096-4096-256-10'") from None
    return Widths(widths)


def hidden_text(widths) -> str:
    """The hidden widths alone, "4096-4096-256", from either form (what sentences and figure labels print)."""
    return widths_text(parse_widths(widths)[1:-1])


PROFILES = {
    # seconds a cycle on 2 CPU cores: enough to exercise every path in tests and notebooks
    "ci": dict(cycles=3, epochs=1, lr_epochs=3, start_epochs=8, patience=2, batch_size=64, train_limit=600, val_limit=300,
               test_limit=500),
    # a few seconds a cycle on a 2-core CPU; the unpruned head reaches about 89% (random-init backbone)
    "quick": dict(cycles=3, epochs=2, lr_epochs=5, start_epochs=20, patience=3, batch_size=256, train_limit=2000,
                  val_limit=5000, test_limit=5000),
    # the report's run: 6 cycles of 3 epochs, 100 neurons a cycle, all of MNIST (validation split: data.DATASETS)
    "paper": dict(cycles=6, epochs=3, lr_epochs=3, start_epochs=12, patience=2, batch_size=256, train_limit=None,
                  val_limit=None, test_limit=None),
}


def validate(c: StudyConfig) -> None:
    """Raise ValueError naming the first field out of range, what it may be and how to fix it."""
    checks.choice("profile", c.profile, tuple(PROFILES))
    checks.choice("method", c.method, (*METHODS, *ADDED_CRITERIA, *CONTROLS))
    if c.method == "scratch" and c.start:
        raise ValueError(f"method='scratch' trains a fresh head, but start={c.start!r} names a trained one; "
                         "drop start, or use method='none' to go on training that head without pruning")
    for name in ("cycles", "epochs", "lr_epochs", "start_epochs", "patience", "batch_size", "k"):
        checks.integer(name, getattr(c, name), minimum=1)
    if c.layer != "all" and (checks._as_int(c.layer) is None or not 0 <= c.layer < len(c.hidden)):
        raise ValueError(f"layer={c.layer!r} is out of range: the head has {len(c.hidden)} hidden layers, "
                         f"so layer must be 0..{len(c.hidden) - 1} or 'all'")
    checks.choice("schedule", c.schedule, SCHEDULES)
    if c.recover_patience is not None:
        checks.integer("recover_patience", c.recover_patience, minimum=1, hint="None trains exactly `epochs` a cycle")
    if c.cycle_lr is not None:
        checks.number("cycle_lr", c.cycle_lr, above=0, hint="None fine-tunes at lr x lr_drop")
    if c.schedule == "oneshot" and c.method not in CONTROLS:
        _check_target(c)
    checks.number("fraction", c.fraction, above=0, below=1, hint="0.5 halves a layer each cycle")
    checks.number("tolerance", c.tolerance, minimum=0, hint="it counts percentage points of accuracy")
    if c.schedule == "fixed" and c.method not in CONTROLS:
        for layer in pruned_layers(c):
            removed = fixed_k(c, layer) * (c.cycles - 1)
            if removed >= c.hidden[layer]:
                raise ValueError(f"k={c.k} x {c.cycles - 1} prune steps removes {removed} neurons, but hidden layer "
                                 f"{layer} has only {c.hidden[layer]}: lower k or cycles")
    c.subsets  # the dataset and its three subsets: ValueError naming the one that does not fit
    checks.integer("image_size", c.image_size, minimum=32, hint="VGG16's five max-pools take 28 x 28 to nothing")
    checks.choice("weights", c.weights, WEIGHT_CHOICES)
    checks.number("dropout", c.dropout, minimum=0, below=1)
    checks.number("lr", c.lr, above=0)
    checks.number("lr_drop", c.lr_drop, above=0, maximum=1, hint="0.1 fine-tunes at a tenth of lr")
    checks.integer("seed", c.seed, minimum=0)
    checks.integer("data_seed", c.data_seed, minimum=0)
    if c.device not in ("auto", "cpu", "cuda") and not (isinstance(c.device, str) and c.device.startswith("cuda:")
                                                       and c.device[5:].isdigit()):
        raise ValueError(f"device={c.device!r} is not a device; choose one of 'auto', 'cpu', 'cuda', 'cuda:N' "
                         "(--device on the command line)")
    checks.choice("checkpoints", c.checkpoints, CHECKPOINT_POLICIES)
    if c.name is not None:
        check_name(c.name)
    if c.start is not None and not Path(c.start).is_file():
        raise ValueError(f"start={c.start!r} is not a file: give the path of a trained head (notebook 02 saves one "
                         "as $LABKIT_RESULTS/<profile>/trained_head_seed0.pt)")


def _check_target(c: StudyConfig) -> None:
    """ValueError unless a oneshot run's `target` is widths it can prune to in its one step."""
    if c.target is None or len(c.target) != len(c.hidden):
        raise ValueError(f"schedule='oneshot' prunes to the hidden widths `target` in one step: give {len(c.hidden)} "
                         f"widths (target={c.target!r}), e.g. target=(512, 512, 32)")
    for layer, (t, n) in enumerate(zip(c.target, c.hidden)):
        if t > n or (t < n and layer not in pruned_layers(c)):
            raise ValueError(f"target={Widths(c.target).__str__()} asks hidden layer {layer} for {t} neurons of "
                             f"{n}, which layer={c.layer!r} does not prune: give widths at most the head's, changed "
                             "only in the pruned layer(s)")
    if tuple(c.target) == tuple(c.hidden):
        raise ValueError(f"target={list(c.target)} equals the head's widths: a oneshot run must remove something")
    if c.cycles != 2:
        raise ValueError(f"cycles={c.cycles}: a oneshot run has two cycles (the start, then the pruned head)")


def pruned_layers(c: StudyConfig) -> list[int]:
    """The hidden layers the config prunes."""
    return list(range(len(c.hidden))) if c.layer == "all" else [c.layer]


def fixed_k(c: StudyConfig, layer: int) -> int:
    """Neurons the fixed schedule removes from `layer` per cycle: k, scaled to the layer's width for "all"."""
    if c.layer != "all":
        return c.k
    return max(1, round(c.k * c.hidden[layer] / c.hidden[0]))


def prune_plan(c: StudyConfig, widths: Sequence[int]) -> list[tuple[int, int]]:
    """(layer, neurons to remove) for the next cycle from the head's widths [in, n1, .., out]: fixed k, geometric
    round(fraction x left) (at least 1), oneshot down to `target`; a layer keeps one neuron; [] when none can go."""
    if c.method in CONTROLS:
        return []
    if c.schedule == "oneshot":
        return [(layer, n - t) for layer, (n, t) in enumerate(zip(widths[1:-1], c.target)) if n > t]
    plan = []
    for layer in pruned_layers(c):
        n = widths[layer + 1]
        k = fixed_k(c, layer) if c.schedule == "fixed" else max(1, round(c.fraction * n))
        k = min(k, n - 1)
        if k >= 1:
            plan.append((layer, k))
    return plan


def make_config(profile: str = "quick", **overrides) -> StudyConfig:
    """The named profile's config with `overrides` applied field by field (unknown fields are an error)."""
    checks.choice("profile", profile, tuple(PROFILES))
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; fields are {sorted(names)}")
    return StudyConfig(profile=profile, **{**PROFILES[profile], **overrides})


def control_of(c: StudyConfig) -> StudyConfig:
    """The equal-budget control of a run: the same start, cycles and epochs, nothing removed."""
    return dataclasses.replace(c, method="none", schedule="fixed", target=None, name=None)


def scratch_of(c: StudyConfig, hidden: Sequence[int], epochs_total: int) -> StudyConfig:
    """A fresh head of widths `hidden` trained for `epochs_total` epochs in one go: the from-scratch control."""
    return dataclasses.replace(c, method="scratch", schedule="fixed", target=None, hidden=tuple(hidden),
                               epochs=epochs_total, cycles=1, start=None, name=None, recover_patience=None,
                               cycle_lr=None)


def config_dict(c: StudyConfig) -> dict:
    """The config as plain JSON-ready values."""
    d = dataclasses.asdict(c)
    d["hidden"] = list(c.hidden)
    if c.target is not None:
        d["target"] = list(c.target)
    return d


def results_root() -> Path:
    """Where every result goes: $LABKIT_RESULTS, else ./results (absolute)."""
    return Path(os.environ.get("LABKIT_RESULTS") or "results").expanduser().resolve()
