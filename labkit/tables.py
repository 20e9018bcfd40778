"""Tables of results and the sentences that depend on numbers (tests/test_tables.py and test_stats.py check them).

Named `tables`, not `report`: "the report" in labkit always means the 2019 study it reproduces.

Every sentence a notebook prints about what the numbers show comes from here, so it is written
once, tested once, and says only what its control supports: a difference within the spread over
seeds (or, with one seed, within the sampling error of the images) is reported as no difference.
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
from .config import CONTROLS, hidden_text, parse_widths  # noqa: E402  (one definition: the equal-budget and from-scratch controls)


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


def table_2019() -> list[dict]:
    """The 2019 study's own history (cycle, first_layer_neurons, test_accuracy, mec_bits), shipped as data."""
    from importlib.resources import files

    from . import records

    return records.parse((files("labkit") / "data_files" / "report_2019_results.csv").read_text(),
                         ("cycle", "first_layer_neurons", "test_accuracy", "mec_bits"))


# ---------------------------------------------------------------- comparing two arms

def compare(a: Sequence[float], b: Sequence[float], n: int, right: tuple | None = None) -> dict:
    """Accuracies of arm a against arm b (fractions, one per seed, in the same seed order), on `n` images.

    Returns mean_a, mean_b, diff (points, a - b), margin (points, the 95% margin of the difference),
    basis (a sentence saying where the margin comes from: the test used), outcome "higher", "lower" or "same"
    ("same": no difference was measured), seeds, and p where a test gives one.
    - At least two seeds in each arm, paired by seed: Student's t on the per-seed differences (stats.paired_t);
      "same" when |diff| is within the margin.
    - One seed with `right` = (a's, b's) correctness records (records.pack_right, the same images): McNemar's
      exact test on the images where exactly one head was right (stats.mcnemar); "same" when p >= 0.05.
    - One seed without them: 1.96 binomial standard errors of the difference of two independent proportions.
    A one-seed margin leaves out how much training itself varies, so one-seed verdicts say so (see `ending`).
    """
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


ARM_NAMES = {"none": "the unpruned head trained as long (none)", "scratch": "the same widths from scratch"}


def arm_name(method: str) -> str:
    """How a sentence names a method or a control."""
    return ARM_NAMES.get(method, method)


def _numbers(c: dict) -> str:
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
    """Did pruning help at equal budget? One sentence from the pruned head's and the control's accuracies
    (`right`: their correctness records, for McNemar's test on one seed; see `compare`)."""
    c = compare(pruned, control, n, right)
    return (f"At equal training ({plural_epochs(epochs)} in all) the pruned head reached {c['mean_a']:.2%} on the "
            f"{split} set and the unpruned head trained as long {c['mean_b']:.2%} ({_numbers(c)}): "
            + ending("control", c))


def pruned_vs_scratch(pruned: Sequence[float], scratch: Sequence[float], n: int, widths: str, epochs: int,
                      split: str = "test", right: tuple | None = None) -> str:
    """Did the pruned head beat the same widths trained from scratch? One sentence (`right` as in `compare`)."""
    c = compare(pruned, scratch, n, right)
    return (f"A fresh head of the same widths ({widths}) trained from scratch for {plural_epochs(epochs)} reached "
            f"{c['mean_b']:.2%} on the {split} set, the pruned head {c['mean_a']:.2%} ({_numbers(c)}): "
            + ending("scratch", c))


def _arm(rows: Sequence[dict], method: str, cycle: int, widths: str | None = None) -> dict[int, dict]:
    """{seed: row} of one arm at one cycle (of one widths, for scratch rows)."""
    return {r.get("seed", 0): r for r in rows if r["method"] == method and r["cycle"] == cycle
            and (widths is None or r["widths"] == widths)}


def paired(a: dict[int, dict], b: dict[int, dict], split: str) -> tuple[list[float], list[float], tuple | None]:
    """Two arms ({seed: row}) on their common seeds: a's and b's `split` accuracies, and with one seed the two
    correctness records (for McNemar's test) where both rows carry them."""
    seeds = [s for s in a if s in b]
    column, record = f"{split}_accuracy", f"{split}_right"
    right = None
    if len(seeds) == 1 and a[seeds[0]].get(record) and b[seeds[0]].get(record):
        right = (a[seeds[0]][record], b[seeds[0]][record])
    return [a[s][column] for s in seeds], [b[s][column] for s in seeds], right


def controls_summary(rows: Sequence[dict], split: str = "test") -> list[str]:
    """For each pruning method, at its last cycle: against the equal-budget control and against scratch.

    rows: a comparison grid (notebook 03's, or 04's over several seeds) holding methods, "none"
    and "scratch" rows (scratch rows carry the cycle they match). Sentences use `split` accuracy,
    paired by seed where every arm has the seed.
    """
    total = next(r[f"{split}_total"] for r in rows)
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] not in CONTROLS):
        last = max(r["cycle"] for r in rows if r["method"] == method)
        mine = _arm(rows, method, last)
        first = next(iter(mine.values()))
        widths, epochs = first["widths"], [r["epochs_total"] for r in mine.values()]
        line = f"{method} (cycle {last}, {widths}): "
        control = _arm(rows, "none", last)
        a, b, right = paired(mine, control, split)
        if a:
            line += pruning_vs_control(a, b, total, epochs, split, right) + _other_split(mine, control, split)
        scratch = _arm(rows, "scratch", last, widths)
        a, b, right = paired(mine, scratch, split)
        if a:
            hidden = hidden_text(widths)
            line += (" " + pruned_vs_scratch(a, b, total, hidden, epochs, split, right)
                     + _other_split(mine, scratch, split))
        lines.append(line)
    return lines


def _other_split(a: dict[int, dict], b: dict[int, dict], split: str) -> str:
    """Where a difference was measured on `split`, what the other split (validation or test) says of it: one
    split alone is not called an effect when the other disagrees."""
    other = "val" if split == "test" else "test"
    x, y, right = paired(a, b, split)
    one = compare(x, y, next(iter(a.values()))[f"{split}_total"], right)
    if one["outcome"] == "same":
        return ""
    x, y, right = paired(a, b, other)
    two = compare(x, y, next(iter(a.values()))[f"{other}_total"], right)
    name = {"val": "validation", "test": "test"}[other]
    if two["outcome"] == one["outcome"]:
        return f" Validation agrees ({_numbers(two)})." if other == "val" else f" Test agrees ({_numbers(two)})."
    return (f" On {name}, though, {two['mean_a']:.2%} against {two['mean_b']:.2%} ({_numbers(two)}): the two "
            f"splits disagree, so this is not called an effect of pruning.")


def criteria_summary(rows: Sequence[dict], split: str = "test", baseline: str = "reservoir") -> list[str]:
    """Each scoring criterion against `baseline` (reservoir sampling: neurons chosen at random) at its last cycle,
    paired by seed (or, on one seed, image by image): does choosing neurons by a score beat choosing at random?"""
    total = next(r[f"{split}_total"] for r in rows)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in (*CONTROLS, baseline)]
    if not any(r["method"] == baseline for r in rows):
        return []
    lines = []
    for method in methods:
        last = max(r["cycle"] for r in rows if r["method"] == method)
        a, b, right = paired(_arm(rows, method, last), _arm(rows, baseline, last), split)
        if not a:
            continue
        c = compare(a, b, total, right)
        verdict = ({"higher": f"{method} chose better neurons than chance.",
                    "lower": f"{method} chose worse neurons than chance."}[c["outcome"]] if c["outcome"] != "same"
                   else f"no difference was measured between {method} and choosing at random.")
        if c["outcome"] != "same" and c["seeds"] == 1:
            verdict = f"{method} scored {c['outcome']} than choosing at random, on one seed (not yet a measured effect)."
        lines.append(f"{method} against {baseline} (neurons chosen at random), cycle {last}: {c['mean_a']:.2%} and "
                     f"{c['mean_b']:.2%} on the {split} set ({_numbers(c)}): {verdict}")
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
    a, b, right = paired(_arm(rows, best["method"], best["cycle"]), _arm(rows, "none", best["cycle"]), "val")
    if not a:
        return f"No equal-budget control was run at cycle {best['cycle']}, so this point has nothing to be judged against."
    total = next(r["val_total"] for r in rows)
    return (pruning_vs_control(a, b, total, best.get("epochs_each", best["epochs_total"]), "validation", right)
            + " (It is the highest of several means, which flatters it a little.)")


# ---------------------------------------------------------------- the knee and compression

def knee_summary(result: dict, tolerance: float) -> list[str]:
    """What the knee search showed (knee.compress_knee's result, one seed or several): the knee (the smallest
    probe whose mean validation accuracy over seeds stayed within tolerance of its equal-budget control), the
    probe just outside it, how many seeds put it at the same widths on their own, how each probe recovered, and
    what storing it costs, each against its control with a paired test. Accuracies over seeds are means, and
    the sentences say so; a number of seed 0 alone is called seed 0's."""
    rows, control, best = result["rows"], result["control"], result["smallest"]
    pts = "point" if tolerance == 1 else "points"
    seeds = list(dict.fromkeys(r.get("seed", 0) for r in rows))
    over = f"means over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    base = next(r for r in rows if r["cycle"] == 0)
    n, step = best["test_total"], best["cycle"]
    mine, ctl = _arm(rows, best["method"], step), _arm(control, "none", step)
    val, test = (compare(*paired(mine, ctl, split)[:2], best[f"{split}_total"], paired(mine, ctl, split)[2])
                 for split in ("val", "test"))
    mecs = f"MEC {best['mec_bits']:,} bits, {best.get('mec_effective_bits', best['mec_bits']):,} effective"
    epochs = sorted({r["cycle_epochs"] for r in mine.values()}) if step else []
    kept = (f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}") if epochs else ""
    pooled = {split: _pooled(mine, ctl, split) for split in ("val", "test")}
    if step == 0:
        lines = [f"No probe stayed within {tolerance:g} {pts} of its equal-budget control on validation ({over}): "
                 f"the smallest head within tolerance is the unpruned one, {best['widths']} ({mecs})."]
    else:
        lines = [f"The knee ({over}): {hidden_text(best['widths'])} ({best['parameters']:,} parameters, {mecs}, "
                 f"{base['parameters'] / best['parameters']:.{1 if base['parameters'] < 10 * best['parameters'] else 0}f}x "
                 f"fewer parameters than the unpruned head), pruned "
                 f"from the trained start in one step and recovered for {kept} epoch(s) (early stopping); validation "
                 f"{val['mean_a']:.2%} against the control's {val['mean_b']:.2%} trained as many epochs"
                 + (", test {:.2%} against {:.2%}.".format(test["mean_a"], test["mean_b"]) if pooled["val"] else
                    f" ({_numbers(val)}), test {test['mean_a']:.2%} against {test['mean_b']:.2%} "
                    f"({_numbers(test)}): " + ending("control", test))]
        if pooled["val"]:
            v, t = pooled["val"], pooled["test"]
            lines.append(
                f"The decision: on validation, {v['diff']:+.2f} points against the control, 95% margin "
                f"±{v['margin']:.2f} (each seed's probe paired with its own control on the same images, the "
                f"{v['seeds']} seeds' {v['n']:,} images pooled), beside a tolerance of {tolerance:g} {pts}: "
                + ("the whole margin lies within the tolerance." if v['diff'] - v['margin'] >= -tolerance else
                   "within the tolerance, but the margin reaches past it.")
                + (f" On test, paired the same way, {t['diff']:+.2f} points ±{t['margin']:.2f}." if t else "")
                + (f" The seeds' own differences on validation, {', '.join(f'{d:+.2f}' for d in v['each'])} "
                   f"points, show how much the heads themselves vary (Student's t over the seeds: "
                   f"±{val['margin']:.2f}); the pooled margin counts the images only." if v["seeds"] > 1 else
                   " One seed: the margin leaves out how much training itself varies."))
    outside = [s for s in result.get("steps", []) if not s["within_tolerance"]
               and (step == 0 or s["scale"] < next(r["scale"] for r in mine.values()))]
    if outside:
        out = max(outside, key=lambda s: s["scale"])
        scale_in = next(r["scale"] for r in mine.values()) if step else 1.0
        beyond = out.get("paired")
        lines.append(f"The next smaller head probed, {hidden_text(out['widths'])}, reached {out['val_accuracy']:.2%} "
                     f"on validation against its control's {out['control_val_accuracy']:.2%}, more than "
                     f"{tolerance:g} {pts} below"
                     + (f" ({beyond['diff']:+.2f} points, 95% margin ±{beyond['margin']:.2f}, paired and pooled as "
                        "above)" if beyond else "")
                     + f": the knee lies between the two, whose widths differ {scale_in / out['scale']:.2f}x.")
    elif step:
        lines.append(f"Every probe stayed within tolerance, down to {hidden_text(best['widths'])}: the knee lies "
                     "beyond the widths searched.")
    agree = result.get("agree") or {}
    if len(agree) > 1:
        same = sum(w == best["widths"] for w in agree.values())
        own = sorted(set(agree.values()), key=lambda w: parse_widths(w).hidden)
        spread = ("every seed alone puts it there too" if len(own) == 1 else
                  f"the seeds' own knees range from {hidden_text(own[0])} to {hidden_text(own[-1])}")
        lines.append(f"{same} of {len(agree)} seeds put the knee at {hidden_text(best['widths'])} when judged on "
                     f"their own, among the widths probed ({', '.join(f'seed {s}: {hidden_text(w)}' for s, w in agree.items())}): "
                     f"{spread}, each judged on one seed's validation images (the pooled decision above counts "
                     f"{len(agree)} times as many).")
    scratch = {r.get("seed", 0): r for r in result.get("scratch") or []}
    if step and scratch:
        a, b, right = paired(mine, scratch, "test")
        lines.append(pruned_vs_scratch(a, b, n, hidden_text(best["widths"]),
                                       [r["epochs_total"] for r in scratch.values()], "test", right)
                     + (" (Each seed's fresh head trained as many epochs as that seed's probe had in all.)"
                        if len(scratch) > 1 else ""))
    stored = [r for r in result["table"] if r["storage"] != "float32"]
    if stored:
        small = min(stored, key=lambda r: r["bytes"])
        right = (small["test_right"], small["control_test_right"]) if small.get("control_test_right") else None
        c = compare([small["test_accuracy"]], [small["control_test_accuracy"]], n, right)
        lines.append(f"Stored as a {small['storage']}, seed {seeds[0]}'s knee head takes {small['bytes'] / 1e6:.2f} "
                     f"MB, {small['ratio']:.0f}x less than the unpruned float32 head "
                     f"({base['model_bytes'] / 1e6:.0f} MB). Read back from its file, it reached "
                     f"{small['test_accuracy']:.2%} on the test set, seed {seeds[0]}'s control "
                     f"{small['control_test_accuracy']:.2%} ({_numbers(c)}): " + ending("stored", c))
    return lines


def _pooled(probes: dict[int, dict], controls: dict[int, dict], split: str) -> dict | None:
    """stats.pooled of two arms ({seed: row}) on their common seeds' `split` images, with `each`: every seed's
    own difference in points. None where a row has no correctness record."""
    from . import records, stats

    seeds = [s for s in probes if s in controls]
    pairs = records.paired_rights([probes[s] for s in seeds], [controls[s] for s in seeds], split)
    if pairs is None:
        return None
    a, b = pairs
    return {**stats.pooled(a, b), "each": [100 * (float(x.float().mean()) - float(y.float().mean()))
                                           for x, y in zip(a, b)]}


def smallest_stored(table: Sequence[dict]) -> dict:
    """The smallest file of a compression table (knee.compress_knee)."""
    return min(table, key=lambda r: r["bytes"])


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


# ---------------------------------------------------------------- Deep Compression's stages

def stages_summary(stages: Sequence[dict], tolerance: float = 1.0) -> list[str]:
    """What each of Deep Compression's stages bought (deepcompression.stage_table rows, first the unpruned head), set
    beside Han et al.'s VGG16 and against the equal-budget control, on validation (decides) and test (reports)."""
    by = {r["stage"]: r for r in stages}
    base, last = stages[0], stages[-1]
    steps = ", ".join(f"{r['description']} {r['ratio']:.1f}x (Han: {r['han_vgg16_ratio']:.0f}x)"
                      for r in stages[1:] if r.get("han_vgg16_ratio"))
    lines = [f"The head's file went from {base['bytes'] / 1e6:,.0f} MB (unpruned, float32) to {last['bytes'] / 1e6:.2f} MB "
             f"after all three stages, {last['ratio']:.1f}x smaller; Han et al.'s VGG16 went from 552 MB to 11.3 MB, "
             f"49x. Stage by stage: {steps}."]
    pts = "point" if tolerance == 1 else "points"
    drop = last["val_drop_points"]
    verdict = (f"within the {tolerance:g}-{pts} tolerance" if last["within_tolerance"] else
               f"{drop:.2f} points below it, more than the {tolerance:g}-{pts} tolerance")
    lines.append(f"Read back from its file, the smallest head reached {last['val_accuracy']:.2%} on validation against "
                 f"the unpruned head trained as many epochs ({last['control_val_accuracy']:.2%}): {verdict}; on test "
                 f"{last['test_accuracy']:.2%} against {last['control_test_accuracy']:.2%}.")
    if "quantized" in by and "huffman" in by:
        same = by["quantized"]["test_accuracy"] == by["huffman"]["test_accuracy"]
        saved = 1 - by["huffman"]["bytes"] / by["quantized"]["bytes"]
        lines.append(f"Huffman coding took {saved:.0%} off the quantized file (Han et al.: 20-30%) and "
                     + ("changed no prediction: it is lossless." if same else
                        "changed the test accuracy, which lossless coding must not: the file is not what was coded."))
    return lines


def pruning_kinds(rows: Sequence[dict]) -> list[str]:
    """Structured (whole neurons) against fine-grained (single weights) pruning, from
    deepcompression.structured_vs_finegrained rows (the first the unpruned head): what each buys in bytes, MEC and
    CPU time, said from the numbers. A head is called faster or slower only when its timing quartiles (rounds
    alternated with the unpruned head's) do not overlap the unpruned head's; a head with the unpruned head's
    widths and weights removed nothing, and is said to."""
    base = rows[0]
    lines = []
    for r in rows[1:]:
        stored = (f"{r['stored_bytes'] / 1e6:.2f} MB stored" + (f" as a {r['stored_as']}" if r.get("stored_as") else "")
                  if r.get("stored_bytes") else "not stored")
        spread = (f"{r['ms']:.1f} ms a batch (quartiles {r['ms_q1']:.1f}-{r['ms_q3']:.1f}) against the unpruned "
                  f"head's {base['ms']:.1f} ({base['ms_q1']:.1f}-{base['ms_q3']:.1f}), {r['timing_rounds']} rounds "
                  "taking the heads in turn")
        if r["widths"] == base["widths"] and r["weights_kept"] == base["weights_kept"]:
            lines.append(f"{r['pruning']}: the unpruned head's widths and weights, so nothing was removed; "
                         f"{stored}, validation {r['val_accuracy']:.2%}. Its timing, {spread}, shows only how much "
                         "one head's timings vary.")
            continue
        if r["ms_q3"] < base["ms_q1"]:
            time = f"{base['ms'] / r['ms']:.1f}x faster: {spread}"
        elif r["ms_q1"] > base["ms_q3"]:
            time = f"{r['ms'] / base['ms']:.1f}x slower: {spread}"
        else:
            time = f"no faster or slower than the unpruned head as measured: {spread}, spreads that overlap"
        kernels = "dense kernels" if r["sparse_layers"] == "none" else f"sparse kernels on {r['sparse_layers']}"
        kept = r.get("mec_kept_bits")
        lines.append(f"{r['pruning']}: {r['weights_kept']:,} weights kept ({r['density']:.1%}), {stored}; MEC "
                     f"{r['mec_bits']:,} bits on its widths ({r['mec_effective_bits']:,} effective)"
                     + (f", {kept:,} by rule 2 on the weights it kept" if kept and kept != r["mec_bits"] else "")
                     + f"; validation {r['val_accuracy']:.2%}; with {kernels} it runs {time}.")
    return lines
