"""Handouts: nbgrader makes the student copies and grades them; HTML renders of executed notebooks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import handouts, notebook

ROOT = Path(__file__).resolve().parents[1]
nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is the optional 'grade' extra (make test installs it)")


def _env(results):
    # nbgrader runs the `alembic` command it installed: the environment's bin folder must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, LABKIT_RESULTS=str(results), LABKIT_PROFILE="ci", LABKIT_PROGRESS="0", PATH=path)


def _cells(path):
    return json.loads(Path(path).read_text())["cells"]


def test_every_exercise_is_an_nbgrader_cell_and_every_stub_matches_what_follows():
    for name in notebook.NOTEBOOKS:
        cells = _cells(ROOT / "notebooks" / f"{name}.ipynb")
        for i, cell in enumerate(cells):
            meta = cell["metadata"].get("nbgrader")
            source = "".join(cell["source"])
            if "BEGIN SOLUTION" in source:
                assert meta and meta["solution"] and not meta["grade"], f"{name} cell {i}"
            if meta and meta["grade"]:
                assert meta["points"] > 0 and meta["locked"]
                assert "BEGIN SOLUTION" not in source
        student = handouts.student_copy(json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text()))
        for i, cell in enumerate(student.cells):
            if "YOUR CODE HERE" in cell.source:
                # the exercise text above the stub names the check when, and only when, one follows
                text = "".join(c.source for c in student.cells[max(0, i - 1):i + 1])
                follows = i + 1 < len(student.cells) and student.cells[i + 1].metadata.get("nbgrader", {}).get("grade")
                assert ("check below" in text) == bool(follows), f"{name} cell {i}: {text!r}"


def test_nbgrader_generates_the_assignment_and_autogrades_it(tmp_path):
    course = tmp_path / "course"
    source = course / "source" / "lab01"
    source.mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "01_mec_by_hand.ipynb", source)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'labkit'\nc.ExecutePreprocessor.timeout = 600\n")
    env = _env(tmp_path / "results")
    grader = [sys.executable, "-m", "nbgrader"]
    run = subprocess.run([*grader, "generate_assignment", "lab01", "--force"], cwd=course, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    released = course / "release" / "lab01" / "01_mec_by_hand.ipynb"
    student = "".join("".join(c["source"]) for c in _cells(released))
    assert "answer_1 = 784 + 1" not in student and student.count("raise NotImplementedError()") == 5
    for who, notebook_ in (("solved", source / "01_mec_by_hand.ipynb"), ("untouched", released)):
        target = course / "submitted" / who / "lab01"
        target.mkdir(parents=True)
        shutil.copy(notebook_, target)
    run = subprocess.run([*grader, "autograde", "lab01", "--create", "--force"], cwd=course, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {who: (gradebook.find_submission("lab01", who).score,
                        gradebook.find_submission("lab01", who).max_score) for who in ("solved", "untouched")}
    scores = {who: score for who, (score, top) in scores.items() if top == 5.0}
    assert scores == {"solved": 5.0, "untouched": 0.0}


def test_make_handouts_writes_student_copies_and_html(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("LABKIT_RESULTS", str(results))
    (results / "ci").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "01_mec_by_hand.ipynb"),
                    str(results / "ci" / "01_mec_by_hand.ipynb"), "--cwd", str(tmp_path)],
                   check=True, capture_output=True, env=_env(results))
    made = handouts.make_handouts("ci", tmp_path / "handouts", run_missing=False)
    assert len(made["student"]) == 5 and [p.stem for p in made["html"]] == ["01_mec_by_hand"]
    html = made["html"][0].read_text()
    assert "<img" in html and "102,772,992" in html
    import nbformat

    solutions_seen = 0
    for path in made["student"]:
        student = nbformat.read(str(path), as_version=4)
        nbformat.validate(student)
        original = json.loads((ROOT / "notebooks" / path.name).read_text())
        solution_lines = set()
        for c in original["cells"]:
            inside = False
            for line in "".join(c["source"]).splitlines():
                if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                    inside = "BEGIN" in line
                elif inside and line.strip():
                    solution_lines.add(line.strip())
        solutions_seen += len(solution_lines)
        text = "\n".join(c.source for c in student.cells)
        leaked = [line for line in solution_lines if line in text]
        assert not leaked, f"{path.name} keeps solution code: {leaked[:3]}"
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert solutions_seen >= 13
