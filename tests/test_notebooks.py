"""The notebooks as software: clean sources, papermill parameters, early errors, handouts, Colab path.

nbval executes every notebook top to bottom (see the test command in README.md); these tests check
what nbval does not.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import notebook_cells

from labkit import notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load(path):
    return json.loads(path.read_text())


def _env(results):
    return dict(os.environ, LABKIT_RESULTS=str(results), LABKIT_PROFILE="ci", PYTHONUNBUFFERED="1")


SETUP_CELL = ROOT / "notebooks" / "setup_cell.py"  # the one source of every notebook's setup cell


def _setup_source() -> str:
    return SETUP_CELL.read_text().rstrip("\n")


def sync_setup_cells() -> list[str]:
    """Write notebooks/setup_cell.py into the setup cell (the third) of every notebook; the names changed."""
    changed = []
    for path in NOTEBOOKS:
        nb = _load(path)
        lines = _setup_source().splitlines(keepends=True)
        if nb["cells"][2]["source"] != lines:
            nb["cells"][2]["source"] = lines
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path.name)
    return changed


def test_all_five_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == list(notebook.NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_the_same_opening(path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3", "wrong kernel name"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{path.name} has outputs"
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    assert "Cost:" in "".join(cells[0]["source"])
    assert cells[1]["metadata"].get("tags") == ["parameters"]
    assert "".join(cells[2]["source"]) == _setup_source(), (
        f"{path.name}: its setup cell differs from notebooks/setup_cell.py, the one source of all five; edit that "
        "file and run  python tests/test_notebooks.py --sync-setup")
    for line in "".join(cells[1]["source"]).splitlines():  # defaults only: typed and commented
        assert re.match(r"^\w+: \w+ = .+  # .+", line), f"untyped or uncommented parameter: {line}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_help_notebook_lists_parameters(path):
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(path)],
                         capture_output=True, text=True, check=True).stdout
    for line in "".join(_load(path)["cells"][1]["source"]).splitlines():
        name, rest = line.split(":", 1)
        typ = rest.split("=")[0].strip()
        help_text = line.split("  # ", 1)[1]
        assert re.search(rf"{name}: {typ} \(default", out), f"{name} missing from --help-notebook:\n{out}"
        assert help_text[:30] in out


def test_bogus_method_stops_in_the_first_cells(tmp_path):
    out = tmp_path / "out.ipynb"
    run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "03_prune_compare.ipynb"),
                          str(out), "-p", "method", "bogus", "--cwd", str(tmp_path)],
                         capture_output=True, text=True, env=_env(tmp_path / "results"))
    assert run.returncode != 0
    assert "method='bogus'" in run.stderr and "'l1', 'l2', 'reservoir', 'magnitude'" in run.stderr
    executed = _load(out)
    failed = [c["execution_count"] for c in executed["cells"]
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # parameters, injected parameters, setup, checks: the fourth cell run is the last allowed
    assert failed and failed[0] <= 4, "the check should stop the notebook in its first cells"
    assert not (tmp_path / "results" / "ci" / "runs").exists(), "nothing should have run"


def _answers(nb) -> list[str]:
    """The printed text of each answer cell (nbgrader solution code cells: the numbers, then labkit's answer)."""
    return ["".join("".join(o.get("text", "")) for o in c.get("outputs", [])) for c in nb["cells"]
            if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"]


def _write(folder, name, table):
    with open(folder / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in table for k in r)))
        w.writeheader()
        w.writerows(table)


def capacity_widths(text):
    return [int(w) for w in text.split("-")]


def _fake_tables(folder, accuracy):
    """Tables as notebooks 03 and 04 write them, with a distinctive accuracy in the pruned rows' last cycle."""
    rows = []
    for method in ("l1", "l2", "none"):
        for cycle in range(3):
            acc = accuracy if cycle == 2 and method != "none" else 0.7
            width = 4096 - (100 * cycle if method != "none" else 0)
            rows.append({"cycle": cycle, "method": method, "layer": 0, "removed": 4096 - width,
                         "widths": f"25088-{width}-4096-256-10", "mec_bits": 102772992 - 25090 * (4096 - width),
                         "epochs_total": cycle + 1, "val_correct": int(500 * acc), "val_total": 500,
                         "val_accuracy": acc, "test_correct": int(500 * acc), "test_total": 500, "test_accuracy": acc,
                         "rho": 3e-6, "parameters": 1, "model_bytes": 1_000_000 * (10 - cycle), "train_loss": 0.5,
                         "seconds": 1.0, "seed": 0})
    knee = [{**r, "method": "l2", "control_val_accuracy": 0.7, "control_test_accuracy": 0.7, "tolerance": 1.0,
             "within_tolerance": r["cycle"] < 2,
             "step_within_tolerance": r["cycle"] < 2, "smallest": r["cycle"] == 1} for r in rows if r["method"] == "l2"]
    compression = [{"storage": "4-bit k-means codebook", "bytes": 1_234_567, "ratio": 390.0, "val_accuracy": 0.7,
                    "test_accuracy": accuracy, "control_test_accuracy": 0.7, "drop_points": 1.0, "path": "x.pt"}]
    need = [{"representation": "raw pixels (d = 784)", "fraction": f, "n": round(60000 * f),
             "thresholds": round(60000 * f * accuracy), "max_bits": 7, "expected_bits": round(10**7 * accuracy * f)}
            for f in (0.05, 0.1, 0.2, 0.4, 1.0)]
    from labkit import capacity

    head_size = [{"head": head, "widths": widths, "parameters": 1000, "bytes_float32": 4000, "bytes_smallest": 500,
                  "smallest_storage": "float32", "mec_bits": capacity.mec(capacity_widths(widths)),
                  "mec_effective_bits": capacity.mec_effective(capacity_widths(widths), 1), "mec_kept_bits": 1,
                  "val_accuracy": 0.7, "test_accuracy": accuracy, "control": "", "control_val_accuracy": 0.7,
                  "control_test_accuracy": 0.7, "val_points_below_control": 0.0, "statistic": "seed 0",
                  "decided_on": ""}
                 for head, widths in (("unpruned (the trained start)", "25088-4096-4096-256-10"),
                                      ("structured knee (l2)", "25088-3996-4096-256-10"),
                                      ("the ladder's smallest head within the tolerance", "512-32-10"),
                                      ("linear classifier (the ladder)", "512-10"))]
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in (("prune_compare", rows), ("capacity_curve", rows), ("data_requirement", need),
                        ("knee", knee), ("compression", compression), ("head_size", head_size),
                        *_measured_tables().items()):
        _write(folder, name, table)


def _measured_tables(held={}):
    """Notebook 04's memorization and requirement ladder, measured once on the ci profile's features."""
    if not held:
        from labkit import config, memorization, study
        from labkit.model import map_size_for

        splits = study.prepare_features(config.make_config("ci"), progress=False)
        heads = memorization.memorization_ladder(map_size_for(splits.train.image_size))
        held["memorization"] = notebook_cells.memorize(memorization.standardized(splits.train), heads, steps=60,
                                                       start=20)
        held["requirement_ladder"] = notebook_cells.requirement_ladder(splits.train, splits.val,
                                                                       splits.test)["rows"]
    return held


def test_questionnaire_answers_follow_the_results(tmp_path):
    outputs = []
    for accuracy in (0.1234, 0.5678):
        results = tmp_path / f"results-{accuracy}"
        _fake_tables(results / "ci", accuracy)
        out = tmp_path / f"05-{accuracy}.ipynb"
        subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "05_questionnaire.ipynb"),
                        str(out), "--cwd", str(tmp_path)], check=True, capture_output=True, env=_env(results))
        outputs.append(_answers(_load(out)))
    text = ["\n".join(o) for o in outputs]
    assert "12.34%" in text[0] and "12.34%" not in text[1]  # Q10 reads the stored head's accuracy from 03
    assert "expected 1,234,000 bits" in text[0] and "expected 5,678,000 bits" in text[1]  # Q5 reads 04's table
    assert "56.78%" in text[1] and "56.78%" not in text[0]
    assert len(outputs[0]) == 10 and all(len(answer) > 100 for answer in outputs[0])  # every answer printed something
    q7, q10 = outputs[0][6], outputs[0][9]
    assert "stop at 3996-4096-256" in q7 and "25088-3996-4096-256-10" in q10  # the knee 03 chose, both
    assert "512-32-10" in q7 and "512-32-10" in q10 and "512-32-10" in outputs[0][4]  # head_size.csv's ladder head
    assert "1,234,567 bytes" in q10


def test_notebook_alone_with_a_wheel_installs_labkit(tmp_path):
    """The Colab path, forced on: an empty folder, the notebook and a labkit wheel, no labkit installed."""
    folder = tmp_path / "colab"
    folder.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(folder),
                    str(ROOT)], check=True, capture_output=True)
    assert list(folder.glob("labkit-*.whl"))
    shutil.copy(ROOT / "notebooks" / "01_mec_by_hand.ipynb", folder)
    # a fresh venv that sees torch & co. from this environment but not labkit
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps_from_dev_env.pth").write_text(here + "\n")
    missing = subprocess.run([str(py), "-c", "import labkit"], cwd=folder, capture_output=True)
    assert missing.returncode != 0, "labkit must not be importable before the notebook installs it"
    env = dict(_env(folder / "results"), LABKIT_FORCE_COLAB="1")
    run = subprocess.run([str(py), "-m", "papermill", "01_mec_by_hand.ipynb", "out.ipynb"], cwd=folder, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.dumps(_load(folder / "out.ipynb"))
    assert f"from {site}/labkit" in out, "labkit should come from the wheel installed into the fresh venv"
    assert "102,772,992" in out



def test_a_criterion_defined_in_notebook_03_alone_runs_beside_its_controls(tmp_path, monkeypatch):
    """Issue 33: a new criterion is one scoring function in notebook 03 and its name in `extra_criteria`; it runs
    through the comparison with both controls and the paired tests, with no labkit change. Notebook 03's own cells
    are run (up to its paired tests), the one line a student edits edited."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "03_prune_compare.ipynb", as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if c.source.startswith("# Your mcnemar_p on the comparison"))
    nb.cells = nb.cells[:last + 1]
    edited = [c for c in nb.cells if "extra_criteria = {}" in c.source]
    assert len(edited) == 1
    edited[0].source = edited[0].source.replace("extra_criteria = {}", 'extra_criteria = {"spread": spread_scores}')
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    monkeypatch.setenv("LABKIT_PROGRESS", "0")
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "criteria compared: l1, l2, reservoir, magnitude, spread" in printed
    assert "spread (cycle" in printed  # the controls' sentences: against "none" and "scratch"
    rows = notebook.read_table(tmp_path / "results" / "ci" / "prune_compare.csv")
    spread = [r for r in rows if r["method"] == "spread" and r["cycle"] > 0]
    assert spread and all(r["ran_on"] == "yours: spread, remove_neurons" for r in spread)
    l2 = [r for r in rows if r["method"] == "l2" and r["cycle"] > 0]
    assert [r["widths"] for r in spread] == [r["widths"] for r in l2]
    assert {"none", "scratch"} <= {r["method"] for r in rows}
    assert any(r["method"] == "scratch" and r["widths"] == spread[-1]["widths"] for r in rows)
    tests = notebook.read_table(tmp_path / "results" / "ci" / "paired_tests.csv")
    assert {(r["method"], r["split"]) for r in tests if r["method"] == "spread"} == {("spread", "val"),
                                                                                      ("spread", "test")}


if __name__ == "__main__":
    if sys.argv[1:] != ["--sync-setup"]:
        sys.exit("usage: python tests/test_notebooks.py --sync-setup  (writes notebooks/setup_cell.py into every "
                 "notebook's setup cell)")
    print("\n".join(sync_setup_cells()) or "every setup cell already matches notebooks/setup_cell.py")

