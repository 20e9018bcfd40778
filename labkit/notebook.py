"""A notebook's session: its profile, its config, its results folder, and running the notebooks with papermill.

Paths resolve from one place: $LABKIT_RESULTS (default ./results), so a notebook run by nbval
from notebooks/ and one run by papermill from the repository root write to the same folder.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import checks, config as cfg, files, study

NOTEBOOKS = ("01_mec_by_hand", "02_train_vgg16", "03_prune_compare", "04_capacity_curve", "05_questionnaire")
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def pick_profile(profile: str = "auto") -> str:
    """"auto" -> $LABKIT_PROFILE if set, else "quick"; any other value must name a profile."""
    if profile == "auto":
        profile = os.environ.get("LABKIT_PROFILE") or "quick"
    checks.choice("profile", profile, ("auto", *cfg.PROFILES))
    return profile


def read_table(path: str | os.PathLike) -> list[dict]:
    """A CSV table written by `Session.table`, numbers back as int or float."""
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


def table_csv(rows: list[dict]) -> str:
    """Rows as CSV text, the columns in order of first appearance."""
    import io

    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@dataclass
class Session:
    """What a notebook's setup cell hands on: the profile, its config, the results folder."""

    profile: str
    config: cfg.StudyConfig
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
        files.write_atomic(path, table_csv(rows))
        return path

    def saved_table(self, name: str) -> list[dict] | None:
        """A table an earlier notebook wrote with `table` (results/<profile>/<name>.csv), or None."""
        path = self.folder / f"{name}.csv"
        return read_table(path) if path.exists() else None

    def start_path(self, seed: int = 0) -> Path:
        """Where 02 keeps the trained, unpruned head for `seed`."""
        return self.folder / f"trained_head_seed{seed}.pt"

    def trained_start(self, seed: int = 0, progress: bool = True):
        """The trained head of notebook 02 (reused), or one trained now and saved there, saying so."""
        path = self.start_path(seed)
        if not path.exists():
            print(f"No trained head at {path} (notebook 02 makes it); training one now "
                  f"with the {self.profile!r} profile.")
        return study.train_start(dataclasses.replace(self.config, seed=seed), path, progress=progress)

    def prune_grid(self, methods: Sequence[str], seeds: Sequence[int] = (0,), progress: bool = True,
                   **overrides) -> list[dict]:
        """For each seed: its trained start (02's, or trained now), then the prune cycles of every method."""
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
        self.trained_start(seed, progress)
        c = dataclasses.replace(self.config, start=str(self.start_path(seed)), schedule="geometric", layer=layer,
                                fraction=fraction, tolerance=tolerance, method=method, seed=seed,
                                cycles=cfg.GEOMETRIC_CYCLES, name=None)
        print(f"--- {c.run_name}")
        return study.compress_smallest(c, bits, progress)


def start(profile: str = "auto", **overrides) -> Session:
    """Open a notebook session: pick the profile, build its config, say where results go and what runs where."""
    profile = pick_profile(profile)
    folder = cfg.results_root() / profile
    # notebook runs keep no checkpoint once finished (a full-width head is ~480 MB); the trained heads stay
    config = cfg.make_config(profile, **{"results_dir": str(folder / "runs"), "checkpoints": "none", **overrides})
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
    import logging

    import papermill

    checks.choice("profile", profile, tuple(cfg.PROFILES))
    out = Path(out) if out else cfg.results_root() / profile
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LABKIT_RESULTS", str(cfg.results_root()))
    # stream each cell's output to the terminal as it comes, so tables print as they grow
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    done = []
    for name in names:
        checks.choice("notebook", name, NOTEBOOKS)
        target = out / f"{name}.ipynb"
        print(f"--- {name} -> {target}", flush=True)
        papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target),
                                   parameters={"profile": profile, **(parameters or {})},
                                   cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=True,
                                   kernel_name="python3")
        done.append(target)
    return done
