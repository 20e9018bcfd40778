"""The study's settings: the StudyConfig dataclass, the profiles, their validation and the prune plan.

A config is frozen and checked when it is made: a bad field raises ValueError naming the field,
what it may be and how to fix it, before anything is computed or written.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import checks

# The plain facts the settings are checked against, here so that this module imports no torch (model, prune
# and data take them from here).
METHODS = ("l1", "l2", "reservoir", "magnitude")  # pruning criteria (labkit.prune)
ADDED_CRITERIA: dict[str, str] = {}  # criteria a notebook defined (prune.criterion): name -> its code's fingerprint
WEIGHT_CHOICES = ("auto", "imagenet", "random")  # backbone weights (labkit.backbone.build_backbone)
CLASSES = 10  # MNIST's ten digits: the head's output width, defined here once
# the settings that choose a run's images (`StudyConfig.subsets`, one data.Subsets); image_size and weights choose
# how the backbone sees them
SUBSET_FIELDS = ("dataset", "train_limit", "val_limit", "test_limit", "data_seed")

CONTROLS = ("none", "scratch")  # the equal-budget control (nothing removed) and a fresh head of given widths
CHECKPOINT_POLICIES = ("all", "last", "off")
SCHEDULES = ("fixed", "geometric", "oneshot")
SEEDS = {"ci": 2, "quick": 3, "paper": 3}  # independently trained heads the notebooks compare (curve and knee)
GEOMETRIC_CYCLES = 12  # steps bound for a knee search (11 halvings take 4,096 neurons to 2)
# How a knee probe (labkit.knee) recovers after it is pruned: it trains at lr x lr_factor until validation accuracy
# has not risen for `patience` epochs (at most `epochs`) and keeps its best epoch; its control trains as many.
# The full rate (lr_factor 1): measured by hand on the quick profile (seed 0's start, issue 26, README), a tenth
# of it left an eighth of the widths 19 points below the control after 12 epochs, the full rate about 1 point
# (benchmarks/knee_rate.py repeats that measurement).
KNEE_RECOVERY = {"ci": dict(epochs=3, patience=1, lr_factor=1.0),
                 "quick": dict(epochs=10, patience=2, lr_factor=1.0),
                 "paper": dict(epochs=10, patience=2, lr_factor=1.0)}
KNEE_RESOLUTION = 1.15  # the knee's refinement stops once the last widths within tolerance are at most 15% above
                        # the first outside it
# What each setting counts for, and why: the one list that run identity (runs.identity), run names and trained
# starts (study.START_FIELDS) read. A setting counts for the run's identity unless it is "resume", "place" or
# "start file"; a control ("none", "scratch") also ignores the "pruning" ones.
#   pruning     only a pruning run uses it: the controls remove nothing
#   resume      may change when a run is resumed: it does not shape the numbers (more cycles, another device,
#               another checkpoint policy)
#   place       where the run is kept and under what name, not what it computes
#   start file  compared by what the file was trained with (its record), not by its path
#   start       the trained start (cycle 0's head, notebook 02) depends on it: another value trains another
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

    profile: str = "quick"           # name of the profile these values came from
    method: str = "l2"               # pruning criterion: l1, l2, reservoir, magnitude; or a control: "none"
                                     # (the same cycles, nothing removed), "scratch" (a fresh head, no start)
    layer: int | str = 0             # hidden layer pruned (0: the 4096-wide first layer), or "all" in proportion
    schedule: str = "fixed"          # "fixed": k neurons a cycle (the report's); "geometric": a fraction of those left;
                                     # "oneshot": cycle 1 prunes to the hidden widths `target` in one step (a knee probe)
    k: int = 100                     # fixed schedule: neurons removed per cycle (from layer 0 when layer="all")
    fraction: float = 0.5            # geometric schedule: share of each pruned layer's neurons removed per cycle;
                                     # the knee search: share of the widths removed per halving step
    tolerance: float = 1.0           # percentage points of validation accuracy below the equal-budget control
                                     # (the unpruned head trained as long) still counted as no loss (labkit.knee)
    target: tuple | None = None      # oneshot schedule: the hidden widths cycle 1 prunes to
    cycles: int = 3                  # cycles of train, test, measure (and prune between them)
    epochs: int = 2                  # training epochs per cycle after cycle 0 (at most, with recover_patience);
                                     # a scratch control's single cycle trains this many epochs in all
    recover_patience: int | None = None  # None: every cycle after cycle 0 trains exactly `epochs`; n: it trains
                                     # until validation accuracy has not risen for n epochs and keeps its best
    cycle_lr: float | None = None    # the rate of every cycle after cycle 0; None: lr x lr_drop (fine-tuning)
    lr_epochs: int = 5               # the schedule of every head: lr_epochs epochs at lr, then lr x lr_drop
    lr_drop: float = 0.1             # (fine-tuning; every cycle after cycle 0 trains at that rate)
    start_epochs: int = 20           # cycle 0 (the unpruned head every run starts from) fine-tunes until
    patience: int = 3                # validation accuracy has not risen for `patience` epochs, at most
                                     # start_epochs in all, and keeps its best epoch: pruning starts at a plateau
    batch_size: int = 128            # training batch (cached features, so large batches are cheap)
    lr: float = 2e-4                 # Adam learning rate
    train_limit: int | None = 2000   # class-balanced training subset (None: all training images outside validation)
    val_limit: int | None = 2000     # class-balanced validation split, drawn from the official training images and
                                     # disjoint from the training subset: every decision is taken on it (None: the
                                     # dataset's own, data.DATASETS)
    test_limit: int | None = 2000    # class-balanced test subset (None: all the official test images); reported,
                                     # never decides
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
    checkpoints: str = "last"        # "all" cycle checkpoints written and kept; "last": each written, the one
                                     # before dropped (a killed run resumes); "off": nothing written

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
        """`name`, or one derived from every setting that shapes the run's numbers: the profile, method, what
        it prunes, the seed and the start, then each other setting that differs from the profile's
        (e.g. "-hidden512-512-64-lr0.001"), so runs and controls of other settings never share a folder."""
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


# how a run name spells a setting that differs from its profile's ("-hidden512-512-64", "-lr0.001", "-224px");
# a field not listed here is spelled by its own name ("-patience3")
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
    """A head's widths, inputs to classes: a tuple of ints that prints as tables and names write it,
    "25088-4096-4096-256-10". Every row's `widths` is one (labkit.records reads it back from that text)."""

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
    """Widths from a table's "25088-4096-4096-256-10" (or a sequence already): the one place a widths string is
    read back."""
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
    # the report's run: its 6 cycles of 3 epochs, 100 neurons a cycle, on all of MNIST: the report's validation
    # split of the official training images (data.DATASETS), every other training image, every test image
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
    """(layer, neurons to remove) for the next cycle, given the head's current widths [in, n1, .., out].

    Fixed: k per cycle. Geometric: round(fraction x neurons left), at least 1. Oneshot: down to `target` (cycle 1
    only). No layer goes below one neuron; an empty plan means nothing is left to prune. Controls remove nothing.
    """
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
