"""Metrics of predictions: the confusion matrix, Cohen's kappa, and the FLOPs of a training step."""
from __future__ import annotations

import torch


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """classes x classes counts: row = true label (or first rater), column = prediction (second rater)."""
    index = labels.long() * classes + predictions.long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Share of each true class (row) predicted correctly; a class with no images gives NaN."""
    c = confusion.double()
    return (c.diag() / c.sum(1)).tolist()


def cohens_kappa(confusion: torch.Tensor) -> float:
    """Cohen's kappa = (p_o - p_e) / (1 - p_e) from a confusion matrix (the report wrote (1 - p_o) / (1 - p_e)): p_o
    the diagonal's share, p_e the chance agreement from the marginals; 1 is perfect agreement, 0 chance."""
    c = confusion.double()
    n = c.sum()
    p_o = c.diag().sum() / n
    p_e = (c.sum(0) * c.sum(1)).sum() / (n * n)
    return float((p_o - p_e) / (1 - p_e))


def training_flops(widths) -> int:
    """FLOPs of one training step per image for a head of these widths: forward, weight gradients, and
    input gradients for every layer but the first (its input, the cached features, needs none)."""
    macs = [a * b for a, b in zip(widths[:-1], widths[1:])]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])
