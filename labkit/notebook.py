"""A notebook's session: its profile, its config, its results folder and what its notebook asks of them.

Running the notebooks (papermill, kernels, Ctrl-C) is labkit.runner.

Paths resolve from one place: $LABKIT_RESULTS (default ./results), so a notebook run by nbval
from notebooks/ and one run by papermill from the repository root write to the same folder.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import checks, config as cfg, files, records, study

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

    def trained_start(self, seed: int = 0, progress: bool = True):
        """The trained head of notebook 02 (reused), or one trained now and saved there, saying so."""
        path = self.start_path(seed)
        if not path.exists():
            made = "notebook 02 makes it" if seed == 0 else "notebook 02 makes seed 0's; the others are made here"
            print(f"No trained head at {path} ({made}); training one now with the {self.profile!r} profile.")
        return study.train_start(dataclasses.replace(self.config, seed=seed), path, progress=progress)

    def compare(self, methods: Sequence[str], seeds: Sequence[int] = (0,), progress: bool = True,
                functions: dict | None = None, **overrides) -> list[dict]:
        """For each seed, from its trained start (02's, or trained now): every method, the equal-budget
        control "none" and the last cycle's widths trained from scratch (see study.compare_methods).
        `functions`: prune with these (l1_scores, l2_scores, reservoir_sample, remove_neurons: the student's,
        notebook 03) instead of labkit's; the cycles they pruned say so in their `ran_on` column."""
        from . import prune

        rows = []
        with prune.using(**(functions or {})):
            for seed in seeds:
                self.trained_start(seed, progress)
                base = dataclasses.replace(self.config, start=str(self.start_path(seed)), **overrides)
                rows += study.compare_methods(base, methods, seed, progress=progress)
        return rows

    def knee_configs(self, layer="all", fraction: float = 0.5, tolerance: float = 1.0, method: str = "l2",
                     seeds: Sequence[int] | int = 0, progress: bool = True) -> list[cfg.StudyConfig]:
        """One config per seed of the knee search (an int n: seeds 0..n-1; 0: the profile's, as notebook 04's
        curve), each from its trained start (02's, or trained now)."""
        configs = []
        for seed in profile_seeds(self.profile, seeds):
            self.trained_start(seed, progress)
            configs.append(dataclasses.replace(self.config, start=str(self.start_path(seed)), layer=layer,
                                               fraction=fraction, tolerance=tolerance, method=method, seed=seed,
                                               name=None))
        return configs

    def knee(self, layer="all", fraction: float = 0.5, tolerance: float = 1.0, method: str = "l2",
             bits: Sequence[int] = (8, 4), seeds: Sequence[int] | int = 0, progress: bool = True,
             share=None) -> dict:
        """From the trained starts of `seeds`: the knee search with labkit's steps (knee.compress_knee; notebook 03
        runs the same search a step at a time, knee.Search), the knee's widths trained from scratch for each
        seed, seed 0's knee head stored. Returns knee.compress_knee's dict (rows, control, steps, smallest,
        scratch, agree, knee, table). `share`: a kmeans_share function fits the stored codebooks."""
        from . import knee

        configs = self.knee_configs(layer, fraction, tolerance, method, seeds, progress)
        return knee.compress_knee(configs[0], bits, seeds=configs[1:], progress=progress, share=share)

    def deep_compression(self, knee: dict | None = None, seed: int = 0, sparsity="han", bits: int = 5,
                         steps: int = 3, epochs: int | None = None, progress: bool = True) -> dict:
        """Han et al.'s three stages on the trained start of `seed` beside their equal-budget control, then
        structured against fine-grained pruning (labkit.deepcompression.on_session, which says how)."""
        from . import deepcompression

        return deepcompression.on_session(self, knee, seed, sparsity, bits, steps, epochs, progress)

    def ladder(self, progress: bool = True) -> dict:
        """The requirement ladder (memorization.measure_requirement) on the profile's training, validation and
        test features, written as requirement_ladder.csv: {"rows", "chosen", "images", "tolerance"}."""
        from . import memorization

        splits = study.prepare_features(self.config, progress=progress)
        ladder = memorization.measure_requirement(splits.train, splits.val, tolerance=self.config.tolerance,
                                                  test_set=splits.test)
        self.table(ladder["rows"], "requirement_ladder")
        return ladder

    def head_size(self, knee: dict | None = None, dc: dict | None = None, ladder: Sequence[dict] | None = None,
                  progress: bool = True) -> list[dict]:
        """head_size.csv (labkit.headsize): the lab's answers to how big the head must be, side by side. What is
        not given is read from the tables notebook 03 and 04 wrote (knee, compression, deep_compression,
        structured_vs_finegrained, requirement_ladder); a ladder without test accuracy is measured again."""
        from . import headsize, model

        if knee is None:
            knee = {"knee": self.saved_table("knee"), "table": self.saved_table("compression")}
            if knee["knee"] is None or knee["table"] is None:
                print("No knee search from notebook 03; running it now.")
                knee = self.knee(progress=progress)
        if dc is None:
            stages, versus = self.saved_table("deep_compression"), self.saved_table("structured_vs_finegrained")
            dc = {"stages": stages, "versus": versus} if stages and versus else None
        if ladder is None:
            ladder = self.saved_table("requirement_ladder")
            if not ladder or "test_accuracy" not in ladder[0]:
                ladder = self.ladder(progress)["rows"]
        rows = headsize.rows(knee, dc, ladder, model.map_size_for(self.config.image_size))
        self.table(rows, "head_size")
        return rows

    def questionnaire_inputs(self, seed: int = 0, progress: bool = True) -> dict:
        """What notebook 05's answers read (labkit.questionnaire.inputs, which says where each comes from)."""
        from . import questionnaire

        return questionnaire.inputs(self, seed, progress)


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
