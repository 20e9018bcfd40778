"""Capacity measured by training: the information formula, heads trained together, the random-label search."""
import math

import pytest
import torch
from torch import nn

import notebook_cells

from labkit import capacity, features, memorization as mem
from labkit.device import seeded


# ---------------------------------------------------------------- bits a fit stores

def test_bits_stored_at_perfect_accuracy_is_every_label():
    assert mem.bits_stored(100, 1.0) == pytest.approx(100 * math.log2(10))
    assert mem.bits_stored(7, 1.0, classes=2) == pytest.approx(7.0)


def test_bits_stored_at_chance_and_below_is_nothing():
    assert mem.bits_stored(1000, 0.1) == 0.0
    assert mem.bits_stored(1000, 0.05) == 0.0
    assert mem.bits_stored(50, 0.5, classes=2) == 0.0


def test_bits_stored_between_by_hand():
    # K = 10, a = 0.5: log2 10 - h(0.5) - 0.5 log2 9 = 3.321928 - 1 - 1.584963 = 0.736966 bits an image
    assert mem.bits_stored(100, 0.5) == pytest.approx(73.6966, abs=1e-3)
    # K = 2, a = 0.9: 1 - h(0.9) = 1 - 0.468996 = 0.531004 bits an image
    assert mem.bits_stored(10, 0.9, classes=2) == pytest.approx(5.31004, abs=1e-4)


def test_bits_stored_refuses_percentages():
    with pytest.raises(ValueError, match="accuracy=99"):
        mem.bits_stored(10, 99)


# ---------------------------------------------------------------- the ladder: heads side by side

def _alone(spec, features, seed):
    """The head as a plain nn.Sequential from the same seeded nn.Linear layers (twins read repeated inputs)."""
    widths = spec.widths(features)
    with seeded(seed):
        layers = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    return nn.Sequential(*[m for lin in layers for m in (lin, nn.ReLU())][:-1])


def test_ladder_heads_compute_what_each_head_alone_computes():
    specs = [mem.HeadSpec(3), mem.HeadSpec(0), mem.HeadSpec(5, copies=4), mem.HeadSpec(1)]
    ladder = mem.Ladder(specs, features=6, seeds=[10, 11, 12, 13])
    x = torch.randn(9, 6)
    out = ladder(x)
    assert out.shape == (9, 4, 10)
    for h, spec in enumerate(specs):
        inputs = x.repeat_interleave(spec.copies, dim=1)  # each feature `copies` times, as VGG16's pool lays them
        torch.testing.assert_close(out[:, h], _alone(spec, 6, 10 + h)(inputs), atol=1e-5, rtol=1e-5)


def test_a_head_is_blind_to_the_other_heads_units():
    ladder = mem.Ladder([mem.HeadSpec(2), mem.HeadSpec(4)], features=5, seeds=[0, 1])
    x = torch.randn(8, 5)
    ladder(x)[:, 0].sum().backward()
    units = torch.arange(ladder.first_weight.shape[0])
    assert ladder.first_weight.grad[units >= 2].abs().sum() == 0  # the second head's units: no gradient
    assert ladder.out_weight.grad[10:].abs().sum() == 0


def test_training_together_equals_training_alone():
    x, y = torch.randn(40, 6), torch.randint(0, 10, (40,))
    specs = [mem.HeadSpec(3), mem.HeadSpec(0)]
    both = mem.Ladder(specs, 6, seeds=[5, 6])
    mem.fit_ladder(both, x, y, [40, 25], steps=30)
    for h, spec in enumerate(specs):
        alone = mem.Ladder([spec], 6, seeds=[5 + h])
        mem.fit_ladder(alone, x, y, [[40, 25][h]], steps=30)
        torch.testing.assert_close(both(x)[:, h], alone(x)[:, 0], atol=1e-4, rtol=1e-4)


def test_twin_trains_as_its_repeated_weights_do():
    """Adam on the 12 x 3 = 36 weights a unit of the first layer has at lr / 3 (inputs repeated 3 times), the
    rest at lr, gives the ladder's twin trained at lr."""
    torch.manual_seed(0)
    x, y = torch.randn(30, 12), torch.randint(0, 10, (30,))
    spec = mem.HeadSpec(4, copies=3)
    twin = mem.Ladder([spec], 12, seeds=[7])
    mem.fit_ladder(twin, x, y, [30], steps=25, lr=0.01, check_every=1000)
    net = _alone(spec, 12, 7)
    opt = torch.optim.Adam([{"params": [net[0].weight], "lr": 0.01 / 3},
                            {"params": [net[0].bias, *net[2].parameters()], "lr": 0.01}])
    wide = x.repeat_interleave(3, dim=1)
    for _ in range(25):
        loss = nn.functional.cross_entropy(net(wide), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(twin(x)[:, 0], net(wide), atol=2e-4, rtol=2e-4)


def test_head_names_widths_and_both_mecs():
    twin = mem.HeadSpec(8, copies=49)
    assert twin.widths(512) == (25088, 8, 10)
    assert twin.name(512) == "25088-8-10 (512 x 49 repeated)"
    assert twin.mec_bits(512) == capacity.mec([25088, 8, 10]) == 200_720
    assert twin.mec_effective_bits(512) == mem.HeadSpec(8).mec_bits(512) == 4_112
    assert mem.HeadSpec(0).name(512) == "512-10"


def test_bad_specs_name_the_value():
    with pytest.raises(ValueError, match="copies=0"):
        mem.Ladder([mem.HeadSpec(2, copies=0)], 4)
    with pytest.raises(ValueError, match="at least one HeadSpec"):
        mem.Ladder([], 4)


# ---------------------------------------------------------------- the random-label search, checked by hand

def test_search_on_one_hot_points_with_repeats():
    """d one-hot points, then the same d points again: a linear classifier fits any labels of d distinct points,
    and a repeated point only when its new random label equals its first one. So the first n images are
    fitted exactly for n up to d + (the run of repeats whose labels agree)."""
    d = 8
    x = torch.cat([torch.eye(d), torch.eye(d)])
    y = mem.random_labels(2 * d, seed=3)
    agree = next((j for j in range(d) if y[d + j] != y[j]), d)
    rows = notebook_cells.memorize(x, [mem.HeadSpec(0)], criterion=1.0, seed=3, start=2, precision=0, steps=400,
                            lr=0.1, restarts=1)
    assert rows[0]["images_memorized"] == d + agree
    assert rows[0]["accuracy_at"] == 1.0
    assert rows[0]["bits_stored"] == round((d + agree) * math.log2(10))
    assert rows[0]["all_images"] == (agree == d)


def test_search_counts_every_image_when_all_fit():
    x = torch.eye(6)
    row = notebook_cells.memorize(x, [mem.HeadSpec(0)], criterion=1.0, start=1, precision=0, steps=300, lr=0.1,
                           restarts=1)[0]
    assert row["images_memorized"] == 6 and row["all_images"]


def test_the_search_doubles_then_bisects_to_its_precision():
    asked = []

    def fits(n, largest=70):
        asked.append(n)
        return n <= largest

    assert mem.images_memorized(fits, 100, start=16, precision=0.1) == 68
    assert asked == [16, 32, 64, 100, 82, 73, 68]  # 68 and 73 are within 10% of 68: done
    assert mem.images_memorized(lambda n: True, 100, start=16) == 100  # doubling stops at every image there is
    assert mem.images_memorized(lambda n: n <= 3, 100, start=16) == 3  # failed at the start: bisected from 0
    assert mem.images_memorized(lambda n: False, 100, start=16) == 0


def test_random_labels_are_seeded_and_uniform():
    a, b = mem.random_labels(5000, seed=1), mem.random_labels(5000, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, mem.random_labels(5000, seed=2))
    counts = torch.bincount(a, minlength=10)
    assert counts.min() > 400 and counts.max() < 600


def test_memorization_ladder_has_a_twin_only_where_inputs_repeat():
    at_32 = mem.memorization_ladder(1)
    assert [s.hidden for s in at_32] == [1, 2, 4, 8, 16, 32, 8]
    assert at_32[-1].copies == 49
    assert all(s.copies == 1 for s in mem.memorization_ladder(2))  # a 2 x 2 map is pooled, not copied
    assert mem.repeats(7) == 1


def test_criterion_at_chance_is_refused():
    with pytest.raises(ValueError, match="criterion=0.1"):
        notebook_cells.memorize(torch.eye(3), [mem.HeadSpec(0)], criterion=0.1)
    with pytest.raises(ValueError, match="restarts=0"):
        notebook_cells.memorize(torch.eye(3), [mem.HeadSpec(0)], restarts=0)
    with pytest.raises(ValueError, match="at least one head"):
        notebook_cells.memorize(torch.eye(3), [])


# ---------------------------------------------------------------- the ladder on real labels

def _feature_set(x, y, split):
    return features.FeatureSet(x[:, :, None, None].float(), y, "synthetic", 32, split)


def _blobs(n, seed, xor=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    if xor:  # class = the sign of x0 times x1: no line separates it
        x = torch.randn(n, 2, generator=g) * 2
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
        return torch.cat([x, torch.randn(n, 2, generator=g) * 0.01], 1), y
    return torch.randn(n, 4, generator=g) * 0.3 + (2 * y[:, None] - 1) * torch.tensor([2.0, 0, 0, 0]), y


@pytest.mark.parametrize("xor, chosen", [(False, 0), (True, 32)])
def test_requirement_ladder_picks_the_smallest_within_tolerance(xor, chosen):
    train, val, test = (_feature_set(*_blobs(400, s, xor), split) for s, split in ((0, "train"), (1, "val"),
                                                                                     (2, "test")))
    result = notebook_cells.requirement_ladder(train, val, test, hidden=(0, 32), tolerance=2.0, steps=300)
    rows = {r["hidden"]: r for r in result["rows"]}
    assert result["chosen"]["hidden"] == chosen and rows[chosen]["chosen"]
    assert rows[32]["val_accuracy"] > 0.95
    assert rows[chosen]["test_total"] == 400 and rows[chosen]["test_accuracy"] == rows[chosen]["test_correct"] / 400
    if xor:
        assert rows[0]["val_accuracy"] < 0.8 and not rows[0]["within_tolerance"]
    # both counts on the widths as the head reads them: 4 features in, each distinct (not the study's 25,088)
    assert rows[0]["mec_bits"] == rows[0]["mec_effective_bits"] == capacity.mec([4, 10]) == 50
    assert rows[32]["mec_bits"] == capacity.mec([4, 32, 10]) == 5 * 32 + 32 and rows[32]["widths"] == (4, 32, 10)


def test_fit_ladder_runs_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    seen = []
    ladder = mem.Ladder([mem.HeadSpec(2)], 3)
    original = ladder.inside
    ladder.inside = lambda x: (seen.append(torch.get_num_threads()), original(x))[1]
    mem.fit_ladder(ladder, torch.randn(6, 3), torch.randint(0, 10, (6,)), [6], steps=2)
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_memorizing_random_labels_on_a_feature_set_gives_every_column():
    g = torch.Generator().manual_seed(0)
    train = features.FeatureSet(torch.randn(40, 512, 1, 1, generator=g), torch.zeros(40, dtype=torch.long),
                                "synthetic", 32, "train")
    rows = notebook_cells.memorize(mem.standardized(train), mem.memorization_ladder(1), steps=60, start=20)
    assert [r["head"] for r in rows][-1] == "25088-8-10 (512 x 49 repeated)"
    twin, base = rows[-1], rows[3]
    assert base["head"] == "512-8-10" and twin["mec_effective_bits"] == base["mec_bits"] == base["mec_effective_bits"]
    assert twin["parameters"] == 25089 * 8 + 9 * 10 and twin["inputs"] == 25088 and twin["copies"] == 49
    assert set(rows[0]) == {"head", "widths", "inputs", "copies", "parameters", "mec_bits", "mec_effective_bits",
                            "images_memorized", "all_images", "criterion", "accuracy_at", "bits_stored"}
    assert all(0 <= r["images_memorized"] <= 40 and r["criterion"] == 0.9 for r in rows)
