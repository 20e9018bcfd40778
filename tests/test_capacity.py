"""MEC against the seed table and against values worked out by hand."""
import pytest
import torch

from labkit import capacity, model, prune

VGG_HEAD = [25088, 4096, 4096, 256, 10]


def test_vgg16_head_mec():
    assert capacity.mec(VGG_HEAD) == 102_772_992
    assert capacity.mec(VGG_HEAD, rule="bottleneck") == 102_772_992
    # the widths labkit builds (the head torchvision's VGG16 classifier is replaced by), not a second constant
    assert tuple(capacity.VGG16_HEAD) == tuple(model.build_head().widths())


def _rows_2019():
    """The package's own copy of the 2019 table (labkit/data_files/report_2019_results.csv)."""
    from labkit.tables import table_2019

    return table_2019()


def test_every_seed_row_reproduced():
    rows = _rows_2019()
    assert len(rows) == 6
    assert rows[0] == {"cycle": 0, "first_layer_neurons": 4096, "test_accuracy": 0.92,
                       "mec_bits": 102_772_992}
    for r in rows:
        removed = 4096 - r["first_layer_neurons"]
        assert removed == 100 * r["cycle"]
        assert capacity.mec([25088, 4096 - removed, 4096, 256, 10]) == r["mec_bits"]


@pytest.mark.parametrize("widths, previous, bottleneck", [
    # 2 inputs, 3 hidden, 1 output: 3*3 = 9, then min(3, 4*1) = 3; the stricter cap is min(2, 3) = 2
    ([2, 3, 1], 12, 11),
    # a wide layer after a narrow one: 11*3 = 33; min(3, 4*50)=3; min(50, 51*20)=50 vs min(3, .)=3;
    # min(20, 21*2)=20 vs min(3, 42)=3
    ([10, 3, 50, 20, 2], 106, 42),
    # inputs narrower than every layer: 5*8 = 40; min(8, 9*8)=8 vs min(4, .)=4; min(8, 9*2)=8 vs 4
    ([4, 8, 8, 2], 56, 48),
    # the output layer smaller than its cap: 3*1 = 3; min(1, 2*1) = 1
    ([2, 1, 1], 4, 4),
    # a single perceptron: its parameters
    ([784, 1], 785, 785),
])
def test_hand_computed(widths, previous, bottleneck):
    assert capacity.mec(widths) == previous
    assert capacity.mec(widths, rule="bottleneck") == bottleneck


def test_bounds_and_parameter_count():
    assert capacity.parameter_count([2, 3, 1]) == 3 * 3 + 4 * 1
    b = capacity.bounds([2, 3, 1])
    assert b == {"one_bit_per_parameter": 13, "two_bits_per_parameter": 26}
    # MEC never exceeds one bit per parameter
    assert capacity.mec(VGG_HEAD) <= capacity.bounds(VGG_HEAD)["one_bit_per_parameter"]


def test_bad_widths_and_rule():
    with pytest.raises(ValueError, match="rule='nope'"):
        capacity.mec([2, 3, 1], rule="nope")
    with pytest.raises(ValueError, match="positive"):
        capacity.mec([2, 0, 1])
    with pytest.raises(ValueError, match="at least"):
        capacity.mec([5])


def test_mec_of_counts_live_neurons_only():
    head = model.build_head((16, 8, 4), seed=0)
    assert capacity.mec_of(head) == capacity.mec([25088, 16, 8, 4, 10])
    with torch.no_grad():
        head.linears()[0].weight[[1, 5, 7]] = 0  # three dead first-layer neurons
    assert capacity.live_widths(head) == [25088, 13, 8, 4, 10]
    assert capacity.mec_of(head) == capacity.mec([25088, 13, 8, 4, 10])
    table = capacity.mec_table(head)
    assert [r["live_neurons"] for r in table] == [13, 8, 4, 10]
    assert table[0]["parameters"] == 25088 * 16 + 16  # stored parameters, dead or alive
    # by hand: 25,089 x 13 + min(13, 14 x 8) + min(8, 9 x 4) + min(4, 5 x 10)
    assert sum(r["capacity_bits"] for r in table) == 326_157 + 13 + 8 + 4 == capacity.mec_of(head)


def test_live_rows_agree_with_a_whole_scan_on_sparse_and_masked_matrices():
    """live_widths looks at 16 entries of a row first; rows whose first 16 are zero (masked layers) are read
    whole: compared with the plain scan on rows alive only past entry 16, or only in their last entry."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(100):
        w = torch.randn(300, 40, generator=gen) * (torch.rand(300, 40, generator=gen) < trial / 100)
        w[torch.rand(300, generator=gen) < 0.3] = 0
        w[:5] = 0
        w[3, -1] = 1.0  # alive in its last entry only
        assert capacity._live_rows(w) == int((w != 0).any(dim=1).sum())


def test_mec_of_pruned_equals_masked():
    head = model.build_head((32, 16, 8), seed=1)
    masked = model.build_head((32, 16, 8), seed=1)
    _, removed = prune.prune_neurons(head, 0, 5, "l1")
    with torch.no_grad():
        masked.linears()[0].weight[removed] = 0
    assert capacity.mec_of(head) == capacity.mec_of(masked) == capacity.mec([25088, 27, 16, 8, 10])


def test_generalization_ratio():
    assert capacity.generalization_ratio(9200, 102_772_992) == pytest.approx(8.95e-5, rel=1e-3)
    with pytest.raises(ValueError, match="mec_bits=0"):
        capacity.generalization_ratio(10, 0)
    with pytest.raises(ValueError, match="correct=-1"):
        capacity.generalization_ratio(-1, 10)


def test_data_requirement_two_classes_by_hand():
    # sums 0.1, 0.2, 0.3, 0.4, 0.5, 0.6 with labels 0 0 1 1 0 1: three label changes
    X = torch.tensor([[0.1, 0.0], [0.0, 0.2], [0.3, 0.0], [0.2, 0.2], [0.5, 0.0], [0.3, 0.3]])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    r = capacity.data_requirement(X, y)
    assert r["thresholds"] == 3
    assert r["max_bits"] == 3 * (2 + 1) + 3 + 1 == 13
    assert r["expected_bits"] == 2 * 2  # ceil(log2(4)) * d
    # order of the samples does not matter, only the order of their sums
    perm = torch.tensor([5, 3, 1, 0, 4, 2])
    assert capacity.data_requirement(X[perm], y[perm]) == r


def test_data_requirement_separable_and_ten_classes():
    X = torch.arange(8.0).reshape(8, 1)
    assert capacity.data_requirement(X, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))["thresholds"] == 1
    # three classes, one against the rest: labels by sum 0 0 1 1 2 2 -> class 0: 1 change, 1: 2, 2: 1
    r = capacity.data_requirement(torch.arange(6.0).reshape(6, 1), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert [r["per_class"][c]["thresholds"] for c in (0, 1, 2)] == [1, 2, 1]
    assert r["thresholds"] == 4
    assert r["max_bits"] == sum(t * 2 + t + 1 for t in (1, 2, 1))


def test_requirement_progression_grows_with_data():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(400, 3, generator=g)
    y = torch.randint(0, 2, (400,), generator=g)  # random labels: nothing to learn, thresholds grow ~linearly
    rows = capacity.requirement_progression(X, y, (0.25, 0.5, 1.0))
    assert [r["n"] for r in rows] == [100, 200, 400]
    t = [r["thresholds"] for r in rows]
    assert t[0] < t[1] < t[2] and t[2] > 150


# ---------------------------------------------------------------- inputs that repeat: the effective MEC

@pytest.mark.parametrize("side", range(1, 11))
def test_distinct_positions_is_the_rank_of_vgg16s_pool(side):
    """The 49 values a channel's adaptive 7 x 7 pool makes are linear in the s x s map: count the independent ones."""
    pool = torch.nn.AdaptiveAvgPool2d((7, 7))
    basis = torch.eye(side * side, dtype=torch.float64).view(-1, 1, side, side)
    matrix = pool(basis).reshape(side * side, 49)
    assert capacity.distinct_positions(side) == torch.linalg.matrix_rank(matrix) == min(side * side, 49)


@pytest.mark.parametrize("image_size, inputs", [(32, 512), (64, 2048), (96, 4608), (160, 12800), (224, 25088),
                                                (256, 25088)])
def test_effective_inputs_follow_the_map(image_size, inputs):
    side = model.map_size_for(image_size)
    assert capacity.effective_inputs(side) == inputs
    assert capacity.effective_widths(VGG_HEAD, side) == [inputs, 4096, 4096, 256, 10]
    assert capacity.mec_effective(VGG_HEAD, side) == capacity.mec([inputs, 4096, 4096, 256, 10])


def test_effective_mec_at_32_and_224_px():
    assert capacity.mec_effective(VGG_HEAD, model.map_size_for(32)) == capacity.mec([512, 4096, 4096, 256, 10])
    assert capacity.mec_effective(VGG_HEAD, 1) == 2_109_696
    assert capacity.mec_effective(VGG_HEAD, model.map_size_for(224)) == capacity.mec(VGG_HEAD) == 102_772_992
    assert capacity.mec_effective(VGG_HEAD, 1, rule="bottleneck") == capacity.mec([512, 4096, 4096, 256, 10],
                                                                                  rule="bottleneck")


def test_effective_widths_leave_other_inputs_alone():
    assert capacity.effective_widths([784, 8, 10], 1) == [784, 8, 10]  # not VGG16's 25,088: nothing to say
    assert capacity.effective_inputs(2, channels=3) == 12


def test_mec_effective_of_a_head_reads_its_map_and_live_neurons():
    small = model.build_head((16, 8, 4), map_size=1, seed=0)
    assert capacity.mec_effective_of(small) == capacity.mec([512, 16, 8, 4, 10])
    with torch.no_grad():
        small.linears()[0].weight[[0, 3]] = 0
    assert capacity.mec_effective_of(small) == capacity.mec([512, 14, 8, 4, 10])
    wide = model.build_head((16, 8, 4), map_size=7, seed=0)
    assert capacity.mec_effective_of(wide) == capacity.mec_of(wide) == capacity.mec([25088, 16, 8, 4, 10])
    assert capacity.mec_effective_of(model.build_head((16, 8, 4), map_size=2, seed=0)) == capacity.mec(
        [2048, 16, 8, 4, 10])


def test_mec_effective_of_needs_a_map_size():
    with pytest.raises(ValueError, match="has no map_size"):
        capacity.mec_effective_of(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="map_size=0"):
        capacity.distinct_positions(0)


def test_varying_features_counts_nonzero_spread():
    maps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [5.0, 0.0, 2.0]])
    assert capacity.varying_features(maps.std(0)) == 1
    assert capacity.varying_features(torch.zeros(512, 1, 1)) == 0
