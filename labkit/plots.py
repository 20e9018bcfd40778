"""Figures for notebooks 01, 02 and 04 (matplotlib; each function returns its Figure); the pruning study's curves
are in `labkit.pruning_plots`. Capacity axes are in millions of bits, no "1e8" offset (`bits_axis`, shared).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .config import CLASSES


def bits_axis(ax, axis: str = "x") -> None:
    """Capacity ticks in millions of bits (102.8M), on a linear or log axis (1, 2, 5 x 10^k on a log axis)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:,.3g}M" if v >= 1e5 else
                                             f"{v / 1e3:,.3g}k" if v >= 1e3 else f"{v:,.0f}"))
    if (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log":
        target.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        target.set_minor_formatter(NullFormatter())
    else:  # a narrow linear range: few ticks, so their labels never overlap
        target.set_major_locator(MaxNLocator(nbins=4))


def count_axis(ax, axis: str = "x") -> None:
    """Plain counts with thousands separators (1, 2, 5 x 10^k on a log axis)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if (ax.get_xscale() if axis == "x" else ax.get_yscale()) == "log":
        target.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        target.set_minor_formatter(NullFormatter())


def digit_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int = 8):
    """A grid of `per_class` digits for each class 0-9, one row per class."""
    fig, axes = plt.subplots(CLASSES, per_class, figsize=(per_class * 0.75, 8.2),
                             gridspec_kw=dict(wspace=0.05, hspace=0.05))
    for c in range(CLASSES):
        idx = torch.nonzero(labels == c).flatten()[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(idx):
                ax.imshow(images[idx[j]], cmap="gray_r")
        axes[c, 0].set_ylabel(str(c), rotation=0, labelpad=10, va="center", fontsize=10)
    fig.suptitle("MNIST digits, one row per class", y=0.915)
    return fig


def class_balance(counts: dict[str, Sequence[int]]):
    """Bars of images per class for each subset: counts = {"train": [...10], "validation": [...10], ...}."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(counts)
    for i, (name, values) in enumerate(counts.items()):
        ax.bar([c + i * width for c in range(CLASSES)], values, width, label=f"{name} ({sum(values):,} images)")
    ax.set_xticks([c + 0.4 - width / 2 for c in range(CLASSES)], [str(c) for c in range(CLASSES)])
    ax.set_xlabel("digit class")
    ax.set_ylabel("images")
    ax.set_title("Images per class in the subsets this profile uses", pad=28)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(counts), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(epochs: list[dict]):
    """Loss and accuracy (%) per epoch from train.fit's history (training batches, and validation)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = [e["epoch"] for e in epochs]
    a.plot(x, [e["loss"] for e in epochs], "o-", label="training batches")
    if "val_loss" in epochs[0]:
        a.plot(x, [e["val_loss"] for e in epochs], "s--", label="validation")
    b.plot(x, [100 * e["accuracy"] for e in epochs], "o-", label="training batches (dropout on)")
    if "val_accuracy" in epochs[0]:
        b.plot(x, [100 * e["val_accuracy"] for e in epochs], "s--", label="validation")
    kept = next((e["epoch"] for e in epochs if str(e.get("best")) == "True"), None)
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if kept is not None:  # the epoch early stopping kept: every later notebook starts from it
            ax.axvline(kept, color="C2", lw=1.5, ls=":", label=f"kept: epoch {kept} (best validation)")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy loss"), a.set_title("Loss"), a.legend(fontsize=8)
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.set_title("Accuracy"), b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(matrix: torch.Tensor, title: str = "Confusion matrix (test images)", xlabel: str = "predicted class",
              ylabel: str = "true class"):
    """Confusion matrix: rows true class (or first rater), columns predicted class (second rater), counts."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = int(matrix[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > matrix.max() / 2 else "black")
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    ax.set_xticks(range(CLASSES)), ax.set_yticks(range(CLASSES))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="images")
    fig.tight_layout()
    return fig


def capacity_table_bars(table: list[dict]):
    """Capacity in bits per Linear layer (log scale), from capacity.mec_table or widths_table."""
    fig, ax = plt.subplots(figsize=(6, 3))
    names = [f"layer {r['layer']}\n{r['inputs']:,}->{r['live_neurons']:,}" for r in table]
    ax.bar(names, [r["capacity_bits"] for r in table])
    ax.set_yscale("log")
    ax.set_ylabel("capacity (bits, log scale)")
    ax.set_title(f"MEC per layer, total {sum(r['capacity_bits'] for r in table):,} bits")
    fig.tight_layout()
    return fig


def requirement(progressions: dict[str, list[dict]], capacities: dict[str, int] | None = None,
                measured: dict | None = None):
    """Bits the labels need (thresholds method) against training images, log axes. `progressions`: {name:
    capacity.requirement_progression rows}; `capacities`: {label: MEC bits}, lines; `measured`: 04's ladder (star)."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (name, rows) in enumerate(progressions.items()):
        n = [r["n"] for r in rows]
        ax.plot(n, [r["max_bits"] for r in rows], "o-", color=f"C{i}", label=f"{name}: max")
        ax.plot(n, [r["expected_bits"] for r in rows], "s--", color=f"C{i}", label=f"{name}: expected")
    merged: dict[int, list[str]] = {}
    for label, bits in (capacities or {}).items():  # entries of one value are one line, both named
        merged.setdefault(int(bits), []).append(label)
    for j, (bits, labels) in enumerate(merged.items()):
        ax.axhline(bits, color=f"C{j + len(progressions) + 1}", lw=1.4, ls=(":", "-.", "--")[j % 3],
                   label=f"{' = '.join(labels)}: {bits:,} bits")
    if measured:
        pick = measured["chosen"]
        ax.plot([measured["images"]], [pick["mec_effective_bits"]], "*", color="black", ms=16, ls="none",
                label=f"measured: smallest head within {measured['tolerance']:g} point(s) of the best on validation, "
                      f"{pick['head']}: {pick['mec_effective_bits']:,} bits (effective MEC)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    bits_axis(ax, "y")
    count_axis(ax, "x")
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("bits (log scale)")
    ax.set_title("Capacity the labels need (thresholds method" + (", and measured" if measured else "")
                 + ") and capacity the head has")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def memorization(rows: list[dict]):
    """Bits of random labels memorized against MEC (log axes), from memorization.csv rows: open markers at the
    nominal MEC, filled at the effective one; a triangle: the head fitted every image there was. Lines: stored =
    MEC, and MacKay's 2 bits per parameter (parameters are within 2% of the nominal MEC here)."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10.5, 5.4))
    for i, r in enumerate(rows):
        every = str(r["all_images"]) == "True"
        color, marker = f"C{i % 10}", "^" if every else "o"
        twin = int(r.get("copies", 1) or 1) > 1  # a twin lands on its one-copy head: a ring around it, not over it
        y = max(r["bits_stored"], 1)
        ax.plot([r["mec_bits"]], [y], marker, color=color, mfc="white", ms=9)
        ax.plot([r["mec_effective_bits"]], [y], marker, color=color, ms=18 if twin else 9,
                mfc="none" if twin else color, mew=2 if twin else 1,
                label=f"{r['head']}: {r['images_memorized']:,} images" + (" (the ring)" if twin else "")
                + (" (▲: all there were)" if every else ""))
        if r["mec_bits"] != r["mec_effective_bits"]:
            ax.annotate("", (r["mec_effective_bits"], y), (r["mec_bits"], y),
                        arrowprops=dict(arrowstyle="->", color=color, ls="--"))
    low = min(min(r["mec_effective_bits"] for r in rows), min(max(r["bits_stored"], 1) for r in rows)) / 2
    high = 2 * max(r["mec_bits"] for r in rows)
    ax.plot([low, high], [low, high], color="0.3", lw=1, label="stored = MEC (the four rules)")
    ax.plot([low, high / 2], [2 * low, high], color="0.3", lw=1, ls=":",
            label="MacKay: 2 bits per parameter (parameters ≈ MEC here)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    bits_axis(ax, "x")
    bits_axis(ax, "y")
    criterion = rows[0]["criterion"]
    ax.set_xlabel("MEC (bits, log scale): open = nominal (repeated inputs counted), filled = effective "
                  "(distinct inputs)")
    ax.set_ylabel(f"bits stored at ≥ {criterion:.0%} training accuracy\n(random labels, log scale)")
    ax.set_title("How much each head memorized of random labels, against its MEC")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="none", marker="^", color="0.4", label="▲ fitted every training image there was: "
                       "it could store more"),
                Line2D([], [], ls="none", marker="o", color="0.4", mfc="white",
                       label="open: at its nominal MEC; filled: at its effective MEC")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              markerscale=0.7, labelspacing=1.1, borderaxespad=0)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
