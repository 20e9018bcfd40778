"""Notebook plumbing: profile choice, parameter checks, the results folder, papermill runs, handouts.

Paths resolve from one place: $LABKIT_RESULTS (default ./results), so a notebook run by nbval
from notebooks/ and one run by papermill from the repository root write to the same folder.
"""
from __future__ import annotations

import copy
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import study

NOTEBOOKS = ("01_mec_by_hand", "02_train_vgg16", "03_prune_compare", "04_capacity_curve", "05_questionnaire")
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STUB = "# YOUR WORK HERE: write your answer, then run the check in the next cell\n..."


def results_root() -> Path:
    """$LABKIT_RESULTS, else ./results."""
    return Path(os.environ.get("LABKIT_RESULTS") or "results").expanduser().resolve()


def pick_profile(profile: str = "auto") -> str:
    """"auto" -> $LABKIT_PROFILE if set, else "quick"; any other value must name a profile."""
    if profile == "auto":
        profile = os.environ.get("LABKIT_PROFILE") or "quick"
    check_choice("profile", profile, ("auto", *study.PROFILES))
    return profile


def check_choice(name: str, value, allowed: Sequence) -> None:
    """Stop with a message naming the parameter and its allowed values."""
    if value not in allowed:
        raise ValueError(f"parameter {name}={value!r} is not allowed; choose one of: "
                         + ", ".join(repr(a) for a in allowed))


def check_fraction(name: str, value) -> None:
    """Stop unless 0 < value < 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise ValueError(f"parameter {name}={value!r} must be a number strictly between 0 and 1")


def check_number(name: str, value, minimum: float = 0.0) -> None:
    """Stop unless `value` is a number >= minimum."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= minimum:
        raise ValueError(f"parameter {name}={value!r} must be a number of at least {minimum:g}")


def check_count(name: str, value, minimum: int = 1) -> None:
    """Stop unless `value` is an integer >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"parameter {name}={value!r} must be an integer of at least {minimum}")


@dataclass
class Session:
    """What a notebook's setup cell hands on: the profile, its config, the results folder."""

    profile: str
    config: study.StudyConfig
    folder: Path

    def figure(self, fig, name: str) -> Path:
        """Save `fig` as results/<profile>/figures/<name>.png and return the path."""
        path = self.folder / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def table(self, rows: list[dict], name: str) -> Path:
        """Write rows as results/<profile>/<name>.csv (atomically) and return the path."""
        path = self.folder / f"{name}.csv"
        columns = list(dict.fromkeys(k for r in rows for k in r))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        return path

    def start_path(self, seed: int = 0) -> Path:
        """Where 02 keeps the trained, unpruned head for `seed`."""
        return self.folder / f"trained_head_seed{seed}.pt"

    def trained_start(self, seed: int = 0, progress: bool = True):
        """The trained head of notebook 02 (reused), or one trained now and saved there, saying so."""
        import dataclasses

        path = self.start_path(seed)
        if not path.exists():
            print(f"No trained head at {path} (notebook 02 makes it); training one now "
                  f"with the {self.profile!r} profile.")
        return study.train_start(dataclasses.replace(self.config, seed=seed), path, progress=progress)

    def prune_grid(self, methods: Sequence[str], seeds: Sequence[int] = (0,), progress: bool = True,
                   **overrides) -> list[dict]:
        """For each seed: its trained start (02's, or trained now), then the prune cycles of every method."""
        import dataclasses

        rows = []
        for seed in seeds:
            self.trained_start(seed, progress)
            base = dataclasses.replace(self.config, start=str(self.start_path(seed)), **overrides)
            rows += study.run_grid(base, methods, (seed,), progress)
        return rows

    def knee(self, layer="all", fraction: float = 0.5, tolerance: float = 1.0, method: str = "l2",
             bits: Sequence[int] = (8, 4), seed: int = 0, progress: bool = True):
        """From the trained start of `seed`: prune geometrically until accuracy drops, quantize the smallest head.

        Returns (rows per cycle, the smallest row within tolerance, compression rows); see
        study.compress_smallest. The smallest head stays in its run folder.
        """
        import dataclasses

        self.trained_start(seed, progress)
        c = dataclasses.replace(self.config, start=str(self.start_path(seed)), schedule="geometric", layer=layer,
                                fraction=fraction, tolerance=tolerance, method=method, seed=seed,
                                cycles=study.GEOMETRIC_CYCLES, name=None)
        print(f"--- {c.run_name}")
        return study.compress_smallest(c, bits, progress)

    def history(self, name: str) -> list[dict] | None:
        """A table written by an earlier notebook (results/<profile>/<name>.csv), or None."""
        path = self.folder / f"{name}.csv"
        if not path.exists():
            return None
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            for k, v in r.items():
                for cast in (int, float):
                    try:
                        r[k] = cast(v)
                        break
                    except (TypeError, ValueError):
                        pass
        return rows


def start(profile: str = "auto", **overrides) -> Session:
    """Open a notebook session: pick the profile, build its config, say where results go and what runs where."""
    profile = pick_profile(profile)
    folder = results_root() / profile
    # notebook runs keep no checkpoint once finished (a full-width head is ~480 MB); the trained heads stay
    config = study.make_config(profile, **{"results_dir": str(folder / "runs"), "checkpoints": "none", **overrides})
    folder.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    print(f"labkit profile {profile!r}: {config.train_limit or 60000:,} training / {config.test_limit or 10000:,} "
          f"test images, {config.cycles} cycles x {config.epochs} epochs; results in {folder}")
    print(f"torch {torch.__version__} on {'GPU: ' + torch.cuda.get_device_name(0) if gpu else 'CPU'}")
    if not gpu:
        print("Note: no GPU found; running on the CPU (fine for the 'quick' and 'ci' profiles).")
    return Session(profile, config, folder)


# ---------------------------------------------------------------- running the notebooks

def run_notebooks(profile: str = "quick", names: Sequence[str] = NOTEBOOKS, parameters: dict | None = None,
                  out: str | os.PathLike | None = None) -> list[Path]:
    """Execute the notebooks in order with papermill; executed copies go to results/<profile>/."""
    import papermill

    check_choice("profile", profile, tuple(study.PROFILES))
    out = Path(out) if out else results_root() / profile
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LABKIT_RESULTS", str(results_root()))
    import logging

    # stream each cell's output to the terminal as it comes, so tables print as they grow
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    done = []
    for name in names:
        check_choice("notebook", name, NOTEBOOKS)
        target = out / f"{name}.ipynb"
        print(f"--- {name} -> {target}", flush=True)
        papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target),
                                   parameters={"profile": profile, **(parameters or {})},
                                   cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=True,
                                   kernel_name="python3")
        done.append(target)
    return done


# ---------------------------------------------------------------- handouts

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
    executed_dir = results_root() / profile
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

