"""Handouts: student copies of the notebooks made by nbgrader's own preprocessors (no course database), and HTML
renders. The notebooks are nbgrader source notebooks (answers between `### BEGIN SOLUTION` and `### END SOLUTION`,
checks in test cells worth points), so graders run nbgrader as usual. nbgrader is optional ('labkit[grade]')."""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import config as cfg, files
from .notebook import NOTEBOOK_DIR, NOTEBOOKS
from .runner import run_notebooks

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's own stub


def _nbgrader():
    try:
        from nbgrader import preprocessors
    except ImportError:
        raise RuntimeError("student copies are made with nbgrader, which is not installed here: "
                           "pip install 'labkit[grade]' (or pip install nbgrader), or run make handouts, "
                           "which installs it") from None
    return preprocessors


def student_copy(nb: dict):
    """The student version of `nb` (dict or NotebookNode) by nbgrader's ClearSolutions, ClearOutput and LockCells."""
    import nbformat

    pre = _nbgrader()
    node = nbformat.reads(json.dumps(nb), as_version=4)  # sources as strings, as nbgrader reads them
    resources: dict = {}
    for step in (pre.ClearSolutions(code_stub={"python": CODE_STUB}), pre.ClearOutput(), pre.LockCells()):
        node, resources = step.preprocess(node, resources)
    return node


def make_handouts(profile: str = "quick", out: str | os.PathLike = "handouts", run_missing: bool = True) -> dict:
    """Student copies to out/student/, HTML renders of the executed notebooks (results/<profile>/) to out/html/;
    notebooks not yet executed are run first when run_missing."""
    import nbformat
    from nbconvert import HTMLExporter

    _nbgrader()  # before any work: say at once if nbgrader is missing
    out = Path(out)
    fix = "choose a folder you can write to with --out (it is made if missing)"
    if out.exists() and not out.is_dir():
        raise files.FileProblem(f"the handouts folder {out} is a file, not a folder; {fix}")
    for part in ("student", "html"):
        files.writable_folder(out / part, "the handouts folder", fix)
        files.remove_dead_temporaries(out / part)
    executed_dir = cfg.results_root() / profile
    missing = [n for n in NOTEBOOKS if not (executed_dir / f"{n}.ipynb").exists()]
    if missing and run_missing:
        print(f"executing {', '.join(missing)} first (no executed copy in {executed_dir})")
        run_notebooks(profile, missing)
    made = {"student": [], "html": []}
    exporter = HTMLExporter()
    for name in NOTEBOOKS:
        student = student_copy(json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text()))
        nbformat.validate(student)
        path = out / "student" / f"{name}.ipynb"
        files.write_atomic(path, nbformat.writes(student) + "\n")
        made["student"].append(path)
        executed = executed_dir / f"{name}.ipynb"
        if executed.exists():
            body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
            html = out / "html" / f"{name}.html"
            files.write_atomic(html, body)
            made["html"].append(html)
    print(f"{len(made['student'])} student copies in {out / 'student'}, {len(made['html'])} HTML renders in "
          f"{out / 'html'}")
    return made
