"""head_size.csv: the lab's answers to how big the head must be, side by side, in one bookkeeping."""
import pytest

import notebook_cells
from labkit import capacity, headsize, notebook

ANSWERS = notebook_cells.definitions("05_questionnaire")  # Q1-Q10 as notebook 05 writes them
from labkit.config import Widths

from test_tables import _knee_result


def _ladder():
    rows = []
    for hidden, val, test in ((0, 0.900, 0.905), (8, 0.880, 0.881), (32, 0.905, 0.910), (128, 0.912, 0.915)):
        widths = Widths((512, hidden, 10) if hidden else (512, 10))
        rows.append({"head": str(widths), "hidden": hidden, "widths": widths, "mec_bits": capacity.mec(widths),
                     "mec_effective_bits": capacity.mec(widths), "parameters": capacity.parameter_count(widths),
                     "val_accuracy": val, "test_accuracy": test, "within_tolerance": val >= 0.902,
                     "chosen": hidden == 32})
    return rows


def _dc():
    stages = [{"stage": "huffman", "bytes": 7_000_000, "val_accuracy": 0.893, "test_accuracy": 0.897,
               "control_val_accuracy": 0.90, "control_test_accuracy": 0.90}]
    versus = [{"pruning": "unpruned", "widths": Widths("25088-4096-4096-256-10"), "parameters": 10**8,
               "float32_sparse_bytes": 4 * 10**8, "mec_kept_bits": 10**8},
              {"pruning": "fine-grained (Deep Compression)", "widths": Widths("25088-4096-4096-256-10"),
               "parameters": 4 * 10**6, "float32_sparse_bytes": 2 * 10**7, "mec_kept_bits": 3 * 10**6}]
    return {"stages": stages, "versus": versus}


def test_six_heads_one_bookkeeping(tmp_path):
    result = _knee_result()
    rows = headsize.rows(result, _dc(), _ladder(), map_size=1)
    assert [r["head"].split(" (")[0].split(",")[0] for r in rows] == [
        "unpruned", "structured knee", "the knee's widths", "fine-grained", "the ladder's smallest head within the "
        "tolerance", "linear classifier"]
    for r in rows:
        assert set(headsize.COLUMNS) <= set(r)
        assert r["mec_bits"] == capacity.mec(r["widths"])  # one meaning, every row
        assert r["mec_effective_bits"] == capacity.mec_effective(r["widths"], 1)
        assert r["statistic"] == "seed 0"
    knee, twin, fine, ladder, linear = rows[1:]
    assert knee["widths"] == Widths("25088-1024-1024-64-10") and knee["bytes_smallest"] == 10**7
    assert knee["val_points_below_control"] == pytest.approx(0.5)  # 89.5% against the control's 90.0%
    assert twin["val_accuracy"] == 0.88 and twin["control_val_accuracy"] == knee["control_val_accuracy"]
    assert fine["mec_bits"] == rows[0]["mec_bits"] and fine["mec_kept_bits"] == 3 * 10**6  # counted apart
    assert ladder["widths"] == Widths("512-32-10")
    assert ladder["mec_bits"] == capacity.mec([512, 32, 10]) == 16_448
    assert linear["widths"] == Widths("512-10") and linear["control_val_accuracy"] == 0.912
    lines = headsize.lines(rows)
    assert lines[0].startswith("How big must the head be? 6 answers")
    assert "1024-1024-64" in lines[2] and "512-32" in " ".join(lines) and "two questions" in " ".join(lines)
    # read back as notebook 05 reads it, Q5, Q7 and Q10 cite the knee's widths and the ladder's head from it
    (tmp_path / "head_size.csv").write_text(notebook.table_csv(rows))
    saved = notebook.read_table(tmp_path / "head_size.csv")
    q5 = ANSWERS.q5(10**8, 2000, [], None, head_size=saved)
    q7 = ANSWERS.q7(_curve(), result["knee"], 1.0, saved)
    q10 = ANSWERS.q10({"accuracy": 0.9, "correct": 900, "total": 1000}, 10**8, 0.88, result["knee"],
                            result["table"], "quick", head_size=saved)
    for text in (q5, q7, q10):
        assert "1024-1024-64" in text and "512-32-10" in text


def test_before_notebook_04_the_table_has_no_ladder_rows_and_says_who_adds_them():
    """Notebook 03 writes head_size.csv before 04 has measured the ladder: four rows, and its lines name 04."""
    rows = headsize.rows(_knee_result(), _dc(), [], map_size=1)
    assert [r["head"].split(" (")[0].split(",")[0] for r in rows] == [
        "unpruned", "structured knee", "the knee's widths", "fine-grained"]
    text = " ".join(headsize.lines(rows))
    assert "4 answers" in text and "measured in notebook 04" in text and "two questions" not in text
    assert headsize.rows(_knee_result(), _dc(), _ladder(), map_size=1)[:4] == rows  # 04 adds two rows, changes none


def _curve():
    from test_tables import _grid

    return _grid([0.95], [0.90], [0.9])


def test_bookkeeping_refuses_a_count_on_other_widths(tmp_path):
    """The check notebook 05 runs on every table: the earlier ladder's 512-1-10 at 25,090 bits (counted on 25,088
    inputs although it reads 512) is named; the rules on its widths give 514."""
    good = [{"head": "512-1-10", "widths": Widths("512-1-10"), "mec_bits": 514, "mec_effective_bits": 514}]
    (tmp_path / "requirement_ladder.csv").write_text(notebook.table_csv(good))
    assert headsize.bookkeeping(tmp_path, 1) == ["requirement_ladder.csv: 1 rows, mec_bits = capacity.mec(widths) "
                                                 "and mec_effective_bits = capacity.mec_effective(widths, 1) in every one"]
    (tmp_path / "old.csv").write_text(notebook.table_csv([{**good[0], "mec_bits": 25_090}]))
    with pytest.raises(ValueError, match=r"old.csv, row 1 \(512-1-10\): mec_bits is 25,090, .* give 514"):
        headsize.bookkeeping(tmp_path, 1)
    twin = [{"widths": Widths("25088-8-10"), "mec_bits": 200_720, "mec_effective_bits": 4_112}]  # 49 copies of 512
    (tmp_path / "old.csv").write_text(notebook.table_csv(twin))
    assert len(headsize.bookkeeping(tmp_path, 1)) == 2


def test_without_notebook_03_head_size_waits_and_05_names_what_is_missing(tmp_path, capsys):
    """Notebook 04 run alone searches no knee (head_size.csv waits for 03), and 05 stops at its first cells with
    the tables it lacks and the command that makes them, training nothing."""
    from labkit import config

    session = notebook.Session("ci", config.make_config("ci"), tmp_path)
    assert session.head_size(None, None, _ladder()) is None
    assert "No knee" in capsys.readouterr().out and not (tmp_path / "head_size.csv").exists()
    with pytest.raises(RuntimeError, match=r"knee\.csv.*\(03_prune_compare\).*memorization\.csv.*"
                                           r"\(04_capacity_curve\).*--only 03_prune_compare 04_capacity_curve"):
        ANSWERS.gather(session)  # stops at the missing tables, before any head is trained
    assert not list(tmp_path.glob("*.pt"))
