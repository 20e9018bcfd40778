"""Plain-text tables of results, and the 2019 report's own table (shipped as data)."""
from __future__ import annotations

import csv
import io
from typing import Sequence

COLUMNS_SHOWN = ("cycle", "method", "widths", "mec_bits", "test_correct", "test_accuracy", "rho",
                 "parameters", "model_bytes", "seconds")
_WIDTH = {"cycle": 5, "method": 9, "widths": 24, "mec_bits": 13, "test_correct": 12, "test_accuracy": 13,
          "rho": 10, "parameters": 13, "model_bytes": 13, "seconds": 8}


def cell(v) -> str:
    """A value as a table shows it: integers with thousands separators, floats to 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, header_only: bool = False,
                 rows_only: bool = False) -> str:
    """Rows of dicts as an aligned plain-text table; integers get thousands separators."""
    from .runs import COLUMNS

    columns = list(columns or (rows[0].keys() if rows else COLUMNS))
    width = {c: max(_WIDTH.get(c, len(c)), len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = [] if rows_only else ["  ".join(c.rjust(width[c]) for c in columns)]
    if not header_only:
        lines += ["  ".join(cell(r.get(c, "")).rjust(width[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def seed_table() -> list[dict]:
    """The 2019 study's own history (cycle, first_layer_neurons, test_accuracy, mec_bits), shipped as data."""
    from importlib.resources import files

    text = (files("labkit") / "data_files" / "seed_results.csv").read_text()
    return [{"cycle": int(r["cycle"]), "first_layer_neurons": int(r["first_layer_neurons"]),
             "test_accuracy": float(r["test_accuracy"]), "mec_bits": int(r["mec_bits"])}
            for r in csv.DictReader(io.StringIO(text))]


def study_summary(config, rows: Sequence[dict]) -> str:
    """What `python -m labkit study` prints at the end: the table, and the smallest head of a geometric run."""
    from .runs import RunFolder
    from .study import smallest_within

    folder = RunFolder(config)
    lines = [f"\n{len(rows)} cycles in {folder.history_path}", format_table(rows, COLUMNS_SHOWN)]
    if config.schedule == "geometric":
        best = smallest_within(rows, config.tolerance)
        lines.append(f"\nsmallest head within {config.tolerance:g} point(s) of the unpruned one: cycle {best['cycle']}, "
                     f"widths {best['widths']}, MEC {best['mec_bits']:,} bits, accuracy {best['test_accuracy']:.2%}, "
                     f"rho {best['rho']:.3g}, {best['parameters']:,} parameters, {best['model_bytes']:,} bytes "
                     f"-> {folder.smallest_path}")
    return "\n".join(lines)


def compress_summary(config, rows: Sequence[dict], best: dict, table: Sequence[dict]) -> str:
    """What `python -m labkit compress` prints at the end: the unpruned and smallest heads and the stored files."""
    return "\n".join([
        f"\nunpruned head: widths {rows[0]['widths']}, accuracy {rows[0]['test_accuracy']:.2%}, "
        f"float32 file {rows[0]['model_bytes']:,} bytes",
        f"smallest within {config.tolerance:g} point(s): cycle {best['cycle']}, widths {best['widths']}, "
        f"MEC {best['mec_bits']:,} bits, rho {best['rho']:.3g}",
        "each file below was written, loaded back from disk and evaluated on the test set:",
        format_table(table, ("storage", "bytes", "ratio", "test_correct", "test_accuracy", "drop_points"))])


def peak_memory() -> str:
    """This process's peak resident memory, as a sentence."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    return f"peak memory of this process: {peak:.2f} GiB"
