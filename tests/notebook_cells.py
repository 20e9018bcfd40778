"""Run a notebook's own cells inside a test (as testbook does): the study's loops live in notebooks 03 and 04, so
the tests run those cells, the code a student reads, on a small head and a temporary results folder."""
import dataclasses
import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell(notebook: str, needle: str) -> str:
    """The source of the one code cell of `notebook` (a name such as "03_prune_compare") that contains `needle`."""
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    found = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and needle in "".join(c["source"])]
    assert len(found) == 1, f"{notebook}: {len(found)} code cells hold {needle!r}"
    return found[0]


def run(notebook: str, needle: str, ns: dict) -> dict:
    """Execute that cell in the namespace `ns` (the notebook's globals) and return `ns`."""
    exec(compile(cell(notebook, needle), f"<{notebook}: {needle}>", "exec"), ns)
    return ns


def namespace(config, folder, of: str = "03_prune_compare", **parameters) -> dict:
    """Notebook `of`'s globals (03's or 04's) after its setup cells, on `config` (the session's) and results
    `folder`, with the parameters as papermill would set them (seeds: 1 here, the notebooks' 0 meaning the
    profile's); then its own run helpers cell (data, start_of, run, from_scratch)."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labkit import (deepcompression, exercises, knee, memorization, model, notebook, prune, pruning_plots,
                        records, stats, study, tables, train)
    from labkit.config import parse_widths, scratch_of

    config = dataclasses.replace(config, checkpoints="off")  # as notebook.open_session sets it
    session = notebook.Session(config.profile, config, Path(folder))
    ns = {"dataclasses": dataclasses, "torch": torch, "plt": plt, "deepcompression": deepcompression,
          "exercises": exercises, "knee": knee, "memorization": memorization, "model": model, "notebook": notebook,
          "pruning_plots": pruning_plots, "prune": prune, "records": records, "stats": stats, "study": study, "tables": tables,
          "train": train, "parse_widths": parse_widths, "scratch_of": scratch_of, "session": session,
          "method": "all", "knee_layer": "all", "fraction": 0.5, "tolerance": 1.0, "share_bits": 4, "seeds": 1,
          **parameters}
    return run(of, "def start_of(seed)", ns)


def knee(config, folder, compress: bool = True, **parameters) -> dict:
    """Notebook 03's knee search (its probe and loop cells), then, with `compress`, its from-scratch cell (the
    knee's widths trained from scratch, the knee head stored at 8 and share_bits bits). Returns the namespace:
    `result` is the search's (with compress, knee.compress_knee's), `configs` one config per seed."""
    ns = namespace(config, folder, **parameters)
    run("03_prune_compare", "def probe(search, widths, scale, phase)", ns)
    run("03_prune_compare", "# The knee search, step by step", ns)
    if compress:
        run("03_prune_compare", "# The knee's second control", ns)
    return ns


def walk(threshold: float, hidden=(4096, 4096, 256), fraction: float = 0.5):
    """Notebook 03's knee loop cell with its probes replaced by an oracle (nothing trained): a probe is within
    tolerance when its scale is at least `threshold`. Returns (steps as (step, phase, scale, widths), the smallest
    scale within, the largest outside)."""
    from types import SimpleNamespace

    from labkit import exercises, knee, notebook, prune

    steps = []

    class Search:  # what the loop reads of knee.Search: steps, decide, result
        def __init__(self, *configs):
            self.steps = []

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def decide(self, within):
            self.steps.append(within)
            return within

        def result(self):
            return steps

    def probe(search, widths, scale, phase):
        steps.append((len(steps) + 1, phase, scale, widths))
        row = {"val_accuracy": 1.0 if scale >= threshold else 0.0}
        return [row], [{"val_accuracy": 1.0}]

    config = SimpleNamespace(hidden=tuple(hidden), seed=0)
    ns = {"dataclasses": SimpleNamespace(replace=lambda c, **kw: c), "exercises": exercises, "prune": prune,
          "knee": SimpleNamespace(Search=Search, MAX_STEPS=knee.MAX_STEPS, RESOLUTION=knee.RESOLUTION,
                                  probe_widths=knee.probe_widths),
          "notebook": notebook, "session": SimpleNamespace(profile="ci", config=config), "start_of": lambda s: config,
          "data": None, "probe": probe, "knee_layer": "all", "fraction": fraction, "tolerance": 1.0, "seeds": 1}
    run("03_prune_compare", "# The knee search, step by step", ns)
    inside = [s for _, _, s, _ in steps if s >= threshold]
    outside = [s for _, _, s, _ in steps if s < threshold]
    return steps, min(inside, default=1.0), max(outside, default=None)


def definitions(notebook: str):
    """The imports, functions and constants a notebook's code cells define (nothing else of them runs): notebook
    05's answers Q1-Q10 as the instructor's copy writes them, callable on made-up numbers. A namespace."""
    import ast
    from types import SimpleNamespace

    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    ns = {}
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        tree = ast.parse("".join(c["source"]))
        keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))
                or (isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant))]
        exec(compile(ast.Module(body=keep, type_ignores=[]), f"<{notebook}>", "exec"), ns)
    return SimpleNamespace(**ns)


def deep_compression(head, splits, folder, budget: dict, sparsity, bits: int = 5, batch_size: int = 50,
                     control: dict | None = None, tolerance: float = 1.0) -> dict:
    """Notebook 03's Deep Compression stages (its two stage cells) on `head` (saved as seed 0's start in `folder`,
    its accuracies measured as its record) and `splits`: the namespace, with stages, dc (finish's result), scan,
    shares, histograms. `budget`: as deepcompression.plan gives it; `control`: the control's row (the head's
    own accuracies when None)."""
    from types import SimpleNamespace

    import torch

    from labkit import deepcompression, model, tables, train

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    measured = {s: train.evaluate(head, getattr(splits, s), device="cpu")["accuracy"] for s in ("val", "test")}
    model.save_head(head, folder / "start.pt", {s: {"accuracy": a} for s, a in measured.items()})
    config = SimpleNamespace(device="cpu", batch_size=batch_size, tolerance=tolerance)
    session = SimpleNamespace(config=config, folder=folder, start_path=lambda seed: folder / "start.pt",
                              table=lambda rows, name: None)
    ns = {"torch": torch, "model": model, "train": train, "deepcompression": deepcompression, "tables": tables,
          "session": session, "data": lambda: splits, "budget": budget, "dc_sparsity": sparsity, "dc_bits": bits,
          "tolerance": tolerance, "result": None,
          "control": control or {"val_accuracy": measured["val"], "test_accuracy": measured["test"]}}
    run("03_prune_compare", "# Stage 1, pruning (Han et al.)", ns)
    return run("03_prune_compare", "# Stage 2, trained quantization", ns)


def memorize(x, specs, criterion: float = 0.9, seed: int = 0, start: int = 100, precision: float = 0.125,
             search=None, bits=None, **fit):
    """Notebook 04's memorization loop (its `memorize`, as the instructor's copy defines it) on features `x`:
    searched by labkit's images_memorized at (start, precision) unless `search` is given; fit: steps, lr,
    restarts. The rows of memorization.csv."""
    from labkit import memorization

    memorize = definitions("04_capacity_curve").memorize
    search = search or (lambda fits, limit: memorization.images_memorized(fits, limit, start, precision))
    return memorize(x, specs, search, bits or memorization.bits_stored, criterion, seed, **fit)


def requirement_ladder(train, val, test, **settings):
    """Notebook 04's ladder on the real labels (its `requirement_ladder`, as the instructor's copy defines it):
    {"rows", "chosen", "images", "tolerance"}; settings: hidden, tolerance, seed, steps, lr."""
    return definitions("04_capacity_curve").requirement_ladder(train, val, test, **settings)
