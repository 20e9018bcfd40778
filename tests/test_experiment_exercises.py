"""The experiment's exercises (notebooks 03 and 04): labkit's references pass, and the plausible wrong answers of
issue 33 fail by name: a test on the test set, unpaired statistics, a decision on one seed, a bisection that never
refines or never stops."""
import math
from statistics import mean, pstdev, stdev

import torch

from test_exercises import _fails

from labkit import exercises, knee, stats


def _points(rows):
    """The mean validation accuracy of rows, in points."""
    return 100 * mean(r["val_accuracy"] for r in rows)


def _counts(a, b):
    return int((a & ~b).sum()), int((~a & b).sum())


def _tail(k, n):
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def test_mcnemar_wrong_answers_fail():
    def one_tail(a, b):
        x, y = _counts(a, b)
        return _tail(min(x, y), x + y)

    def uncapped(a, b):
        x, y = _counts(a, b)
        return 2 * _tail(min(x, y), x + y)

    def unpaired(a, b):  # the two totals as if from independent samples: a two-proportion z test
        n = len(a)
        pa, pb = float(a.float().mean()), float(b.float().mean())
        p = (pa + pb) / 2
        se = math.sqrt(max(p * (1 - p) * 2 / n, 1e-12))
        return math.erfc(abs(pa - pb) / se / math.sqrt(2))

    def chi_square(a, b):
        x, y = _counts(a, b)
        return 1.0 if x + y == 0 else math.erfc(math.sqrt(max(abs(x - y) - 1, 0) ** 2 / (x + y) / 2))

    def all_images(a, b):  # a binomial over every image, not the discordant ones
        x, y = _counts(a, b)
        return min(1.0, 2 * _tail(min(x, y), len(a)))

    def in_place(a, b):
        a &= b  # noqa: the planted mistake
        return stats.mcnemar_p(a, b)

    _fails("mcnemar_p", one_tail, "two-sided")
    _fails("mcnemar_p", uncapped, "at most 1")
    _fails("mcnemar_p", unpaired, "unpaired")
    _fails("mcnemar_p", chi_square, "chi-square")
    _fails("mcnemar_p", all_images, "discordant")
    _fails("mcnemar_p", in_place, "changed")


def test_step_within_wrong_answers_fail():
    points = _points
    _fails("step_within", lambda p, c, t: mean(r["test_accuracy"] for r in p) >= mean(r["test_accuracy"] for r in c)
           - t / 100, "test")
    _fails("step_within", lambda p, c, t: p[0]["val_accuracy"] >= c[0]["val_accuracy"] - t / 100, "one seed")
    _fails("step_within", lambda p, c, t: all(x["val_accuracy"] >= y["val_accuracy"] - t / 100 for x, y in zip(p, c)),
           "each seed alone")
    _fails("step_within", lambda p, c, t: mean(r["val_accuracy"] for r in p) >= mean(r["val_accuracy"] for r in c) - t,
           "points")
    _fails("step_within", lambda p, c, t: abs(points(p) - points(c)) <= t, "either way")
    _fails("step_within", lambda p, c, t: points(p) - points(c) >= t, "within")


def test_next_scale_wrong_answers_fail():
    _fails("next_scale", lambda lo, hi, f, r: lo * (1 - f), "halving")
    _fails("next_scale", lambda lo, hi, f, r: lo * (1 - f) if hi is None else (None if lo / hi <= r else (lo + hi) / 2),
           "geometric")
    _fails("next_scale", lambda lo, hi, f, r: lo * (1 - f) if hi is None else math.sqrt(lo * hi), "None")
    _fails("next_scale", lambda lo, hi, f, r: lo * (1 - f) if hi is None else (None if hi / lo <= r else
                                                                               math.sqrt(lo * hi)), "bisect")
    _fails("next_scale", lambda lo, hi, f, r: 0.5 if hi is None else (None if lo / hi <= r else math.sqrt(lo * hi)),
           "shrink from lo")


def test_paired_t_wrong_answers_fail():
    def unpaired(a, b):
        n = len(a)
        return (100 * (mean(a) - mean(b)),
                stats.t95(n - 1) * math.sqrt((100 * stdev(a)) ** 2 / n + (100 * stdev(b)) ** 2 / n))

    def with_z(a, b):
        d = [100 * (x - y) for x, y in zip(a, b)]
        return mean(d), 1.959964 * stdev(d) / math.sqrt(len(d))

    def population(a, b):
        d = [100 * (x - y) for x, y in zip(a, b)]
        return mean(d), stats.t95(len(d) - 1) * pstdev(d) / math.sqrt(len(d))

    def one_seed_too(a, b):  # a margin of 0 where one seed leaves no spread: a decision on one seed
        d = [100 * (x - y) for x, y in zip(a, b)]
        return mean(d), (stats.t95(len(d) - 1) * stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0)

    def fractions(a, b):
        d, m = stats.paired_t_margin(a, b)
        return d / 100, m / 100

    _fails("paired_t", unpaired, "unpaired")
    _fails("paired_t", with_z, "1.96")
    _fails("paired_t", population, "population")
    _fails("paired_t", one_seed_too, "one seed")
    _fails("paired_t", fractions, "points")


def test_knee_step_references_drive_notebook_03s_loop():
    """Notebook 03's loop cell, with labkit's next_scale (no student function has passed here) and an oracle for a
    knee at scale 0.3, takes the steps next_scale gives by hand, and brackets the knee to 15%."""
    import notebook_cells

    steps, _, _ = notebook_cells.walk(0.3, (4096, 4096, 256), 0.5)
    got = [scale for _, _, scale, _ in steps]
    lo, hi, want = 1.0, None, []
    while (scale := knee.next_scale(lo, hi, 0.5)) is not None:
        want.append(scale)
        lo, hi = (scale, hi) if scale >= 0.3 else (lo, scale)
    assert got == want and len(want) > 3 and lo / hi <= 1.15


def test_a_criterion_defined_outside_labkit_runs_beside_both_controls(small_config, tmp_path):
    """A scoring function and its name are all a new criterion takes: it prunes in the comparison, beside the
    equal-budget control and the from-scratch head, and its rows say whose function ran; an edited function is
    another run (not read back)."""
    import dataclasses

    import pytest

    from labkit import config, prune, study, tables

    def spread_scores(weight):  # defined here, as in a notebook's cell: neurons whose weights vary least go first
        return weight.double().std(1)

    try:
        assert prune.criterion("spread", spread_scores) == "spread"
        import notebook_cells

        ns = notebook_cells.namespace(small_config, tmp_path / "r", methods=("l2", "spread"))
        rows, base = notebook_cells.run("03_prune_compare", "# The comparison: every criterion", ns)["rows"], ns["base"]
        methods = {r["method"] for r in rows}
        assert {"l2", "spread", "none", "scratch"} <= methods
        mine = [r for r in rows if r["method"] == "spread" and r["cycle"] > 0]
        assert mine and all(r["ran_on"] == "yours: spread" for r in mine)
        l2 = [r for r in rows if r["method"] == "l2" and r["cycle"] > 0]
        assert [r["widths"] for r in mine] == [r["widths"] for r in l2]  # the same k a cycle
        assert any(line.startswith("spread (cycle 2") for line in tables.controls_summary(rows, split="val"))
        first = dataclasses.replace(base, method="spread").run_dir

        def spread_scores(weight):  # noqa: F811 (edited: another function, so another run)
            return -weight.double().std(1)

        prune.criterion("spread", spread_scores)
        assert dataclasses.replace(base, method="spread").run_dir != first
        with pytest.raises(ValueError, match="labkit's own criterion"):
            prune.criterion("l1", spread_scores)
        with pytest.raises(ValueError, match=r"shape \(5, 7\)"):
            prune.criterion("copy", lambda w: w)
    finally:
        prune._ADDED.pop("spread", None)
        config.ADDED_CRITERIA.pop("spread", None)


def test_checks_take_rounding_and_number_types_as_a_student_would():
    """An exact tie at the tolerance is within (validation accuracies are counts of images: ties happen), so an
    answer without room for rounding fails by name; right answers in float32 tensors or numpy numbers pass."""
    import numpy as np

    points = _points
    def val(rows):
        return mean(r["val_accuracy"] for r in rows)

    _fails("step_within", lambda p, c, t: 100 * (val(p) - val(c)) >= -t, "rounding")
    _fails("step_within", lambda p, c, t: points(p) - points(c) > -t, "rounding")  # a tie is within, not out
    assert exercises.verdict("step_within", lambda p, c, t: torch.tensor(points(p) - points(c) >= -t - 1e-9)) is None

    def in_float32(lo, hi, f, r):
        got = knee.next_scale(lo, hi, f, r)
        return None if got is None else torch.tensor(got, dtype=torch.float32)

    assert exercises.verdict("next_scale", in_float32) is None
    assert exercises.verdict("paired_t", lambda a, b: tuple(np.float64(v) for v in stats.paired_t_margin(a, b))) is None
    assert exercises.verdict("mcnemar_p", lambda a, b: np.float64(stats.mcnemar_p(a, b))) is None


def test_a_criterion_that_edits_the_weight_stops_the_study():
    """A notebook's criterion is handed the layer's own weight (no copy of a 400 MB matrix); one that edits it
    stops the study with the sentence, before any neuron is chosen on a changed head."""
    import pytest

    from labkit import config, guard, prune

    def centred_scores(weight):
        weight -= weight.mean(0)  # the planted mistake: in place on the study's weight
        return weight.double().abs().sum(1)

    try:
        prune.criterion("centred", lambda w: w.double().abs().sum(1))  # registered with a harmless body first
        prune._ADDED["centred"] = centred_scores
        w = torch.nn.Parameter(torch.randn(6, 4))
        with pytest.raises(guard.ChangedInput, match="your centred changed the weight"):
            prune.choose_neurons(w, 2, "centred")
    finally:
        prune._ADDED.pop("centred", None)
        config.ADDED_CRITERIA.pop("centred", None)
