"""How deep the training hides: labkit frames between a notebook cell's own code and each optimizer.step().

Runs notebooks 02, 03 and 04 at the ci profile from a fresh results folder (nbclient, the kernel the lab uses),
with a global optimizer pre-step hook in each kernel. For every step it walks the stack: the innermost frame of a
cell (ipykernel's cell file) starts the count, and every frame after it whose file lies in labkit/ counts. A step
taken with no cell on its stack (a worker thread) counts as out of sight. Prints, per cell that trains, the
deepest chain and its length, then the largest over each notebook (issue 33 asks for at most 3).

    python benchmarks/frames.py [--out FOLDER] [--notebooks 02 03 04]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOOK = r'''
import linecache as _lc, os as _os, sys as _sys, threading as _th, traceback as _tb
from torch.optim.optimizer import register_optimizer_step_pre_hook as _reg
_LAB = _os.path.realpath(%r) + _os.sep
_FRAMES = {}
def _frames_hook(opt, args, kwargs):
    stack = _tb.extract_stack()[:-1]
    cells = [i for i, f in enumerate(stack) if "ipykernel_" in f.filename or f.filename.startswith("<ipython")]
    if not cells:
        key, chain = "(no cell on the stack: a thread)", ["?"] * 99
    else:
        first = cells[-1]
        key = (_lc.getline(stack[first].filename, 1) or stack[first].filename).strip()[:90]
        chain = [f"{_os.path.basename(f.filename)}:{f.name}" for f in stack[first + 1:]
                 if _os.path.realpath(f.filename).startswith(_LAB)]
    old = _FRAMES.get(key)
    if old is None or len(chain) > len(old[0]):
        _FRAMES[key] = (chain, (old[1] if old else 0) + 1)
    else:
        _FRAMES[key] = (old[0], old[1] + 1)
_reg(_frames_hook)
'''

DUMP = 'import json as _json\nopen(%r, "w").write(_json.dumps({k: v for k, v in _FRAMES.items()}))'


def run(name: str, results: Path, out: Path) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    dump = out / f"{name}.frames.json"
    nb.cells.insert(0, nbformat.v4.new_code_cell(HOOK % str(ROOT / "labkit")))
    nb.cells.insert(2, nbformat.v4.new_code_cell('profile = "ci"'))  # after the parameters cell
    nb.cells.append(nbformat.v4.new_code_cell(DUMP % str(dump)))
    os.environ.update(LABKIT_RESULTS=str(results), LABKIT_PROFILE="ci", LABKIT_PROGRESS="0")
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return json.loads(dump.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for the results and the per-notebook JSON (default: a temp)")
    p.add_argument("--notebooks", nargs="+", default=["02", "03", "04"])
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="labkit-frames-"))
    out.mkdir(parents=True, exist_ok=True)
    names = {n[:2]: n for n in ("02_train_vgg16", "03_prune_compare", "04_capacity_curve")}
    worst = {}
    for short in a.notebooks:
        name = names[short]
        found = run(name, out / "results", out)
        print(f"\n{name}: cells that reach optimizer.step() ({len(found)})")
        for cell, (chain, steps) in sorted(found.items(), key=lambda kv: -len(kv[1][0])):
            depth = "out of sight" if chain == ["?"] * 99 else str(len(chain))
            print(f"  {depth:>12} labkit frames, {steps:>6} steps  | {cell}")
            if depth != "out of sight":
                print(f"{'':17}{' > '.join(chain)}")
        depths = [99 if c == ["?"] * 99 else len(c) for c, _ in found.values()]
        worst[name] = max(depths, default=0)
    print("\nthe deepest per notebook (99: a step out of sight):", json.dumps(worst))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
