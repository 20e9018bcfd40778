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
    """Cohen's kappa = (p_o - p_e) / (1 - p_e) from a confusion matrix (the report wrote (1 - p_o) / (1 - p_e)).

    p_o is the share of agreement (the diagonal), p_e the agreement expected by chance from the two
    raters' marginal frequencies. 1 is perfect agreement, 0 no better than chance.
    """
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


def pack_right(right: torch.Tensor) -> str:
    """Which images a head got right (bool, N) as "x" and hex digits, 8 images a byte (a history row keeps it)."""
    import numpy as np

    return "x" + np.packbits(right.cpu().numpy().astype(bool)).tobytes().hex()  # "x": never read as a number


def unpack_right(text: str, n: int) -> torch.Tensor:
    """The inverse of `pack_right`: a bool tensor of the first `n` images; ValueError if `text` is too short."""
    import numpy as np

    if not isinstance(text, str) or not text.startswith("x"):
        raise ValueError(f"{str(text)[:20]!r} is not a correctness record (pack_right writes 'x' and hex digits)")
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text[1:]), dtype=np.uint8))
    if len(bits) < n:
        raise ValueError(f"the correctness record holds {len(bits)} images, {n} expected")
    return torch.from_numpy(bits[:n].astype(bool))
