"""Issue 35: the knee's decision holds within its own margin, and no sentence or figure claims more than its test."""
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import notebook_cells  # noqa: E402
from labkit import headsize, knee, plots, pruning_plots, records, stats, tables  # noqa: E402

ANSWERS = notebook_cells.definitions("05_questionnaire")  # Q1-Q10 as notebook 05 writes them
NB03 = notebook_cells.definitions("03_prune_compare")  # its sentences, as its cells write them

from test_headsize import _curve, _dc, _ladder  # noqa: E402
from test_tables import _grid, _knee_result  # noqa: E402


def _right(n_right, n, offset=0):
    """A correctness record of n images, n_right of them right, starting at image `offset` (wrapping)."""
    right = torch.zeros(n, dtype=torch.bool)
    right[(torch.arange(n_right) + offset) % n] = True
    return right


def test_pooled_difference_is_the_mean_of_the_seeds_differences_and_its_margin_counts_the_images():
    a = [_right(900, 1000), _right(880, 1000), _right(910, 1000)]
    b = [_right(905, 1000, 50), _right(890, 1000, 50), _right(900, 1000, 50)]
    p = stats.pooled(a, b)
    mean_diff = sum(100 * (int(x.sum()) - int(y.sum())) / 1000 for x, y in zip(a, b)) / 3
    assert p["diff"] == pytest.approx(mean_diff) and p["n"] == 3000 and p["seeds"] == 3
    discordant = p["b"] + p["c"]
    assert p["margin"] == pytest.approx(100 * stats.Z95 * math.sqrt(discordant - (p["b"] - p["c"]) ** 2 / 3000) / 3000)
    one = stats.mcnemar(a[0], b[0])
    assert p["margin"] < one["margin"]  # three seeds' images: a narrower margin than one seed's
    with pytest.raises(ValueError, match="one of each per seed"):
        stats.pooled(a, b[:2])


def _with_records(result, n=1000):
    """_knee_result's rows and controls with correctness records that match their accuracies."""
    for r in [*result["rows"], *result["control"]]:
        for split in ("val", "test"):
            r[f"{split}_total"] = n
            r[f"{split}_right"] = records.pack_right(_right(round(r[f"{split}_accuracy"] * n), n))
    for step in result["steps"]:
        probes = [r for r in result["rows"] if r["cycle"] == step["step"]]
        controls = [c for c in result["control"] if c["cycle"] == step["step"]]
        step["paired"] = knee.paired_on_validation(probes, controls)
    return result


def test_the_knee_summary_states_the_pooled_margin_beside_the_tolerance():
    lines = NB03.knee_summary(_with_records(_knee_result()), 1.0)
    decision = next(line for line in lines if line.startswith("The decision"))
    assert "-0.50 points against the control, 95% margin ±" in decision and "tolerance of 1 point" in decision
    margin = float(decision.split("95% margin ±")[1].split(" ")[0])
    assert margin > 0  # 5 discordant images of 1,000: a margin of a few tenths
    assert ("the whole margin lies within the tolerance" in decision) == (-0.5 - margin >= -1.0)
    assert "One seed: the margin leaves out how much training itself varies" in decision
    outside = next(line for line in lines if line.startswith("The next smaller head probed"))
    assert "95% margin" in outside  # the step outside gets its margin too


def test_seeds_own_knees_are_reported_as_a_range():
    result = _knee_result()
    result["agree"] = {0: "25088-1024-1024-64-10", 1: "25088-512-512-32-10", 2: "25088-2048-2048-128-10"}
    text = " ".join(NB03.knee_summary(result, 1.0))
    assert "the seeds' own knees range from 512-512-32 to 2048-2048-128" in text
    result["agree"] = {0: "25088-1024-1024-64-10", 1: "25088-1024-1024-64-10"}
    assert "every seed alone puts it there too" in " ".join(NB03.knee_summary(result, 1.0))


def test_a_difference_on_one_split_that_the_other_does_not_show_is_not_called_an_effect():
    rows = _grid([0.95, 0.951, 0.952], [0.90, 0.901, 0.902], [0.9] * 3, seeds=(0, 1, 2))  # test: far higher
    line = tables.controls_summary(rows)[0]  # validation: 0.9 for every arm
    assert "scored higher than the unpruned head trained as long, beyond the margin" in line
    assert "the two splits disagree, so this is not called an effect of pruning" in line
    assert "helped" not in line
    for r in rows:  # validation now says the same as test
        r["val_accuracy"] = r["test_accuracy"]
    assert "Validation agrees" in tables.controls_summary(rows)[0]


def test_epochs_in_all_give_every_seed_s_count():
    assert tables.plural_epochs([18, 21, 18]) == "18-21 epochs (by seed)"
    assert tables.plural_epochs([18, 18]) == "18 epochs" and tables.plural_epochs(1) == "1 epoch"
    rows = _grid([0.9] * 3, [0.9] * 3, [0.9] * 3, seeds=(0, 1, 2))
    for r in rows:
        r["epochs_total"] += 3 * r["seed"]
    assert "(4-10 epochs (by seed) in all)" in tables.controls_summary(rows)[0]


def test_head_size_sets_like_against_like_and_says_why_two_controls_differ():
    result = _knee_result()
    dc = _dc()
    dc["stages"][0]["control_val_accuracy"] = 0.915
    dc["versus"].insert(1, {"pruning": "structured (the knee)", "stored_bytes": 6_000_000,
                            "stored_as": "5-bit Huffman-coded file"})
    rows = headsize.rows(result, dc, _ladder(), map_size=1)
    text = " ".join(headsize.lines(rows, dc["versus"]))
    assert "against the knee's 6.00 MB stored the same way (5-bit Huffman-coded file" in text
    assert "One start, two controls" in text and "the knee's control" in rows[1]["control"]
    assert "Deep Compression's control" in next(r for r in rows if r["head"].startswith("fine"))["control"]
    assert "reaches the ladder's best" not in text
    assert "stays within the tolerance of the ladder's best (91.20% on validation): 512-32-10, 0.70 points below" in text
    assert "stored another way" in " ".join(headsize.lines(rows))  # without the side-by-side table


def test_questionnaire_claims_no_more_than_was_measured(tmp_path):
    from labkit import notebook

    result = _knee_result()
    rows = headsize.rows(result, _dc(), _ladder(), map_size=1)
    (tmp_path / "head_size.csv").write_text(notebook.table_csv(rows))
    saved = notebook.read_table(tmp_path / "head_size.csv")
    q5 = ANSWERS.q5(10**8, 2000, [], None, head_size=saved)
    assert "predicts" not in q5 and "validation accuracy is the estimate, and test checks it" in q5
    q6 = ANSWERS.q6({"epochs": [{"epoch": 1, "accuracy": 0.9}], "best_epoch": 1, "val": {"accuracy": 0.9}},
                          {"accuracy": 0.9}, 10**8, 2000, "random")
    assert "was not tested here" in q6 and "What limits accuracy on real labels here is" not in q6
    curve = _curve()
    curve += [{**r, "val_accuracy": 0.99} for r in curve if r["method"] == "scratch"]  # a control above the best
    q7 = ANSWERS.q7(curve, result["knee"], 1.0, saved)
    assert "Among the pruned heads and the unpruned head trained as long" in q7 and "higher still" in q7
    q10 = ANSWERS.q10({"accuracy": 0.9, "correct": 900, "total": 1000}, 10**8, 0.88, result["knee"],
                            result["table"], "quick", head_size=saved)
    assert "no GPU run of the lab has been measured" in q10 and "changes the last digits" not in q10


def _overlap(a, b):
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_knee_figure_names_no_two_probes_on_top_of_each_other_and_keeps_its_legend_clear():
    from labkit import study
    from test_tables import _controls, _probe_rows

    widths = ["25088-4096-4096-256-10", "25088-2048-2048-128-10", "25088-1024-1024-64-10", "25088-512-512-32-10",
              "25088-724-724-45-10", "25088-609-609-38-10", "25088-558-558-35-10"]
    scales = (1.0, 0.5, 0.25, 0.125, 0.177, 0.149, 0.136)
    vals = [(0.9, 0.9), (0.9, 0.9), (0.9, 0.9), (0.85, 0.85), (0.9, 0.9), (0.89, 0.89), (0.87, 0.87)]
    rows = _probe_rows(0, vals, widths, scales)
    for r, w in zip(rows, widths):
        r["mec_bits"] = int(10**8 * [1, 0.5, 0.25, 0.125, 0.177, 0.149, 0.136][widths.index(w)])
    control = _controls(rows, [0.9] * len(rows))
    fig = pruning_plots.knee(knee.knee_table(rows, control, 1.0), 1.0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert any(t.get_text() == "609-609-38" for t in ax.texts)  # the knee is named ...
    assert any(t.get_text() == "558-558-35" for t in ax.texts)  # ... and so is the probe just outside it
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    legend, label = ax.get_legend().get_window_extent(renderer), ax.xaxis.label.get_window_extent(renderer)
    assert not _overlap(legend, label)
    assert study is not None


def test_capacity_figure_draws_no_empty_error_bars_and_says_where_the_control_stands():
    fig = pruning_plots.accuracy_vs_capacity(_grid([0.95], [0.90], [0.9]))  # one seed: nothing to spread
    for ax in fig.axes[:2]:
        assert not ax.containers  # no error bar containers, so no caps in the legend
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("drawn at the pruned heads' MEC" in x for x in labels)
    xs = {line.get_label(): line.get_xdata()[-1] for line in fig.axes[0].lines}
    assert len({round(x, 6) for x in xs.values()}) == len(xs)  # each arm to its own side


def test_training_curves_mark_the_kept_epoch():
    epochs = [{"epoch": e, "loss": 1 / e, "accuracy": 0.8, "val_loss": 1 / e, "val_accuracy": 0.8 + 0.01 * e,
               "best": e == 3} for e in range(1, 6)]
    fig = plots.training_curves(epochs)
    assert all(any(line.get_label() == "kept: epoch 3 (best validation)" for line in ax.lines) for ax in fig.axes)


def test_memorization_figure_explains_its_triangles_and_draws_the_twin_as_a_ring():
    rows = [{"head": "512-8-10", "mec_bits": 4112, "mec_effective_bits": 4112, "bits_stored": 3000,
             "images_memorized": 1400, "all_images": False, "criterion": 0.9, "copies": 1},
            {"head": "512-16-10", "mec_bits": 8224, "mec_effective_bits": 8224, "bits_stored": 6000,
             "images_memorized": 2000, "all_images": True, "criterion": 0.9, "copies": 1},
            {"head": "25088-8-10", "mec_bits": 200720, "mec_effective_bits": 4112, "bits_stored": 2900,
             "images_memorized": 1300, "all_images": False, "criterion": 0.9, "copies": 49}]
    fig = plots.memorization(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(x.startswith("▲ fitted every training image") for x in labels)
    ring = next(line for line in ax.lines if "(the ring)" in line.get_label())
    assert ring.get_marker() == "o" and ring.get_markerfacecolor() == "none"


def test_sensitivity_rings_of_layers_pruned_alike_do_not_coincide():
    rows = [{"layer": layer, "sparsity": s, "val_accuracy": 0.9, "weights": 100} for layer in (0, 1)
            for s in (0.0, 0.5, 0.96)]
    fig = pruning_plots.sensitivity(rows, chosen=[0.96, 0.96], tolerance=1.0)
    rings = [line for line in fig.axes[0].lines if line.get_markerfacecolor() == "none"]
    assert len(rings) == 2 and rings[0].get_markersize() != rings[1].get_markersize()


def test_a_knee_control_waits_on_disk_even_where_the_notebooks_keep_no_checkpoints(tmp_path):
    """Issue 34: the notebooks run with checkpoints="off"; a knee control that kept no checkpoint could not let go
    of its head between steps, so every seed's control stayed in memory (a full head and its moments each)."""
    import dataclasses

    from labkit import config

    start = tmp_path / "start.pt"
    start.write_bytes(b"x")
    c = dataclasses.replace(config.make_config("ci"), checkpoints="off", start=str(start))
    assert knee.control_config(c).checkpoints == "last"
    assert knee.control_config(dataclasses.replace(c, checkpoints="all")).checkpoints == "all"
    assert knee.control_config(c).run_name == knee.control_config(
        dataclasses.replace(c, checkpoints="all")).run_name  # the same run: checkpoints do not shape its numbers


def test_shared_weights_index_is_one_byte_and_still_indexes_its_codebook():
    from labkit import quantize

    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    lin = torch.nn.Linear(32, 64)
    with torch.no_grad():
        lin.weight.copy_(w)

    class One(torch.nn.Module):
        def linears(self):
            return [lin]

    shared = quantize.share_weights(One(), bits=4)[0]
    assert shared.index.dtype == torch.uint8 and int(shared.index.min()) >= 1
    assert torch.allclose(shared.dense(), shared.codebook[shared.index.long()].view(64, 32))
    # every weight takes its nearest centroid (k-means' assignment); a bound in the range's terms fails on
    # outliers, which k-means may leave in a wide end cluster
    nearest = (w.flatten()[:, None] - shared.codebook[1:][None, :]).abs().min(1).values
    assert torch.allclose((shared.dense() - w).abs().flatten(), nearest, atol=1e-6)
