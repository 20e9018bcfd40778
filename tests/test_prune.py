"""Physical pruning against a masked-but-unshrunk copy, the scores by hand, and bad input."""
import collections
import copy

import pytest
import torch

from labkit import model, prune


def _head(hidden=(32, 24, 12), seed=0):
    head = model.build_head(hidden, seed=seed)
    head.norm.set_stats(torch.randn(512, 1, 1), torch.rand(512, 1, 1) + 0.5)
    return head.eval()


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("method", prune.METHODS)
def test_pruned_equals_zeroed_outputs(layer, method):
    head = _head()
    reference = copy.deepcopy(head)
    x = torch.randn(7, 512, 1, 1)
    _, removed = prune.prune_neurons(head, layer, 5, method, seed=3)
    assert len(removed) == 5 and len(set(removed)) == 5

    # force the removed neurons' outputs to zero in the unshrunk copy
    relu = [m for m in reference.layers if isinstance(m, torch.nn.ReLU)][layer]
    mask = torch.ones(reference.linears()[layer].out_features)
    mask[removed] = 0
    handle = relu.register_forward_hook(lambda mod, inp, out: out * mask)
    with torch.no_grad():
        expected = reference(x)
        got = head(x)
    handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_parameters_and_saved_size_drop(tmp_path):
    head = _head((64, 32, 16))
    before_params = sum(p.numel() for p in head.parameters())
    before_bytes = model.save_head(head, tmp_path / "before.pt")
    prune.prune_neurons(head, 0, 16, "l2")
    after_params = sum(p.numel() for p in head.parameters())
    after_bytes = model.save_head(head, tmp_path / "after.pt")
    # 16 neurons of layer 0: 25,088 weights + 1 bias each, plus 16 input columns of layer 1 (32 rows)
    assert before_params - after_params == 16 * 25089 + 16 * 32
    assert head.widths() == [25088, 48, 32, 16, 10]
    assert before_bytes - after_bytes >= 4 * (before_params - after_params) * 0.99
    loaded, _ = model.load_head(tmp_path / "after.pt")
    assert loaded.widths() == head.widths()


def test_rows_cut_in_place_never_reach_a_file(tmp_path):
    # a few rows at a time leave the layer inside its own storage (no fresh 390 MB tensor a prune step); the
    # rows left unused must never be written, and a large cut copies the layer tight (memory given back)
    head = _head((64, 32, 16))
    before, storage = head.linears()[0].weight.detach().clone(), head.linears()[0].weight.data_ptr()
    _, removed = prune.prune_neurons(head, 0, 4, "l1")
    w = head.linears()[0].weight
    assert w.data_ptr() == storage and torch.equal(w, before.index_select(0, prune.kept_indices(64, removed)))
    size = model.save_head(head, tmp_path / "cut.pt")
    assert size == model.head_bytes(head) == (tmp_path / "cut.pt").stat().st_size
    loaded, _ = model.load_head(tmp_path / "cut.pt")  # a loaded head is tight: the same file again
    assert torch.equal(loaded.linears()[0].weight, w) and model.save_head(loaded, tmp_path / "again.pt") == size
    prune.prune_neurons(head, 0, 30, "l2")  # 30 of 60: more than a quarter of the storage would go unused
    w = head.linears()[0].weight
    assert w.shape == (30, 25088) and w.untyped_storage().nbytes() == w.numel() * w.element_size()


def test_scores_by_hand():
    w = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])  # w_bar = [2, 3]
    assert prune.neuron_scores(w, "l1").tolist() == [2.0, 2.0, 2.0]
    assert prune.neuron_scores(w, "l2").tolist() == [2.0, 2.0, 4.0]
    assert prune.neuron_scores(w, "magnitude").tolist() == [3.0, 5.0, 7.0]
    assert prune.choose_neurons(w, 1, "magnitude") == [0]
    assert prune.choose_neurons(w, 2, "l2") == [0, 1]  # ties go to the lower index
    w2 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.1, 0.0], [-0.1, 0.0]])  # w_bar = [2.5, 0]
    assert prune.choose_neurons(w2, 1, "l1") == [2]  # 0.1 is closest to the average neuron 2.5


def test_reservoir_is_reproducible_and_uniform():
    assert prune.reservoir_sample(100, 10, 5) == prune.reservoir_sample(100, 10, 5)
    assert prune.reservoir_sample(100, 10, 5) != prune.reservoir_sample(100, 10, 6)
    counts = collections.Counter()
    trials = 4000
    for s in range(trials):
        counts.update(prune.reservoir_sample(20, 5, s))
    expected = trials * 5 / 20  # each index picked with probability k / n
    assert all(abs(counts[i] - expected) < 0.15 * expected for i in range(20))


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer=0, k=32, method="l1"), "k=32 must be an integer of at least 1 and at most 31.* has 32 neurons"),
    (dict(layer=0, k=0, method="l1"), "k=0 must be an integer of at least 1"),
    (dict(layer=0, k=-3, method="l1"), "k=-3"),
    (dict(layer=0, k=True, method="l1"), "k=True"),
    (dict(layer=0, k=2.5, method="l1"), "k=2.5"),
    (dict(layer=3, k=1, method="l1"), "layer=3 must be an integer of at least 0 and at most 2"),
    (dict(layer=-1, k=1, method="l1"), "layer=-1"),
    (dict(layer=True, k=1, method="l1"), "layer=True"),
    (dict(layer=0, k=1, method="l3"), "method='l3' is not allowed.*'l1', 'l2', 'reservoir', 'magnitude'"),
])
def test_bad_input_names_value_and_leaves_model(kwargs, message):
    head = _head()
    before = copy.deepcopy(head.state_dict())
    with pytest.raises(ValueError, match=message):
        prune.prune_neurons(head, **kwargs)
    after = head.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("side", [1, 7, 2])
def test_inference_form_computes_the_same_function(side):
    torch.manual_seed(0)
    head = model.build_head((64, 48, 16), map_size=side, seed=0).eval()
    maps = torch.randn(8, 512, side, side)
    head.norm.set_stats(maps.mean(0) + 0.3, maps.std(0) * 2)
    prune.prune_neurons(head, 0, 40, "l2")
    fast = head.inference_form()
    with torch.no_grad():
        torch.testing.assert_close(fast(maps), head(maps), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast(maps.half()), head(maps.half()), atol=1e-5, rtol=1e-4)
    linears = [m for m in fast if isinstance(m, torch.nn.Linear)]
    if side == 1:  # the 49-fold replication is folded away: the first layer reads the 512 raw features
        assert linears[0].in_features == 512 and linears[0].out_features == 24
    elif side == 7:
        assert linears[0].in_features == 25088
