"""A notebook's session: its profile, its config, its results folder, and running the notebooks with papermill.

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


DC_EPOCHS = {"ci": 1, "quick": 3, "paper": 3}  # Deep Compression's retraining epochs per prune step
DC_LR_FACTOR = 2  # its retraining rate, times the schedule's lr (see Session.deep_compression)


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

    def knee(self, layer="all", fraction: float = 0.5, tolerance: float = 1.0, method: str = "l2",
             bits: Sequence[int] = (8, 4), seeds: Sequence[int] | int = 0, progress: bool = True,
             share=None) -> dict:
        """From the trained starts of `seeds` (an int n: seeds 0..n-1; 0: the profile's, as notebook 04's curve):
        probe ever smaller heads, each pruned in one step and recovered, beside the start trained as many epochs,
        all seeds in lockstep, halving then bisecting until the knee's widths are known to within 15% (see
        labkit.knee); train the knee's widths from scratch for each seed; store seed 0's knee head.

        Returns knee.compress_knee's dict (rows, control, steps, smallest, scratch, agree, knee, table).
        `share`: a kmeans_share function (the student's) fits the stored codebooks instead of labkit's.
        """
        from . import knee

        seeds = profile_seeds(self.profile, seeds)
        configs = []
        for seed in seeds:
            self.trained_start(seed, progress)
            configs.append(dataclasses.replace(self.config, start=str(self.start_path(seed)), layer=layer,
                                               fraction=fraction, tolerance=tolerance, method=method, seed=seed,
                                               name=None))
        print(f"--- the knee of {method}, layer {layer}, from the trained start"
              + (f"s of seeds {', '.join(str(s) for s in seeds)}" if seeds[1:] else f" of seed {seeds[0]}"))
        return knee.compress_knee(configs[0], bits, seeds=configs[1:], progress=progress, share=share)

    def deep_compression(self, knee: dict | None = None, seed: int = 0, sparsity="han", bits: int = 5,
                         steps: int = 3, epochs: int | None = None, progress: bool = True) -> dict:
        """Han et al.'s three stages on the trained start of `seed` (labkit.finegrained.deep_compression), each
        stage's file read back and scored, beside the equal-budget control trained as many epochs (the unpruned
        head, nothing removed) and Han's VGG16 figures; then structured (the knee head of `knee`, stored the same
        way) against fine-grained pruning: bytes, MEC, CPU time.

        `steps` prune-and-retrain steps of `epochs` epochs each at DC_LR_FACTOR x c.lr (removing 96% of a
        layer's weights is a new start, not fine-tuning). Measured at quick (seed 0, control 91.75%): 2 steps of
        1 epoch left the three-stage file 1.5-3 points below its control at every rate from 2e-5 to 1e-3; 3 steps
        of 3 epochs at 2e-4, 4e-4 and 1e-3 left it 1.00, 0.20 and 0.45 points below. None: DC_EPOCHS of the
        profile (ci: 1, a test of the path). Then the shared values are fine-tuned at the retraining rate x
        c.lr_drop for the epochs that round the total up to whole cycles of the control (at least `epochs`).

        Returns {"stages": the stage table, "result": deep_compression's dict, "control": the control's row,
        "versus": structured_vs_finegrained's rows}.
        """
        import math

        from . import finegrained, model

        head, record = self.trained_start(seed, progress)
        splits = study.prepare_features(self.config, progress=progress)
        c = self.config
        checks.integer("steps", steps, minimum=1, hint="Han et al. prune and retrain in a few steps")
        epochs = DC_EPOCHS.get(c.profile, 3) if epochs is None else epochs
        checks.integer("epochs", epochs, minimum=1, hint="retraining epochs after each prune step")
        cycles = math.ceil((steps + 1) * epochs / c.epochs)  # every epoch trained, in whole cycles of the control
        result = finegrained.deep_compression(
            head, splits, sparsity=sparsity, bits=bits, steps=steps, epochs=epochs,
            finetune_epochs=cycles * c.epochs - steps * epochs, lr=DC_LR_FACTOR * c.lr,
            finetune_lr=DC_LR_FACTOR * c.lr * c.lr_drop,
            batch_size=c.batch_size, optimizer=record.get("optimizer"), seed=seed,
            folder=self.folder / "deep_compression", name=f"seed{seed}", device=c.device,
            unpruned={"val_accuracy": record["val"]["accuracy"], "test_accuracy": record["test"]["accuracy"]})
        control_config = dataclasses.replace(c, start=str(self.start_path(seed)), method="none", seed=seed,
                                             cycles=cycles + 1, name=None)
        control = study.run_study(control_config, progress=progress, log=None)[cycles]
        stages = finegrained.stage_table(result["stages"], control["val_accuracy"], control["test_accuracy"],
                                         c.tolerance)
        heads, stored = {"unpruned": head}, {"unpruned": result["stages"][0]["bytes"]}
        if knee is not None:  # seed 0's knee head, as knee.compress_knee stored it
            best = knee["smallest"]
            structured, _ = model.load_head(next(r["path"] for r in knee["table"] if r["storage"] == "float32"))
            label = f"structured (the knee, {best['widths']})"
            heads[label] = structured
            stored[label] = finegrained.save_stage(structured, self.folder / "deep_compression" /
                                                   f"seed{seed}-knee-huffman.pt", "huffman", bits=bits)
        label = "fine-grained (Deep Compression)"
        heads[label], stored[label] = result["head"], result["stages"][-1]["bytes"]
        versus = finegrained.structured_vs_finegrained(heads, {"val": splits.val, "test": splits.test},
                                                       stored_bytes=stored, device=c.device)
        for row in versus:  # what each stored_bytes counts
            row["stored_as"] = "float32 file" if row["pruning"] == "unpruned" else f"{bits}-bit Huffman-coded file"
        return {"stages": stages, "result": result, "control": control, "versus": versus}

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
        """What notebook 05's answers read: the trained heads of `seed` and `seed + 1` (02 / 04), the comparison
        (03), the capacity curve (04), the knee and the stored heads (03), the data requirement (04). Each is
        read from results/<profile>/ when an earlier notebook wrote it, and computed now (saying so) when not."""
        from . import capacity, data, memorization, metrics, prune, tables, train

        head, record = self.trained_start(seed, progress)
        other, _ = self.trained_start(seed + 1, progress)  # a second rater for Q3
        splits = study.prepare_features(self.config, progress=progress)
        test = train.evaluate(head, splits.test, return_predictions=True)
        second = train.evaluate(other, splits.test, return_predictions=True)
        compare = self.saved_table("prune_compare")
        if compare is None:
            print("No table from notebook 03; running its comparison now.")
            compare = self.compare(prune.METHODS, seeds=(seed,), progress=progress)
        knee, stored = self.saved_table("knee"), self.saved_table("compression")
        if knee is None or stored is None:
            print("No knee search from notebook 03; running it now.")
            result = self.knee(progress=progress)
            knee, stored = result["knee"], result["table"]
        requirement = self.saved_table("data_requirement")
        if requirement is None:
            print("No data requirement from notebook 04; estimating it now.")
            requirement = tables.requirement_rows(study.requirement_progressions(self.config))
        curve = self.saved_table("capacity_curve") or compare
        starts = [r["test_accuracy"] for r in curve if r["method"] == "none" and r["cycle"] == 0]
        memorized = self.saved_table("memorization")
        if memorized is None:
            print("No memorization table from notebook 04; measuring it now.")
            memorized = memorization.memorize_random_labels(splits.train)
        ladder = self.saved_table("requirement_ladder")
        if ladder is None:
            print("No requirement ladder from notebook 04; measuring it now.")
            ladder = self.ladder(progress)["rows"]
        head_size = self.saved_table("head_size") or self.head_size(ladder=ladder, progress=progress)
        return {"memorization": memorized, "requirement_ladder": ladder, "mec_effective_bits":
                capacity.mec_effective_of(head), "map_size": head.map_size,
                "record": record, "test": test, "weights": splits.train.weights, "n_train": len(splits.train),
                "confusion": metrics.confusion_matrix(splits.test.labels, test["predictions"]),
                "between_heads": metrics.confusion_matrix(test["predictions"], second["predictions"]),
                "counts": study.class_counts(self.config),
                "full_train_counts": torch.bincount(data.load_mnist("train")[1], minlength=cfg.CLASSES).tolist(),
                "mec_bits": capacity.mec_of(head), "compare": compare, "curve": curve, "knee": knee,
                "stored": stored, "requirement": requirement, "start_accuracies": starts, "head_size": head_size,
                "tolerance": float(knee[0]["tolerance"])}


def start(profile: str = "auto", **overrides) -> Session:
    """Open a notebook session: pick the profile, build its config, say where results go and what runs where."""
    profile = pick_profile(profile)
    folder = cfg.results_root() / profile
    # notebook runs keep no checkpoint once finished (a full-width head is ~480 MB); the trained heads stay
    config = cfg.make_config(profile, **{"results_dir": str(folder / "runs"), "checkpoints": "none", **overrides})
    files.writable_folder(folder, "the results folder", "set LABKIT_RESULTS to a folder you can write to")
    gpu = torch.cuda.is_available()
    train_images = config.train_limit or 60_000 - config.val_limit
    print(f"labkit profile {profile!r}: {train_images:,} training / {config.val_limit:,} validation / "
          f"{config.test_limit or 10_000:,} test images, {config.cycles} cycles x {config.epochs} epochs; "
          f"results in {folder}")
    print(f"torch {torch.__version__} on {'GPU: ' + torch.cuda.get_device_name(0) if gpu else 'CPU'}")
    if not gpu:
        print("Note: no GPU found; running on the CPU (fine for the 'quick' and 'ci' profiles).")
    return Session(profile, config, folder)


# ---------------------------------------------------------------- running the notebooks

PROGRESS_EVERY_S = 60.0  # off a terminal, a line this often while a notebook runs
# notebook parameters that are also study settings (and so change which features are computed)
_FIELDS = ("image_size", "weights", "train_limit", "val_limit", "test_limit", "data_seed", "device")


def _local_kernels(stderr=None):
    """A kernel manager whose kernels talk over local sockets (ipc) rather than TCP: a kernel on this machine
    has nothing to encrypt, and ipykernel then has no reason to warn that TCP is unencrypted. Each kernel's own
    stderr (its log, not the cells' output, which the executed copy keeps) goes to `stderr`, and every kernel
    started is listed in `started`, so an interrupted run stops them at once and prints no kernel tracebacks."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        started: list = []

        @default("transport")
        def _transport_default(self):
            return "ipc"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if stderr is not None:
                kw["stderr"] = stderr
            await super()._async_launch_kernel(kernel_cmd, **kw)
            LocalKernelManager.started.append(self)

    return LocalKernelManager


class _QuietOnceInterrupted:
    """From the first Ctrl-C of a run on, the papermill, nbclient and asyncio loggers print nothing.

    Ctrl-C lands wherever the event loop happens to be. papermill then shuts the kernel down, and on a busy
    machine nbclient's task still waiting for the cell's reply wakes during that shutdown, logs "Kernel died
    while waiting for execute reply" and ends with a DeadKernelError nobody awaits, which asyncio prints as a
    traceback when the task is collected, possibly after the run has returned. That death is the one asked
    for, so it is not news; a kernel that dies on its own (no Ctrl-C) is still reported as before.
    """
    LOGGERS = ("papermill", "nbclient", "asyncio")

    def __init__(self):
        self.interrupted = False

    def filter(self, record) -> bool:
        return not self.interrupted

    def __enter__(self):
        import logging
        import signal
        import threading

        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        self.previous = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        self.interrupted = True
        raise KeyboardInterrupt

    def __exit__(self, kind, value, tb):
        import logging
        import signal

        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interrupted = True  # a Ctrl-C our handler did not see (another handler's): quiet as well
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if not self.interrupted:  # once interrupted the filter stays: asyncio prints when the task is collected
            for name in self.LOGGERS:
                logging.getLogger(name).removeFilter(self)
        return False


def _stop_kernels(managers) -> None:
    """Stop the kernels still running (each in its own session, so Ctrl-C did not reach them)."""
    import signal

    for km in managers:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()


class _Cells:
    """Where papermill's progress bar writes off a terminal: keeps the latest "done/total" and shows nothing."""

    def __init__(self):
        self.latest = ""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.latest = text.split("\r")[-1].strip()

    def flush(self) -> None:
        pass


def _ticking(name: str, width: int, cells: _Cells, began: float):
    """A thread printing a line every PROGRESS_EVERY_S seconds while a notebook runs (off a terminal)."""
    import threading
    import time

    stop = threading.Event()

    def tick():
        while not stop.wait(PROGRESS_EVERY_S):
            minutes, seconds = divmod(round(time.perf_counter() - began), 60)
            done = f"  {cells.latest} cells done" if cells.latest else ""
            print(f"{name.ljust(width)}  running  {minutes:02d}:{seconds:02d}{done}", flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    return stop


def check_parameters(profile: str, parameters: dict | None) -> dict:
    """Notebook parameters as papermill takes them; ValueError for a `profile` in them that is not `profile`
    (the notebooks would run one profile and their executed copies go to another's folder)."""
    parameters = dict(parameters or {})
    if any(not isinstance(k, str) for k in parameters):
        raise ValueError(f"notebook parameters {sorted(map(repr, parameters))} must be named by text (name: value)")
    if "profile" in parameters and parameters["profile"] != profile:
        raise ValueError(f"the notebook parameters say profile={parameters['profile']!r}, but the notebooks run "
                         f"profile {profile!r} (their copies, tables and runs go to its folder): give one profile, "
                         "with --profile or in the parameters, not two")
    return parameters


def run_notebooks(profile: str = "quick", names: Sequence[str] = NOTEBOOKS, parameters: dict | None = None,
                  out: str | os.PathLike | None = None) -> list[Path]:
    """Execute the notebooks in order with papermill; executed copies go to results/<profile>/.

    One line per notebook in the terminal, live while it runs: its name, the cells done and the time; off a
    terminal (a log), a line a minute while it runs and one when it is done. The notebooks' own output goes
    into the executed copies, not to the terminal; their progress bars are switched off there
    (LABKIT_PROGRESS=0), since a bar saved in a notebook freezes at its first frame. Ctrl-C stops the kernel
    at once and raises KeyboardInterrupt, with nothing printed by the kernels.
    """
    import sys
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    checks.choice("profile", profile, tuple(cfg.PROFILES))
    names = [checks.choice("notebook", n, NOTEBOOKS) for n in names]
    parameters = check_parameters(profile, parameters)
    out = files.writable_folder(Path(out) if out else cfg.results_root() / profile, "the results folder",
                                "set LABKIT_RESULTS to a folder you can write to")
    removed = files.remove_dead_temporaries(out)
    if removed:
        print(files.said_removed(removed), flush=True)
    from . import features

    try:
        settings = cfg.make_config(profile, **{k: v for k, v in parameters.items() if k in _FIELDS})
    except ValueError:
        settings = None  # a notebook refuses such a value itself, in its own words
    if settings is not None:
        features.say_cost(settings)
    os.environ.setdefault("LABKIT_RESULTS", str(cfg.results_root()))
    os.environ["LABKIT_PROGRESS"] = "0"
    width = max(map(len, names))
    done = []
    live = sys.stdout.isatty()  # a terminal: one line per notebook that moves as cells finish
    kernel_log = open(out / ".kernels.log", "wb")  # the kernels' own log of this run (not the cells' output)
    managers = _local_kernels(kernel_log)
    try:
        with _QuietOnceInterrupted():
            for name in names:
                target = out / f"{name}.ipynb"
                cells = _Cells()
                bar = ({"desc": name.ljust(width), "unit": "cell", "file": sys.stdout, "leave": True,
                        "mininterval": 0.5, "bar_format": "{desc}  {bar:20}  {n_fmt:>2}/{total_fmt} cells  {elapsed}"} if live else
                       {"file": cells, "mininterval": 0, "bar_format": "{n_fmt}/{total_fmt}", "disable": False})
                began = time.perf_counter()
                ticker = None if live else _ticking(name, width, cells, began)
                try:
                    papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target),
                                               parameters={"profile": profile, **parameters},
                                               cwd=str(NOTEBOOK_DIR), progress_bar=bar, log_output=False,
                                               kernel_name="python3", kernel_manager_class=managers)
                except PapermillExecutionError as err:
                    raise RuntimeError(f"notebook {name} stopped in cell {err.exec_count}: {err.ename}: {err.evalue}; "
                                       f"the executed copy with the whole traceback is {target}") from None
                finally:
                    if ticker is not None:
                        ticker.set()
                if not live:  # a log: one line per notebook once it is done
                    minutes, seconds = divmod(round(time.perf_counter() - began), 60)
                    print(f"{name.ljust(width)}  done  {minutes:02d}:{seconds:02d}", flush=True)
                done.append(target)
    except BaseException:
        _stop_kernels(managers.started)
        raise
    finally:
        kernel_log.close()
    return done
