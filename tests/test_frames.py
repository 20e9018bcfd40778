"""Issue 33: a notebook cell reaches optimizer.step() through at most 3 labkit frames. The building blocks the
notebooks call (Run.step, train_start, Deep Compression's stage cells, the ladders, an exercise check) are called
here as a cell calls them, and a global optimizer pre-step hook counts the labkit frames between this file's frame
and each step. benchmarks/frames.py measures the same on the executed notebooks (4 minutes at ci)."""
import contextlib
import dataclasses
import json
import os
import traceback
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import labkit
import notebook_cells
from labkit import exercises, memorization, study
from labkit.features import FeatureSet

LABKIT = os.path.dirname(os.path.realpath(labkit.__file__)) + os.sep
HERE = os.path.realpath(__file__)


@contextlib.contextmanager
def deepest():
    """Within the block: the longest chain of labkit frames seen between a frame of this file and a step."""
    chains: list[list[str]] = []

    def hook(optimizer, args, kwargs):
        stack = traceback.extract_stack()[:-1]
        mine = [i for i, f in enumerate(stack) if os.path.realpath(f.filename) == HERE]
        chains.append([f"{os.path.basename(f.filename)}:{f.name}" for f in stack[mine[-1] + 1:]
                       if os.path.realpath(f.filename).startswith(LABKIT)])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield chains
    finally:
        handle.remove()
    assert chains, "nothing took an optimizer step"


def _longest(chains):
    return max(chains, key=len)


def test_a_run_steps_through_three_labkit_frames(small_config, tmp_path):
    c = dataclasses.replace(small_config, cycles=2)
    with deepest() as chains, study.Run(c, study.features_when_needed(c)) as run:
        while not run.done:
            run.step()  # cycle 0: a fresh head's two phases; cycle 1: pruned, then trained
    assert _longest(chains) == ["study.py:step", "train.py:fit", "train.py:train_epochs"]
    with deepest() as chains:
        study.train_start(c, tmp_path / "start.pt", progress=False, log=None)
    assert _longest(chains) == ["study.py:train_start", "train.py:fit", "train.py:train_epochs"]


def _features(n, seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, 512, 1, 1, generator=g)
    return FeatureSet(maps, (maps[:, :10].flatten(1).sum(1) > 0).long(), "test", 32, "train")


def test_deep_compression_and_the_ladders_step_through_three_labkit_frames(tmp_path):
    from labkit import model

    splits = study.Splits(_features(200, 0), _features(100, 1), _features(100, 2))
    head = model.build_head((16, 12, 8), num_classes=4, map_size=1, seed=0)
    head.norm.set_stats(*splits.train.stats())
    budget = {"steps": 1, "epochs": 1, "finetune_epochs": 1, "lr": 1e-3, "finetune_lr": 1e-4}
    with deepest() as chains:  # notebook 03's stage cells
        notebook_cells.deep_compression(head, splits, tmp_path, budget, [0.9, 0.5, 0.5, 0.0])
    assert max(len(chain) for chain in chains) <= 3, _longest(chains)
    with deepest() as chains:
        notebook_cells.requirement_ladder(splits.train, splits.val, splits.test, hidden=(0, 4), steps=5)
        x = memorization.standardized(splits.train)
        notebook_cells.memorize(x, [memorization.HeadSpec(2)], start=50, steps=5, restarts=1)
    assert max(len(chain) for chain in chains) <= 3, _longest(chains)


def _one_epoch(head, features, labels, optimizer, batch_size, generator):
    """A student's train_one_epoch, as notebook 02's solution writes it."""
    head.train()
    total = 0.0
    for rows in torch.randperm(len(labels), generator=generator).split(batch_size):
        loss = torch.nn.functional.cross_entropy(head(features[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss) * len(rows)
    return total / len(labels)


def test_the_train_one_epoch_check_steps_through_three_labkit_frames(capsys):
    with deepest() as chains:
        exercises.check("train_one_epoch", {"train_one_epoch": _one_epoch})
    assert "check passed" in capsys.readouterr().out
    exercises.check("train_one_epoch", {})  # labkit's again for the tests after this one
    assert _longest(chains) == ["exercises.py:check", "exercises.py:verdict",
                                "exercise_checks.py:check_train_one_epoch"]


# what a cell must not call: each trains behind more than one labkit frame of its own (the notebooks write these
# loops in their cells over Run.step, train_start, deep_compression and the ladders; labkit's own comparison,
# knee search and session wrappers are gone)
WRAPPERS = ("run_study(", ".advance_to(", "memorize_random_labels(", "measure_requirement(")


def test_notebooks_02_to_04_call_the_building_blocks_not_the_wrappers():
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for name in ("02_train_vgg16", "03_prune_compare", "04_capacity_curve"):
        cells = json.loads((notebooks / f"{name}.ipynb").read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        for source in code:
            assert not [w for w in WRAPPERS if w in source], (name, source[:200])
