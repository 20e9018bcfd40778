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
