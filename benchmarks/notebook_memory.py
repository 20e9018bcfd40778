"""Each notebook's peak resident memory: the five notebooks run in order, as `python -m labkit lab` runs them.

    python benchmarks/notebook_memory.py --profile ci       (about 5 minutes on a 2-core CPU)
    python benchmarks/notebook_memory.py --profile quick    (about 20 minutes)

A fresh results folder (a temporary one, removed at the end; --keep keeps it) so that every study is computed,
not read back. Each notebook runs in its own kernel through papermill, with one cell added at its end that
reads the kernel's own peak resident memory (labkit.device.peak_memory_bytes: getrusage on Linux and macOS, the
peak working set on Windows). Prints one line per notebook and the largest, against the 3 GB a laptop with 8 GB
can spare.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 3e9  # bytes: what a student's 8 GB laptop can give one notebook beside its system and browser
MARK = "LABKIT_PEAK_BYTES"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=("ci", "quick", "paper"))
    parser.add_argument("--keep", action="store_true", help="keep the results folder (its path is printed)")
    args = parser.parse_args(argv)
    results = Path(tempfile.mkdtemp(prefix=f"labkit-memory-{args.profile}-"))
    os.environ["LABKIT_RESULTS"] = str(results)
    os.environ["LABKIT_PROGRESS"] = "0"
    import nbformat
    import papermill

    from labkit.notebook import NOTEBOOK_DIR, NOTEBOOKS
    from labkit.runner import _local_kernels

    print(f"profile {args.profile}, results in {results}; each notebook's kernel, its peak resident memory:",
          flush=True)
    peaks = {}
    try:
        for name in NOTEBOOKS:
            nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
            nb.cells.append(nbformat.v4.new_code_cell(
                f"from labkit.device import peak_memory_bytes\nprint('{MARK}', peak_memory_bytes())"))
            out = results / args.profile / f"{name}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            done = papermill.execute_notebook(nb, str(out), parameters={"profile": args.profile},
                                              cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name="python3",
                                              kernel_manager_class=_local_kernels())
            seconds = time.perf_counter() - began
            said = "".join(o.get("text", "") for o in done.cells[-1].get("outputs", []))
            value = said.split(MARK, 1)[1].split()[0] if MARK in said else "None"
            peaks[name] = None if value == "None" else int(value)
            shown = "not measured" if peaks[name] is None else f"{peaks[name] / 1e9:.2f} GB"
            print(f"  {name:20s} {shown:>12s}   {seconds / 60:5.1f} min", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(results, ignore_errors=True)
    measured = {k: v for k, v in peaks.items() if v is not None}
    if measured:
        top = max(measured, key=measured.get)
        verdict = "within" if measured[top] <= BUDGET else "OVER"
        print(f"largest: {top} at {measured[top] / 1e9:.2f} GB, {verdict} the {BUDGET / 1e9:.0f} GB budget")
    return 0 if measured and max(measured.values()) <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
