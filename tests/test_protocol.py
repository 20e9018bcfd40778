"""The protocol: a validation split that takes every decision, the equal-budget and from-scratch controls."""
import dataclasses
import hashlib

import pytest
import torch

import notebook_cells
from labkit import config, data, features, files, model, prune, runs, study, train


def test_validation_is_disjoint_from_training_and_test():
    images, labels = data.load_mnist("train")
    val = data.split_indices(labels, "val", 300, None, 0)
    for limit in (600, None):
        trained = data.split_indices(labels, "train", limit, 300, 0)
        assert not set(val.tolist()) & set(trained.tolist())
    assert len(data.split_indices(labels, "train", None, 10_000, 0)) == 50_000  # the paper profile's split
    assert torch.bincount(labels[val]).tolist() == [30] * 10  # class-balanced
    test_images, _ = data.load_mnist("test")
    digest = lambda x: hashlib.sha1(x.numpy().tobytes()).hexdigest()  # noqa: E731
    assert not {digest(x) for x in images[val]} & {digest(x) for x in test_images}
    # load_mnist and the feature sets draw the same images
    x_val, y_val = data.load_mnist("val", 300, seed=0)
    assert torch.equal(x_val, images[val]) and torch.equal(y_val, labels[val])


def test_history_has_validation_columns(small_config):
    rows = study.run_study(small_config, progress=False, log=None)
    saved = runs.read_history(small_config.run_dir / "history.csv")
    for r in saved:
        assert r["val_total"] == small_config.val_limit == 200
        assert r["val_accuracy"] == pytest.approx(r["val_correct"] / r["val_total"])
        assert r["test_total"] == small_config.test_limit
    kept = rows[0]["epochs_total"]  # cycle 0 trains to its plateau: the epochs early stopping kept
    assert small_config.lr_epochs <= kept <= small_config.start_epochs
    assert [r["epochs_total"] for r in rows] == [kept, kept + 1, kept + 2]  # then c.epochs (1) a cycle


def _permuted_test_labels(monkeypatch):
    real = study.split_features

    def permuted(c, split):
        fs = real(c, split)
        if split != "test":
            return fs
        order = torch.randperm(len(fs), generator=torch.Generator().manual_seed(1))
        return features.FeatureSet(fs.maps, fs.labels[order], fs.weights, fs.image_size, "test")

    monkeypatch.setattr(study, "split_features", permuted)


def _start(c, tmp_path):
    start = tmp_path / f"start-seed{c.seed}.pt"
    study.train_start(dataclasses.replace(c, checkpoints="off"), start, progress=False, log=None)
    return dataclasses.replace(c, start=str(start), layer="all", checkpoints="off")


def test_test_labels_decide_nothing(small_config, tmp_path, monkeypatch):
    result = notebook_cells.knee(small_config, tmp_path / "r", compress=False, tolerance=0.5)["result"]
    _permuted_test_labels(monkeypatch)
    other = dataclasses.replace(small_config, results_dir=str(tmp_path / "permuted"))
    permuted = notebook_cells.knee(other, tmp_path / "permuted", compress=False, tolerance=0.5)["result"]
    decided = lambda r: ([(s["widths"], s["within_tolerance"]) for s in r["steps"]],  # noqa: E731
                         r["smallest"]["widths"], [x["val_correct"] for x in r["rows"]])
    assert decided(result) == decided(permuted)
    assert [r["test_correct"] for r in result["rows"]] != [r["test_correct"] for r in permuted["rows"]]


def test_each_probe_is_judged_against_its_control_at_equal_training(small_config, tmp_path):
    from labkit import knee

    ns = notebook_cells.knee(small_config, tmp_path / "r", tolerance=0.5)
    geo, result = ns["configs"][0], ns["result"]
    table, rows, control = result["knee"], result["rows"], result["control"]
    assert [(r["seed"], r["cycle"]) for r in control] == [(r["seed"], r["cycle"]) for r in rows]
    assert all(c["epochs_total"] == r["epochs_total"] for r, c in zip(rows, control))  # equal training
    # the control of a probe that kept e epochs is the start trained e epochs more: its run's cycle e
    ctl_run = runs.read_history(knee.control_config(geo).run_dir / "history.csv")
    for r, c in zip(rows, control):
        assert c["control_cycle"] == r["cycle_epochs"]
        assert c["val_correct"] == ctl_run[r["cycle_epochs"]]["val_correct"]
    # counted in images instead of fractions: 0.5 points of 200 validation images is one image
    assert rows[0]["val_total"] == 200
    within = {s["step"]: s["within_tolerance"] for s in result["steps"]}
    for r, c in zip(rows[1:], control[1:]):
        assert within[r["cycle"]] == (c["val_correct"] - r["val_correct"] <= 1)
    for t in table:  # each row's own verdict against its own control; the step's decision in a column of its own
        assert t["within_tolerance"] == knee.within_tolerance(t["control_val_accuracy"], t["val_accuracy"], 0.5)
        assert t["step_within_tolerance"] == (t["cycle"] == 0 or within[t["cycle"]])
    for t in table:
        if t["method"] != "scratch":
            c = next(x for x in control if x["cycle"] == t["cycle"])
            assert t["control_val_accuracy"] == c["val_accuracy"] and t["control_test_accuracy"] == c["test_accuracy"]
    best = result["smallest"]
    assert [t for t in table if t["smallest"]] == [next(t for t in table if t["cycle"] == best["cycle"]
                                                        and t["method"] != "scratch")]
    if best["cycle"] > 0:
        scratch = [t for t in table if t["method"] == "scratch"]
        assert len(scratch) == 1 and scratch[0]["widths"] == best["widths"]
        assert scratch[0]["epochs_total"] == best["epochs_total"]
    reference = next(c for c in control if c["cycle"] == best["cycle"])
    assert result["table"][0]["drop_points"] == pytest.approx(
        100 * (reference["test_accuracy"] - result["table"][0]["test_accuracy"]))


def test_comparison_holds_both_controls_for_every_seed(small_config, tmp_path):
    """Notebook 04's curve cell (notebook 03's comparison, once per seed), run on the small head."""
    ns = notebook_cells.namespace(small_config, tmp_path / "r", "04_capacity_curve", seeds=2,
                                  methods=("l2", "reservoir"))
    rows = notebook_cells.run("04_capacity_curve", "# The curve over seeds", ns)["rows"]
    for seed in (0, 1):
        mine = [r for r in rows if r["seed"] == seed]
        assert {r["method"] for r in mine} == {"l2", "reservoir", "none", "scratch"}
        none = [r for r in mine if r["method"] == "none"]
        assert [str(r["widths"]) for r in none] == ["25088-64-48-16-10"] * 3  # nothing removed, the same cycles
        last = next(r for r in mine if r["method"] == "l2" and r["cycle"] == 2)
        (scratch,) = [r for r in mine if r["method"] == "scratch"]  # both methods end at the same widths
        assert (scratch["widths"], scratch["cycle"], scratch["epochs_total"]) == (last["widths"], 2, last["epochs_total"])


def test_scratch_is_a_fresh_head_trained_as_long(small_config, tmp_path):
    like = {"widths": "25088-40-48-16-10", "epochs_total": 3, "cycle": 2, "removed": 24}
    row = notebook_cells.namespace(small_config, tmp_path / "r")["from_scratch"](small_config, like)  # 03's
    c = config.scratch_of(small_config, [40, 48, 16], 3)
    assert c.method == "scratch" and c.epochs == 3 and c.cycles == 1 and c.start is None
    assert (row["method"], str(row["widths"]), row["epochs_total"], row["cycle"]) == ("scratch", like["widths"], 3, 2)
    with pytest.raises(ValueError, match="method='scratch' trains a fresh head"):
        dataclasses.replace(c, start=__file__)


def test_folded_training_is_full_width_training(small_config):
    """At 1 x 1 maps, training the 512-column sum at 49x the learning rate gives the full-width head's updates."""
    splits = study.prepare_features(small_config, progress=False)
    heads = []
    for fold in (True, False):
        head = study.new_head(small_config, splits.train)
        history = train.fit(head, splits.train, 2, 32, 1e-3, seed=3, device="cpu", fold=fold)
        heads.append((head, history))
    (a, ha), (b, hb) = heads
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=2e-6)
    assert [e["loss"] for e in ha] == pytest.approx([e["loss"] for e in hb], rel=1e-4)


def test_no_checkpoint_is_written_when_none_are_kept(small_config, monkeypatch):
    written = []
    real = files.save_torch
    monkeypatch.setattr(files, "save_torch", lambda obj, path: written.append(path) or real(obj, path))
    c = dataclasses.replace(small_config, checkpoints="off")
    rows = study.run_study(c, progress=False, log=None)
    assert written == [] and not list((c.run_dir / "checkpoints").iterdir())
    head = study.new_head(c, study.prepare_features(c, progress=False).train)
    # model_bytes is what the head's file would take, measured without writing it
    assert rows[0]["model_bytes"] == real(model.head_payload(head), c.run_dir.parent / "probe.pt")


def test_a_trained_start_is_exactly_a_runs_cycle_zero(small_config, tmp_path):
    """Notebook 02's trained head (validation watched every epoch) equals a plain run's cycle 0, so runs
    from that start and runs from scratch are the same experiment."""
    c = dataclasses.replace(small_config, epochs=2, cycles=1, checkpoints="all")
    head, record = study.train_start(c, tmp_path / "start.pt", progress=False, log=None)
    assert "val_accuracy" in record["epochs"][0] and len(record["epochs"]) <= c.start_epochs
    assert [e["epoch"] for e in record["epochs"] if e["best"]] == [record["best_epoch"]]
    study.run_study(c, progress=False, log=None)
    plain, _ = model.load_head(c.run_dir / "checkpoints" / "cycle_000.pt")
    for a, b in zip(head.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


def test_model_bytes_off_the_cpu_equals_the_file(tmp_path, monkeypatch):
    """A head on another device is measured from its shapes, without copying it back: the same bytes."""
    head = model.build_head((32, 24, 12), seed=0)
    on_file = model.save_head(head, tmp_path / "head.pt")
    monkeypatch.setattr(model, "_sizes", {})
    assert model.head_bytes(head) == on_file
    monkeypatch.setattr(model, "_sizes", {})
    assert model.head_bytes(head.to("meta")) == on_file  # not on the CPU: measured from shapes alone


def test_early_stopping_keeps_the_best_epoch_and_its_optimizer(small_config):
    """fit with patience goes back to the epoch of highest validation accuracy: the head it leaves scores exactly
    that accuracy, and the optimizer state it leaves is that epoch's (its step count)."""
    splits = study.prepare_features(small_config, progress=False)
    head = study.new_head(small_config, splits.train)
    state = train.AdamState()
    history = train.fit(head, splits.train, 8, 32, 3e-3, seed=1, device="cpu", val_set=splits.val,
                        patience=2, state=state)
    best = max(history, key=lambda e: e["val_accuracy"])
    assert best["val_accuracy"] >= max(e["val_accuracy"] for e in history)
    assert [e["epoch"] for e in history if e["best"]] == [best["epoch"]] == [train.best_epoch(history)]
    assert train.evaluate(head, splits.val, device="cpu")["accuracy"] == pytest.approx(best["val_accuracy"])
    steps_per_epoch = -(-len(splits.train) // 32)
    assert state.steps[0] == best["epoch"] * steps_per_epoch
    stopped_early = len(history) < 8
    assert not stopped_early or history[-1]["epoch"] - best["epoch"] == 2


def test_training_goes_on_across_fits(small_config):
    """Full batch and no dropout, so the order of images does not matter: two fits carrying the Adam state equal
    one fit of as many epochs, and two fits each with a fresh Adam do not (the restart moves every weight)."""
    splits = study.prepare_features(small_config, progress=False)
    c = dataclasses.replace(small_config, dropout=0.0)
    n = len(splits.train)
    one = study.new_head(c, splits.train)
    train.fit(one, splits.train, 4, n, 1e-3, seed=0, device="cpu")
    carried, state = study.new_head(c, splits.train), train.AdamState()
    restarted = study.new_head(c, splits.train)
    for half in (0, 1):
        train.fit(carried, splits.train, 2, n, 1e-3, seed=half, device="cpu", state=state)
        train.fit(restarted, splits.train, 2, n, 1e-3, seed=half, device="cpu")
    for a, b in zip(one.parameters(), carried.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(one.parameters(), restarted.parameters()))


def test_pruning_drops_the_removed_neurons_from_the_optimizer(small_config):
    """After prune_step the moments have the head's shapes, and the kept neurons' moments are the ones they had."""
    splits = study.prepare_features(small_config, progress=False)
    head, state = study.new_head(small_config, splits.train), train.AdamState()
    train.fit(head, splits.train, 1, 64, 1e-3, seed=0, device="cpu", state=state)
    before = [t.clone() for t in state.exp_avg]
    c = dataclasses.replace(small_config, layer=1, k=8)
    scores = head.linears()[1].weight.detach().clone()
    study.prune_step(c, head, state, 1)
    kept = [i for i in range(48) if i not in prune.choose_neurons(scores, 8, "l2")]
    assert [tuple(t.shape) for t in state.exp_avg] == [(64, 512), (64,), (40, 64), (40,), (16, 40), (16,), (10, 16), (10,)]
    assert torch.equal(state.exp_avg[2], before[2][kept]) and torch.equal(state.exp_avg[4], before[4][:, kept])
    assert torch.equal(state.exp_avg[0], before[0])  # the folded first layer (64 x 512) is untouched
    train.fit(head, splits.train, 1, 64, 1e-3, seed=1, device="cpu", state=state)  # and goes on


def test_a_released_control_goes_on_as_if_it_had_been_held(small_config, tmp_path):
    """A knee search's controls let go of their heads between steps (memory) and read them back from their newest
    checkpoint: the rows must be those of a control that held its head throughout."""
    from labkit import knee

    start = _start(small_config, tmp_path)
    held_config = dataclasses.replace(knee.control_config(start), name="held", checkpoints="last")
    released_config = dataclasses.replace(knee.control_config(start), name="released", checkpoints="last")
    data = study.features_when_needed(start)
    with study.Run(held_config, data, quiet=True) as held:
        held.advance_to(3)
    with study.Run(released_config, data, quiet=True) as released:
        for cycle in range(4):
            released.advance_to(cycle)
            released.release()
            assert released.head is None or released.done
    def plain(rows):  # the time aside; NaN (cycle 0's loss of a start read from file) as None: NaN != NaN
        return [{k: None if v != v else v for k, v in r.items() if k != "seconds"} for r in rows]

    assert len(released.rows) == 4 and plain(released.rows) == plain(held.rows)
