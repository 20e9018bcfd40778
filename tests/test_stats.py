"""Paired statistics against references computed another way: hand counts, the binomial by enumeration."""
import itertools
import math

import pytest
import torch

from labkit import records, stats


def test_mcnemar_counts_only_the_discordant_images():
    a = torch.tensor([True, True, False, False, True, True, False])
    b = torch.tensor([True, False, True, False, False, False, False])
    m = stats.mcnemar(a, b)
    assert (m["b"], m["c"], m["n"]) == (3, 1, 7)  # a alone right on 1, 4, 5; b alone on 2
    assert m["diff"] == pytest.approx(100 * 2 / 7)
    assert m["p"] == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1) for Binomial(4, 1/2), doubled
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar(a, b[:5])


@pytest.mark.parametrize("k, n", [(0, 0), (0, 5), (2, 9), (7, 9), (10, 20), (3, 40)])
def test_binomial_two_sided_equals_enumeration(k, n):
    """Against a second implementation: every outcome at least as extreme as k, by enumerating all 2**n draws
    for small n, and otherwise from the distribution of heads built coin by coin (Pascal's rule in floats)."""
    d = abs(k - n / 2)
    if n <= 12:
        counts = [sum(draw) for draw in itertools.product((0, 1), repeat=n)]
        p = sum(abs(x - n / 2) >= d for x in counts) / 2 ** n
    else:
        dist = [1.0]
        for _ in range(n):  # one more fair coin: P(i heads) = (P_before(i) + P_before(i - 1)) / 2
            dist = [((dist[i] if i < len(dist) else 0.0) + (dist[i - 1] if i > 0 else 0.0)) / 2
                    for i in range(len(dist) + 1)]
        p = sum(q for x, q in enumerate(dist) if abs(x - n / 2) >= d)
    assert stats.binomial_two_sided(k, n) == pytest.approx(min(1.0, p))


def test_t95_table_and_beyond():
    assert stats.t95(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t95(30) == pytest.approx(2.042, abs=1e-3)
    assert stats.t95(60) == pytest.approx(2.000, abs=2e-3)  # the exact quantile is 2.0003
    assert stats.t95(1000) == pytest.approx(1.962, abs=1e-3)
    with pytest.raises(ValueError, match="two seeds"):
        stats.t95(0)


def test_correctness_records_round_trip():
    right = torch.rand(1237, generator=torch.Generator().manual_seed(0)) > 0.3
    text = records.pack_right(right)
    assert text.startswith("x") and len(text) == 1 + 2 * math.ceil(1237 / 8)
    assert torch.equal(records.unpack_right(text, 1237), right)
    with pytest.raises(ValueError, match="correctness record"):
        records.unpack_right("1e5", 3)
