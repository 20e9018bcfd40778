"""Memory-Equivalent Capacity (MEC, integer bits) by the four rules of Friedland, Krell, Metere (arXiv 1810.02328):
1. a perceptron outputs at most 1 bit; 2. its capacity is its parameters (weights + bias) in bits; 3. capacities in
parallel add up; 4. a layer fed by another is capped by what that layer can output. Per-layer tables, bounds, the
ratio rho, the bits the data needs (thresholds method), MEC on distinct inputs when inputs repeat."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from . import checks
from .config import CLASSES

RULES = ("previous", "bottleneck")
HEAD_INPUTS = 512 * 7 * 7  # what VGG16's head reads: 512 feature maps of 7 x 7 after its adaptive pool
VGG16_HEAD = (HEAD_INPUTS, 4096, 4096, 256, CLASSES)  # the study's head: inputs, three hidden layers, classes


def _check_widths(widths: Sequence[int]) -> list[int]:
    return checks.integers("widths", widths, minimum=1, length=2,
                           hint="give [inputs, n1, ..., outputs], e.g. [25088, 4096, 4096, 256, 10]")


def rule4(parameters: int, upstream: Sequence[int], rule: str = "previous") -> int:
    """Rule 4 (written only here): a layer's `parameters` bits capped by what reaches it. upstream: [inputs, n1,
    ..., n_{l-1}]; the first layer is not capped (real-valued inputs), later ones at n_{l-1} (rule "previous", the
    report's) or at the narrowest width upstream, inputs included (rule "bottleneck", TFMeter's stricter reading)."""
    if len(upstream) < 2:
        return parameters
    return min(parameters, upstream[-1] if rule == "previous" else min(upstream))


def layer_capacities(widths: Sequence[int], rule: str = "previous") -> list[int]:
    """Bits of each layer of a dense net [inputs, n1, ..., nL]: (n_{l-1} + 1) * n_l parameters, capped by `rule4`."""
    checks.choice("rule", rule, RULES)
    widths = _check_widths(widths)
    return [rule4((widths[l - 1] + 1) * widths[l], widths[:l], rule) for l in range(1, len(widths))]


def mec(widths: Sequence[int], rule: str = "previous") -> int:
    """MEC in bits of a dense net [inputs, n1, ..., nL]; mec([25088, 4096, 4096, 256, 10]) = 102,772,992."""
    return sum(layer_capacities(widths, rule))


def report_slip() -> dict:
    """The 2019 report's "almost 822 million bits" (its first layer's 25,088 x 4,096 weights x 8, bits to a byte)
    beside the rules' figure for the same head."""
    report_bits = HEAD_INPUTS * VGG16_HEAD[1] * 8
    mec_bits = mec(VGG16_HEAD)
    return {"report_bits": report_bits, "mec_bits": mec_bits, "ratio": report_bits / mec_bits}


def parameter_count(widths: Sequence[int]) -> int:
    """Weights plus biases of a dense net [inputs, n1, ..., nL]."""
    widths = _check_widths(widths)
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def bounds(widths: Sequence[int]) -> dict[str, int]:
    """Upper bounds in bits: 1 bit per parameter (lossless memory) and 2 bits per parameter (MacKay's 50% point)."""
    p = parameter_count(widths)
    return {"one_bit_per_parameter": p, "two_bits_per_parameter": 2 * p}


def _linears(model: nn.Module) -> list[nn.Linear]:
    head = getattr(model, "classifier", model)
    if hasattr(head, "linears"):
        return head.linears()
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def live_widths(model: nn.Module) -> list[int]:
    """[inputs, live n1, ..., live nL, classes]: a hidden neuron whose incoming weights are all zero is dead."""
    lin = _linears(model)
    if not lin:
        raise ValueError("the model has no Linear layers to measure")
    widths = [lin[0].in_features]
    for i, layer in enumerate(lin):
        if i == len(lin) - 1:
            widths.append(layer.out_features)
        else:
            widths.append(_live_rows(layer.weight.detach()))
    return widths


def _live_rows(w: torch.Tensor) -> int:
    """Rows of `w` with a nonzero entry; a row is read whole only when its first 16 entries are zero (else every
    cycle read the 400 MB first layer whole)."""
    live = (w[:, :16] != 0).any(dim=1)
    unsure = (~live).nonzero().squeeze(1)
    for i in range(0, len(unsure), 256):
        rows = unsure[i:i + 256]
        live[rows] = (w[rows] != 0).any(dim=1)
    return int(torch.count_nonzero(live))


def widths_table(widths: Sequence[int], rule: str = "previous") -> list[dict]:
    """One row per layer of a dense net [inputs, n1, ..., nL]: inputs, neurons, parameters, capacity in bits."""
    caps = layer_capacities(widths, rule)
    return [{"layer": i, "inputs": widths[i], "live_neurons": widths[i + 1],
             "parameters": (widths[i] + 1) * widths[i + 1], "capacity_bits": cap} for i, cap in enumerate(caps)]


def mec_table(model: nn.Module, rule: str = "previous") -> list[dict]:
    """One row per Linear layer of the head: inputs, live neurons, parameters (as stored), capacity in bits."""
    rows = widths_table(live_widths(model), rule)
    for row, layer in zip(rows, _linears(model)):
        row["parameters"] = layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)
    return rows


def mec_of(model: nn.Module, rule: str = "previous") -> int:
    """MEC in bits of a model's head, counting live neurons only."""
    return mec(live_widths(model), rule)


def generalization_ratio(correct: int, mec_bits: int) -> float:
    """rho = correctly classified test points / MEC in bits. rho > 1 means the model must have generalized."""
    mec_bits = checks.integer("mec_bits", mec_bits, minimum=1)
    correct = checks.integer("correct", correct, minimum=0, hint="it counts correctly classified test points")
    return correct / mec_bits


# ---------------------------------------------------------------- what the data needs

def count_thresholds(sums: torch.Tensor, labels: torch.Tensor) -> int:
    """Label changes along the samples stably sorted by feature sum: the thresholds (notebook 04's reference)."""
    order = torch.sort(sums, stable=True).indices
    walked = labels[order]
    return int((walked[1:] != walked[:-1]).sum())


def requirement_bits(thresholds: int, d: int) -> tuple[int, int]:
    """(max, expected) bits to memorize a labelling with t thresholds on d inputs: t (d + 1) + t + 1 (a
    3-layer net with one hidden neuron per threshold) and ceil(log2(t + 1)) d. Notebook 04's exercise."""
    return thresholds * (d + 1) + thresholds + 1, math.ceil(math.log2(thresholds + 1)) * d


def _requirement(thresholds: int, d: int, bits=None) -> dict:
    most, expected = (bits or requirement_bits)(thresholds, d)
    return {"thresholds": thresholds, "max_bits": int(most), "expected_bits": int(expected)}


def _as_tensors(X, y) -> tuple[torch.Tensor, torch.Tensor]:
    """X as a float tensor N x d and y as integer labels N, from tensors, numpy arrays or nested lists."""
    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    if X.dim() == 0 or y.dim() != 1:
        raise ValueError(f"X must hold one row per sample and y one label per sample (got X of shape "
                         f"{tuple(X.shape)}, y of shape {tuple(y.shape)})")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("y must hold integer class labels, not fractions")
    return X.reshape(len(X), -1), y.long()


def data_requirement(X, y, count=None, bits=None) -> dict:
    """Capacity (bits) a model needs to memorize the labelling y of X, by the thresholds method (`count_thresholds`,
    `requirement_bits`; `count` and `bits` swap in a student's). Two classes give one figure; more, each class
    against the rest (`per_class`) and their sums."""
    count = count or count_thresholds
    X, y = _as_tensors(X, y)
    if len(X) != len(y) or len(X) < 2:
        raise ValueError(f"X has {len(X)} samples and y {len(y)}: they must match and hold at least 2")
    d = X.shape[1]
    sums = X.double().sum(1)
    classes = torch.unique(y)
    if len(classes) <= 2:
        return {"d": d, "n": len(y), **_requirement(int(count(sums, y)), d, bits)}
    per_class = {int(c): _requirement(int(count(sums, (y == c).long())), d, bits) for c in classes}
    return {"d": d, "n": len(y), "per_class": per_class,
            **{k: sum(r[k] for r in per_class.values()) for k in ("thresholds", "max_bits", "expected_bits")}}


def requirement_progression(X, y, fractions=(0.05, 0.1, 0.2, 0.4, 1.0), seed: int = 0, count=None,
                            bits=None) -> list[dict]:
    """data_requirement (with count, bits) on growing random fractions of (X, y), nested (each contains the last)."""
    X, y = _as_tensors(X, y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    rows = []
    for f in fractions:
        checks.number("fraction", f, above=0, maximum=1)
        idx = order[:max(2, round(f * len(y)))]
        r = data_requirement(X[idx], y[idx], count, bits)
        rows.append({"fraction": f, "n": r["n"], "thresholds": r["thresholds"], "max_bits": r["max_bits"],
                     "expected_bits": r["expected_bits"]})
    return rows


def progression_slope(rows: Sequence[dict], key: str = "thresholds") -> float:
    """Log-log slope of `key` against images from the progression's middle row to its last: about 1, it grows with
    the data; well below 1, it saturates, a sign of a rule the data follows."""
    if len(rows) < 2:
        raise ValueError("a progression needs at least two rows (fractions) to have a slope")
    a, b = rows[len(rows) // 2], rows[-1]
    if a["n"] == b["n"] or min(a[key], b[key]) <= 0:
        raise ValueError(f"rows with n={a['n']} and n={b['n']}, {key}={a[key]} and {b[key]} have no log-log slope")
    return math.log(b[key] / a[key]) / math.log(b["n"] / a["n"])


# ---------------------------------------------------------------- inputs that repeat

def distinct_positions(map_size: int) -> int:
    """Distinct values per channel the head receives from an s x s backbone map: min(s * s, 49), since the
    adaptive pool's 49 values per channel are linear combinations of the s * s positions."""
    from .model import POOLED

    s = checks.integer("map_size", map_size, minimum=1,
                       hint="it is the side of the backbone's map, model.map_size_for(image_size) (1 at 32 px)")
    return min(s * s, POOLED * POOLED)


def effective_inputs(map_size: int, channels: int = 512) -> int:
    """Distinct inputs of the head: channels x distinct_positions(map_size) (512 at 32 px, 25,088 at 224 px)."""
    channels = checks.integer("channels", channels, minimum=1)
    return channels * distinct_positions(map_size)


def effective_widths(widths: Sequence[int], map_size: int) -> list[int]:
    """widths [inputs, n1, ..., nL] with the inputs counted as distinct ones when they are VGG16's 25,088."""
    widths = _check_widths(widths)
    if widths[0] != HEAD_INPUTS:
        return widths
    from .model import FEATURE_CHANNELS

    return [effective_inputs(map_size, FEATURE_CHANNELS), *widths[1:]]


def mec_effective(widths: Sequence[int], map_size: int, rule: str = "previous") -> int:
    """MEC in bits of a head on the distinct inputs an s x s map gives (the rules assume distinct inputs): 49 copies
    of a value act only through their weights' sum, so at 32 px (s = 1) the study's head has mec([512, 4096, 4096,
    256, 10]) = 2,109,696 bits; at 224 px (s = 7) it is mec(widths)."""
    return mec(effective_widths(widths, map_size), rule)


def mec_effective_of(model: nn.Module, rule: str = "previous") -> int:
    """Effective MEC in bits of a VGGHead (or a model with one as .classifier): live widths, its map size."""
    head = getattr(model, "classifier", model)
    map_size = getattr(head, "map_size", None)
    if map_size is None:
        raise ValueError(f"{type(head).__name__} has no map_size, so its distinct inputs are unknown; pass a "
                         "model.VGGHead (or use mec_of for the nominal MEC)")
    return mec_effective(live_widths(model), map_size, rule)


def varying_features(std: torch.Tensor) -> int:
    """How many features vary at all, from their standard deviations over a set of images."""
    return int((torch.as_tensor(std).flatten() > 0).sum())
