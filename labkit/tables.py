"""Result tables, and the number-dependent sentences two notebooks share (tests/test_tables.py, test_stats.py).
Named `tables`, not `report` ("the report" is the 2019 study). Each sentence says only what its control supports:
a difference within the margin (seed spread, or with one seed the images' sampling error) is called no difference.
"""
from __future__ import annotations

import html
import math
from collections import defaultdict
from statistics import mean, stdev
from typing import Sequence

COLUMNS_SHOWN = ("cycle", "method", "widths", "mec_bits", "epochs_total", "val_accuracy", "test_accuracy", "rho",
                 "parameters", "model_bytes", "seconds")
_WIDTH = {"cycle": 5, "method": 9, "widths": 24, "mec_bits": 13, "val_accuracy": 12, "test_accuracy": 13,
          "rho": 10, "parameters": 13, "model_bytes": 13, "seconds": 8}
from .config import CONTROLS, hidden_text  # noqa: E402


# ---------------------------------------------------------------- tables

def cell(v, column: str = "") -> str:
    """A value as a table shows it: accuracies in %, ints with thousands separators, floats to 4
    significant digits."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float) and column.endswith("accuracy") and not math.isnan(v):
        return f"{v:.2%}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, header_only: bool = False,
                 rows_only: bool = False) -> str:
    """Rows of dicts as an aligned plain-text table."""
    columns = list(columns or (rows[0].keys() if rows else COLUMNS_SHOWN))
    width = {c: max(_WIDTH.get(c, len(c)), len(c), *(len(cell(r.get(c, ""), c)) for r in rows)) for c in columns}
    lines = [] if rows_only else ["  ".join(c.rjust(width[c]) for c in columns)]
    if not header_only:
        lines += ["  ".join(cell(r.get(c, ""), c).rjust(width[c]) for c in columns) for r in rows]
    return "\n".join(lines)


class Table:
    """Rows shown as a table: HTML in Jupyter (numbers never wrap, wide tables scroll), plain text elsewhere."""

    def __init__(self, rows: Sequence[dict], columns: Sequence[str] | None = None, title: str = ""):
        self.rows, self.title = list(rows), title
        self.columns = list(columns or (self.rows[0].keys() if self.rows else COLUMNS_SHOWN))

    def __str__(self) -> str:
        return (self.title + "\n" if self.title else "") + format_table(self.rows, self.columns)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r.get(c, ''), c))}</td>" for c in self.columns)
                       + "</tr>" for r in self.rows)
        caption = f"<caption style='text-align:left'>{html.escape(self.title)}</caption>" if self.title else ""
        return ("<div style='overflow-x:auto'><table class='labkit-table' style='white-space:nowrap;"
                f"font-variant-numeric:tabular-nums'>{caption}<thead><tr>{head}</tr></thead><tbody>{body}"
                "</tbody></table></div>")


def table_2019() -> list[dict]:
    """The 2019 study's own history (cycle, first_layer_neurons, test_accuracy, mec_bits), shipped as data."""
    from importlib.resources import files

    from . import records

    return records.parse((files("labkit") / "data_files" / "report_2019_results.csv").read_text(),
                         ("cycle", "first_layer_neurons", "test_accuracy", "mec_bits"))


# ---------------------------------------------------------------- comparing two arms

def compare(a: Sequence[float], b: Sequence[float], n: int, right: tuple | None = None) -> dict:
    """Accuracies (fractions, one per seed, same seed order) of arm a against arm b on `n` images.

    Returns mean_a, mean_b, diff and margin (points, a - b, 95%), basis (the test, as a sentence), outcome
    "higher", "lower" or "same" (no difference measured), seeds, p (None unless McNemar). Two or more seeds: paired t,
    "same" within the margin; one seed with `right` (both arms' records.pack_right records): McNemar, "same" at
    p >= 0.05; else 1.96 binomial standard errors. One-seed margins leave out training's own variance.
    ValueError on an empty arm."""
    from . import records, stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        raise ValueError("compare needs at least one accuracy in each arm")
    ma, mb = mean(a), mean(b)
    out = {"mean_a": ma, "mean_b": mb, "seeds": min(len(a), len(b)), "p": None}
    if len(a) == len(b) >= 2:
        t = stats.paired_t(a, b, n)
        diff, margin = t["diff"], t["margin"]
        outcome = "higher" if diff > margin else "lower" if diff < -margin else "same"
        basis = f"Student's t over {t['seeds']} seeds, paired by seed"
    elif right is not None:
        m = stats.mcnemar(records.unpack_right(right[0], n), records.unpack_right(right[1], n))
        diff, margin = m["diff"], m["margin"]
        outcome = "same" if m["p"] >= 0.05 else "higher" if diff > 0 else "lower"
        basis = (f"McNemar's exact test on the {m['b'] + m['c']:,} of {n:,} images where exactly one head was right "
                 f"({m['b']:,} against {m['c']:,}), p = {m['p']:.2g}; one seed")
        out["p"] = m["p"]
    else:
        margin = 100 * 1.96 * math.sqrt(ma * (1 - ma) / n + mb * (1 - mb) / n)
        diff = 100 * (ma - mb)
        outcome = "higher" if diff > margin else "lower" if diff < -margin else "same"
        basis = f"the sampling error of {n:,} images, unpaired, one seed"
    return {**out, "diff": diff, "margin": margin, "basis": basis, "outcome": outcome}


def plural_epochs(n) -> str:
    """'1 epoch', '8 epochs'; of several seeds' counts (a list), '18-21 epochs (by seed)' where they differ."""
    if isinstance(n, (list, tuple, set)):
        low, high = min(n), max(n)
        if low != high:
            return f"{low}-{high} epochs (by seed)"
        n = low
    return f"{n} epoch" + ("" if n == 1 else "s")


def difference_text(c: dict) -> str:
    """A comparison's difference and its margin, in points (see `compare`)."""
    return f"{c['diff']:+.2f} points; 95% margin ±{c['margin']:.2f}, {c['basis']}"


ONE_SEED = ("beyond the test images' sampling error, but on one seed, whose margin leaves out how much training "
            "itself varies, so it is not yet a measured effect (notebook 04 repeats the comparison over seeds).")
ENDINGS = {
    "control": {"higher": "the pruned head scored higher than the unpruned head trained as long, beyond the margin.",
                "lower": "the pruned head scored lower than the unpruned head trained as long, beyond the margin.",
                "same": "the difference lies within the margin, so no difference was measured between pruning and "
                        "training as long without pruning.",
                "higher, one seed": "the pruned head scored higher " + ONE_SEED,
                "lower, one seed": "the pruned head scored lower " + ONE_SEED},
    "scratch": {"higher": "the pruned head beat the same widths trained from scratch.",
                "lower": "the same widths trained from scratch did better than pruning.",
                "same": "the difference lies within the margin, so no difference was measured between the pruned "
                        "head and the same widths trained from scratch.",
                "higher, one seed": "the pruned head scored higher " + ONE_SEED,
                "lower, one seed": "the pruned head scored lower " + ONE_SEED},
    "stored": {"higher": "the stored head did better than the control.",
               "lower": "storing it small cost accuracy against the control.",
               "same": "no difference was measured against the control.",
               "higher, one seed": "the stored head scored higher " + ONE_SEED,
               "lower, one seed": "the stored head scored lower " + ONE_SEED},
}


def ending(kind: str, c: dict) -> str:
    """How a sentence about comparison `c` (see `compare`) ends: a measured difference only over seeds."""
    key = c["outcome"] if c["outcome"] == "same" or c["seeds"] > 1 else f"{c['outcome']}, one seed"
    return ENDINGS[kind][key]


def pruning_vs_control(pruned: Sequence[float], control: Sequence[float], n: int, epochs: int,
                       split: str = "test", right: tuple | None = None) -> str:
    """Did pruning help at equal budget? One sentence (`right` as in `compare`)."""
    c = compare(pruned, control, n, right)
    return (f"At equal training ({plural_epochs(epochs)} in all) the pruned head reached {c['mean_a']:.2%} on the "
            f"{split} set and the unpruned head trained as long {c['mean_b']:.2%} ({difference_text(c)}): "
            + ending("control", c))


def pruned_vs_scratch(pruned: Sequence[float], scratch: Sequence[float], n: int, widths: str, epochs: int,
                      split: str = "test", right: tuple | None = None) -> str:
    """Did the pruned head beat the same widths trained from scratch? One sentence (`right` as in `compare`)."""
    c = compare(pruned, scratch, n, right)
    return (f"A fresh head of the same widths ({widths}) trained from scratch for {plural_epochs(epochs)} reached "
            f"{c['mean_b']:.2%} on the {split} set, the pruned head {c['mean_a']:.2%} ({difference_text(c)}): "
            + ending("scratch", c))


def arm(rows: Sequence[dict], method: str, cycle: int, widths: str | None = None) -> dict[int, dict]:
    """{seed: row} of one arm at one cycle (of one widths, for scratch rows)."""
    return {r.get("seed", 0): r for r in rows if r["method"] == method and r["cycle"] == cycle
            and (widths is None or r["widths"] == widths)}


def paired(a: dict[int, dict], b: dict[int, dict], split: str) -> tuple[list[float], list[float], tuple | None]:
    """Two arms' `split` accuracies on their common seeds, and with one seed their correctness records (or None)."""
    seeds = [s for s in a if s in b]
    column, record = f"{split}_accuracy", f"{split}_right"
    right = None
    if len(seeds) == 1 and a[seeds[0]].get(record) and b[seeds[0]].get(record):
        right = (a[seeds[0]][record], b[seeds[0]][record])
    return [a[s][column] for s in seeds], [b[s][column] for s in seeds], right


def controls_summary(rows: Sequence[dict], split: str = "test") -> list[str]:
    """Per pruning method at its last cycle, one line against the equal-budget control and against scratch.
    rows: a grid of method, "none" and "scratch" rows (scratch rows carry the cycle they match), paired by seed."""
    total = next(r[f"{split}_total"] for r in rows)
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] not in CONTROLS):
        last = max(r["cycle"] for r in rows if r["method"] == method)
        mine = arm(rows, method, last)
        first = next(iter(mine.values()))
        widths, epochs = first["widths"], [r["epochs_total"] for r in mine.values()]
        line = f"{method} (cycle {last}, {widths}): "
        control = arm(rows, "none", last)
        a, b, right = paired(mine, control, split)
        if a:
            line += pruning_vs_control(a, b, total, epochs, split, right) + _other_split(mine, control, split)
        scratch = arm(rows, "scratch", last, widths)
        a, b, right = paired(mine, scratch, split)
        if a:
            hidden = hidden_text(widths)
            line += (" " + pruned_vs_scratch(a, b, total, hidden, epochs, split, right)
                     + _other_split(mine, scratch, split))
        lines.append(line)
    return lines


def _other_split(a: dict[int, dict], b: dict[int, dict], split: str) -> str:
    """What the other split says of a difference measured on `split`; if they disagree, it is not called an effect."""
    other = "val" if split == "test" else "test"
    x, y, right = paired(a, b, split)
    one = compare(x, y, next(iter(a.values()))[f"{split}_total"], right)
    if one["outcome"] == "same":
        return ""
    x, y, right = paired(a, b, other)
    two = compare(x, y, next(iter(a.values()))[f"{other}_total"], right)
    name = {"val": "validation", "test": "test"}[other]
    if two["outcome"] == one["outcome"]:
        return f" Validation agrees ({difference_text(two)})." if other == "val" else f" Test agrees ({difference_text(two)})."
    return (f" On {name}, though, {two['mean_a']:.2%} against {two['mean_b']:.2%} ({difference_text(two)}): the two "
            f"splits disagree, so this is not called an effect of pruning.")


# ---------------------------------------------------------------- summaries over seeds

def curve_summary(rows: Sequence[dict]) -> list[dict]:
    """Per (method, cycle), controls too: MEC, epochs, val and test accuracy (mean as a fraction, std in
    points), rho, seeds."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["cycle"])].append(r)
    out = []
    for (method, cycle), group in groups.items():
        entry = {"method": method, "cycle": cycle, "mec_bits": group[0]["mec_bits"],
                 "mec_effective_bits": group[0].get("mec_effective_bits", group[0]["mec_bits"]),
                 "epochs_total": group[0]["epochs_total"], "epochs_each": [r["epochs_total"] for r in group]}
        for split in ("val", "test"):
            values = [r[f"{split}_accuracy"] for r in group]
            entry[f"{split}_accuracy"] = mean(values)
            entry[f"{split}_std_points"] = 100 * stdev(values) if len(values) > 1 else 0.0
        entry["rho"] = mean(r["rho"] for r in group)
        if all("rho_effective" in r for r in group):
            entry["rho_effective"] = mean(r["rho_effective"] for r in group)
        entry["seeds"] = len(group)
        out.append(entry)
    return out


# ---------------------------------------------------------------- what the command line prints

def study_summary(config, rows: Sequence[dict]) -> str:
    """What `python -m labkit study` prints at the end: the table."""
    from .runs import RunFolder

    folder = RunFolder(config)
    lines = [f"\n{len(rows)} cycles in {folder.history_path}", format_table(rows, COLUMNS_SHOWN)]
    return "\n".join(lines)


def peak_memory() -> str:
    """This process's peak resident memory, as a sentence."""
    from .device import peak_memory_bytes

    peak = peak_memory_bytes()
    return ("peak memory of this process: not measured on this platform" if peak is None else
            f"peak memory of this process: {peak / 2**30:.2f} GiB")
