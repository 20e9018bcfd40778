"""The sentences that depend on numbers, one test per branch, on made-up rows; tables; the questionnaire."""
import pytest
import torch

from labkit import capacity, questionnaire, report


# ---------------------------------------------------------------- compare: the margin and the outcome

def test_one_seed_margin_is_the_binomial_error():
    c = report.compare([0.90], [0.88], n=2000)
    se = (0.9 * 0.1 / 2000 + 0.88 * 0.12 / 2000) ** 0.5
    assert c["margin"] == pytest.approx(100 * 1.96 * se)
    assert c["diff"] == pytest.approx(2.0)
    assert c["outcome"] == "higher" and "2,000 images, one seed" in c["basis"]


def test_seeds_margin_is_t_times_the_paired_error():
    a, b = [0.90, 0.91, 0.92], [0.89, 0.895, 0.90]
    c = report.compare(a, b, n=2000)
    diffs = [0.01, 0.015, 0.02]  # mean 0.015, sample std 0.005, se 0.005 / sqrt(3)
    assert c["diff"] == pytest.approx(1.5)
    assert c["margin"] == pytest.approx(100 * 4.30 * 0.005 / 3 ** 0.5, rel=1e-3)
    assert c["outcome"] == "higher" and "3 seeds" in c["basis"]
    assert sum(diffs) / 3 == pytest.approx(c["diff"] / 100)


@pytest.mark.parametrize("a, b, outcome", [
    ([0.95], [0.90], "higher"),
    ([0.85], [0.90], "lower"),
    ([0.901], [0.90], "same"),
    ([0.90, 0.93, 0.87], [0.89, 0.90, 0.91], "same"),   # the spread over seeds swallows a +0 difference
    ([0.95, 0.951, 0.952], [0.90, 0.901, 0.902], "higher"),
    ([0.85, 0.851, 0.852], [0.90, 0.901, 0.902], "lower"),
])
def test_compare_outcomes(a, b, outcome):
    assert report.compare(a, b, n=2000)["outcome"] == outcome


def test_identical_seeds_still_need_more_than_one_image():
    c = report.compare([0.9, 0.9], [0.9, 0.9], n=500)
    assert c["margin"] == pytest.approx(100 / 500) and c["outcome"] == "same"


# ---------------------------------------------------------------- the two sentences, every branch

@pytest.mark.parametrize("pruned, control, ending", [
    ([0.95, 0.951, 0.952], [0.90, 0.901, 0.902], "pruning helped at equal budget."),
    ([0.85, 0.851, 0.852], [0.90, 0.901, 0.902], "pruning cost accuracy at equal budget."),
    ([0.95], [0.90], "the pruned head scored higher beyond the test images' sampling error, but on one seed"),
    ([0.85], [0.90], "the pruned head scored lower beyond the test images' sampling error, but on one seed"),
    ([0.902], [0.90], "no difference was measured between pruning and training as long without pruning."),
    ([0.90, 0.93, 0.87], [0.89, 0.90, 0.91], "no difference was measured"),
])
def test_pruning_vs_control_every_branch(pruned, control, ending):
    text = report.pruning_vs_control(pruned, control, n=2000, epochs=8)
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
    text = report.pruned_vs_scratch(pruned, scratch, n=2000, widths="512-512-32", epochs=8)
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
    lines = report.controls_summary(_grid([0.95], [0.90], [0.95]))
    assert len(lines) == 1 and lines[0].startswith("l2 (cycle 1, 25088-3896-4096-256-10)")
    assert "the pruned head scored higher" in lines[0] and "on one seed" in lines[0]
    assert "no difference was measured between the pruned head and the same widths" in lines[0]
    three = report.controls_summary(_grid([0.95, 0.90, 0.85], [0.90, 0.90, 0.90], [0.9, 0.9, 0.9], seeds=(0, 1, 2)))
    assert "3 seeds" in three[0] and "no difference was measured between pruning" in three[0]


def test_curve_summary_and_best_point_use_validation_means():
    rows = _grid([0.95, 0.93], [0.90, 0.90], [0.9, 0.9], seeds=(0, 1))
    rows[1]["val_accuracy"], rows[6]["val_accuracy"] = 0.97, 0.95  # l2 cycle 1 of seeds 0 and 1
    summary = {(r["method"], r["cycle"]): r for r in report.curve_summary(rows)}
    assert summary[("l2", 1)]["val_accuracy"] == pytest.approx(0.96)
    assert summary[("l2", 1)]["test_accuracy"] == pytest.approx(0.94)
    assert summary[("l2", 1)]["val_std_points"] == pytest.approx(100 * 0.02 / 2 ** 0.5)
    assert summary[("l2", 1)]["seeds"] == 2
    best = report.best_point(rows)
    assert (best["method"], best["cycle"]) == ("l2", 1)
    rows[1]["test_accuracy"] = 0.99  # a better test figure must not change the choice
    assert report.best_point(rows)["val_accuracy"] == best["val_accuracy"]


def test_table_renders_html_without_wrapping_and_percent():
    t = report.Table([{"widths": "25088-4096-4096-256-10", "mec_bits": 102772992, "val_accuracy": 0.8921}])
    html = t._repr_html_()
    assert "white-space:nowrap" in html and "102,772,992" in html and "89.21%" in html
    assert "89.21%" in str(t) and "102,772,992" in str(t)


def test_requirement_sentence_branches():
    grows = [{"n": n, "thresholds": n // 2, "max_bits": n * 10, "expected_bits": n} for n in (100, 200, 400, 800, 2000)]
    flat = [{"n": n, "thresholds": 50 + n // 100, "max_bits": 500, "expected_bits": 100} for n in (100, 200, 400, 800, 2000)]
    assert capacity.progression_slope(grows) == pytest.approx(1.0)
    assert "grows in step with the data" in report.requirement_sentence("pixels", grows)
    assert "grows more slowly than the data" in report.requirement_sentence("pixels", flat)
    assert "more than even the max" in report.requirement_sentence("pixels", grows, head_mec=10**9)
    assert "less than even the max" in report.requirement_sentence("pixels", grows, head_mec=10)


# ---------------------------------------------------------------- the knee, and the questionnaire's agreement

def _knee_result():
    rows = [_row("l2", c, 0, v, t, w, epochs=2 * (c + 1), mec=m) for c, (v, t, w, m) in enumerate([
        (0.90, 0.89, "25088-4096-4096-256-10", 10**8), (0.91, 0.90, "25088-2048-2048-128-10", 5 * 10**7),
        (0.895, 0.90, "25088-1024-1024-64-10", 2 * 10**7), (0.85, 0.86, "25088-512-512-32-10", 10**7)])]
    for r in rows:
        r["parameters"], r["model_bytes"], r["rho"] = r["mec_bits"], 4 * r["mec_bits"], 0.01
    control = [_row("none", c, 0, v, v) for c, v in enumerate([0.90, 0.905, 0.90, 0.90])]
    from labkit import study

    scratch = {**_row("scratch", 2, 0, 0.88, 0.87, "25088-1024-1024-64-10", epochs=6, mec=2 * 10**7),
               "parameters": 2 * 10**7}
    table = [{"storage": "float32", "bytes": 8 * 10**7, "ratio": 5.0, "val_accuracy": 0.895, "test_accuracy": 0.9,
              "control_test_accuracy": 0.90, "drop_points": 0.0, "path": "a"},
             {"storage": "4-bit k-means codebook", "bytes": 10**7, "ratio": 40.0, "val_accuracy": 0.89,
              "test_accuracy": 0.895, "control_test_accuracy": 0.90, "drop_points": 0.5, "path": "b"}]
    best = study.smallest_within(rows, control, 1.0)
    return {"rows": rows, "control": control, "smallest": best, "scratch": scratch,
            "knee": study.knee_table(rows, control, 1.0, scratch), "table": table}


def test_knee_summary_states_the_choice_against_the_control():
    result = _knee_result()
    assert result["smallest"]["cycle"] == 2  # 0.895 is within 1 point of the control's 0.90; 0.85 is not
    lines = report.knee_summary(result, 1.0)
    assert "widths 25088-1024-1024-64-10 (cycle 2" in lines[0]
    assert "the knee lies between those two heads" in lines[1]
    assert any("trained from scratch for 6 epochs" in line and "one seed" in line for line in lines)
    assert "the unpruned head trained as long 90.00%" in lines[-1] and "40x less" in lines[-1]


def test_q7_and_q10_name_the_same_head_as_the_knee():
    result = _knee_result()
    knee = result["knee"]
    curve = _grid([0.95], [0.90], [0.9])
    q7 = questionnaire.q7(curve, knee, 1.0)
    test = {"accuracy": 0.9, "correct": 900, "total": 1000}
    q10 = questionnaire.q10(test, 10**8, 0.88, knee, result["table"], "quick")
    assert "stop at 25088-1024-1024-64-10" in q7 and "25088-1024-1024-64-10" in q10
    assert "10,000,000 bytes" in q10  # the smallest stored file, with its bytes
    assert "one should prune further" not in q7
    assert "on the validation set and the unpruned head trained as long" in q7  # the best point meets its control
    assert "the unpruned head trained as long 90.00%" in q10  # the kept head against the control at its cycle ...
    assert "trained from scratch for 6 epochs reached 87.00%" in q10  # ... and against the same widths from scratch


def test_best_point_is_judged_against_its_control():
    three = _grid([0.96, 0.90, 0.86], [0.90, 0.90, 0.90], [0.9] * 3, seeds=(0, 1, 2))
    for r in three:  # validation is what the best point and its comparison read
        r["val_accuracy"] = r["test_accuracy"]
    best = report.best_point(three)
    assert (best["method"], best["cycle"]) == ("l2", 1)  # mean 0.9067, above every other point
    text = report.best_against_control(three, best)
    assert "3 seeds" in text and "no difference was measured" in text and "validation set" in text
    control_wins = [r for r in three if r["method"] != "l2" or r["cycle"] == 0]
    assert "no pruned head scored higher" in report.best_against_control(control_wins, {"method": "none", "cycle": 1})
    alone = [r for r in three if r["method"] != "none"]
    assert "nothing to be judged against" in report.best_against_control(alone, best)


def test_unpruned_knee_has_no_control_sentence():
    knee = _knee_result()["knee"]
    assert questionnaire.knee_against_controls(knee, knee[0]) == ""


def test_knee_choice_reads_a_saved_table():
    knee = [{**r, "smallest": str(r["smallest"])} for r in _knee_result()["knee"]]  # as read back from knee.csv
    assert questionnaire.knee_choice(knee)["cycle"] == 2
    with pytest.raises(ValueError, match="marks no smallest head"):
        questionnaire.knee_choice([{**r, "smallest": "False"} for r in knee])


def test_q3_names_what_each_kappa_measures():
    c = torch.tensor([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    text = questionnaire.q3(c, torch.diag(torch.tensor([3, 3, 4])), (0, 1))
    assert "not how well the data is annotated" in text and "two independently trained heads" in text
    assert f"{0.36 / 0.66:.4f}" in text and "kappa = 1.0000" in text


def test_report_slip():
    slip = capacity.report_slip()
    assert slip["report_bits"] == 25088 * 4096 * 8 == 822_083_584
    assert slip["mec_bits"] == 102_772_992
