"""Figures for the notebooks (matplotlib; each function returns its Figure and computes nothing new)."""
from __future__ import annotations

from collections import defaultdict
from statistics import mean, pstdev
from typing import Sequence

import matplotlib.pyplot as plt
import torch

MARKERS = {"l1": "o", "l2": "s", "reservoir": "^", "magnitude": "D"}


def digit_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int = 8):
    """A grid of `per_class` digits for each class 0-9, labelled."""
    fig, axes = plt.subplots(10, per_class, figsize=(per_class * 0.9, 9.5))
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(images[idx[j]], cmap="gray_r")
        axes[c, 0].set_title(str(c), x=-0.3, y=0.2, fontsize=9)
    fig.suptitle("MNIST digits, one row per class")
    return fig


def class_balance(counts: dict[str, Sequence[int]]):
    """Bars of images per class for each split: counts = {"train": [...10], "test": [...10]}."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(counts)
    for i, (name, values) in enumerate(counts.items()):
        ax.bar([c + i * width for c in range(10)], values, width, label=f"{name} ({sum(values):,} images)")
    ax.set_xticks([c + 0.4 - width / 2 for c in range(10)], [str(c) for c in range(10)])
    ax.set_xlabel("digit class")
    ax.set_ylabel("images")
    ax.set_title("Class balance")
    ax.legend()
    fig.tight_layout()
    return fig


def training_curves(epochs: list[dict]):
    """Loss and accuracy (%) per epoch from train.fit's history."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = [e["epoch"] for e in epochs]
    a.plot(x, [e["loss"] for e in epochs], "o-", label="train")
    if "test_loss" in epochs[0]:
        a.plot(x, [e["test_loss"] for e in epochs], "s--", label="test")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy loss"), a.set_title("Loss"), a.legend()
    b.plot(x, [100 * e["accuracy"] for e in epochs], "o-", label="train (dropout on)")
    if "test_accuracy" in epochs[0]:
        b.plot(x, [100 * e["test_accuracy"] for e in epochs], "s--", label="test")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.set_title("Accuracy"), b.legend()
    for ax in (a, b):
        ax.set_xticks(x)
    fig.tight_layout()
    return fig


def confusion(matrix: torch.Tensor):
    """Confusion matrix: rows true class, columns predicted class, counts in the cells."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = int(matrix[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted class"), ax.set_ylabel("true class")
    ax.set_xticks(range(10)), ax.set_yticks(range(10))
    ax.set_title("Confusion matrix (test images)")
    fig.colorbar(im, ax=ax, label="images")
    fig.tight_layout()
    return fig


def capacity_table_bars(table: list[dict]):
    """Capacity in bits per Linear layer (log scale), from capacity.mec_table."""
    fig, ax = plt.subplots(figsize=(6, 3))
    names = [f"layer {r['layer']}\n{r['inputs']:,}->{r['live_neurons']:,}" for r in table]
    ax.bar(names, [r["capacity_bits"] for r in table])
    ax.set_yscale("log")
    ax.set_ylabel("capacity (bits, log scale)")
    ax.set_title(f"MEC per layer, total {sum(r['capacity_bits'] for r in table):,} bits")
    fig.tight_layout()
    return fig


def _by_method(rows, x, y):
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        series[r["method"]][r[x]].append(r[y])
    return series


def prune_compare(rows: list[dict]):
    """Test accuracy (%) against neurons removed and against MEC (bits), one line per method."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, pts in _by_method(rows, "removed", "test_accuracy").items():
        xs = sorted(pts)
        a.plot(xs, [100 * mean(pts[x]) for x in xs], marker=MARKERS.get(method, "o"), label=method)
    for method, pts in _by_method(rows, "mec_bits", "test_accuracy").items():
        xs = sorted(pts)
        b.plot(xs, [100 * mean(pts[x]) for x in xs], marker=MARKERS.get(method, "o"), label=method)
    a.set_xlabel("neurons removed from the pruned layer"), a.set_ylabel("test accuracy (%)")
    b.set_xlabel("MEC of the head (bits)"), b.set_ylabel("test accuracy (%)")
    a.set_title("Accuracy against neurons removed"), b.set_title("Accuracy against capacity")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sizes(rows: list[dict]):
    """Parameters and saved file size (MB) per cycle, one line per method."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    for method, pts in _by_method(rows, "cycle", "parameters").items():
        xs = sorted(pts)
        a.plot(xs, [mean(pts[x]) / 1e6 for x in xs], marker=MARKERS.get(method, "o"), label=method)
    for method, pts in _by_method(rows, "cycle", "model_bytes").items():
        xs = sorted(pts)
        b.plot(xs, [mean(pts[x]) / 1e6 for x in xs], marker=MARKERS.get(method, "o"), label=method)
    a.set_xlabel("cycle"), a.set_ylabel("parameters (millions)"), a.set_title("Parameters of the head")
    b.set_xlabel("cycle"), b.set_ylabel("saved head (MB)"), b.set_title("Checkpoint size on disk")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def spread(rows: list[dict], x: str, y: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per method: (x, mean y, population std of y, number of seeds) for each x, sorted by x."""
    out = {}
    for method, pts in _by_method(rows, x, y).items():
        out[method] = [(xv, mean(pts[xv]), pstdev(pts[xv]), len(pts[xv])) for xv in sorted(pts)]
    return out


def capacity_curve(rows: list[dict], seed_rows: list[dict] | None = None):
    """The report's Figure 1 done properly: correct test points and accuracy against MEC, mean +- std over seeds."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for method, pts in spread(rows, "mec_bits", "test_correct").items():
        xs = [p[0] for p in pts]
        a.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker=MARKERS.get(method, "o"),
                   capsize=3, label=f"{method} (n={pts[0][3]} seeds)")
    for method, pts in spread(rows, "mec_bits", "test_accuracy").items():
        xs = [p[0] for p in pts]
        b.errorbar(xs, [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], marker=MARKERS.get(method, "o"),
                   capsize=3, label=method)
    total = rows[0]["test_total"]
    if seed_rows:
        b.plot([r["mec_bits"] for r in seed_rows], [100 * r["test_accuracy"] for r in seed_rows], "k*--",
               markersize=10, label="2019 report (seed table)")
        if total == 10000:
            a.plot([r["mec_bits"] for r in seed_rows], [round(r["test_accuracy"] * 10000) for r in seed_rows],
                   "k*--", markersize=10, label="2019 report (seed table)")
    a.set_xlabel("MEC of the head (bits)"), a.set_ylabel(f"correct test points (of {total:,} images)")
    b.set_xlabel("MEC of the head (bits)"), b.set_ylabel("test accuracy (%)")
    a.set_title("Generalization against capacity"), b.set_title("Accuracy against capacity, with the report's")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def rho_per_cycle(rows: list[dict]):
    """rho = correct test points / MEC per cycle, mean +- std over seeds, one line per method."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method, pts in spread(rows, "cycle", "rho").items():
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker=MARKERS.get(method, "o"), capsize=3, label=method)
    ax.set_xlabel("cycle"), ax.set_ylabel("rho (correct points per bit of MEC)")
    ax.set_title("Generalization ratio rho per cycle")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def knee(rows: list[dict], tolerance: float = 1.0):
    """Test accuracy against MEC (log axis) along a pruning run: where accuracy starts to fall.

    The dashed line is `tolerance` points below the unpruned head (cycle 0); the star is the
    smallest head above it, crosses are heads below it.
    """
    from .study import smallest_within

    base = 100 * rows[0]["test_accuracy"]
    best = smallest_within(rows, tolerance)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = [r["mec_bits"] for r in rows]
    y = [100 * r["test_accuracy"] for r in rows]
    ax.plot(x, y, "o-", color="C0", label="pruning cycles (right to left)")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate("-".join(r["widths"].split("-")[1:-1]), (xi, yi), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7)
    low = [(xi, yi) for xi, yi in zip(x, y) if yi < base - tolerance - 1e-9]
    if low:
        ax.plot(*zip(*low), "x", color="C3", ms=11, mew=2, label="more than the tolerance below")
    ax.axhline(base - tolerance, color="gray", ls="--", lw=1,
               label=f"{tolerance:g} point{'' if tolerance == 1 else 's'} below the unpruned head")
    ax.plot([best["mec_bits"]], [100 * best["test_accuracy"]], "*", color="C2", ms=17,
            label=f"smallest within tolerance ({best['mec_bits']:,} bits)")
    ax.set_xscale("log")
    ax.set_xlabel("MEC of the head (bits, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("The knee: accuracy against capacity as the head is pruned")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def compression(table: list[dict], reference: dict | None = None):
    """Saved file size (log axis) of each storage of one head, with its ratio and test accuracy.

    reference: a row for the unpruned float32 head (storage, bytes, ratio 1, test_accuracy), drawn first.
    """
    if reference is not None:
        table = [reference, *table]
    fig, ax = plt.subplots(figsize=(7.5, 0.7 * len(table) + 1.3))
    names = [r["storage"] for r in table]
    sizes_mb = [r["bytes"] / 1e6 for r in table]
    bars = ax.barh(names, sizes_mb, color=[f"C{i}" for i in range(len(table))])
    for bar, r in zip(bars, table):
        ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2,
                f"{r['bytes'] / 1e6:.1f} MB, {r['ratio']:.0f}x smaller, {r['test_accuracy']:.2%}", va="center",
                fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(sizes_mb) / 2, max(sizes_mb) * 30)
    ax.invert_yaxis()
    ax.set_xlabel("file on disk (MB, log scale); ratio against the unpruned float32 head")
    ax.set_title("Quantizing the smallest head within tolerance (each file loaded back and tested)")
    fig.tight_layout()
    return fig


def requirement(progressions: dict[str, list[dict]], capacities: dict[str, int] | None = None):
    """Bits the labels need (thresholds method) against training images, per representation, on log axes.

    progressions: {name: capacity.requirement_progression rows}; capacities: {label: MEC bits}
    drawn as horizontal lines (the capacity the head has).
    """
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for i, (name, rows) in enumerate(progressions.items()):
        n = [r["n"] for r in rows]
        ax.plot(n, [r["max_bits"] for r in rows], "o-", color=f"C{i}", label=f"{name}: max requirement")
        ax.plot(n, [r["expected_bits"] for r in rows], "s--", color=f"C{i}", label=f"{name}: expected requirement")
    for j, (label, bits) in enumerate((capacities or {}).items()):
        ax.axhline(bits, color=f"C{j + len(progressions) + 1}", lw=1.2, ls=":", label=f"{label}: {bits:,} bits")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("bits (log scale)")
    ax.set_title("Capacity the labels need (thresholds method) and capacity the head has")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
