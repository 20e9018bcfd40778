"""How big must the head be? The lab's answers side by side (head_size.csv), each beside its control; seed 0's rows.
`mec_bits`: the four rules on the widths as read; `mec_effective_bits`: on distinct inputs; `mec_kept_bits`: rule 2 on
the weights a fine-grained head kept. Bytes are files read back, except the ladder's (unwritten: 4 bytes a parameter).
"""
from __future__ import annotations

from typing import Sequence

from . import capacity
from .config import Widths, hidden_text, parse_widths

COLUMNS = ("head", "widths", "parameters", "bytes_float32", "bytes_smallest", "smallest_storage", "mec_bits",
           "mec_effective_bits", "mec_kept_bits", "val_accuracy", "test_accuracy", "control",
           "control_val_accuracy", "control_test_accuracy", "val_points_below_control", "statistic", "decided_on")


def _row(head: str, widths, parameters: int, bytes_float32: int, bytes_smallest: int, storage: str, side: int,
         val: float, test: float, control: str, control_val, control_test, decided: str, kept=None) -> dict:
    widths = Widths(parse_widths(widths))
    mec = capacity.mec(widths)
    return {"head": head, "widths": widths, "parameters": int(parameters), "bytes_float32": int(bytes_float32),
            "bytes_smallest": int(bytes_smallest), "smallest_storage": storage, "mec_bits": mec,
            "mec_effective_bits": capacity.mec_effective(widths, side),
            "mec_kept_bits": mec if kept is None else int(kept), "val_accuracy": val, "test_accuracy": test,
            "control": control, "control_val_accuracy": control_val, "control_test_accuracy": control_test,
            "val_points_below_control": None if control_val is None else 100 * (control_val - val),
            "statistic": "seed 0", "decided_on": decided}


def rows(knee: dict, dc: dict | None, ladder: Sequence[dict], map_size: int, seed: int = 0) -> list[dict]:
    """head_size.csv's rows. knee: knee.compress_knee's result; dc: deepcompression.finish's (None: no row); ladder:
    requirement_ladder.csv rows with test accuracy (empty: no ladder rows); map_size: the backbone's map side."""
    mine = [r for r in knee["knee"] if r.get("seed", 0) == seed]
    start = next(r for r in mine if r["cycle"] == 0 and r["method"] != "scratch")
    best = next(r for r in mine if r["smallest"])
    seeds = len({r.get("seed", 0) for r in knee["knee"]})
    float32 = next((r for r in knee["table"] if r["storage"] == "float32"), {"bytes": best["model_bytes"]})
    small = min(knee["table"], key=lambda r: r["bytes"])
    ctl = (f"the unpruned head trained as many epochs ({best['control_epochs_total']} in all, at the full rate "
           "the knee's probes recover at: the knee's control)")
    out = [_row("unpruned (the trained start)", start["widths"], start["parameters"], start["model_bytes"],
                start["model_bytes"], "float32", map_size, start["val_accuracy"], start["test_accuracy"],
                "(the reference)", None, None, "notebook 02: early stopping on validation")]
    decided = (f"the knee search: the mean over {seeds} seed(s) within {best['tolerance']:g} point(s) of the control "
               "on validation")
    out.append(_row(f"structured knee ({best['method']}, pruned in one step and recovered)", best["widths"],
                    best["parameters"], float32["bytes"], small["bytes"], small["storage"], map_size,
                    best["val_accuracy"], best["test_accuracy"], ctl, best["control_val_accuracy"],
                    best["control_test_accuracy"], decided))
    twin = next((r for r in mine if r["method"] == "scratch"), None)
    if twin is not None:
        out.append(_row("the knee's widths, trained from scratch", twin["widths"], twin["parameters"],
                        twin["model_bytes"], twin["model_bytes"], "float32", map_size, twin["val_accuracy"],
                        twin["test_accuracy"], ctl, best["control_val_accuracy"], best["control_test_accuracy"],
                        f"not decided: the knee's widths, {twin['epochs_total']} epochs from scratch"))
    if dc is not None:
        last = dc["stages"][-1]
        sparse = next(r for r in dc["versus"] if r["pruning"].startswith("fine-grained"))
        out.append(_row("fine-grained (Deep Compression: pruned, quantized, Huffman)", sparse["widths"],
                        sparse["parameters"], sparse["float32_sparse_bytes"], last["bytes"], "Huffman-coded stage file",
                        map_size, last["val_accuracy"], last["test_accuracy"],
                        "the unpruned head trained as many epochs ("
                        + (f"{dc['control']['epochs_total']} in all, " if dc.get("control") else "")
                        + "in the study's cycles at the fine-tuning rate: Deep Compression's control)",
                        last["control_val_accuracy"],
                        last["control_test_accuracy"], "Han et al.'s shares kept per layer, checked against the "
                        "tolerance on validation", kept=sparse["mec_kept_bits"]))
    if not ladder:  # before notebook 04 has run
        return out
    top = max(ladder, key=lambda r: r["val_accuracy"])
    chosen = next(r for r in ladder if r["chosen"])
    linear = next(r for r in ladder if int(r["hidden"]) == 0)
    tol = f"within the tolerance of the ladder's best ({top['head']}) on validation"
    for label, r in (("the ladder's smallest head within the tolerance", chosen),
                     ("linear classifier (the ladder)", linear)):
        out.append(_row(label, r["widths"], r["parameters"], 4 * r["parameters"], 4 * r["parameters"],
                        "float32 values (not written)", map_size, r["val_accuracy"], r.get("test_accuracy"),
                        f"the ladder's best, {top['head']}", top["val_accuracy"], top.get("test_accuracy"),
                        "the ladder: the smallest effective MEC " + tol if r is chosen else "not decided: the "
                        "ladder's first rung"))
    return out


def lines(table: Sequence[dict], versus: Sequence[dict] | None = None) -> list[str]:
    """What head_size.csv says: each answer, then why the knee and the ladder differ, from the table's numbers."""
    start = table[0]
    knee = next(r for r in table if r["head"].startswith("structured knee"))
    twin = next((r for r in table if r["head"].startswith("the knee's widths")), None)
    ladder = next((r for r in table if r["head"].startswith("the ladder's smallest")), None)
    linear = next((r for r in table if r["head"].startswith("linear")), None)
    fine = next((r for r in table if r["head"].startswith("fine-grained")), None)
    out = [f"How big must the head be? {len(table)} answers, each seed 0's, on the same validation and test images "
           "(head_size.csv):"]
    for r in table:
        x = r["val_points_below_control"]
        below = "" if x is None else f", {abs(x):.2f} points {'below' if x >= 0 else 'above'} its control"
        test = "" if r["test_accuracy"] is None else f", test {r['test_accuracy']:.2%}"
        fewer = "" if r is start else f" ({_times(start['parameters'] / r['parameters'])} fewer than the unpruned head)"
        out.append(f"- {r['head']}: {r['widths']} ({r['widths'][0]:,} inputs), "
                   f"{r['parameters']:,} parameters{fewer}, {r['bytes_smallest'] / 1e6:,.2f} MB ({r['smallest_storage']}), MEC "
                   f"{r['mec_bits']:,} bits ({r['mec_effective_bits']:,} effective); validation "
                   f"{r['val_accuracy']:.2%}{test}{below}.")
    if ladder is None:
        out.append("The ladder of small heads trained fresh on the features is measured in notebook 04, which "
                   "writes this table again with its smallest head within tolerance and its linear classifier.")
    else:
        out.append(
            f"The structured knee and the ladder answer two questions. The knee asks how far the trained "
            f"{hidden_text(start['widths'])} head can be cut in one step and win its accuracy back within its "
            f"recovery budget: {hidden_text(knee['widths'])}, {abs(knee['val_points_below_control']):.2f} points "
            f"{'below' if knee['val_points_below_control'] >= 0 else 'above'} its control. "
            f"The ladder asks how small a fresh head on the {ladder['widths'][0]:,} distinct features stays within "
            f"the tolerance of the ladder's best ({ladder['control_val_accuracy']:.2%} on validation): "
            f"{ladder['widths']}, {abs(ladder['val_points_below_control']):.2f} points below it, "
            f"{_times(knee['parameters'] / ladder['parameters'])} "
            f"fewer parameters than the knee, at {ladder['val_accuracy']:.2%} against the knee's "
            f"{knee['val_accuracy']:.2%} on validation. A linear classifier reaches {linear['val_accuracy']:.2%}: "
            "most of what the head does, the features already do.")
    if twin is not None:
        gap = 100 * (knee["val_accuracy"] - twin["val_accuracy"])
        out.append(f"The knee's widths trained from scratch reached {twin['val_accuracy']:.2%} on validation, "
                   f"{gap:+.2f} points for the pruned head on seed 0 alone; whether that difference is measured is "
                   "the paired test over the seeds in the knee's sentences (notebook 03).")
    if fine is not None:
        same = next((r for r in versus or () if str(r.get("pruning", "")).startswith("structured")), None)
        stored = (f"against the knee's {same['stored_bytes'] / 1e6:.2f} MB stored the same way ({same['stored_as']}; "
                  f"its smallest file, {knee['smallest_storage']}, takes {knee['bytes_smallest'] / 1e6:.2f} MB)"
                  if same and same.get("stored_as") else
                  f"(the knee's smallest file, {knee['smallest_storage']}, {knee['bytes_smallest'] / 1e6:.2f} MB, is "
                  "stored another way: structured_vs_finegrained.csv sets the two side by side stored alike)")
        out.append(f"Deep Compression keeps the unpruned widths and removes weights instead: "
                   f"{fine['parameters']:,} parameters kept, {fine['bytes_smallest'] / 1e6:.2f} MB in its Huffman "
                   f"file {stored}; its MEC by rule 2 on the weights kept is {fine['mec_kept_bits']:,} bits, but on "
                   f"its widths it is the unpruned head's {fine['mec_bits']:,}.")
        if fine["control"] != knee["control"] and fine["control_val_accuracy"] != knee["control_val_accuracy"]:
            out.append(f"One start, two controls: the knee's control reached {knee['control_val_accuracy']:.2%} on "
                       f"validation, Deep Compression's {fine['control_val_accuracy']:.2%}, against the start's "
                       f"{start['val_accuracy']:.2%}. Each is the unpruned start trained for its own head's budget "
                       "(the column `control` says which: the knee's control trains at the full rate its probes "
                       "recover at, Deep Compression's in the study's cycles at the fine-tuning rate, a tenth of "
                       "it), and a control also moves from "
                       "epoch to epoch (knee.csv). So each head is judged against its own control only, and the two "
                       "heads' distances to their controls are not a comparison of the two heads.")
    return out


def _times(ratio: float) -> str:
    """'1.4x', '24x', '15,901x'."""
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"


def bookkeeping(folder, map_size: int) -> list[str]:
    """Check every *.csv in `folder` whose rows carry widths: mec_bits and mec_effective_bits, where present,
    must follow from them.
    Returns one line per table checked; ValueError names the first row that does not."""
    from pathlib import Path

    from . import records

    said = []
    for path in sorted(Path(folder).glob("*.csv")):
        rows = [r for r in records.read(path) if r.get("widths") not in (None, "")]
        rows = [r for r in rows if "mec_bits" in r or "mec_effective_bits" in r]
        for i, r in enumerate(rows):
            widths = parse_widths(r["widths"])
            want = {"mec_bits": capacity.mec(widths), "mec_effective_bits": capacity.mec_effective(widths, map_size)}
            for column, value in want.items():
                if r.get(column) not in (None, "") and int(r[column]) != value:
                    raise ValueError(f"{path.name}, row {i + 1} ({widths}): {column} is {int(r[column]):,}, but the "
                                     f"rules on those widths give {value:,}")
        if rows:
            said.append(f"{path.name}: {len(rows)} rows, mec_bits = capacity.mec(widths) and mec_effective_bits = "
                        f"capacity.mec_effective(widths, {map_size}) in every one")
    return said
