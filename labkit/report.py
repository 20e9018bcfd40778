"""Tables of results and the sentences that depend on numbers (each branch unit-tested).

Every sentence a notebook prints about what the numbers show comes from here, so it is written
once, tested once, and says only what its control supports: a difference within the spread over
seeds (or, with one seed, within the sampling error of the images) is reported as no difference.
"""
from __future__ import annotations

import csv
import html
import io
import math
from collections import defaultdict
from statistics import mean, stdev
from typing import Sequence

COLUMNS_SHOWN = ("cycle", "method", "widths", "mec_bits", "epochs_total", "val_accuracy", "test_accuracy", "rho",
                 "parameters", "model_bytes", "seconds")
_WIDTH = {"cycle": 5, "method": 9, "widths": 24, "mec_bits": 13, "val_accuracy": 12, "test_accuracy": 13,
          "rho": 10, "parameters": 13, "model_bytes": 13, "seconds": 8}
CONTROLS = ("none", "scratch")


# ---------------------------------------------------------------- tables

def cell(v, column: str = "") -> str:
    """A value as a table shows it: accuracies as percentages, integers with thousands separators,
    other floats to 4 significant digits."""
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


def seed_table() -> list[dict]:
    """The 2019 study's own history (cycle, first_layer_neurons, test_accuracy, mec_bits), shipped as data."""
    from importlib.resources import files

    text = (files("labkit") / "data_files" / "seed_results.csv").read_text()
    return [{"cycle": int(r["cycle"]), "first_layer_neurons": int(r["first_layer_neurons"]),
             "test_accuracy": float(r["test_accuracy"]), "mec_bits": int(r["mec_bits"])}
            for r in csv.DictReader(io.StringIO(text))]


# ---------------------------------------------------------------- comparing two arms

_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13,
        20: 2.09, 30: 2.04}


def _t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with `dof` degrees of freedom (2.0 beyond 30)."""
    keys = [k for k in _T95 if k <= dof]
    return _T95[max(keys)] if keys else _T95[1]


def compare(a: Sequence[float], b: Sequence[float], n: int) -> dict:
    """Accuracies of arm a against arm b (fractions, one per seed, in the same seed order), on `n` images.

    Returns mean_a, mean_b, diff (points, a - b), margin (points, the 95% margin of the difference),
    basis (a sentence saying where the margin comes from), outcome "higher", "lower" or "same"
    ("same": |diff| within the margin, so no difference was measured). With at least two seeds in each
    arm, paired by seed, the margin is Student's t times the standard error of the per-seed differences,
    and never less than one image; with one seed it is 1.96 binomial standard errors of the difference, which
    leaves out how much the training itself varies (a run with other float rounding moves a quick-profile
    head's accuracy by a point or two), so one-seed verdicts say so.
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        raise ValueError("compare needs at least one accuracy in each arm")
    ma, mb = mean(a), mean(b)
    if len(a) == len(b) >= 2:
        diffs = [x - y for x, y in zip(a, b)]
        se = stdev(diffs) / math.sqrt(len(diffs))
        margin = max(_t95(len(diffs) - 1) * se, 1 / n)
        basis = f"from the spread of the per-seed differences over {len(diffs)} seeds"
    else:
        margin = 1.96 * math.sqrt(ma * (1 - ma) / n + mb * (1 - mb) / n)
        basis = f"the sampling error of {n:,} images, one seed"
    diff = ma - mb
    outcome = "higher" if diff > margin else "lower" if diff < -margin else "same"
    return {"mean_a": ma, "mean_b": mb, "diff": 100 * diff, "margin": 100 * margin, "basis": basis,
            "outcome": outcome, "seeds": min(len(a), len(b))}


def plural_epochs(n: int) -> str:
    """'1 epoch', '8 epochs'."""
    return f"{n} epoch" + ("" if n == 1 else "s")


ARM_NAMES = {"none": "the unpruned head trained as long (none)", "scratch": "the same widths from scratch"}


def arm_name(method: str) -> str:
    """How a sentence names a method or a control."""
    return ARM_NAMES.get(method, method)


def _numbers(c: dict) -> str:
    return f"{c['diff']:+.2f} points; 95% margin ±{c['margin']:.2f}, {c['basis']}"


ONE_SEED = ("beyond the test images' sampling error, but on one seed, whose margin leaves out how much training "
            "itself varies, so it is not yet a measured effect (notebook 04 repeats the comparison over seeds).")
ENDINGS = {
    "control": {"higher": "pruning helped at equal budget.",
                "lower": "pruning cost accuracy at equal budget.",
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
                       split: str = "test") -> str:
    """Did pruning help at equal budget? One sentence from the pruned head's and the control's accuracies."""
    c = compare(pruned, control, n)
    return (f"At equal training ({plural_epochs(epochs)} in all) the pruned head reached {c['mean_a']:.2%} on the "
            f"{split} set and the unpruned head trained as long {c['mean_b']:.2%} ({_numbers(c)}): "
            + ending("control", c))


def pruned_vs_scratch(pruned: Sequence[float], scratch: Sequence[float], n: int, widths: str, epochs: int,
                      split: str = "test") -> str:
    """Did the pruned head beat the same widths trained from scratch? One sentence."""
    c = compare(pruned, scratch, n)
    return (f"A fresh head of the same widths ({widths}) trained from scratch for {plural_epochs(epochs)} reached "
            f"{c['mean_b']:.2%} on the {split} set, the pruned head {c['mean_a']:.2%} ({_numbers(c)}): "
            + ending("scratch", c))


def _seeded(rows: Sequence[dict], method: str, cycle: int, column: str) -> dict[int, float]:
    return {r.get("seed", 0): r[column] for r in rows if r["method"] == method and r["cycle"] == cycle}


def controls_summary(rows: Sequence[dict], split: str = "test") -> list[str]:
    """For each pruning method, at its last cycle: against the equal-budget control and against scratch.

    rows: a comparison grid (study.compare_methods, several seeds allowed) holding methods, "none"
    and "scratch" rows (scratch rows carry the cycle they match). Sentences use `split` accuracy,
    paired by seed where every arm has the seed.
    """
    column = f"{split}_accuracy"
    total = next(r[f"{split}_total"] for r in rows)
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] not in CONTROLS):
        last = max(r["cycle"] for r in rows if r["method"] == method)
        mine = _seeded(rows, method, last, column)
        widths = next(r["widths"] for r in rows if r["method"] == method and r["cycle"] == last)
        epochs = next(r["epochs_total"] for r in rows if r["method"] == method and r["cycle"] == last)
        control = _seeded(rows, "none", last, column)
        scratch = {r.get("seed", 0): r[column] for r in rows
                   if r["method"] == "scratch" and r["widths"] == widths and r["cycle"] == last}
        line = f"{method} (cycle {last}, {widths}): "
        seeds = [s for s in mine if s in control]
        if seeds:
            line += pruning_vs_control([mine[s] for s in seeds], [control[s] for s in seeds], total, epochs, split)
        both = [s for s in mine if s in scratch]
        if both:
            hidden = "-".join(widths.split("-")[1:-1])
            line += " " + pruned_vs_scratch([mine[s] for s in both], [scratch[s] for s in both], total, hidden,
                                            epochs, split)
        lines.append(line)
    return lines


# ---------------------------------------------------------------- summaries over seeds

def curve_summary(rows: Sequence[dict]) -> list[dict]:
    """Per (method, cycle): MEC, epochs in all, mean and standard deviation over seeds of validation and
    test accuracy, mean rho, number of seeds. Controls included (scratch under the cycle it matches)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["cycle"])].append(r)
    out = []
    for (method, cycle), group in groups.items():
        entry = {"method": method, "cycle": cycle, "mec_bits": group[0]["mec_bits"],
                 "epochs_total": group[0]["epochs_total"]}
        for split in ("val", "test"):
            values = [r[f"{split}_accuracy"] for r in group]
            entry[f"{split}_accuracy"] = mean(values)
            entry[f"{split}_std_points"] = 100 * stdev(values) if len(values) > 1 else 0.0
        entry["rho"] = mean(r["rho"] for r in group)
        entry["seeds"] = len(group)
        out.append(entry)
    return out


def best_point(rows: Sequence[dict]) -> dict:
    """The (method, cycle) with the highest mean validation accuracy over seeds (ties: the smaller MEC),
    with its mean test accuracy reported beside it; pruning methods and the control compete."""
    summary = [r for r in curve_summary(rows) if r["method"] != "scratch"]
    return max(summary, key=lambda r: (r["val_accuracy"], -r["mec_bits"]))


def best_against_control(rows: Sequence[dict], best: dict) -> str:
    """One sentence: the best point (`best_point`) against the unpruned head trained as long at its cycle,
    on validation, paired by seed; or, where the control itself is the best point, that no pruned head beat it."""
    if best["method"] == "none":
        return ("That best point is the unpruned head trained as long itself (the equal-budget control): no pruned "
                "head scored higher on validation.")
    mine = _seeded(rows, best["method"], best["cycle"], "val_accuracy")
    control = _seeded(rows, "none", best["cycle"], "val_accuracy")
    seeds = [s for s in mine if s in control]
    if not seeds:
        return f"No equal-budget control was run at cycle {best['cycle']}, so this point has nothing to be judged against."
    total = next(r["val_total"] for r in rows)
    return (pruning_vs_control([mine[s] for s in seeds], [control[s] for s in seeds], total,
                               best["epochs_total"], "validation")
            + " (It is the highest of several means, which flatters it a little.)")


# ---------------------------------------------------------------- the knee and compression

def knee_summary(result: dict, tolerance: float) -> list[str]:
    """What the knee search showed: the smallest head within tolerance (chosen on validation against the
    equal-budget control), where accuracy fell, and what storing it costs, stated against the control."""
    rows, control, best = result["rows"], result["control"], result["smallest"]
    ctl = {r["cycle"]: r for r in control}
    base, last = rows[0], rows[-1]
    pts = "point" if tolerance == 1 else "points"
    n = best["test_total"]
    if best["cycle"] == 0:
        lines = [f"No pruned head stayed within {tolerance:g} {pts} of the equal-budget control on validation: the "
                 f"smallest head within tolerance is the unpruned one, {best['widths']} (MEC {best['mec_bits']:,} bits; "
                 f"validation {best['val_accuracy']:.2%}, test {best['test_accuracy']:.2%})."]
    else:
        lines = [f"Smallest head within {tolerance:g} {pts} of the equal-budget control on validation: widths "
                 f"{best['widths']} (cycle {best['cycle']}, {plural_epochs(best['epochs_total'])} in all), MEC "
                 f"{best['mec_bits']:,} bits ({base['mec_bits'] / best['mec_bits']:.0f}x below the unpruned head), "
                 f"{best['parameters']:,} parameters; validation {best['val_accuracy']:.2%} against the control's "
                 f"{ctl[best['cycle']]['val_accuracy']:.2%}, test {best['test_accuracy']:.2%} against "
                 f"{ctl[best['cycle']]['test_accuracy']:.2%}."]
    if last["cycle"] != best["cycle"] and last["cycle"] in ctl:
        lines.append(f"One step further, at {last['widths']}, validation accuracy fell to {last['val_accuracy']:.2%} "
                     f"against the control's {ctl[last['cycle']]['val_accuracy']:.2%}: the knee lies between "
                     "those two heads.")
    else:
        lines.append(f"Validation accuracy stayed within tolerance for all {len(rows)} cycles searched: the knee "
                     "lies beyond them.")
    if best["cycle"] > 0:
        lines.append(pruning_vs_control([best["test_accuracy"]], [ctl[best["cycle"]]["test_accuracy"]], n,
                                        best["epochs_total"]))
        if result.get("scratch"):
            s = result["scratch"]
            lines.append(pruned_vs_scratch([best["test_accuracy"]], [s["test_accuracy"]], n,
                                           "-".join(best["widths"].split("-")[1:-1]), s["epochs_total"]))
    stored = [r for r in result["table"] if r["storage"] != "float32"]
    if stored:
        small = min(stored, key=lambda r: r["bytes"])
        c = compare([small["test_accuracy"]], [small["control_test_accuracy"]], n)
        lines.append(f"Stored as {small['storage']}, that head takes {small['bytes'] / 1e6:.2f} MB, "
                     f"{small['ratio']:.0f}x less than the unpruned float32 head ({base['model_bytes'] / 1e6:.0f} "
                     f"MB). Read back from {small['path']}, it reached {small['test_accuracy']:.2%} on the test set, "
                     f"the unpruned head trained as long {small['control_test_accuracy']:.2%} ({_numbers(c)}): "
                     + ending("stored", c))
    return lines


def smallest_stored(table: Sequence[dict]) -> dict:
    """The smallest file of a compression table (study.compress_smallest)."""
    return min(table, key=lambda r: r["bytes"])


# ---------------------------------------------------------------- what the command line prints

def study_summary(config, rows: Sequence[dict]) -> str:
    """What `python -m labkit study` prints at the end: the table (a geometric run: its smallest head)."""
    from .runs import RunFolder

    folder = RunFolder(config)
    lines = [f"\n{len(rows)} cycles in {folder.history_path}", format_table(rows, COLUMNS_SHOWN)]
    if config.schedule == "geometric" and config.method not in CONTROLS and folder.smallest_path.exists():
        from .model import read_extra

        best = read_extra(folder.smallest_path).get("row") or rows[0]
        lines.append(f"\nsmallest head within {config.tolerance:g} point(s) of the equal-budget control (validation): "
                     f"cycle {best['cycle']}, widths {best['widths']}, MEC {best['mec_bits']:,} bits, validation "
                     f"{best['val_accuracy']:.2%}, test {best['test_accuracy']:.2%} -> {folder.smallest_path}")
    return "\n".join(lines)


def compress_summary(config, result: dict) -> str:
    """What `python -m labkit compress` prints at the end: the knee beside its control, the stored files."""
    columns = ("cycle", "method", "widths", "mec_bits", "epochs_total", "val_accuracy", "control_val_accuracy",
               "test_accuracy", "control_test_accuracy", "within_tolerance")
    return "\n".join([
        "\nthe knee search beside the unpruned head trained as long (decisions on validation):",
        format_table(result["knee"], columns), "", *knee_summary(result, config.tolerance), "",
        "each file below was written, loaded back from disk and evaluated:",
        format_table(result["table"], ("storage", "bytes", "ratio", "val_accuracy", "test_accuracy",
                                       "control_test_accuracy", "drop_points"))])


def peak_memory() -> str:
    """This process's peak resident memory, as a sentence."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    return f"peak memory of this process: {peak:.2f} GiB"


# ---------------------------------------------------------------- what the labels need

GROWS_WITH_DATA = 0.8  # a log-log slope above this counts as growing in step with the data


def requirement_rows(progressions: dict[str, list[dict]]) -> list[dict]:
    """{representation: progression rows} as one table, a `representation` column first (data_requirement.csv)."""
    return [{"representation": name, **r} for name, rows in progressions.items() for r in rows]


def requirement_sentence(name: str, rows: Sequence[dict], head_mec: int | None = None) -> str:
    """What a thresholds-method progression (capacity.requirement_progression) says, in one sentence."""
    from .capacity import progression_slope

    slope = progression_slope(rows)
    full = rows[-1]
    shape = ("grows in step with the data: every new image brings new thresholds, so through this projection the "
             "labels look memorized rather than ruled" if slope > GROWS_WITH_DATA else
             "grows more slowly than the data: new images add fewer thresholds, a sign of regularity")
    said = (f"{name}: {full['thresholds']:,} thresholds for {full['n']:,} images, expected {full['expected_bits']:,} "
            f"bits, max {full['max_bits']:,} bits; log-log slope {slope:.2f} over the last half of the images: it "
            f"{shape}.")
    if head_mec is not None:
        said += (f" The head's {head_mec:,} bits of MEC are {'more' if head_mec > full['max_bits'] else 'less'} "
                 "than even the max requirement.")
    return said
