"""The sentences that depend on numbers, one test per branch, on made-up rows; tables; the questionnaire."""
import pytest
import torch

import notebook_cells
from labkit import capacity, capacity_text, tables
from labkit.knee import knee_choice

ANSWERS = notebook_cells.definitions("05_questionnaire")  # Q1-Q10 as notebook 05 writes them
NB03 = notebook_cells.definitions("03_prune_compare")  # its sentences, as its cells write them


# ---------------------------------------------------------------- compare: the margin and the outcome

def test_one_seed_margin_is_the_binomial_error():
    c = tables.compare([0.90], [0.88], n=2000)
    # by hand: 0.9 x 0.1 / 2000 + 0.88 x 0.12 / 2000 = 9.78e-5, whose root is 0.0098894; x 1.96 = 1.9383 points
    assert c["margin"] == pytest.approx(1.9383, abs=1e-4)
    assert c["diff"] == pytest.approx(2.0)
    assert c["outcome"] == "higher" and "2,000 images, unpaired, one seed" in c["basis"]


def test_seeds_margin_is_t_times_the_paired_error():
    a, b = [0.90, 0.91, 0.92], [0.89, 0.895, 0.90]
    c = tables.compare(a, b, n=2000)
    # by hand: differences 1.0, 1.5, 2.0 points, mean 1.5, sample std 0.5, standard error 0.5 / 1.7321 = 0.28868;
    # Student's t for 2 degrees of freedom at 95% is 4.3027 (a table), so the margin is 1.2421 points
    assert c["diff"] == pytest.approx(1.5)
    assert c["margin"] == pytest.approx(1.2421, abs=1e-3)
    assert c["outcome"] == "higher" and "3 seeds" in c["basis"]


@pytest.mark.parametrize("a, b, outcome", [
    ([0.95], [0.90], "higher"),
    ([0.85], [0.90], "lower"),
    ([0.901], [0.90], "same"),
    ([0.90, 0.93, 0.87], [0.89, 0.90, 0.91], "same"),   # the spread over seeds swallows a +0 difference
    ([0.95, 0.951, 0.952], [0.90, 0.901, 0.902], "higher"),
    ([0.85, 0.851, 0.852], [0.90, 0.901, 0.902], "lower"),
])
def test_compare_outcomes(a, b, outcome):
    assert tables.compare(a, b, n=2000)["outcome"] == outcome


def test_one_seed_with_correctness_records_uses_mcnemar():
    """Hand-countable: of 10 images, a alone was right on images 0-5 (b = 6), b alone on 6 (c = 1), both on 7-9.
    Under no difference b ~ Binomial(7, 1/2): p = 2 * (1 + 7) / 128 = 0.125, so no difference is measured."""
    from labkit import records

    a = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    b = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
    c = tables.compare([0.9], [0.4], n=10, right=(records.pack_right(a), records.pack_right(b)))
    assert c["p"] == pytest.approx(0.125) and c["outcome"] == "same"
    assert c["diff"] == pytest.approx(50.0)  # (6 - 1) / 10 images, in points
    assert "McNemar's exact test on the 7 of 10 images" in c["basis"] and "(6 against 1)" in c["basis"]
    text = tables.pruning_vs_control([0.9], [0.4], 10, 4, "test", (records.pack_right(a), records.pack_right(b)))
    assert "McNemar" in text and "no difference was measured" in text


def test_identical_seeds_still_need_more_than_one_image():
    c = tables.compare([0.9, 0.9], [0.9, 0.9], n=500)
    assert c["margin"] == pytest.approx(100 / 500) and c["outcome"] == "same"


# ---------------------------------------------------------------- the two sentences, every branch

@pytest.mark.parametrize("pruned, control, ending", [
    ([0.95, 0.951, 0.952], [0.90, 0.901, 0.902], "the pruned head scored higher than the unpruned head trained as long, beyond the margin."),
    ([0.85, 0.851, 0.852], [0.90, 0.901, 0.902], "the pruned head scored lower than the unpruned head trained as long, beyond the margin."),
    ([0.95], [0.90], "the pruned head scored higher beyond the test images' sampling error, but on one seed"),
    ([0.85], [0.90], "the pruned head scored lower beyond the test images' sampling error, but on one seed"),
    ([0.902], [0.90], "no difference was measured between pruning and training as long without pruning."),
    ([0.90, 0.93, 0.87], [0.89, 0.90, 0.91], "no difference was measured"),
])
def test_pruning_vs_control_every_branch(pruned, control, ending):
    text = tables.pruning_vs_control(pruned, control, n=2000, epochs=8)
    assert ending in text
    assert "8 epochs in all" in text and "unpruned head trained as long" in text
    if len(pruned) == 1 and "scored" in ending:
        assert "not yet a measured effect" in text and "helped" not in text and "cost" not in text


@pytest.mark.parametrize("pruned, scratch, ending", [
    ([0.95, 0.951], [0.90, 0.901], "the pruned head beat the same widths trained from scratch."),
    ([0.85, 0.851], [0.90, 0.901], "the same widths trained from scratch did better than pruning."),
    ([0.95], [0.90], "the pruned head scored higher beyond the test images' sampling error, but on one seed"),
    ([0.85], [0.90], "the pruned head scored lower beyond the test images' sampling error, but on one seed"),
    ([0.90], [0.90], "no difference was measured between the pruned head and the same widths trained from scratch."),
])
def test_pruned_vs_scratch_every_branch(pruned, scratch, ending):
    text = tables.pruned_vs_scratch(pruned, scratch, n=2000, widths="512-512-32", epochs=8)
    assert ending in text
    assert "512-512-32" in text and "8 epochs" in text


def _row(method, cycle, seed, val, test, widths="25088-4096-4096-256-10", epochs=None, mec=100):
    return {"method": method, "cycle": cycle, "seed": seed, "val_accuracy": val, "test_accuracy": test,
            "val_total": 1000, "test_total": 1000, "widths": widths, "epochs_total": epochs or 2 * (cycle + 1),
            "mec_bits": mec, "rho": 0.1, "removed": 0}


def _grid(pruned_last, control_last, scratch_last, seeds=(0,)):
    rows = []
    for i, s in enumerate(seeds):
        rows += [_row("l2", 0, s, 0.9, 0.9), _row("l2", 1, s, 0.9, pruned_last[i], "25088-3896-4096-256-10"),
                 _row("none", 0, s, 0.9, 0.9), _row("none", 1, s, 0.9, control_last[i]),
                 _row("scratch", 1, s, 0.9, scratch_last[i], "25088-3896-4096-256-10")]
    return rows


def test_controls_summary_pairs_by_seed_and_names_both_controls():
    lines = tables.controls_summary(_grid([0.95], [0.90], [0.95]))
    assert len(lines) == 1 and lines[0].startswith("l2 (cycle 1, 25088-3896-4096-256-10)")
    assert "the pruned head scored higher" in lines[0] and "on one seed" in lines[0]
    assert "no difference was measured between the pruned head and the same widths" in lines[0]
    three = tables.controls_summary(_grid([0.95, 0.90, 0.85], [0.90, 0.90, 0.90], [0.9, 0.9, 0.9], seeds=(0, 1, 2)))
    assert "3 seeds" in three[0] and "no difference was measured between pruning" in three[0]


def test_curve_summary_and_best_point_use_validation_means():
    rows = _grid([0.95, 0.93], [0.90, 0.90], [0.9, 0.9], seeds=(0, 1))
    rows[1]["val_accuracy"], rows[6]["val_accuracy"] = 0.97, 0.95  # l2 cycle 1 of seeds 0 and 1
    summary = {(r["method"], r["cycle"]): r for r in tables.curve_summary(rows)}
    assert summary[("l2", 1)]["val_accuracy"] == pytest.approx(0.96)
    assert summary[("l2", 1)]["test_accuracy"] == pytest.approx(0.94)
    assert summary[("l2", 1)]["val_std_points"] == pytest.approx(100 * 0.02 / 2 ** 0.5)
    assert summary[("l2", 1)]["seeds"] == 2
    best = ANSWERS.best_point(rows)
    assert (best["method"], best["cycle"]) == ("l2", 1)
    rows[1]["test_accuracy"] = 0.99  # a better test figure must not change the choice
    assert ANSWERS.best_point(rows)["val_accuracy"] == best["val_accuracy"]


def test_table_renders_html_without_wrapping_and_percent():
    t = tables.Table([{"widths": "25088-4096-4096-256-10", "mec_bits": 102772992, "val_accuracy": 0.8921}])
    html = t._repr_html_()
    assert "white-space:nowrap" in html and "102,772,992" in html and "89.21%" in html
    assert "89.21%" in str(t) and "102,772,992" in str(t)


def test_requirement_sentence_branches():
    grows = [{"n": n, "thresholds": n // 2, "max_bits": n * 10, "expected_bits": n} for n in (100, 200, 400, 800, 2000)]
    flat = [{"n": n, "thresholds": 50 + n // 100, "max_bits": 500, "expected_bits": 100} for n in (100, 200, 400, 800, 2000)]
    assert capacity.progression_slope(grows) == pytest.approx(1.0)
    assert "grows in step with the data" in capacity_text.requirement_sentence("pixels", grows)
    assert "grows more slowly than the data" in capacity_text.requirement_sentence("pixels", flat)
    assert "more than even the max" in capacity_text.requirement_sentence("pixels", grows, head_mec=10**9)
    full = grows[-1]
    between = (full["expected_bits"] + full["max_bits"]) // 2
    assert "lie between the two" in capacity_text.requirement_sentence("pixels", grows, head_mec=between)
    assert "less than even the expected" in capacity_text.requirement_sentence("pixels", grows, head_mec=1)


# ---------------------------------------------------------------- the knee, and the questionnaire's agreement

def _probe_rows(seed, vals, widths, scales=(1.0, 0.5, 0.25, 0.125)):
    """Knee rows of one seed (labkit.knee's columns): step c at scales[c], each kept c + 1 epochs of recovery."""
    rows = []
    for c, ((v, t), w, sc) in enumerate(zip(vals, widths, scales)):
        m = 10**8 // 2 ** c
        rows.append({**_row("l2", c, seed, v, t, w, epochs=8 + (c + 1 if c else 0), mec=m), "parameters": m,
                     "model_bytes": 4 * m, "rho": 0.01, "scale": sc, "cycle_epochs": c + 1 if c else 0,
                     "epochs_run": c + 4 if c else 0, "step_phase": "start" if c == 0 else "halving"})
    return rows


def _controls(rows, vals):
    return [{**_row("none", r["cycle"], r["seed"], v, v, epochs=r["epochs_total"]), "control_cycle": r["cycle_epochs"]}
            for r, v in zip(rows, vals)]


def _steps(rows, control, tolerance=1.0):
    from labkit import knee

    ok = set(knee.in_tolerance(rows, control, tolerance))
    return [{"step": r["cycle"], "scale": r["scale"], "widths": r["widths"], "within_tolerance": r["cycle"] in ok,
             "val_accuracy": r["val_accuracy"], "control_val_accuracy": c["val_accuracy"]}
            for r, c in zip(rows, control) if r["cycle"] > 0 and r.get("seed", 0) == rows[0].get("seed", 0)]


def _knee_result():
    from labkit import knee

    widths = ["25088-4096-4096-256-10", "25088-2048-2048-128-10", "25088-1024-1024-64-10", "25088-512-512-32-10"]
    rows = _probe_rows(0, [(0.90, 0.89), (0.91, 0.90), (0.895, 0.90), (0.85, 0.86)], widths)
    control = _controls(rows, [0.90, 0.905, 0.90, 0.90])
    scratch = [{**_row("scratch", 2, 0, 0.88, 0.87, widths[2], epochs=11, mec=2 * 10**7), "parameters": 2 * 10**7,
                "model_bytes": 8 * 10**7}]
    table = [{"storage": "float32", "bytes": 8 * 10**7, "ratio": 5.0, "val_accuracy": 0.895, "test_accuracy": 0.9,
              "control_test_accuracy": 0.90, "drop_points": 0.0, "path": "a"},
             {"storage": "4-bit k-means codebook", "bytes": 10**7, "ratio": 40.0, "val_accuracy": 0.89,
              "test_accuracy": 0.895, "control_test_accuracy": 0.90, "drop_points": 0.5, "path": "b"}]
    best = knee.smallest_within(rows, control, 1.0)
    return {"rows": rows, "control": control, "smallest": best, "scratch": scratch, "steps": _steps(rows, control),
            "knee": knee.knee_table(rows, control, 1.0, scratch), "table": table}


def test_knee_summary_states_the_choice_against_the_control():
    result = _knee_result()
    assert result["smallest"]["cycle"] == 2  # 0.895 is within 1 point of the control's 0.90; 0.85 is not
    lines = NB03.knee_summary(result, 1.0)
    assert lines[0].startswith("The knee (one seed): 1024-1024-64 (")
    assert "recovered for 3 epoch(s)" in lines[0] and "validation 89.50% against the control's 90.00%" in lines[0]
    assert "The next smaller head probed, 512-512-32, reached 85.00%" in lines[1]
    assert "differ 2.00x" in lines[1]
    assert any("trained from scratch for 11 epochs" in line and "one seed" in line for line in lines)
    assert "seed 0's control 90.00%" in lines[-1] and "40x less" in lines[-1]


def test_q7_and_q10_name_the_same_head_as_the_knee():
    result = _knee_result()
    knee = result["knee"]
    curve = _grid([0.95], [0.90], [0.9])
    q7 = ANSWERS.q7(curve, knee, 1.0)
    test = {"accuracy": 0.9, "correct": 900, "total": 1000}
    q10 = ANSWERS.q10(test, 10**8, 0.88, knee, result["table"], "quick")
    assert "stop at 1024-1024-64" in q7 and "25088-1024-1024-64-10" in q10
    assert "the next smaller head probed, 512-512-32, reached 85.00%" in q7
    assert "far from where accuracy starts to fall: the knee of notebook 03 keeps 1,024" in q7
    assert "10,000,000 bytes" in q10  # the smallest stored file, with its bytes
    assert "on the validation set and the unpruned head trained as long" in q7  # the best point meets its control
    assert "the unpruned head trained as long 90.00%" in q10  # the kept head against the control at its step ...
    assert "trained from scratch for 11 epochs reached 87.00%" in q10  # ... and against the same widths from scratch


def test_best_point_is_judged_against_its_control():
    three = _grid([0.96, 0.90, 0.86], [0.90, 0.90, 0.90], [0.9] * 3, seeds=(0, 1, 2))
    for r in three:  # validation is what the best point and its comparison read
        r["val_accuracy"] = r["test_accuracy"]
    best = ANSWERS.best_point(three)
    assert (best["method"], best["cycle"]) == ("l2", 1)  # mean 0.9067, above every other point
    text = ANSWERS.best_against_control(three, best)
    assert "3 seeds" in text and "no difference was measured" in text and "validation set" in text
    control_wins = [r for r in three if r["method"] != "l2" or r["cycle"] == 0]
    assert "no pruned head scored higher" in ANSWERS.best_against_control(control_wins, {"method": "none", "cycle": 1})
    alone = [r for r in three if r["method"] != "none"]
    assert "nothing to be judged against" in ANSWERS.best_against_control(alone, best)


def test_knee_over_seeds_decides_on_the_mean_and_counts_agreement():
    """Three seeds: at step 2 seed 0 alone falls 2 points, the mean only 0.67: the step stays within 1 point,
    and the sentences say that 2 of 3 seeds, judged alone, put the knee at the same widths."""
    from labkit import knee

    widths = ["25088-4096-4096-256-10", "25088-2048-2048-128-10", "25088-1024-1024-64-10", "25088-512-512-32-10"]
    val = {0: [0.90, 0.90, 0.88, 0.80], 1: [0.90, 0.90, 0.90, 0.80], 2: [0.90, 0.90, 0.90, 0.81]}
    rows, control = [], []
    for seed, vs in val.items():
        mine = _probe_rows(seed, [(v, v) for v in vs], widths)
        rows += mine
        control += _controls(mine, [0.90] * 4)
    best = knee.smallest_within(rows, control, 1.0)
    assert best["widths"] == widths[2] and best["seed"] == 0
    agree = knee.per_seed_knees(rows, control, 1.0)
    assert agree == {0: widths[1], 1: widths[2], 2: widths[2]}
    result = {"rows": rows, "control": control, "smallest": best, "scratch": [], "agree": agree, "table": [],
              "steps": _steps(rows, control), "knee": knee.knee_table(rows, control, 1.0)}
    lines = NB03.knee_summary(result, 1.0)
    assert "(means over 3 seeds)" in lines[0] and "validation 89.33%" in lines[0]
    assert lines[2].startswith("2 of 3 seeds put the knee at 1024-1024-64")
    assert "Student's t over 3 seeds" in " ".join(lines)
    table = result["knee"]
    assert len(table) == 12 and sum(r["smallest"] for r in table) == 3  # one row per seed and step


def test_unpruned_knee_has_no_control_sentence():
    knee = _knee_result()["knee"]
    assert ANSWERS.knee_against_controls(knee, knee[0]) == ""


def test_knee_choice_reads_a_saved_table(tmp_path):
    from labkit import notebook

    (tmp_path / "knee.csv").write_text(notebook.table_csv(_knee_result()["knee"]))
    knee = notebook.read_table(tmp_path / "knee.csv")  # as notebook 05 reads it back
    assert knee_choice(knee)["cycle"] == 2
    with pytest.raises(ValueError, match="marks no smallest head"):
        knee_choice([{**r, "smallest": False} for r in knee])


def test_q3_names_what_each_kappa_measures():
    c = torch.tensor([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    text = ANSWERS.q3(c, torch.diag(torch.tensor([3, 3, 4])), (0, 1))
    assert "not how well the data is annotated" in text and "two independently trained heads" in text
    assert f"{0.36 / 0.66:.4f}" in text and "kappa = 1.0000" in text


def test_report_slip():
    slip = capacity.report_slip()
    assert slip["report_bits"] == 25088 * 4096 * 8 == 822_083_584
    assert slip["mec_bits"] == 102_772_992


def test_criteria_against_random_every_branch():
    rows = _grid([0.95, 0.951, 0.952], [0.9] * 3, [0.9] * 3, seeds=(0, 1, 2))
    rand = [{**r, "method": "reservoir"} for r in rows if r["method"] == "l2"]
    for r, v in zip([r for r in rand if r["cycle"] == 1], (0.90, 0.901, 0.902)):
        r["test_accuracy"] = v
    (line,) = NB03.criteria_summary(rows + rand)
    assert "l2 chose better neurons than chance" in line and "Student's t over 3 seeds" in line
    worse = [{**r, "test_accuracy": 1.75 - r["test_accuracy"]} if r["method"] == "l2" and r["cycle"] == 1 else r
             for r in rows]
    assert "chose worse neurons" in NB03.criteria_summary(worse + rand)[0]
    same = NB03.criteria_summary([{**r, "method": "reservoir"} if r["method"] == "l2" else r for r in rows]
                                   + [r for r in rows if r["method"] == "l2"])
    assert "no difference was measured between l2 and choosing at random" in same[0]
    one = NB03.criteria_summary([r for r in rows + rand if r["seed"] == 0])
    assert "on one seed (not yet a measured effect)" in one[0]
    assert NB03.criteria_summary(rows) == []  # no random arm, nothing to compare with


def _stage(stage, size, val, test, han, description):
    return {"stage": stage, "bytes": size, "ratio": 480e6 / size, "val_accuracy": val, "test_accuracy": test,
            "control_val_accuracy": 0.90, "control_test_accuracy": 0.91, "val_drop_points": 100 * (0.90 - val),
            "within_tolerance": 100 * (0.90 - val) <= 1.0, "han_vgg16_ratio": han, "description": description}


def test_stages_summary_every_branch():
    stages = [_stage("float32", 480e6, 0.92, 0.92, 1.0, "unpruned"), _stage("sparse", 35e6, 0.905, 0.91, 13.0, "pruned"),
              _stage("quantized", 9.6e6, 0.904, 0.913, 31.0, "+ quantization"),
              _stage("huffman", 7.2e6, 0.904, 0.913, 49.0, "+ Huffman")]
    lines = NB03.stages_summary(stages)
    assert "66.7x smaller" in lines[0] and "pruned 13.7x (Han: 13x)" in lines[0] and "+ Huffman 66.7x (Han: 49x)" in lines[0]
    assert "within the 1-point tolerance" in lines[1] and "90.40% on validation" in lines[1]
    assert "took 25% off the quantized file" in lines[2] and "it is lossless" in lines[2]
    worse = stages[:3] + [_stage("huffman", 7.2e6, 0.88, 0.914, 49.0, "+ Huffman")]
    lines = NB03.stages_summary(worse)
    assert "2.00 points below it, more than the 1-point tolerance" in lines[1]
    assert "which lossless coding must not" in lines[2]


def test_pruning_kinds_every_branch():
    base = {"pruning": "unpruned", "widths": "25088-64-10", "weights_kept": 100, "density": 1.0,
            "stored_bytes": 480e6, "mec_bits": 10**8, "mec_effective_bits": 2 * 10**6, "val_accuracy": 0.92,
            "dense_ms": 40.0, "sparse_ms": 40.0, "sparse_layers": "none", "ms_q1": 38.0, "ms": 40.0, "ms_q3": 42.0,
            "timing_rounds": 15}
    structured = {**base, "pruning": "structured", "widths": "25088-8-10", "weights_kept": 12, "density": 0.12,
                  "stored_bytes": 6e6, "mec_bits": 10**7, "mec_effective_bits": 10**5, "ms_q1": 4.8, "ms": 5.0,
                  "ms_q3": 5.3}
    fine = {**base, "pruning": "fine-grained", "weights_kept": 4, "density": 0.04, "stored_bytes": 7e6,
            "mec_kept_bits": 4 * 10**6, "sparse_layers": "fc2", "ms_q1": 35.0, "ms": 39.0, "ms_q3": 41.0}
    slow = {**fine, "pruning": "slow", "ms_q1": 45.0, "ms": 60.0, "ms_q3": 61.0}
    same = {**base, "pruning": "structured (the knee, 25088-64-10)", "ms_q1": 60.0, "ms": 70.0, "ms_q3": 80.0}
    s, f, w, n = NB03.pruning_kinds([base, structured, fine, slow, same])
    assert s.startswith("structured: 12 weights kept (12.0%), 6.00 MB stored") and "8.0x faster" in s
    assert "dense kernels" in s and "quartiles 4.8-5.3" in s
    assert "no faster or slower than the unpruned head as measured" in f and "spreads that overlap" in f
    assert "sparse kernels on fc2" in f and "4,000,000 by rule 2 on the weights it kept" in f
    assert "1.5x slower" in w
    # the same widths and weights as the unpruned head: it removed nothing, and no speed is claimed for it
    assert "nothing was removed" in n and "faster" not in n and "slower" not in n and "removed does not" not in n


def test_widths_are_written_and_read_back_in_one_place():
    from pathlib import Path

    from labkit import config

    assert config.widths_text([25088, 4096, 4096, 256, 10]) == "25088-4096-4096-256-10"
    assert config.parse_widths("25088-4096-4096-256-10") == (25088, 4096, 4096, 256, 10)
    assert config.parse_widths([512, 8, 10]) == config.parse_widths((512, 8, 10)) == (512, 8, 10)
    assert config.hidden_text("25088-2048-2048-128-10") == config.hidden_text([25088, 2048, 2048, 128, 10]) == \
        "2048-2048-128"
    with pytest.raises(ValueError, match="widths='25088-x-10'"):
        config.parse_widths("25088-x-10")
    package = Path(config.__file__).parent
    for path in package.glob("*.py"):  # no other module takes a widths string apart itself
        if path.name != "config.py":
            assert '.split("-")' not in path.read_text(), path.name
    assert "CLASSES = 10" in (package / "config.py").read_text()
    assert not [p.name for p in package.glob("*.py") if p.name != "config.py" and "CLASSES = 10" in p.read_text()]


def test_config_imports_no_torch():
    """Settings can be made and checked (a CLI's --help, a parameters file) and tables read without loading torch."""
    import subprocess
    import sys

    code = ("import sys, labkit.config as c, labkit.records as r; c.make_config('ci', method='l1'); "
            "r.parse('cycle,widths\\n0,25088-8-10\\n'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_figure_error_bars_are_the_tables_spreads():
    """Issue 20: the capacity curve's error bars and curve_summary's *_std_points are the same sample spread."""
    import matplotlib

    matplotlib.use("Agg")
    from labkit import pruning_plots

    rows = _grid([0.95, 0.90, 0.86], [0.90, 0.92, 0.91], [0.93, 0.88, 0.80], seeds=(0, 1, 2))
    for r in rows:  # spread on validation too, different per arm; each cycle at its own capacity
        r["mec_bits"] = 200 if r["cycle"] == 0 else 100
        r["val_accuracy"] = r["test_accuracy"] - 0.01 * r["seed"] * (1 + ["l2", "none", "scratch"].index(r["method"]))
    table = {(r["method"], r["cycle"]): r for r in tables.curve_summary(rows)}
    fig = pruning_plots.accuracy_vs_capacity(rows)
    drawn = {}
    for ax, split in zip(fig.axes[:2], ("val", "test")):
        for bars, method in zip(ax.containers, ("l2", "none", "scratch")):
            for segment in bars.lines[2][0].get_segments():  # one vertical bar a point, at x = its MEC
                cycle = 0 if segment[0][0] > 150 else 1  # each arm drawn a little to the side of its MEC
                drawn[(method, cycle, split)] = (segment[1][1] - segment[0][1]) / 2  # half the bar: one spread
    assert len(drawn) == 10
    for (method, cycle, split), half in drawn.items():
        assert half == pytest.approx(table[(method, cycle)][f"{split}_std_points"], abs=1e-9), (method, cycle, split)
    # the sample standard deviation (n - 1), by hand for l2's last test accuracies 95, 90, 86 (mean 90.333...)
    assert table[("l2", 1)]["test_std_points"] == pytest.approx(4.5092497, abs=1e-6)


def test_records_round_trip_every_type():
    """Issue 20: one reader and writer (labkit.records): what it writes reads back as the same typed rows."""
    from labkit import records
    from labkit.config import Widths

    rows = [{"cycle": 0, "method": "l2", "layer": "all", "widths": Widths((25088, 8, 10)), "val_accuracy": 0.1 + 0.2,
             "train_loss": float("nan"), "smallest": True, "seed": 2, "val_right": "x0f", "note": "1e3", "count": 5},
            {"cycle": 1, "method": "none", "layer": 0, "widths": Widths("25088-4-10"), "val_accuracy": 1 / 3,
             "train_loss": 0.25, "smallest": False, "seed": 2, "val_right": "", "note": "5.0"}]
    text = records.write_text(rows)
    assert text.splitlines()[1].startswith("0,l2,all,25088-8-10,0.30000000000000004,nan,True,2,x0f,1e3,5")
    back = records.parse(text)
    assert records.same(back, [{**r, "count": r.get("count", ""), "note": float(r["note"]) if r["note"] == "5.0"
                                else r["note"]} for r in rows])
    assert type(back[0]["widths"]) is Widths and back[0]["widths"].hidden == (8,)
    assert back[0]["smallest"] is True and back[1]["smallest"] is False and back[1]["layer"] == 0
    # unknown columns: the number whose text they are exactly, else the text ("1e3" would come back as 1000.0)
    assert back[0]["note"] == "1e3" and back[1]["note"] == 5.0
    assert back[0]["count"] == 5 and back[1]["count"] == ""
    assert records.write_text(back) == text
    with pytest.raises(ValueError, match="line 2: 'x' is not a number"):
        records.parse("cycle,val_accuracy\n0,x\n")
