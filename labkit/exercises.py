"""The lab's graded exercises: each one's check, labkit's reference, and which function the study then runs.
A check cell runs `check(name, globals())`, which reports a failure on stderr rather than raising (nbgrader scores
such a cell 0 and the notebook runs on); `chosen(...)` then hands later cells the student's function or labkit's.
"""
from __future__ import annotations

import sys
import warnings
from typing import Callable

from . import capacity, compress, guard, knee, memorization, metrics, prune, stats, train
from .exercise_checks import (Wrong, check_perceptron_bits, check_mec, check_mec_bottleneck, check_fold,
                              check_effective_mec, check_confusion_matrix, check_cohen_kappa, check_train_one_epoch,
                              check_early_stop)
from .method_checks import (check_l1_scores, check_l2_scores, check_reservoir_sample, check_remove_neurons,
                            check_kmeans_share, check_fine_grained_mask, check_bits_stored, check_images_memorized,
                            check_count_thresholds, check_requirement_bits)
from .design_checks import check_mcnemar_p, check_next_scale, check_paired_t, check_step_within


# ---------------------------------------------------------------- the exercises, their references and checks

EXERCISES: dict[str, tuple[Callable, Callable, str]] = {  # name: (check, reference, where the reference lives)
    "perceptron_bits": (check_perceptron_bits, lambda inputs: inputs + 1, "rule 2: inputs + 1"),
    "mec": (check_mec, capacity.mec, "labkit.capacity.mec"),
    "mec_bottleneck": (check_mec_bottleneck, lambda w: capacity.mec(w, rule="bottleneck"),
                       "labkit.capacity.mec(widths, rule='bottleneck')"),
    "fold": (check_fold, lambda w: w.view(len(w), -1, 49).sum(-1), "labkit.model.FoldedFirstLayer"),
    "effective_mec": (check_effective_mec, lambda widths, d: capacity.mec([d, *widths[1:]]),
                      "labkit.capacity.mec_effective"),
    "confusion_matrix": (check_confusion_matrix, metrics.confusion_matrix, "labkit.metrics.confusion_matrix"),
    "cohen_kappa": (check_cohen_kappa, metrics.cohens_kappa, "labkit.metrics.cohens_kappa"),
    "train_one_epoch": (check_train_one_epoch, train.train_one_epoch, "labkit.train.train_one_epoch"),
    "early_stop": (check_early_stop, train.early_stop, "labkit.train.early_stop"),
    "l1_scores": (check_l1_scores, prune.l1_scores, "labkit.prune.l1_scores"),
    "l2_scores": (check_l2_scores, prune.l2_scores, "labkit.prune.l2_scores"),
    "reservoir_sample": (check_reservoir_sample, prune.reservoir_sample, "labkit.prune.reservoir_sample"),
    "remove_neurons": (check_remove_neurons, prune.remove_neurons, "labkit.prune.remove_neurons"),
    "kmeans_share": (check_kmeans_share, compress.kmeans_share, "labkit.compress.kmeans_share"),
    "mcnemar_p": (check_mcnemar_p, stats.mcnemar_p, "labkit.stats.mcnemar_p"),
    "step_within": (check_step_within, knee.step_within, "labkit.knee.step_within"),
    "next_scale": (check_next_scale, knee.next_scale, "labkit.knee.next_scale"),
    "fine_grained_mask": (check_fine_grained_mask, None, "labkit.finegrained.fine_grained_mask"),
    "paired_t": (check_paired_t, stats.paired_t_margin, "labkit.stats.paired_t_margin"),
    "bits_stored": (check_bits_stored, memorization.bits_stored, "labkit.memorization.bits_stored"),
    "images_memorized": (check_images_memorized, memorization.images_memorized,
                         "labkit.memorization.images_memorized"),
    "count_thresholds": (check_count_thresholds, capacity.count_thresholds, "labkit.capacity.count_thresholds"),
    "requirement_bits": (check_requirement_bits, capacity.requirement_bits, "labkit.capacity.requirement_bits"),
}

# what an exercise's function is meant to change (every other argument must be left as it was given)
MAY_CHANGE = {"train_one_epoch": ("head", "optimizer", "generator")}

_passed: dict[str, Callable] = {}  # the student's functions whose checks passed in this kernel


def reference(name: str) -> Callable:
    """labkit's reference for exercise `name`."""
    if name == "fine_grained_mask":
        from .finegrained import fine_grained_mask

        return fine_grained_mask
    return EXERCISES[_known(name)][1]


def _known(name: str) -> str:
    if name not in EXERCISES:
        raise ValueError(f"no exercise is called {name!r}; the exercises are {', '.join(EXERCISES)}")
    return name


def verdict(name: str, fn) -> str | None:
    """None when `fn` passes exercise `name`'s check, else what is wrong (a sentence)."""
    if fn is None:
        return f"{name} is not defined: run the exercise's cell above first"
    if not callable(fn):
        return f"{name} is a {type(fn).__name__}, not a function: define it with def {name}(...)"
    try:
        with warnings.catch_warnings():  # a warning on stderr would cost the points of a right answer
            warnings.simplefilter("ignore")
            EXERCISES[_known(name)][0](guard.watched(name, fn, MAY_CHANGE.get(name, ())))
    except NotImplementedError:
        return f"{name} is not written yet (its body still raises NotImplementedError)"
    except (Wrong, guard.ChangedInput, guard.TooSlow) as err:
        return str(err)
    except Exception as err:
        return f"{name} raised {type(err).__name__}: {err}"
    return None


def check(name: str, namespace: dict) -> None:
    """Check `namespace[name]`: print a pass on stdout (later `chosen` cells use it), else what is wrong on stderr."""
    problem = verdict(name, namespace.get(name))
    if problem is None:
        _passed[name] = namespace[name]
        print(f"{name}: check passed; the cells below run your {name}")
        return
    _passed.pop(name, None)
    print(f"{name}: {problem}\n(the cells below run labkit's {EXERCISES[name][2]} until this check passes)",
          file=sys.stderr, flush=True)


def chosen(*names: str) -> dict[str, Callable]:
    """{name: the student's function if its check passed in this kernel, else labkit's reference}; prints which."""
    picked = {}
    for name in map(_known, names):
        picked[name] = _passed.get(name) or reference(name)
        print(f"{name}: " + ("yours" if name in _passed else f"labkit's {EXERCISES[name][2]} (yours has not passed "
                                                               "its check)"))
    return picked


def yours(functions: dict[str, Callable]) -> dict[str, Callable]:
    """Only the student's functions of `functions` (what `chosen` returned): what the study swaps in."""
    return {k: f for k, f in functions.items() if _passed.get(k) is f}


def whose(functions: dict[str, Callable]) -> str:
    """'your l2_scores and remove_neurons' / "labkit's" for the functions a table ran on."""
    mine = [k for k in functions if _passed.get(k) is functions[k]]
    theirs = [k for k in functions if k not in mine]
    said = []
    if mine:
        said.append("your " + " and ".join(mine))
    if theirs:
        said.append("labkit's " + " and ".join(theirs))
    return ", ".join(said)


def ran_on_line(rows, table: str) -> str:
    """One sentence: how many of `table`'s pruned cycles ran on the student's functions (their `ran_on` column)."""
    from collections import Counter

    from .config import CONTROLS

    pruned = [r for r in rows if r.get("cycle", 0) > 0 and r.get("method") not in CONTROLS and "method" in r]
    by = Counter(r.get("ran_on") or "labkit" for r in pruned)
    mine = {k: v for k, v in by.items() if k != "labkit"}
    said = [f"{v} on {k.replace('yours: ', 'your ')}" for k, v in sorted(mine.items())]
    if by.get("labkit"):
        said.append(f"{by['labkit']} on labkit's functions")
    return (f"{table}: of its {len(pruned)} pruned cycles, " + ", ".join(said) + " (the `ran_on` column; a cycle read "
            "back from an earlier run keeps the functions it ran on)") if pruned else f"{table}: no cycle was pruned"


def show(answer: Callable[[], str], numbers: list[dict]) -> None:
    """Notebook 05: print the numbers a question is answered from, then labkit's `answer()` where it is written."""
    from .tables import format_table

    print(format_table(numbers, ("measured", "value")))
    try:
        text = answer()
    except NotImplementedError:
        print("\nWrite your answer in the cell below, from these numbers.")
        return
    print("\nlabkit's answer, from the measurements (the instructor's copy):\n" + text)
