"""Checks of the experiment's exercises: McNemar's test, a probe against its control, the knee's next step (03),
the paired t over seeds (04). Each raises exercise_checks.Wrong or returns; plausible wrong answers fail by name.
"""
from __future__ import annotations

import math
from statistics import mean, pstdev, stdev

import torch

from . import guard, stats
from .exercise_checks import Wrong, _scalar


def _bools(pattern: str) -> torch.Tensor:
    return torch.tensor([ch == "1" for ch in pattern])


def _p(fn, a: torch.Tensor, b: torch.Tensor) -> float:
    return _scalar(fn(a.clone(), b.clone()), "mcnemar_p")


def _chi_square(a: torch.Tensor, b: torch.Tensor) -> float:
    """McNemar's chi-square approximation with continuity correction: a plausible answer, not the lab's test."""
    m = stats.mcnemar(a, b)
    if m["b"] + m["c"] == 0:
        return 1.0
    return math.erfc(math.sqrt(max(abs(m["b"] - m["c"]) - 1, 0) ** 2 / (m["b"] + m["c"]) / 2))


def _exact(fn, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    want, got = stats.mcnemar_p(a, b), _p(fn, a, b)
    if math.isclose(got, _chi_square(a, b), rel_tol=1e-6) and not math.isclose(got, want, rel_tol=1e-6):
        raise Wrong("mcnemar_p gives the chi-square approximation; the lab uses the exact binomial test (exact at "
                    "any count: 2 P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1)")
    if math.isclose(got, want / 2, rel_tol=1e-9) and want < 1:
        raise Wrong(f"mcnemar_p gives {got:.4g} = P(X <= min(b, c)) on {what}: that is one tail; the test is "
                    "two-sided, so double it (at most 1)")
    if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12):
        raise Wrong(f"mcnemar_p gives {got:.6g} on {what}, not {want:.6g}")


def _two_heads(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two heads' records on n x n images, 90% right, disagreeing on 5% of them (as the study's heads do)."""
    gen = torch.Generator().manual_seed(n)
    a = torch.rand(n * n, generator=gen) < 0.9
    return a, torch.where(torch.rand(n * n, generator=gen) < 0.05, ~a, a)


def check_mcnemar_p(fn) -> None:
    # 100 images: a right on 60, b on 50, and every disagreement one way (b alone right on none)
    a, b = torch.zeros(100, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)
    a[:60], b[:50] = True, True
    got = _p(fn, a, b)
    if got > 0.05 and not math.isclose(got, _chi_square(a, b), rel_tol=1e-6):
        raise Wrong(f"mcnemar_p gives {got:.3g} for two heads on the same 100 images where a was right on 60, b on "
                    "50, and b never alone: that is about what the two totals alone would say (an unpaired test); "
                    "pairing the images counts 10 against 0 discordant ones, p = 2 / 2^10 = 0.00195")
    # worked by hand: a alone right on 3 images, b alone on 1; p = 2 P(X <= 1 | 4 trials, 1/2) = 2 x 5/16
    a4, b4 = _bools("11111001"), _bools("10001101")
    got = _p(fn, a4, b4)
    if not math.isclose(got, 0.625, abs_tol=1e-9) and not math.isclose(got, 5 / 16, abs_tol=1e-9) \
            and not math.isclose(got, _chi_square(a4, b4), rel_tol=1e-6):
        raise Wrong(f"mcnemar_p gives {got:.4g} where head a alone was right on 3 images and head b alone on 1 "
                    "(the other 4 agree): only those 4 discordant images count; under no difference the 3 are "
                    "Binomial(4, 1/2), so p = 2 P(X <= 1) = 2 x 5/16 = 0.625")
    _exact(fn, a4, b4, "3 against 1 discordant images")
    _exact(fn, a, b, "10 against 0 discordant images")
    if not math.isclose(_p(fn, _bools("1100"), _bools("0011")), 1.0, abs_tol=1e-9):
        raise Wrong("for 2 against 2 discordant images twice the tail is 2 x 11/16 > 1: a p-value is at most 1")
    got = _p(fn, _bools("1010"), _bools("1010"))
    if not math.isclose(got, 1.0, abs_tol=1e-9):
        raise Wrong(f"two heads right on the same images differ nowhere: p = 1, not {got!r}")
    gen = torch.Generator().manual_seed(0)
    for n, share in ((200, 0.9), (15_000, 0.9), (500, 0.5)):
        a = torch.rand(n, generator=gen) < share
        _exact(fn, a, torch.where(torch.rand(n, generator=gen) < 0.05, ~a, a), f"{n:,} random images")
    guard.at_study_size("mcnemar_p", fn, _two_heads, 10_000, "the 10,000 test images of the paper profile")


def _row(seed: int, val: float, test: float) -> dict:
    """A row as the search hands it over, on 2,000 validation and 2,000 test images."""
    return {"seed": seed, "val_accuracy": val, "val_correct": round(2000 * val), "val_total": 2000,
            "test_accuracy": test, "test_correct": round(2000 * test), "test_total": 2000}


def check_step_within(fn) -> None:
    def decide(probe_val, control_val, tolerance=1.0, probe_test=None, control_test=None):
        probes = [_row(s, v, t) for s, (v, t) in enumerate(zip(probe_val, probe_test or probe_val))]
        controls = [_row(s, v, t) for s, (v, t) in enumerate(zip(control_val, control_test or control_val))]
        got = fn([dict(r) for r in probes], [dict(r) for r in controls], tolerance)
        if not isinstance(got, (bool, torch.Tensor)) and got not in (0, 1):
            raise Wrong(f"step_within returned {got!r}: return True (within tolerance) or False")
        return bool(got)

    if not decide([0.905], [0.910]):
        raise Wrong("a probe 0.5 points below its control with tolerance 1.0 is within: accuracies are fractions "
                    "(0.905), the tolerance is in points, so compare 100 x the difference with it")
    if decide([0.88], [0.91]):
        raise Wrong("a probe 3 points below its control (0.88 against 0.91) is not within a tolerance of 1 point "
                    "(is the difference in points, 100 x the difference of the fractions?)")
    if not decide([0.93], [0.90]):
        raise Wrong("a probe 3 points above its control is within tolerance: only a loss of more than `tolerance` "
                    "points puts it out (not the size of the difference either way)")
    if not decide([0.91], [0.92], tolerance=2.0) or decide([0.91], [0.92], tolerance=0.5):
        raise Wrong("step_within must use the tolerance it is given (points)")
    # validation says within, test says out (and the other way round): the decision is taken on validation
    if not decide([0.90], [0.905], probe_test=[0.88], control_test=[0.91]) or \
            decide([0.88], [0.91], probe_test=[0.91], control_test=[0.91]):
        raise Wrong("step_within decided on test accuracy: the knee is decided on validation (val_accuracy); the "
                    "test set is scored only to report the chosen head")
    # three seeds: the mean over seeds decides, not the first seed, not every seed alone
    if decide([0.91, 0.86, 0.87], [0.91, 0.91, 0.91]):
        raise Wrong("the first seed is within but the mean over the three seeds is 3.3 points below the controls': "
                    "decide on the mean over seeds, not on one seed")
    if decide([0.86, 0.87, 0.91], [0.91, 0.91, 0.91]):
        raise Wrong("the mean over the three seeds is 3.3 points below the controls': decide on that mean")
    if not decide([0.92, 0.895, 0.92], [0.91, 0.91, 0.91]):
        raise Wrong("seed 1 alone is 1.5 points below its control, but the mean over the three seeds is 0.83 "
                    "points above the controls' mean: the step is within (the mean decides, not each seed alone)")
    if not decide([0.90, 0.90, 0.90], [0.90, 0.91, 0.9197]):
        raise Wrong("the probes' mean is 0.99 points below the controls' mean: within a 1-point tolerance")
    if not decide([0.90], [0.91]):
        raise Wrong("a probe exactly 1 point below its control (0.90 against 0.91) is within a 1-point tolerance; "
                    "in floating point 100 x (0.90 - 0.91) is -1.0000000000000009, so allow for rounding (compare "
                    "with -tolerance - 1e-9): accuracies are counts of images, and exact ties happen")
    if decide([0.90, 0.90, 0.90], [0.90, 0.91, 0.925]):
        raise Wrong("the probes' mean is 1.17 points below the controls' mean: out of a 1-point tolerance")


def check_next_scale(fn) -> None:
    def ask(lo, hi, fraction=0.5, resolution=1.15):
        got = fn(lo, hi, fraction, resolution)
        return None if got is None else _scalar(got, "next_scale")

    got = ask(1.0, None)
    if got is None or not math.isclose(got, 0.5, rel_tol=1e-6):
        raise Wrong(f"next_scale(1.0, None, fraction=0.5) gives {got!r}: until a probe falls out (hi is None) "
                    "the scale shrinks by (1 - fraction) a step: 0.5")
    if not math.isclose(ask(0.25, None, fraction=0.2) or 0, 0.2, rel_tol=1e-6):
        raise Wrong("next_scale(0.25, None, fraction=0.2) must be 0.25 x (1 - 0.2) = 0.2: shrink from lo, the "
                    "smallest scale found within")
    got = ask(0.5, 0.25)
    if got is not None and got <= 0.25 + 1e-12:
        raise Wrong(f"next_scale(0.5, 0.25) gives {got:.4g}, at or below the scale that fell out: it goes on "
                    "halving and never refines; once hi is known, bisect between lo and hi")
    if got is None:
        raise Wrong("next_scale(0.5, 0.25) stops, but 0.5 and 0.25 are 2x apart, more than the resolution 1.15: "
                    "bisect between them")
    if math.isclose(got, 0.375, rel_tol=1e-6):
        raise Wrong("next_scale(0.5, 0.25) gives 0.375, the arithmetic mean: the widths shrink by factors, so "
                    "bisect on a log scale, the geometric mean sqrt(lo x hi)")
    if not math.isclose(got, math.sqrt(0.125), rel_tol=1e-6):
        raise Wrong(f"next_scale(0.5, 0.25) gives {got:.4g}, not sqrt(0.5 x 0.25) = {math.sqrt(0.125):.4g}")
    if ask(0.3, 0.28) is not None:
        raise Wrong("next_scale(0.3, 0.28, resolution=1.15) must stop (None): lo / hi = 1.07 is within the "
                    "resolution")
    if ask(0.3, 0.2, resolution=1.6) is not None or ask(0.3, 0.2, resolution=1.4) is None:
        raise Wrong("stop exactly when lo / hi <= resolution (here lo / hi = 1.5)")
    # a whole search against a knee at `true`: within while scale >= true
    for true in (0.3, 0.07, 0.6):
        lo, hi, asked = 1.0, None, []
        while len(asked) < 40:
            scale = ask(lo, hi)
            if scale is None:
                break
            if not (hi or 0) < scale < lo:
                raise Wrong(f"searching a knee at scale {true}: with lo={lo:.4g} and hi={hi} the next scale "
                            f"{scale:.4g} lies outside the bracket")
            asked.append(scale)
            lo, hi = (scale, hi) if scale >= true else (lo, scale)
        if len(asked) >= 40:
            raise Wrong(f"searching a knee at scale {true}, next_scale never returned None (40 steps): stop once "
                        "lo / hi <= resolution")
        if hi is None or not lo >= true > hi or lo / hi > 1.15:
            raise Wrong(f"searching a knee at scale {true} ended with lo={lo:.4g}, hi={hi}: the bracket must close "
                        "to lo / hi <= resolution around it")


def check_paired_t(fn) -> None:
    a, b = [0.910, 0.905, 0.920], [0.900, 0.902, 0.905]  # differences 1.0, 0.3, 1.5 points
    got = fn(list(a), list(b))
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise Wrong("paired_t must return (difference, margin): two numbers, in points")
    diff, margin = (_scalar(v, "paired_t") for v in got)
    d = [100 * (x - y) for x, y in zip(a, b)]
    want = stats.t95(2) * stdev(d) / math.sqrt(3)
    if math.isclose(diff, mean(d) / 100, rel_tol=1e-5):
        raise Wrong("paired_t gives the difference as a fraction; give it in points (x 100)")
    if not math.isclose(diff, mean(d), rel_tol=1e-5):
        raise Wrong(f"paired_t's difference is {diff:.4g}; the mean of the seeds' differences a - b is "
                    f"{mean(d):.4g} points")
    unpaired = stats.t95(2) * math.sqrt(stdev([100 * x for x in a]) ** 2 / 3 + stdev([100 * x for x in b]) ** 2 / 3)
    wrong = {"the spread of each arm alone (an unpaired margin): seed i's two heads share their start, so take "
             "the spread of the seeds' differences": unpaired,
             "a normal quantile (1.96): with 3 seeds the t quantile with 2 degrees of freedom is 4.303 "
             "(stats.t95(n - 1))": 1.959964 * stdev(d) / math.sqrt(3),
             "the population spread (dividing by n): the sample's divides by n - 1 (statistics.stdev)":
                 stats.t95(2) * pstdev(d) / math.sqrt(3),
             "t with n degrees of freedom: a mean over n seeds leaves n - 1": stats.t95(3) * stdev(d) / math.sqrt(3),
             "the spread of the differences without dividing by sqrt(n): the margin is of their mean":
                 stats.t95(2) * stdev(d)}
    for what, value in wrong.items():
        if math.isclose(margin, value, rel_tol=1e-3) and not math.isclose(value, want, rel_tol=1e-3):
            raise Wrong(f"paired_t's margin is {margin:.4g} points: that is {what}")
    if not math.isclose(margin, want, rel_tol=1e-3):  # t95's table has 4 digits
        raise Wrong(f"paired_t's margin is {margin:.4g}; t95(2) x stdev(differences) / sqrt(3) = {want:.4g} points")
    for a, b in (([0.8, 0.85, 0.9, 0.95], [0.81, 0.83, 0.88, 0.96]), ([0.5, 0.7], [0.45, 0.72])):
        d, m = (_scalar(v, "paired_t") for v in fn(list(a), list(b)))
        wd, wm = stats.paired_t_margin(a, b)
        if not (math.isclose(d, wd, rel_tol=1e-5) and math.isclose(m, wm, rel_tol=1e-3)):
            raise Wrong(f"paired_t({a}, {b}) gives ({d:.4g}, {m:.4g}), not ({wd:.4g}, {wm:.4g})")
    try:
        one = fn([0.9], [0.91])
    except ValueError:
        return
    raise Wrong(f"paired_t([0.9], [0.91]) returned {one!r}: one seed has no spread, so no margin and no decision; "
                "raise ValueError (a t over seeds needs at least two)")
