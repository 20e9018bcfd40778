"""Paired statistics for comparing two heads: Student's t over seeds, McNemar's exact test on one seed. Heads on the
same images, or over seeds sharing their trained start, are paired: what counts is the spread of the differences.
Accuracies are fractions; differences and margins are percentage points.
"""
from __future__ import annotations

import math
from statistics import mean, stdev
from typing import Sequence

import torch

Z95 = 1.959964  # the two-sided 95% quantile of the standard normal
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}


def t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with `dof` degrees of freedom (a table to 30; beyond it the
    Cornish-Fisher expansion z + (z^3 + z) / (4 dof), within 0.001 of the exact value)."""
    if dof < 1:
        raise ValueError(f"dof={dof}: Student's t needs at least one degree of freedom (two seeds)")
    if dof in _T95:
        return _T95[dof]
    return Z95 + (Z95 ** 3 + Z95) / (4 * dof)


def mcnemar(right_a: torch.Tensor, right_b: torch.Tensor) -> dict:
    """McNemar's exact test of two heads scored on the same images (1-D bool tensors, True where a head was right):
    b, c count the images only a, only b got right; p is exact two-sided under b ~ Binomial(b + c, 1/2); diff is
    (b - c) / n and margin its 95% paired margin Z95 * sqrt(b + c - (b - c)^2 / n) / n, both in points."""
    right_a, right_b = right_a.bool(), right_b.bool()
    if right_a.shape != right_b.shape or right_a.dim() != 1:
        raise ValueError(f"the two heads were scored on {tuple(right_a.shape)} and {tuple(right_b.shape)} images: "
                         "a paired test needs the same images in the same order")
    n = len(right_a)
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    return {"b": b, "c": c, "n": n, "diff": 100 * (b - c) / n, "p": binomial_two_sided(b, b + c),
            "margin": 100 * Z95 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0)) / n}


def pooled(rights_a: Sequence[torch.Tensor], rights_b: Sequence[torch.Tensor]) -> dict:
    """`mcnemar` on several seeds' images pooled, seed i's head a against its head b on seed i's images (the mean of
    the seeds' differences when each has as many images). Its margin counts only the images' sampling: how heads
    vary from seed to seed is told by the seeds' own differences."""
    if len(rights_a) != len(rights_b) or not rights_a:
        raise ValueError(f"{len(rights_a)} and {len(rights_b)} correctness records: pooling pairs each seed's head "
                         "with the same seed's other head, so give one of each per seed")
    return {**mcnemar(torch.cat([r.bool() for r in rights_a]), torch.cat([r.bool() for r in rights_b])),
            "seeds": len(rights_a)}


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials with p = 1/2: min(1, 2 P(X <= min(k, n - k)))."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_t(a: Sequence[float], b: Sequence[float], n: int) -> dict:
    """Arm a against arm b paired by seed: mean difference and 95% t margin (at least one image of `n`), in points."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        raise ValueError("a t margin needs at least two seeds in each arm")
    se = stdev(diffs) / math.sqrt(len(diffs))
    return {"diff": 100 * mean(diffs), "margin": 100 * max(t95(len(diffs) - 1) * se, 1 / n), "seeds": len(diffs)}


def mcnemar_p(right_a: torch.Tensor, right_b: torch.Tensor) -> float:
    """`mcnemar`'s exact two-sided p of two heads scored on the same images (notebook 03's exercise reference)."""
    return mcnemar(right_a, right_b)["p"]


def paired_t_margin(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean difference a - b over seeds, its 95% Student-t margin), both in points, from accuracies (fractions)
    paired by seed: the reference of notebook 04's exercise (`paired_t` without the one-image floor)."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(a) != len(b) or len(diffs) < 2:
        raise ValueError(f"{len(a)} and {len(b)} seeds: a paired t needs the same seeds in each arm, at least two")
    return 100 * mean(diffs), 100 * t95(len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
