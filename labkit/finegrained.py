"""Deep Compression's first stage (Han, Mao, Dally, ICLR 2016): fine-grained pruning, one weight at a time.

Iterated magnitude pruning with masks that hold through retraining, the per-layer sensitivity scan, and
`mec_sparse` (what a sparse head can store). Later stages: labkit.quantize and labkit.stagefiles;
labkit.deepcompression runs them together.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from . import capacity, checks, train
from .device import pick_device, set_seed
from .model import FEATURE_CHANNELS, POOLED, FoldedFirstLayer, VGGHead
from .train import AdamState

# Han et al.'s VGG16 kept 4% of fc6 and fc7, 23% of fc8 (arXiv 1506.02626); the head's fc1, fc2 are fc6, fc7,
# and its 4,096 -> 256 layer (VGG16 has none) and classifier take fc8's share.
HAN_KEPT = (0.04, 0.04, 0.23, 0.23)
SCAN_SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
_EXACT_BELOW = 1 << 21  # layers up to this many weights get their threshold from a full sort


def layer_names(head: VGGHead) -> list[str]:
    """"fc1", "fc2", ... for the head's Linear layers in order."""
    return [f"fc{i + 1}" for i in range(len(head.linears()))]


# ---------------------------------------------------------------- stage 1: fine-grained pruning

def check_sparsities(sparsities, head: VGGHead) -> list[float]:
    """One fraction of weights removed per Linear layer, each in [0, 1); "han" gives Han et al.'s VGG16 shares."""
    layers = len(head.linears())
    if isinstance(sparsities, str):
        if sparsities != "han":
            raise ValueError(f"sparsity={sparsities!r}: give 'han', 'scan', or one fraction removed per layer "
                             f"({layers} of them, e.g. {[1 - k for k in HAN_KEPT]})")
        if layers != len(HAN_KEPT):
            raise ValueError(f"sparsity='han' is stated for a head of {len(HAN_KEPT)} Linear layers; this one has "
                             f"{layers}: give one fraction per layer")
        return [round(1 - k, 6) for k in HAN_KEPT]
    if isinstance(sparsities, (int, float)):
        sparsities = [sparsities] * layers
    sparsities = list(sparsities)
    if len(sparsities) != layers:
        raise ValueError(f"sparsities={sparsities} name {len(sparsities)} layers, but the head has {layers} Linear "
                         "layers: give one fraction removed per layer")
    return [checks.number(f"sparsity of fc{i + 1}", s, minimum=0, below=1, hint="it is the fraction of the "
                          "layer's weights removed (0.96 keeps 4%)") for i, s in enumerate(sparsities)]


def fine_grained_mask(weight: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """A bool mask (weight's shape) keeping the round(keep_fraction x n) largest-magnitude weights of the layer:
    the plain reference of notebook 03's exercise (`prune_weights` finds the same cut by a threshold)."""
    kept = round(keep_fraction * weight.numel())
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[weight.detach().abs().flatten().topk(kept).indices] = True
    return mask.view(weight.shape)


@torch.no_grad()
def weight_thresholds(weight: torch.Tensor, sparsities: Sequence[float], exact: bool = True) -> list[float]:
    """For each sparsity s, the magnitude t such that |w| <= t for round(s * n) of the n weights (-1: none).
    Up to 2M weights: a full sort. Larger: the quantile of 1M evenly spaced weights, used as is with exact=False
    (within about 0.1% of the layer), refined to the exact k-th magnitude with exact=True."""
    w = weight.detach().flatten()
    n = len(w)
    wanted = [int(round(s * n)) for s in sparsities]
    if n <= _EXACT_BELOW:
        ordered = torch.sort(w.abs()).values
        return [float(ordered[k - 1]) if k > 0 else -1.0 for k in wanted]
    sample = torch.sort(w[torch.arange(1 << 20, dtype=torch.int64, device=w.device) * n // (1 << 20)].abs()).values
    a = w.abs() if exact else None
    out = []
    for k in wanted:
        at = min(len(sample) - 1, max(0, round(k / n * len(sample)) - 1))
        if k == 0 or not exact:
            out.append(-1.0 if k == 0 else float(sample[at]))
            continue
        lo, hi = sample[max(0, at - 2048)], sample[min(len(sample) - 1, at + 2048)]
        below = int(torch.count_nonzero(a < lo))  # a bool's .sum() goes through an int64 copy: 0.8 GB here
        band = a[(a >= lo) & (a <= hi)]
        if below < k <= below + len(band):
            out.append(float(torch.kthvalue(band, k - below).values))
        else:  # the band missed (a very uneven layer): the slow way
            out.append(float(torch.kthvalue(a, k).values))
    return out


@torch.no_grad()
def prune_weights(head: VGGHead, sparsities, masks: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Remove the smallest-magnitude weights of each Linear layer in place (256 rows at a time, so the 400 MB first
    layer is read and written once); returns the masks (bool, kept). sparsities: the fraction of each layer's weights
    removed in all, those masked before included (see check_sparsities; over 2M weights within about 0.1%); biases
    stay (Han et al. prune weights only)."""
    sparsities = check_sparsities(sparsities, head)
    out = []
    for i, (lin, s) in enumerate(zip(head.linears(), sparsities)):
        w = lin.weight
        (t,) = weight_thresholds(w, [s], exact=False)
        keep = torch.empty(w.shape, dtype=torch.bool, device=w.device)
        for r in range(0, len(w), 256):
            rows = w[r:r + 256]
            torch.gt(rows.abs(), t, out=keep[r:r + 256])
            if masks is not None:
                keep[r:r + 256] &= masks[i][r:r + 256].to(w.device)
            rows.mul_(keep[r:r + 256])
        out.append(keep)
    return out


def masks_of(head: VGGHead) -> list[torch.Tensor]:
    """The kept weights of each Linear layer (bool): the nonzero ones."""
    return [lin.weight.detach() != 0 for lin in head.linears()]


def densities(head: VGGHead) -> list[float]:
    """Fraction of each Linear layer's weights that are kept (nonzero)."""
    return [int(torch.count_nonzero(lin.weight)) / lin.weight.numel() for lin in head.linears()]


def kept_weights(head: VGGHead) -> int:
    """Nonzero weights, biases not counted (count_nonzero: a bool .sum() copies fc1 to int64, +0.3 GiB at peak)."""
    return sum(int(torch.count_nonzero(lin.weight)) for lin in head.linears())


def schedule(sparsities: Sequence[float], steps: int) -> list[list[float]]:
    """The per-layer sparsity after each of `steps` prune steps: the kept fraction shrinks geometrically,
    density_t = density ** (t / steps), so each step removes the same share of what is left."""
    steps = checks.integer("steps", steps, minimum=1, hint="prune-retrain steps (Han et al. iterate)")
    return [[1 - (1 - s) ** (t / steps) for s in sparsities] for t in range(1, steps + 1)]


# ---------------------------------------------------------------- the sensitivity scan

@torch.no_grad()
def linear_inputs(net: nn.Sequential, x: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """Positions of the Linear modules of `net` and the input each receives on `x`."""
    at, inputs = [], []
    for k, m in enumerate(net):
        if isinstance(m, nn.Linear):
            at.append(k)
            inputs.append(x)
        x = m(x)
    return at, inputs


def _fused_first(head: VGGHead, folded: torch.Tensor) -> nn.Linear:
    """The inference form's first Linear at 1 x 1 maps for summed weights `folded` (out x 512)."""
    lin = head.linears()[0]
    w = folded / head.norm.std.flatten()
    fused = nn.Linear(w.shape[1], w.shape[0], device=w.device)
    fused.weight.copy_(w)
    fused.bias.copy_(lin.bias - w @ head.norm.mean.flatten())
    return fused


@torch.no_grad()
def _pruned_first_forms(head: VGGHead, thresholds: Sequence[float]) -> list[nn.Linear]:
    """At 1 x 1 maps, `_fused_first` with fc1 pruned at each ascending threshold, from one binned pass over fc1."""
    w = head.linears()[0].weight.detach()
    out = w.shape[0]
    bounds = torch.tensor(list(thresholds), dtype=w.dtype, device=w.device)
    bins = torch.zeros(out, FEATURE_CHANNELS, len(bounds) + 1, device=w.device)
    for r in range(0, out, 256):
        copies = w[r:r + 256].view(-1, FEATURE_CHANNELS, POOLED * POOLED)
        bins[r:r + 256].scatter_add_(2, torch.bucketize(copies.abs(), bounds), copies)
    above = bins.flip(-1).cumsum(-1).flip(-1)  # above[..., j]: the copies in bins j, j + 1, ...
    return [_fused_first(head, above[..., j + 1]) for j in range(len(bounds))]


@torch.no_grad()
def sensitivity_scan(head: VGGHead, val_set, sparsities: Sequence[float] = SCAN_SPARSITIES,
                     limit: int | None = 500, device="auto") -> list[dict]:
    """Validation accuracy with one layer pruned by magnitude to each sparsity, the others intact, no retraining:
    rows (layer, name, sparsity, weights, val_accuracy), plus a sparsity-0 row per layer (the head as it is).
    limit: the first `limit` validation images (None: all). Moves `head` to `device`."""
    device = pick_device(device)
    head.to(device).eval()
    maps, labels = val_set.on(device)
    if limit is not None:
        maps, labels = maps[:checks.integer("limit", limit, minimum=1)], labels[:limit]
    net = head.inference_form()
    at, inputs = linear_inputs(net, maps)
    rows = []
    sparsities = sorted(sparsities)
    for i, (lin, name) in enumerate(zip(head.linears(), layer_names(head))):
        base = lin.weight.data
        thresholds = weight_thresholds(base, sparsities, exact=False)
        folded = i == 0 and head.map_size == 1  # the first layer is folded into the inference form
        forms = _pruned_first_forms(head, thresholds) if folded else None
        for k, (s, t) in enumerate([(0.0, -1.0), *zip(sparsities, thresholds)]):
            if folded:
                first = net[at[0]] if k == 0 else forms[k - 1]
            else:  # the head's own module, pruned in place for the pass
                lin.weight.data = torch.where(base.abs() > t, base, 0.0)
                first = head.inference_form()[at[0]] if i == 0 else net[at[i]]
            try:
                x = first(inputs[i])
                for m in net[at[i] + 1:]:
                    x = m(x)
            finally:
                lin.weight.data = base
            rows.append({"layer": i, "name": name, "sparsity": s, "weights": base.numel(),
                         "val_accuracy": float((x.argmax(1) == labels).float().mean())})
    return rows


def choose_sparsities(rows: Sequence[dict], tolerance: float = 1.0) -> list[float]:
    """Per layer, the largest scanned sparsity within `tolerance` accuracy points of the layer's sparsity-0 row."""
    checks.number("tolerance", tolerance, minimum=0, hint="percentage points of validation accuracy")
    layers = sorted({r["layer"] for r in rows})
    chosen = []
    for layer in layers:
        mine = [r for r in rows if r["layer"] == layer]
        base = next(r["val_accuracy"] for r in mine if r["sparsity"] == 0)
        ok = [r["sparsity"] for r in mine if r["val_accuracy"] >= base - tolerance / 100 - 1e-12]
        chosen.append(max(ok))
    return chosen


# ---------------------------------------------------------------- masked training

def masked_fit(head: VGGHead, masks: Sequence[torch.Tensor], train_set, epochs: int = 1, batch_size: int = 128,
               lr: float = 2e-4, seed: int = 0, device="auto", fold: bool = True, state: AdamState | None = None,
               scale_dropout: bool = True) -> list[dict]:
    """Train `head` with Adam (train.train_epochs) while each Linear layer's `masks` (bool, kept) hold: pruned
    weights get no gradient and are re-masked after every step, so they stay exactly zero. fold=True at 1 x 1
    maps trains each feature's 49 first-layer copies as their sum, since they always get the same gradient
    (model.FoldedFirstLayer): the same updates, about 5x cheaper. state: a train.AdamState to go on from and
    leave the moments in (a fresh Adam's first steps move every weight by about lr); another head's is refused.
    scale_dropout: Han et al.'s (2015) retraining dropout, p x sqrt(density of the layer it feeds). Returns one
    dict per epoch; the head is left in eval mode with its dropout as it was."""
    epochs = checks.integer("epochs", epochs, minimum=1)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    checks.number("lr", lr, above=0)
    device = pick_device(device)
    head.to(device).train()
    masks = [m.to(device) for m in masks]
    folded = FoldedFirstLayer(head, masks[0]) if fold and head.map_size == 1 else None
    params = train.trained_parameters(head, folded)
    optimizer = torch.optim.Adam(folded.param_groups(lr) if folded else params, lr=lr, fused=True)
    if state is not None:
        state.load_into(optimizer, params, folded is not None)
    weights = params[0::2]
    keep = [None if folded else masks[0].float()] + [m.float() for m in masks[1:]]
    before: list[torch.Tensor] = []

    def no_gradient_where_pruned() -> None:
        for w, k in zip(weights, keep):
            if k is not None:
                w.grad.mul_(k)
        if folded:
            before[:] = [folded.weight.detach().clone()]

    @torch.no_grad()
    def hold_masks() -> None:
        for w, k in zip(weights, keep):
            if k is not None:
                w.mul_(k)
        if folded:
            folded.scale_step(before[0])

    dropout = _scaled_dropout(head, masks) if scale_dropout else {}
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    maps, labels = train_set.on(device)
    try:
        history = train.train_epochs(folded or head, optimizer, maps, labels, epochs, batch_size, generator,
                                     before_step=no_gradient_where_pruned, after_step=hold_masks)
    finally:
        if folded:
            folded.write_back()
        for m, p in dropout.items():
            m.p = p
    if state is not None:
        state.take(AdamState.read(optimizer, params, folded is not None, copy=False))
    head.eval()
    return history


def _scaled_dropout(head: VGGHead, masks: Sequence[torch.Tensor]) -> dict:
    """Set each Dropout's p to p x sqrt(density of the Linear layer after it); returns {module: p as it was}."""
    was, layer = {}, 0
    for m in head.layers:
        if isinstance(m, nn.Linear):
            layer += 1
        elif isinstance(m, nn.Dropout):
            was[m] = m.p
            density = float(masks[layer].float().mean())
            m.p = m.p * math.sqrt(density)
    return was


# ---------------------------------------------------------------- MEC of a sparse head

@torch.no_grad()
def mec_sparse_table(head: VGGHead, rule: str = "previous", effective: bool = False) -> list[dict]:
    """Per Linear layer: connected inputs, connected neurons, kept weights, parameters and capacity in bits.
    Rule 2 counts the kept weights between connected units plus one bias per connected neuron; a neuron is
    connected when kept weights reach it from the inputs and carry it on towards the classes (stricter than
    capacity's "live"). Rule 4 (capacity.rule4) caps layer l >= 2 by the connected width before it ("previous")
    or the narrowest upstream ("bottleneck"). effective=True (1 x 1 maps only) counts the first layer on its 512
    distinct inputs: a (neuron, feature) pair counts once however many of its 49 copies are kept."""
    checks.choice("rule", rule, capacity.RULES)
    masks = masks_of(head)
    if effective and head.map_size == 1:
        out = masks[0].shape[0]
        masks[0] = masks[0].view(out, FEATURE_CHANNELS, POOLED * POOLED).any(-1)
    elif effective:
        raise ValueError(f"effective=True counts distinct inputs at 1 x 1 maps; this head reads "
                         f"{head.map_size} x {head.map_size} maps: use capacity.mec_effective_of")
    def blocks(m, *rows):  # 256 rows at a time: a 100M-weight mask's selections stay 6 MB, not 100 MB each
        return zip(m.split(256), *(r.split(256) for r in rows))

    forward = [masks[0].any(0)]  # inputs that feed a kept weight
    for m in masks:
        forward.append(torch.cat([b[:, forward[-1]].any(1) for (b,) in blocks(m)]))
    backward = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for m in reversed(masks):
        backward.insert(0, torch.stack([b[r].any(0) for b, r in blocks(m, backward[0])]).any(0))
    connected = [f & b for f, b in zip(forward, backward)]
    connected[-1] = torch.ones_like(connected[-1])  # every class is an output
    widths = [int(v.sum()) for v in connected]
    rows = []
    for i, m in enumerate(masks):
        weights = sum(int(b[r][:, connected[i]].sum()) for b, r in blocks(m, connected[i + 1]))
        parameters = weights + widths[i + 1]
        rows.append({"layer": i, "inputs": widths[i], "connected_neurons": widths[i + 1], "weights": weights,
                     "parameters": parameters, "capacity_bits": capacity.rule4(parameters, widths[:i + 1], rule)})
    return rows


def mec_sparse(head: VGGHead, rule: str = "previous", effective: bool = False) -> int:
    """MEC in bits of a pruned head (the sum of `mec_sparse_table`); equals capacity.mec_of for a dense head."""
    return sum(r["capacity_bits"] for r in mec_sparse_table(head, rule, effective))
