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


EXERCISES = {"01_mec_by_hand": 5, "02_train_vgg16": 4, "03_prune_compare": 9, "04_capacity_curve": 5}


def _graded(cells):
    """(autograded test cells, manually graded answer cells) of a notebook, with their points."""
    auto = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade")
            and not c["metadata"]["nbgrader"].get("solution")]
    manual = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade")
              and c["metadata"]["nbgrader"].get("solution")]
    return auto, manual


def test_every_exercise_is_an_nbgrader_cell_and_every_stub_matches_what_follows():
    for name in notebook.NOTEBOOKS:
        cells = _cells(ROOT / "notebooks" / f"{name}.ipynb")
        for i, cell in enumerate(cells):
            meta = cell["metadata"].get("nbgrader")
            source = "".join(cell["source"])
            if "BEGIN SOLUTION" in source:
                assert meta and meta["solution"], f"{name} cell {i}"
                # code: a function's body, so that a student copy's stub raises only when it is called
                assert cell["cell_type"] == "markdown" or source.lstrip().startswith(("def ", "import ", "#")), \
                    f"{name} cell {i}"
                assert cell["cell_type"] == "markdown" or not meta["grade"], f"{name} cell {i}"
            if meta and meta["grade"] and not meta["solution"]:
                assert meta["points"] > 0 and meta["locked"]
                assert "BEGIN SOLUTION" not in source
        auto, manual = _graded(cells)
        assert len(auto) == EXERCISES.get(name, 0), name
        assert len(manual) == (10 if name == "05_questionnaire" else 0), name
        student = handouts.student_copy(json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text()))
        for i, cell in enumerate(student.cells):
            if "YOUR CODE HERE" in cell.source:
                # the exercise text above the stub names the check when, and only when, one follows
                text = "".join(c.source for c in student.cells[max(0, i - 1):i + 1])
                after = student.cells[i + 1].metadata.get("nbgrader", {}) if i + 1 < len(student.cells) else {}
                follows = after.get("grade") and not after.get("solution")  # an autograded check, not an answer cell
                assert ("check below" in text) == bool(follows), f"{name} cell {i}: {text!r}"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """nbgrader's own commands on all five notebooks: generate_assignment, then autograde of the instructor's
    (solved) copies and of the untouched student copies. The results folder is the test run's, so the study's
    runs are made once and reused (by the untouched copies, and later by nbval)."""
    course = tmp_path_factory.mktemp("course")
    source = course / "source" / "lab"
    source.mkdir(parents=True)
    for name in notebook.NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", source)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'labkit'\nc.ExecutePreprocessor.timeout = 1800\n")
    env = _env(Path(os.environ["LABKIT_RESULTS"]))
    grader = [sys.executable, "-m", "nbgrader"]
    run = subprocess.run([*grader, "generate_assignment", "lab", "--force"], cwd=course, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    for who, folder in (("solved", source), ("untouched", course / "release" / "lab")):
        target = course / "submitted" / who / "lab"
        target.mkdir(parents=True)
        for name in notebook.NOTEBOOKS:
            shutil.copy(folder / f"{name}.ipynb", target)
    run = subprocess.run([*grader, "autograde", "lab", "--create", "--force"], cwd=course, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for who in ("solved", "untouched"):
            for name in notebook.NOTEBOOKS:
                nb = gradebook.find_submission_notebook(name, "lab", who)
                scores[who, name] = {g.name: (g.auto_score, g.max_score) for g in nb.grades}
    return {"course": course, "scores": scores}


def test_autograde_gives_the_instructor_copy_full_marks_and_the_student_copy_zero(graded):
    for name, count in EXERCISES.items():
        solved, untouched = graded["scores"]["solved", name], graded["scores"]["untouched", name]
        checks = {k: v for k, v in solved.items() if k.endswith("_check")}
        assert len(checks) == count, (name, solved)
        assert all(score == top > 0 for score, top in checks.values()), (name, checks)
        assert all(untouched[k][0] == 0 for k in checks), (name, untouched)
    answers = graded["scores"]["untouched", "05_questionnaire"]
    assert len(answers) == 10 and all(top == 2 for _, top in answers.values())
    assert all(score in (0, None) for score, _ in answers.values())  # an unanswered cell scores 0


def test_every_untouched_student_copy_runs_to_its_last_cell(graded):
    for name in notebook.NOTEBOOKS:
        cells = _cells(graded["course"] / "autograded" / "untouched" / "lab" / f"{name}.ipynb")
        code = [c for c in cells if c["cell_type"] == "code"]
        errors = [c for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, (name, ["".join(c["source"])[:80] for c in errors])
        assert code[-1].get("outputs"), f"{name}: its last cell has no output"
        text = "".join("".join(o.get("text", "")) for c in code for o in c.get("outputs", []))
        if name in EXERCISES:
            assert "not written yet" in text and "the cells below run labkit's" in text, name


def test_the_solved_copies_say_the_students_functions_ran_the_study(graded):
    text = {name: "".join("".join(o.get("text", "")) for c in _cells(graded["course"] / "autograded" / who / "lab" /
                                                                     f"{name}.ipynb")
                          for o in c.get("outputs", []))
            for who in ("solved",) for name in notebook.NOTEBOOKS}
    assert "on your l1_scores, remove_neurons" in text["03_prune_compare"]
    assert "(your kmeans_share)" in text["03_prune_compare"]
    assert "searched by your images_memorized and bits_stored" in text["04_capacity_curve"]
    assert "counted by your count_thresholds and requirement_bits" in text["04_capacity_curve"]


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
        solution_lines, shared = set(), set()
        for c in original["cells"]:
            inside = False
            for line in "".join(c["source"]).splitlines():
                if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                    inside = "BEGIN" in line
                elif inside and line.strip():
                    solution_lines.add(line.strip())
                elif line.strip() and c["cell_type"] == "code":
                    shared.add(line.strip())  # written outside a solution too (a `with torch.no_grad():`)
        solutions_seen += len(solution_lines)
        text = "\n".join(c.source for c in student.cells if c.cell_type == "code")  # a hint may quote a line
        kept = {line.strip() for line in text.splitlines()}  # whole lines: `break` is in `break  # the knee ...`
        leaked = [line for line in solution_lines - shared if line in kept]
        assert not leaked, f"{path.name} keeps solution code: {leaked[:3]}"
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert solutions_seen >= 60
