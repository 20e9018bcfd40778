"""Handouts: student copies of the notebooks (solutions stubbed) and HTML renders of the executed ones."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from . import config as cfg
from .notebook import NOTEBOOK_DIR, NOTEBOOKS, run_notebooks

STUB = "# YOUR WORK HERE: write your answer, then run the check in the next cell\n..."


def _is_solution(cell) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def student_copy(nb: dict) -> dict:
    """A copy of notebook `nb` in which every cell tagged `solution` keeps only its leading comment
    lines (the exercise text) and a stub, and no cell has outputs."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if _is_solution(cell):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            lines = source.splitlines()
            head = []
            for line in lines:
                if not line.startswith("#"):
                    break
                head.append(line)
            if cell["cell_type"] == "markdown":
                cell["source"] = "\n".join(head + ["*Your answer here.*"])
            else:
                cell["source"] = "\n".join(head + [STUB])
            cell["metadata"]["tags"] = [t for t in cell["metadata"]["tags"] if t != "solution"] + ["exercise"]
    return nb


def make_handouts(profile: str = "quick", out: str | os.PathLike = "handouts", run_missing: bool = True) -> dict:
    """Student copies (solutions stubbed) to out/student/ and HTML renders of the executed notebooks
    (results/<profile>/) to out/html/; notebooks not yet executed are run first when run_missing."""
    import nbformat
    from nbconvert import HTMLExporter

    out = Path(out)
    (out / "student").mkdir(parents=True, exist_ok=True)
    (out / "html").mkdir(parents=True, exist_ok=True)
    executed_dir = cfg.results_root() / profile
    missing = [n for n in NOTEBOOKS if not (executed_dir / f"{n}.ipynb").exists()]
    if missing and run_missing:
        print(f"executing {', '.join(missing)} first (no executed copy in {executed_dir})")
        run_notebooks(profile, missing)
    made = {"student": [], "html": []}
    exporter = HTMLExporter()
    for name in NOTEBOOKS:
        nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
        student = nbformat.from_dict(student_copy(nb))
        nbformat.validate(student)
        path = out / "student" / f"{name}.ipynb"
        nbformat.write(student, str(path))
        made["student"].append(path)
        executed = executed_dir / f"{name}.ipynb"
        if executed.exists():
            body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
            html = out / "html" / f"{name}.html"
            html.write_text(body)
            made["html"].append(html)
    print(f"{len(made['student'])} student copies in {out / 'student'}, {len(made['html'])} HTML renders in "
          f"{out / 'html'}")
    return made
