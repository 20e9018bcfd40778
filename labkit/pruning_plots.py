"""The pruning study's figures (notebooks 03 and 04; each returns its Figure): means over seeds with one-std error
bars, beside the controls "none" (unpruned, trained as long; dashed) and "scratch" (same widths; crosses).
"""
from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean, stdev
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .config import hidden_text
from .plots import bits_axis

MARKERS = {"l1": "o", "l2": "s", "reservoir": "^", "magnitude": "D"}
LINESTYLES = ("-", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))  # the methods, told apart by line as well as colour and marker
CONTROL_STYLE = dict(color="black", ls="--", marker="o", mfc="white", label="unpruned, trained as long (control)")
SCRATCH_STYLE = dict(color="C4", marker="X", ms=10, ls="none", label="same widths from scratch, as long")


def _whole_cycles(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(rows, method: str, x: str, y: str) -> list[tuple[float, float, float]]:
    """(x, mean y, sample standard deviation of y over seeds, as the tables give it) for one method, by x."""
    points = defaultdict(list)
    for r in rows:
        if r["method"] == method:
            points[r[x]].append(r[y])
    return [(k, mean(v), stdev(v) if len(v) > 1 else 0.0) for k, v in sorted(points.items())]


CAPACITY_LABEL = {"mec_effective_bits": "effective MEC of the head (bits on its distinct inputs;\nat 32 px the 25,088 "
                                        "inputs are 49 copies of 512)",
                  "mec_bits": "MEC of the head\n(bits, the four rules on its nominal inputs)"}


def _capacity_key(rows) -> str:
    """The capacity figures plot against: the effective MEC where the rows carry it (older tables: the nominal)."""
    return "mec_effective_bits" if all(r.get("mec_effective_bits") not in (None, "") for r in rows) else "mec_bits"


def _pruning_methods(rows) -> list[str]:
    return [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("none", "scratch")]


def accuracy_vs_capacity(rows: list[dict], rows_2019: list[dict] | None = None):
    """Validation and test accuracy against MEC, one line per method (mean +- std over seeds), with both controls;
    the control is drawn at the pruned heads' MEC of its cycle, so each vertical gap is what pruning did at equal
    training. `rows_2019`: the 2019 report's table, in a third panel against the nominal MEC it counted."""
    panels = ("val", "test", "2019") if rows_2019 else ("val", "test")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.6))  # each panel its own range
    methods = _pruning_methods(rows)
    seeds = len({r.get("seed", 0) for r in rows})
    arms = [*methods, "none", "scratch"]

    def draw(ax, xs, pts, nudge, **style):
        """An arm nudged sideways so near-equal points stay visible; error bars only over several seeds."""
        xs = [x * nudge for x in xs]
        if seeds > 1:
            ax.errorbar(xs, [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], capsize=3, **style)
        else:
            ax.plot(xs, [100 * p[1] for p in pts], **style)

    for ax, panel in zip(axes, panels):
        split = "test" if panel == "2019" else panel
        key = "mec_bits" if panel == "2019" else _capacity_key(rows)
        mec_at = {r["cycle"]: r[key] for r in rows if methods and r["method"] == methods[0]}
        span = math.log(max(mec_at.values()) / min(mec_at.values())) if mec_at and min(mec_at.values()) else 0
        step = 0.012 * span if span else 0.004
        nudge = {m: math.exp(step * (i - (len(arms) - 1) / 2)) for i, m in enumerate(arms)}
        y = f"{split}_accuracy"
        for i, m in enumerate(methods):
            pts = _series(rows, m, key, y)
            draw(ax, [p[0] for p in pts], pts, nudge[m], marker=MARKERS.get(m, "o"),
                 ls=LINESTYLES[i % len(LINESTYLES)], label=m)
        ctl = [(mec_at[c], v, s) for c, v, s in _series(rows, "none", "cycle", y) if c in mec_at]
        if ctl:
            draw(ax, [p[0] for p in ctl], ctl, nudge["none"], **{
                **CONTROL_STYLE, "label": "unpruned, trained as long (control): drawn at the pruned heads' MEC "
                                          "of its cycle, its own is the unpruned head's"})
        scratch = _series(rows, "scratch", key, y)
        if scratch:
            draw(ax, [p[0] for p in scratch], scratch, nudge["scratch"], **SCRATCH_STYLE)
        if panel == "2019":
            ax.plot([r["mec_bits"] for r in rows_2019], [100 * r["test_accuracy"] for r in rows_2019], "k*:",
                    ms=9, alpha=0.6, label="2019 report (its test set, one run)")
            ax.set_title("Test accuracy beside the 2019 report,\nboth against the nominal MEC it counted")
            ax.set_xlabel(CAPACITY_LABEL["mec_bits"])
        else:
            ax.set_title(f"{'Validation' if split == 'val' else 'Test'} accuracy"
                         + (f", mean ± std over {seeds} seeds" if seeds > 1 else ", one seed"))
            ax.set_xlabel(CAPACITY_LABEL[key])
        ax.invert_xaxis()
        bits_axis(ax)
        ax.grid(alpha=0.3)
        ax.tick_params(labelleft=True)
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Pruning runs left to right: capacity falls as neurons are removed\n(the arms of one cycle are "
                 "drawn a little apart so that none hides another)", fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def rho_per_cycle(rows: list[dict]):
    """rho (correct test points per MEC bit) per cycle, mean +- std over seeds; nominal MEC left, effective right."""
    keys = [k for k in ("rho", "rho_effective") if all(r.get(k) not in (None, "") for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    arms = [*_pruning_methods(rows), "none"]
    for ax, key in zip(axes[0], keys):
        for i, m in enumerate(arms):
            pts = _series(rows, m, "cycle", key)
            if not pts:
                continue
            style = (dict(CONTROL_STYLE) if m == "none" else
                     dict(marker=MARKERS.get(m, "o"), ls=LINESTYLES[i % len(LINESTYLES)], label=m))
            shift = 0.06 * (i - (len(arms) - 1) / 2)  # side by side: the methods' lines lie within a hair
            ax.errorbar([p[0] + shift for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=3,
                        **style)
        ax.set_xlabel("cycle")
        ax.set_ylabel("rho (correct test points per bit)")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.set_title("rho on the nominal MEC" if key == "rho" else "rho on the effective MEC (distinct inputs)")
        _whole_cycles(ax)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    title = "Generalization ratio rho = correct test points / MEC, per cycle"
    first, last = (_series(rows, arms[0], "cycle", k) for k in ("mec_bits", "test_accuracy"))
    if len(first) > 1 and len(last) > 1:  # what moves rho: the count of bits, not the accuracy
        title += (f"\n{arms[0]}: MEC {100 * (first[-1][1] / first[0][1] - 1):+.1f}% from cycle {first[0][0]} to "
                  f"{first[-1][0]}, test accuracy {100 * (last[-1][1] - last[0][1]):+.2f} points: rho rises because "
                  "the head's MEC falls as neurons go, not because it classifies more test images right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def knee(table: list[dict], tolerance: float = 1.0):
    """Validation accuracy against MEC (log axis) along a knee search (knee.knee_table rows), beside the control:
    the band is the tolerance below each probe's control, the star the knee, crosses probes below the band, the
    purple X the knee's widths from scratch; test drawn faintly."""
    rows = [r for r in table if r["method"] != "scratch"]
    scratch = [r for r in table if r["method"] == "scratch"]
    seeds = len({r.get("seed", 0) for r in rows})
    key = _capacity_key(rows)
    at = {c: [r for r in rows if r["cycle"] == c] for c in {r["cycle"] for r in rows}}
    cycles = sorted(at, key=lambda c: -at[c][0][key])  # the probes by capacity, largest first (bisection order aside)
    x = [at[c][0][key] for c in cycles]

    def spread(c, key):
        values = [100 * r[key] for r in at[c]]
        return mean(values), (stdev(values) if len(values) > 1 else 0.0)

    val, ctl, test = ([spread(c, k) for c in cycles] for k in ("val_accuracy", "control_val_accuracy", "test_accuracy"))
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    ax.fill_between(x, [m - tolerance for m, _ in ctl], [m for m, _ in ctl], color="0.85",
                    label=f"within {tolerance:g} point(s) of the control")
    ax.errorbar(x, [m for m, _ in ctl], yerr=[d for _, d in ctl], capsize=3, **{**CONTROL_STYLE, "marker": None})
    ax.errorbar(x, [m for m, _ in val], yerr=[d for _, d in val], fmt="o-", color="C0", capsize=3,
                label="pruned head, validation")
    ax.plot(x, [m for m, _ in test], "o:", color="C0", alpha=0.35, label="pruned head, test")
    knee_at = next(i for i, c in enumerate(cycles) if at[c][0]["smallest"])
    outside_next = next((i for i in range(knee_at + 1, len(cycles)) if not at[cycles[i]][0]["step_within_tolerance"]),
                        None)
    # name the knee and the probe just outside it; others only at least 0.1 decade from every named one
    named: list[float] = []
    for i in sorted(range(len(cycles)), key=lambda i: (i not in (knee_at, outside_next), i)):
        here = math.log10(x[i])
        if i not in (knee_at, outside_next) and any(abs(here - n) < 0.1 for n in named):
            continue
        named.append(here)
        up = i == knee_at or (i != outside_next and i % 2 == 0)
        ax.annotate(hidden_text(at[cycles[i]][0]["widths"]), (x[i], val[i][0]), textcoords="offset points",
                    xytext=(0, 14 if up else -20), ha="center", fontsize=7,
                    fontweight="bold" if i == knee_at else "normal")
    out = [(xi, m) for c, xi, (m, _) in zip(cycles, x, val) if not at[c][0]["step_within_tolerance"]]
    if out:
        ax.plot([p[0] for p in out], [p[1] for p in out], "x", color="C3", ms=11, mew=2,
                label="more than the tolerance below")
    best = next((xi, m) for c, xi, (m, _) in zip(cycles, x, val) if at[c][0]["smallest"])
    ax.plot([best[0]], [best[1]], "*", color="C2", ms=17,
            label=f"smallest within tolerance ({best[0]:,.0f} bits)")
    if scratch:
        values = [100 * r["val_accuracy"] for r in scratch]
        ax.errorbar([scratch[0][key]], [mean(values)], yerr=[stdev(values) if len(values) > 1 else 0.0],
                    capsize=3, **SCRATCH_STYLE)
    ax.set_xscale("log")
    bits_axis(ax)
    ax.invert_xaxis()
    ax.set_xlabel(CAPACITY_LABEL[key] + ", log scale; pruning runs left to right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("The knee: each probe pruned in one step and recovered, beside the start trained as long"
                 + (f"\n(mean ± std over {seeds} seeds; probes too close to name are left unnamed, knee.csv lists "
                    "them)" if seeds > 1 else "\n(one seed)"), fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def compression(table: list[dict], reference: dict | None = None):
    """Saved file size (log axis) of each storage of one head, with its ratio and test accuracy.
    reference: the unpruned float32 head's row (storage, bytes, test_accuracy), drawn first."""
    entries = ([{**reference, "ratio": None}] if reference else []) + list(table)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(entries) + 1.4))
    names = [("knee head, " if reference and r is not entries[0] else "") + r["storage"] for r in entries]
    sizes_mb = [r["bytes"] / 1e6 for r in entries]
    bars = ax.barh(names, sizes_mb, color=[f"C{i}" for i in range(len(entries))])
    for bar, r in zip(bars, entries):
        ratio = ("the reference" if r["ratio"] is None else "the same size" if r["ratio"] < 1.05 else
                 f"{r['ratio']:.1f}x smaller" if r["ratio"] < 10 else f"{r['ratio']:.0f}x smaller")
        ax.text(1.02, bar.get_y() + bar.get_height() / 2, f"{r['bytes'] / 1e6:,.1f} MB, {ratio}, "
                f"test {r['test_accuracy']:.2%}", va="center", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    ax.set_xlim(min(sizes_mb) / 2, max(sizes_mb) * 1.3)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_yaxis()
    ax.set_xlabel("file on disk (MB, log scale)")
    ax.set_title("Seed 0's knee head, stored three ways, beside the unpruned head"
                 "\n(each file read back from disk and tested)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Deep Compression, weight by weight

def _kept_axis(ax) -> None:
    """A log axis of the fraction of weights kept, in percent, pruning running left to right."""
    from matplotlib.ticker import FixedLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()


def sensitivity(rows: list[dict], chosen: Sequence[float] | None = None, tolerance: float | None = None):
    """Validation accuracy (%) with one layer magnitude-pruned alone (no retraining) against the share of it kept,
    per layer (finegrained.sensitivity_scan rows); `chosen` sparsities as rings, `tolerance` (points) as a band."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    layers = sorted({r["layer"] for r in rows})
    base = next(r["val_accuracy"] for r in rows if r["sparsity"] == 0)
    if tolerance is not None:
        ax.axhspan(100 * base - tolerance, 100 * base, color="0.88",
                   label=f"within {tolerance:g} point(s) of the unpruned head")
    for i, layer in enumerate(layers):
        mine = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["sparsity"])
        kept = [1 - r["sparsity"] for r in mine]
        name = mine[0].get("name", f"fc{layer + 1}")
        ax.plot(kept, [100 * r["val_accuracy"] for r in mine], "o-", color=f"C{i}", ms=4,
                label=f"{name} ({mine[0]['weights']:,} weights)")
        if chosen is not None and chosen[i] > 0:
            at = min(mine, key=lambda r: abs(r["sparsity"] - chosen[i]))
            # ring size grows by layer, so rings at the same share nest
            ax.plot([1 - chosen[i]], [100 * at["val_accuracy"]], "o", ms=10 + 6 * i, mfc="none", mec=f"C{i}", mew=2)
    _kept_axis(ax)
    ax.set_xlabel("weights of the layer kept (log scale; the others pruned by magnitude, no retraining)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Sensitivity of each layer to fine-grained pruning" +
                 ("\n(rings, larger for each later layer: the share each layer was pruned to)"
                  if chosen is not None else ""))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def weight_histograms(histograms: list[dict]):
    """Per layer (deepcompression.weight_histograms): weights before pruning, kept after pruning, and the shared
    values after trained quantization (bar height: weights sharing it); counts on log axes."""
    fig, axes = plt.subplots(len(histograms), 3, figsize=(11, 2.3 * len(histograms) + 0.6), squeeze=False)
    for row, h in zip(axes, histograms):
        edges = torch.tensor(h["edges"])
        centres, width = (edges[1:] + edges[:-1]) / 2, float(edges[1] - edges[0])
        kept = h["kept"] / h["weights"]
        for ax, counts, color, title in ((row[0], h["before"], "C0", f"{h['name']}: {h['weights']:,} weights"),
                                         (row[1], h["pruned"], "C1", f"after pruning: {kept:.1%} kept")):
            ax.bar(centres.tolist(), counts, width=width, color=color)
            ax.set_title(title, fontsize=9)
        row[2].bar(h["codebook"], h["codebook_counts"], width=width, color="C2")
        row[2].set_title(f"after trained quantization: {len(h['codebook'])} shared values", fontsize=9)
        for ax in row:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(float(edges[0]), float(edges[-1]))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # fc1's many small ticks ran into each other
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("weights (log)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("weight value", fontsize=8)
    fig.suptitle("Weights before pruning, after pruning, after trained quantization (Deep Compression)")
    fig.tight_layout()
    return fig
