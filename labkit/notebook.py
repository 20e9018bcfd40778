"""A notebook's session: its profile, config and results folder ($LABKIT_RESULTS, default ./results, so nbval from
notebooks/ and papermill from the repository root write to one folder). Running the notebooks is labkit.runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import checks, config as cfg, files, records

NOTEBOOKS = ("01_mec_by_hand", "02_train_vgg16", "03_prune_compare", "04_capacity_curve", "05_questionnaire")
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def pick_profile(profile: str = "auto") -> str:
    """"auto" -> $LABKIT_PROFILE if set, else "quick"; any other value must name a profile."""
    if profile == "auto":
        profile = os.environ.get("LABKIT_PROFILE") or "quick"
    checks.choice("profile", profile, ("auto", *cfg.PROFILES))
    return profile


def profile_seeds(profile: str, seeds: Sequence[int] | int = 0) -> list[int]:
    """The seeds a notebook runs: a list as given, an int n as 0..n-1, 0 as the profile's (cfg.SEEDS)."""
    if isinstance(seeds, int):
        count = checks.integer("seeds", seeds, minimum=0) or cfg.SEEDS[profile]
        return list(range(count))
    return [checks.integer("seed", s, minimum=0) for s in seeds]


def read_table(path: str | os.PathLike) -> list[dict]:
    """A CSV table written by `Session.table`, as typed rows (labkit.records)."""
    return records.read(path)


def table_csv(rows: list[dict]) -> str:
    """Rows as CSV text, the columns in order of first appearance (labkit.records)."""
    return records.write_text(rows)




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

    def head_size(self, knee: dict | None, dc: dict | None, ladder: Sequence[dict]) -> list[dict] | None:
        """Write and return head_size.csv (labkit.headsize), the lab's answers to how big the head must be. knee, dc:
        notebook 03's results, or None to read its tables; ladder: notebook 04's rows (empty: no ladder rows).
        Without 03's knee nothing is written (None)."""
        from . import headsize, model

        if knee is None:
            knee = {"knee": self.saved_table("knee"), "table": self.saved_table("compression")}
            if knee["knee"] is None or knee["table"] is None:
                print(f"No knee in {self.folder} yet: head_size.csv is written once notebook 03 has searched it "
                      "(03 writes it itself, with this ladder).")
                return None
        if dc is None:
            stages, versus = self.saved_table("deep_compression"), self.saved_table("structured_vs_finegrained")
            dc = {"stages": stages, "versus": versus} if stages and versus else None
        rows = headsize.rows(knee, dc, ladder, model.map_size_for(self.config.image_size))
        self.table(rows, "head_size")
        return rows


def open_session(profile: str = "auto", **overrides) -> Session:
    """Open a notebook session: pick the profile, build its config, say where results go and what runs where."""
    profile = pick_profile(profile)
    folder = cfg.results_root() / profile
    # notebook runs keep no checkpoint once finished (a full-width head is ~480 MB); the trained heads stay
    config = cfg.make_config(profile, **{"results_dir": str(folder / "runs"), "checkpoints": "off", **overrides})
    files.writable_folder(folder, "the results folder", "set LABKIT_RESULTS to a folder you can write to")
    gpu = torch.cuda.is_available()
    images = config.subsets.images
    print(f"labkit profile {profile!r}: {images('train'):,} training / {images('val'):,} validation / "
          f"{images('test'):,} test images, {config.cycles} cycles x {config.epochs} epochs; "
          f"results in {folder}")
    print(f"torch {torch.__version__} on {'GPU: ' + torch.cuda.get_device_name(0) if gpu else 'CPU'}")
    if not gpu:
        print("Note: no GPU found; running on the CPU (fine for the 'quick' and 'ci' profiles).")
    return Session(profile, config, folder)
