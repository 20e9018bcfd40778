"""Deep Compression's stages on small heads: masks that hold, folded training, centroid fine-tuning, files that
load back into the same head, MEC of sparse heads, the sensitivity scan and the stage table."""
import os

import pytest
import torch

from labkit import capacity, features, finegrained as fg, model, quantize, stagefiles, train
from labkit import deepcompression as dc
from labkit.model import CheckpointError
from labkit.study import Splits


def _data(n: int, seed: int, side: int = 1) -> features.FeatureSet:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, 512, side, side, generator=g)
    labels = (maps[:, :10].flatten(1).sum(1) > 0).long() + 2 * (maps[:, 10:20].flatten(1).sum(1) > 0).long()
    return features.FeatureSet(maps, labels, "test", 32 * side, "train")


@pytest.fixture(scope="module")
def splits():
    return Splits(_data(400, 0), _data(200, 1), _data(200, 2))


def _head(train_set, side: int = 1, epochs: int = 4, hidden=(64, 32, 16)) -> model.VGGHead:
    head = model.build_head(hidden, num_classes=4, map_size=side, seed=0)
    head.norm.set_stats(*features.feature_stats(train_set.maps))
    train.fit(head, train_set, epochs=epochs, batch_size=50, lr=1e-3, device="cpu")
    return head


@pytest.fixture(scope="module")
def trained(splits):
    return _head(splits.train)


@pytest.fixture(scope="module")
def narrow(splits):
    """A head 25088 -> 16 -> 12 -> 8 -> 4 for the file tests (400k weights, most in fc1)."""
    return _head(splits.train, epochs=2, hidden=(16, 12, 8))


def _predictions(head, fs):
    return train.evaluate(head, fs, device="cpu", return_predictions=True)["predictions"]


# ---------------------------------------------------------------- pruning with masks

def test_prune_weights_removes_the_smallest(trained):
    head = _clone(trained)
    masks = fg.prune_weights(head, [0.9, 0.5, 0.25, 0.0])
    for lin, mask, s in zip(head.linears(), masks, [0.9, 0.5, 0.25, 0.0]):
        assert torch.equal(mask, lin.weight != 0)
        assert abs(int(mask.sum()) - (lin.weight.numel() - round(s * lin.weight.numel()))) <= 2  # ties at t
        kept, gone = lin.weight[mask].abs(), trained.linears()[head.linears().index(lin)].weight[~mask].abs()
        assert len(gone) == 0 or float(kept.detach().min()) >= float(gone.detach().max())
    assert fg.densities(head)[3] == 1.0


def test_large_layers_prune_to_the_quantile():
    torch.manual_seed(0)
    w = torch.randn(3000, 1000)  # 3M weights: the sampled quantile
    (t,) = fg.weight_thresholds(w, [0.96], exact=False)
    assert abs(float((w.abs() <= t).float().mean()) - 0.96) < 0.001
    (exact,) = fg.weight_thresholds(w, [0.96])
    assert int((w.abs() <= exact).sum()) == round(0.96 * w.numel())


@pytest.mark.parametrize("fold", [True, False])
def test_masks_hold_through_training(trained, splits, fold):
    head = _clone(trained)
    masks = fg.prune_weights(head, [0.95, 0.8, 0.5, 0.3])
    before = [lin.weight.detach().clone() for lin in head.linears()]
    fg.masked_fit(head, masks, splits.train, epochs=2, batch_size=50, lr=1e-3, device="cpu", fold=fold)
    for lin, mask, old in zip(head.linears(), masks, before):
        assert torch.all(lin.weight[~mask] == 0)  # exactly zero, not small
        assert not torch.equal(lin.weight[mask], old[mask])  # the kept ones trained
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.5] * 3  # dropout as it was


def test_folded_masked_training_equals_full_width(trained, splits):
    heads = [_clone(trained), _clone(trained)]
    masks = fg.prune_weights(heads[0], [0.9, 0.7, 0.5, 0.0])
    fg.prune_weights(heads[1], [0.9, 0.7, 0.5, 0.0])
    for head, fold in zip(heads, (True, False)):
        fg.masked_fit(head, masks, splits.train, epochs=2, batch_size=50, lr=1e-3, seed=3, device="cpu", fold=fold)
    for a, b in zip(heads[0].linears(), heads[1].linears()):
        torch.testing.assert_close(a.weight, b.weight, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.bias, b.bias, atol=2e-5, rtol=1e-4)


def test_iterative_pruning_reaches_the_target(trained, splits):
    head = _clone(trained)  # deep_compression's loop: prune to the next sparsity, retrain with the masks held
    plan, masks, state = fg.schedule([0.96, 0.9, 0.5, 0.0], 3), None, train.AdamState()
    assert plan[0][0] < plan[1][0] < plan[2][0] == pytest.approx(0.96)
    for target in plan:
        masks = fg.prune_weights(head, target, masks)
        fg.masked_fit(head, masks, splits.train, epochs=1, batch_size=50, lr=1e-3, device="cpu", state=state)
    assert fg.densities(head)[:3] == pytest.approx([0.04, 0.1, 0.5], abs=1e-4)
    assert all(torch.equal(m, lin.weight != 0) for m, lin in zip(masks, head.linears()))


def test_start_optimizer_state_is_continued(splits):
    head = model.build_head((64, 32, 16), num_classes=4, map_size=1, seed=0)
    head.norm.set_stats(*features.feature_stats(splits.train.maps))
    state = train.AdamState()
    train.fit(head, splits.train, epochs=2, batch_size=50, lr=1e-3, device="cpu", state=state)
    payload = state.payload()
    masks = fg.prune_weights(head, [0.5, 0.5, 0.0, 0.0])
    carried = train.AdamState.from_payload(payload).copy()
    fg.masked_fit(head, masks, splits.train, epochs=1, batch_size=50, lr=1e-3, device="cpu", state=carried)
    assert carried.steps[0] == payload["steps"][0] + 8  # went on counting: 400 images / 50 a batch
    assert not torch.equal(carried.exp_avg[0], payload["exp_avg"][0])  # moved on from the payload's moments
    other = model.build_head((32, 32, 16), num_classes=4, map_size=1, seed=0)  # another head: refused, not skipped
    with pytest.raises(ValueError, match="another head"):
        fg.masked_fit(other, fg.prune_weights(other, [0.5, 0.5, 0.0, 0.0]), splits.train, epochs=1,
                      batch_size=50, device="cpu", state=train.AdamState.from_payload(payload))


# ---------------------------------------------------------------- trained quantization

def test_weight_sharing_keeps_zero_and_the_positions(trained):
    head = _clone(trained)
    fg.prune_weights(head, [0.9, 0.5, 0.5, 0.0])
    shared = quantize.share_weights(head, bits=[5, 4, 3, 2])
    for s, lin, bits in zip(shared, head.linears(), [5, 4, 3, 2]):
        assert len(s.codebook) == 1 << bits and float(s.codebook[0]) == 0.0
        assert int(s.index.min()) >= 1 and int(s.index.max()) < 1 << bits
        if s.positions is not None:
            assert torch.equal(s.positions, torch.nonzero(lin.weight.flatten()).flatten())
        dense = s.dense()
        assert torch.equal(dense != 0, lin.weight != 0) or s.positions is None
    assert shared[3].positions is None  # nothing pruned: no positions stored


@pytest.mark.parametrize("side", [1, 2])
def test_centroid_finetuning_lowers_the_loss(side):
    train_set = _data(300, 5, side)
    head = _head(train_set, side, epochs=3, hidden=(16, 12, 8))
    fg.prune_weights(head, [0.8, 0.5, 0.0, 0.0])
    shared = quantize.share_weights(head, bits=2)  # 3 shared values a layer: a coarse start with room to improve
    quantize.write_shared(head, shared)
    before = train.evaluate(head, train_set, device="cpu")["loss"]
    codebooks = [s.codebook.clone() for s in shared]
    quantize.finetune_centroids(head, shared, train_set, epochs=3, batch_size=50, lr=3e-3, device="cpu")
    assert train.evaluate(head, train_set, device="cpu")["loss"] < before
    for lin, s, old in zip(head.linears(), shared, codebooks):
        assert float(s.codebook[0]) == 0.0 and not torch.equal(s.codebook, old)
        assert torch.equal(lin.weight, s.dense())  # the head holds the shared values


def test_folded_centroid_gradient_is_the_sum_of_the_weights_gradients(trained, splits):
    head = _clone(trained)
    fg.prune_weights(head, [0.9, 0.0, 0.0, 0.0])
    shared = quantize.share_weights(head, bits=3)
    quantize.write_shared(head, shared)
    x, y = splits.train.maps[:64], splits.train.labels[:64]
    head.eval()
    torch.nn.functional.cross_entropy(head(x), y).backward()
    full = head.linears()[0].weight.grad.flatten()[shared[0].positions]
    expected = torch.bincount(shared[0].index, weights=full.double(), minlength=8).float()
    layer = quantize._SharedLayer(shared[0], fold=True, device="cpu")
    w = layer.weight()
    weights = [w] + [lin.weight.detach() for lin in head.linears()[1:]]
    torch.nn.functional.cross_entropy(quantize._forward_with(head, weights, x, fold=True), y).backward()
    layer.centroid_gradient(w)
    expected[0] = 0
    torch.testing.assert_close(layer.codebook.grad, expected, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- files

def _clone(head):
    import copy

    return copy.deepcopy(head)


@pytest.mark.parametrize("stage", stagefiles.STAGES)
@pytest.mark.parametrize("pruned", [True, False])
def test_every_file_loads_back_into_the_same_head(narrow, splits, tmp_path, stage, pruned):
    head = _clone(narrow)
    if pruned:
        fg.prune_weights(head, [0.97, 0.9, 0.6, 0.2])  # fc1's gaps reach far beyond 5-bit indices
    shared = None
    if stage != "sparse":
        shared = quantize.share_weights(head, bits=5)
        quantize.write_shared(head, shared)
    size = stagefiles.save_stage(head, tmp_path / f"{stage}.pt", stage, shared, index_bits=5)
    assert size == os.path.getsize(tmp_path / f"{stage}.pt")
    back = stagefiles.load_stage(tmp_path / f"{stage}.pt")
    assert dc.same_head(back, head) and back.widths() == head.widths()
    assert torch.equal(_predictions(back, splits.test), _predictions(head, splits.test))
    train.fit(back, splits.train, epochs=1, batch_size=100, device="cpu")  # an ordinary head


def test_stage_files_shrink_and_huffman_is_lossless(narrow, tmp_path):
    head = _clone(narrow)
    fg.prune_weights(head, [0.96, 0.9, 0.7, 0.0])
    shared = quantize.share_weights(head, bits=5)
    quantize.write_shared(head, shared)
    sizes = {stage: stagefiles.save_stage(head, tmp_path / f"{stage}.pt", stage, shared) for stage in stagefiles.STAGES}
    assert model.save_head(head, tmp_path / "plain.pt") > sizes["sparse"] > sizes["quantized"] > sizes["huffman"]
    assert dc.same_head(stagefiles.load_stage(tmp_path / "quantized.pt"),
                        stagefiles.load_stage(tmp_path / "huffman.pt"))


def test_a_head_at_larger_maps_round_trips(tmp_path):
    train_set = _data(120, 7, side=2)
    head = _head(train_set, side=2, epochs=1, hidden=(16, 12, 8))
    fg.prune_weights(head, [0.9, 0.5, 0.0, 0.0])
    stagefiles.save_stage(head, tmp_path / "s.pt", "huffman")
    back = stagefiles.load_stage(tmp_path / "s.pt")
    assert back.map_size == 2 and torch.equal(_predictions(back, train_set), _predictions(back, train_set))


def test_bad_files_are_named(trained, tmp_path):
    model.save_head(trained, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a Deep Compression head"):
        stagefiles.load_stage(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt is damaged or not a labkit file"):
        stagefiles.load_stage(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="stage='zip'"):
        stagefiles.save_stage(trained, tmp_path / "x.pt", "zip")


# ---------------------------------------------------------------- MEC of sparse heads

def test_mec_of_a_dense_head_is_the_rules(trained):
    assert fg.mec_sparse(trained) == capacity.mec_of(trained)
    assert fg.mec_sparse(trained, rule="bottleneck") == capacity.mec_of(trained, rule="bottleneck")
    if hasattr(capacity, "mec_effective_of"):
        assert fg.mec_sparse(trained, effective=True) == capacity.mec_effective_of(trained)


def test_mec_counts_kept_weights_and_connected_neurons():
    head = model.build_head((4, 3), num_classes=2, map_size=1, seed=0)
    first, second, third = head.linears()
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, :5] = 1.0      # neuron 0: 5 weights (copies 0..4 of feature 0)
        first.weight[1, 49 * 7] = 1.0  # neuron 1: 1 weight
        first.weight[2, 49 * 7] = 1.0  # neuron 2: fed, but nothing reads it: dead
        # neuron 3: no weight in: dead
        second.weight.zero_()
        second.weight[0, 0] = 1.0
        second.weight[0, 1] = 1.0
        second.weight[1, 3] = 1.0  # from a dead neuron: does not count, and neuron 1 of layer 2 is then dead
        third.weight.fill_(1.0)
    rows = fg.mec_sparse_table(head)
    assert [(r["inputs"], r["connected_neurons"], r["weights"]) for r in rows] == [(6, 2, 6), (2, 1, 2), (1, 2, 2)]
    # layer 1: 6 weights + 2 biases; layer 2: min(2 + 1, 2 live inputs); layer 3: min(2 + 2, 1)
    assert [r["capacity_bits"] for r in rows] == [8, 2, 1] and fg.mec_sparse(head) == 11
    effective = fg.mec_sparse_table(head, effective=True)  # at 1 x 1 maps copies 0..4 are one feature
    assert (effective[0]["inputs"], effective[0]["weights"]) == (2, 2)


# ---------------------------------------------------------------- the scan, the driver, the tables

def test_sensitivity_scan_and_choice(trained, splits):
    rows = fg.sensitivity_scan(trained, splits.val, sparsities=(0.5, 0.9, 0.99), limit=None, device="cpu")
    assert len(rows) == 4 * 4 and {r["name"] for r in rows} == {"fc1", "fc2", "fc3", "fc4"}
    base = train.evaluate(trained, splits.val, device="cpu")["accuracy"]
    assert all(r["val_accuracy"] == pytest.approx(base) for r in rows if r["sparsity"] == 0)
    by_hand = [{"layer": layer, "sparsity": s, "val_accuracy": a}
               for layer, s, a in [(0, 0.0, 0.90), (0, 0.5, 0.895), (0, 0.9, 0.88), (1, 0.0, 0.9), (1, 0.5, 0.7)]]
    assert fg.choose_sparsities(by_hand, tolerance=1.0) == [0.5, 0.0]
    assert fg.choose_sparsities(by_hand, tolerance=2.0) == [0.9, 0.0]


def test_pruned_first_layer_forms_match_pruning_the_head(trained):
    thresholds = fg.weight_thresholds(trained.linears()[0].weight, [0.5, 0.9, 0.99])
    forms = fg._pruned_first_forms(trained, thresholds)
    for form, s in zip(forms, [0.5, 0.9, 0.99]):
        head = _clone(trained)
        fg.prune_weights(head, [s, 0.0, 0.0, 0.0])
        reference = head.inference_form()[2]
        torch.testing.assert_close(form.weight, reference.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(form.bias, reference.bias, atol=1e-5, rtol=1e-5)


def test_scan_at_larger_maps_prunes_the_first_layer():
    train_set = _data(120, 8, side=2)
    head = _head(train_set, side=2, epochs=1, hidden=(16, 12, 8))
    rows = fg.sensitivity_scan(head, train_set, sparsities=(0.999,), limit=None, device="cpu")
    first = [r for r in rows if r["layer"] == 0]
    pruned = _clone(head)
    fg.prune_weights(pruned, [0.999, 0, 0, 0])
    assert first[1]["val_accuracy"] == pytest.approx(train.evaluate(pruned, train_set, device="cpu")["accuracy"])


def test_deep_compression_end_to_end(narrow, splits, tmp_path, capsys):
    """Notebook 03's stage cells on a small head: prune and retrain in two steps, share and fine-tune, Huffman."""
    import notebook_cells

    trained = narrow
    budget = {"steps": 2, "epochs": 1, "finetune_epochs": 1, "lr": 1e-3, "finetune_lr": 1e-4}
    ns = notebook_cells.deep_compression(trained, splits, tmp_path, budget, [0.95, 0.8, 0.5, 0.0])
    stages = ns["stages"]
    said = capsys.readouterr().out
    assert "prune step 1/2" in said and "prune step 2/2: kept 5.0%" in said  # the schedule's shares, then Han's
    assert [r["stage"] for r in stages] == ["float32", "sparse", "quantized", "huffman"]
    assert [r["bytes"] for r in stages] == sorted((r["bytes"] for r in stages), reverse=True)
    assert stages[0]["ratio"] == 1 and stages[-1]["ratio"] > stages[1]["ratio"] > 1
    for r in stages[1:]:
        assert r["bytes"] == os.path.getsize(r["path"]) and r["read_back"] == "bitwise the head written"
    assert stages[3]["test_accuracy"] == stages[2]["test_accuracy"]  # Huffman coding loses nothing
    assert len(ns["histograms"]) == 4 and all("codebook" in h for h in ns["histograms"])
    assert all(sum(h["pruned"]) < sum(h["before"]) for h in ns["histograms"][:3])
    huffman = stagefiles.load_stage(stages[3]["path"])
    assert sum(int(lin.weight.count_nonzero()) for lin in huffman.linears()) == stages[3]["weights_kept"]
    assert trained.linears()[0].weight.count_nonzero() == trained.linears()[0].weight.numel()  # the file was read
    table = ns["dc"]["stages"]
    assert table[-1]["han_vgg16_ratio"] == 49 and table[0]["han_vgg16_bytes"] == 552_000_000
    assert table[1]["val_drop_points"] == pytest.approx(100 * (table[0]["val_accuracy"] - stages[1]["val_accuracy"]))
    versus = ns["dc"]["versus"]
    assert [r["pruning"] for r in versus] == ["unpruned", "fine-grained (Deep Compression)"]
    assert versus[1]["stored_bytes"] == stages[-1]["bytes"]
    rows = dc.structured_vs_finegrained({"structured": trained, "fine-grained": huffman},
                                        {"val": splits.val}, stored_bytes={"fine-grained": stages[-1]["bytes"]},
                                        batch=64, repeats=2, device="cpu")
    assert [r["pruning"] for r in rows] == ["structured", "fine-grained"]
    # mec_bits means one thing in every table: the four rules on the widths (the same for both here); the weights
    # a fine-grained head kept are counted apart, by rule 2
    assert rows[1]["mec_bits"] == rows[0]["mec_bits"] == capacity.mec(trained.widths())
    assert rows[1]["mec_kept_bits"] < rows[0]["mec_kept_bits"] == capacity.mec_of(trained)
    assert rows[1]["mec_effective_bits"] == capacity.mec_effective(trained.widths(), trained.map_size)
    assert rows[1]["float32_sparse_bytes"] < rows[0]["float32_sparse_bytes"]
    assert rows[1]["stored_bytes"] == stages[-1]["bytes"] and rows[0]["dense_ms"] > 0
    for r in rows:  # alternated rounds: quartiles in order, one time per round and head
        assert 0 < r["ms_q1"] <= r["ms"] <= r["ms_q3"] and r["timing_rounds"] == 15


def test_bad_settings_are_named(trained):
    with pytest.raises(ValueError, match="name 3 layers"):
        fg.check_sparsities([0.5, 0.5, 0.5], trained)
    with pytest.raises(ValueError, match="sparsity of fc2=1.0"):
        fg.check_sparsities([0.5, 1.0, 0.5, 0.5], trained)
    with pytest.raises(ValueError, match="sparsity='most'"):
        fg.check_sparsities("most", trained)
    with pytest.raises(ValueError, match="bits of fc1=9"):
        quantize.share_weights(trained, bits=9)
    with pytest.raises(ValueError, match="index_bits=0"):
        stagefiles.stage_payload(trained, "sparse", index_bits=0)
    assert fg.check_sparsities("han", trained) == [0.96, 0.96, 0.77, 0.77]
