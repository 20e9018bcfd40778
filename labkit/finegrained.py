"""Deep Compression (Han, Mao, Dally, ICLR 2016) on the head, all three stages, one weight at a time.

  1. fine-grained pruning  every weight whose magnitude is below its layer's threshold is removed; the masks
                           hold through retraining (pruned weights stay exactly zero), and pruning is
                           iterated (prune, retrain, prune more). Each layer's sparsity is read off a
                           sensitivity scan (validation accuracy against sparsity, one layer at a time,
                           without retraining) or taken from Han et al.'s VGG16 (fc6/fc7/fc8 kept 4%/4%/23%).
  2. trained quantization  each layer's kept weights share 2**bits - 1 values found by k-means (linear
                           initialization), plus the zero the padding entries hold; then each shared value
                           (centroid) is fine-tuned by the sum of the gradients of the weights that share it.
  3. Huffman coding        of the quantized weights' indices and of the sparse positions (relative indices,
                           labkit.huffman), both skewed.

Stored as one file per stage (`save_stage` / `load_stage`): "sparse" (float32 values and fixed-width
relative indices), "quantized" (codebook indices packed `bits` to a weight), "huffman" (both streams
Huffman-coded). Each loads back into an ordinary float32 VGGHead.

At 1 x 1 backbone maps (32 px inputs) the first layer's 25,088 inputs are 49 copies of 512 features, so the
49 weights of a neuron that read one feature always receive the same gradient. Masked training therefore
trains their sum (out x 512) and moves it by the number of kept copies times Adam's step, then gives each
kept copy its equal share (`MaskedFold`): exactly what full-width masked training does, about 5x cheaper.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import capacity, checks, compress, files, huffman
from . import config as cfg
from . import progress as reporter
from .device import autocast, derive_seed, pick_device, set_seed
from .model import FEATURE_CHANNELS, POOLED, CheckpointError, VGGHead

FORMAT = "labkit-deep-compression/1"
STAGES = ("sparse", "quantized", "huffman")
STAGE_NAMES = {"float32": "unpruned, float32", "sparse": "pruned, stored sparse (float32, relative indices)",
               "quantized": "+ trained quantization", "huffman": "+ Huffman coding"}
# Han et al.'s VGG16: fc6 (25,088 -> 4,096) and fc7 (4,096 -> 4,096) kept 4%, fc8 (the classifier) 23%
# (arXiv 1506.02626). The head's fc1 and fc2 are fc6 and fc7; its 4,096 -> 256 layer (VGG16 has none) and its
# classifier take fc8's share.
HAN_KEPT = (0.04, 0.04, 0.23, 0.23)
# Han et al.'s published VGG16 figures (arXiv 1510.00149 and 1506.02626): file bytes and ratio after each stage
HAN_VGG16 = {"float32": {"han_vgg16_bytes": 552_000_000, "han_vgg16_ratio": 1.0},
             "sparse": {"han_vgg16_bytes": None, "han_vgg16_ratio": 13.0},  # 138M -> 10.3M parameters
             "quantized": {"han_vgg16_bytes": None, "han_vgg16_ratio": 31.0},
             "huffman": {"han_vgg16_bytes": 11_300_000, "han_vgg16_ratio": 49.0}}
SCAN_SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
_EXACT_BELOW = 1 << 21  # layers up to this many weights get their threshold from a full sort
KMEANS_SAMPLE = 1 << 18  # weights k-means fits its centroids on (evenly spaced; all are then assigned)


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
    """Deep Compression's first stage for one layer: a bool mask (weight's shape) keeping the round(keep_fraction
    x n) weights of largest magnitude |w|, over the whole layer. The plain reference of notebook 03's exercise
    (`prune_weights` finds the same cut by a threshold, a block of rows at a time)."""
    kept = round(keep_fraction * weight.numel())
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[weight.detach().abs().flatten().topk(kept).indices] = True
    return mask.view(weight.shape)


@torch.no_grad()
def magnitude_thresholds(weight: torch.Tensor, sparsities: Sequence[float], exact: bool = True) -> list[float]:
    """For each sparsity s, the magnitude t such that |w| <= t for round(s * n) of the n weights (-1: none).

    Up to 2M weights: a sort. Larger layers: the quantile of 1M evenly spaced weights (exact=False: as it
    is, within about 0.1% of the layer), or refined to the exact k-th magnitude among the weights in a narrow
    band around it.
    """
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
        below = int((a < lo).sum())
        band = a[(a >= lo) & (a <= hi)]
        if below < k <= below + len(band):
            out.append(float(torch.kthvalue(band, k - below).values))
        else:  # the band missed (a very uneven layer): the exact k-th magnitude the slow way
            out.append(float(torch.kthvalue(a, k).values))
    return out


@torch.no_grad()
def prune_weights(head: VGGHead, sparsities, masks: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Remove the smallest-magnitude weights of each Linear layer, in place; returns the masks (bool, kept).

    sparsities: the fraction of each layer's weights removed in all (see check_sparsities; layers over 2M
    weights use the quantile of 1M evenly spaced magnitudes, within about 0.1% of the layer); weights masked
    before stay removed (they are zero, so the smallest). Biases are kept (Han et al. prune weights only).
    Done 256 rows at a time, so the 400 MB first layer is read and written once.
    """
    sparsities = check_sparsities(sparsities, head)
    out = []
    for i, (lin, s) in enumerate(zip(head.linears(), sparsities)):
        w = lin.weight
        (t,) = magnitude_thresholds(w, [s], exact=False)
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
    return [float((lin.weight != 0).sum()) / lin.weight.numel() for lin in head.linears()]


def kept_weights(head: VGGHead) -> int:
    """Nonzero weights of the head (biases not counted)."""
    return sum(int((lin.weight != 0).sum()) for lin in head.linears())


def schedule(sparsities: Sequence[float], steps: int) -> list[list[float]]:
    """The per-layer sparsity after each of `steps` prune steps: the kept fraction shrinks geometrically,
    density_t = density ** (t / steps), so each step removes the same share of what is left."""
    steps = checks.integer("steps", steps, minimum=1, hint="prune-retrain steps (Han et al. iterate)")
    return [[1 - (1 - s) ** (t / steps) for s in sparsities] for t in range(1, steps + 1)]


# ---------------------------------------------------------------- the sensitivity scan

@torch.no_grad()
def _linear_inputs(net: nn.Sequential, x: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """Positions of the Linear modules of `net` and the input each receives on `x`."""
    at, inputs = [], []
    for k, m in enumerate(net):
        if isinstance(m, nn.Linear):
            at.append(k)
            inputs.append(x)
        x = m(x)
    return at, inputs


def _fused_first(head: VGGHead, folded: torch.Tensor) -> nn.Linear:
    """The first Linear of head.inference_form() at 1 x 1 maps for summed weights `folded` (out x 512): the
    standardization folded in as inference_form does it (W / std, b - (W / std) mean)."""
    lin = head.linears()[0]
    w = folded / head.norm.std.flatten()
    fused = nn.Linear(w.shape[1], w.shape[0], device=w.device)
    fused.weight.copy_(w)
    fused.bias.copy_(lin.bias - w @ head.norm.mean.flatten())
    return fused


@torch.no_grad()
def _pruned_first_forms(head: VGGHead, thresholds: Sequence[float]) -> list[nn.Linear]:
    """At 1 x 1 maps: for each threshold t (ascending), the inference form's first Linear with fc1's weights
    of magnitude <= t removed, from one pass over fc1, 256 rows at a time: each feature's 49 copies are summed
    into bins between the thresholds (bucketize, scatter_add_), and the layer pruned at t sums the bins above t."""
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
    """Validation accuracy with one layer pruned by magnitude to each sparsity, the others intact, no retraining.

    One row per (layer, sparsity), and a row at sparsity 0 per layer (the head as it is): layer, name,
    sparsity, weights, val_accuracy. limit: the first `limit` validation images only (None: all; each row
    costs a forward pass from the pruned layer on). Each layer's input is computed once; thresholds are
    the quantiles of 1M evenly spaced magnitudes in layers of more than 2M weights.
    """
    device = pick_device(device)
    head.to(device).eval()
    maps, labels = val_set.on(device)
    if limit is not None:
        maps, labels = maps[:checks.integer("limit", limit, minimum=1)], labels[:limit]
    net = head.inference_form()
    at, inputs = _linear_inputs(net, maps)
    rows = []
    sparsities = sorted(sparsities)
    for i, (lin, name) in enumerate(zip(head.linears(), layer_names(head))):
        base = lin.weight.data
        thresholds = magnitude_thresholds(base, sparsities, exact=False)
        folded = i == 0 and head.map_size == 1  # the first layer is folded into the inference form
        forms = _pruned_first_forms(head, thresholds) if folded else None
        for k, (s, t) in enumerate([(0.0, -1.0), *zip(sparsities, thresholds)]):
            if folded:
                first = net[at[0]] if k == 0 else forms[k - 1]
            else:  # the head's own module, pruned in place for the pass (the first layer's inference form anew)
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
    """Per layer, the largest scanned sparsity whose validation accuracy is within `tolerance` points of the
    head as it is (the layer's sparsity-0 row); 0 where none is."""
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

class MaskedFold(nn.Module):
    """The head at 1 x 1 maps with its first layer trained as sums of kept copies (see the module's docstring).

    weight (out x 512) = the sum of each feature's kept copies; `kept` (out x 512) counts them. After each
    optimizer step `scale_step(previous)` turns the step into kept x the step (0 where no copy is kept).
    `write_back()` gives each kept copy change / kept, so pruned copies stay exactly zero.
    """

    def __init__(self, head: VGGHead, mask: torch.Tensor):
        super().__init__()
        first = head.linears()[0]
        self._head = [head]
        self.norm, self.bias, self.rest = head.norm, first.bias, head.layers[1:]
        shape = (first.out_features, FEATURE_CHANNELS, POOLED * POOLED)
        self._mask = mask.view(shape)
        with torch.no_grad():
            self.kept = self._mask.sum(-1, dtype=torch.float32)
            self._start = first.weight.view(shape).sum(-1)
        self.weight = nn.Parameter(self._start.clone())

    def forward(self, maps):
        return self.rest(F.linear(self.norm(maps).flatten(1), self.weight, self.bias))

    @torch.no_grad()
    def scale_step(self, previous: torch.Tensor) -> None:
        self.weight.sub_(previous).mul_(self.kept).add_(previous)

    @torch.no_grad()
    def write_back(self) -> None:
        weight = self._head[0].linears()[0].weight.view(self._mask.shape)
        share = torch.where(self.kept > 0, (self.weight - self._start) / self.kept.clamp(min=1), 0.0)
        for r in range(0, len(share), 256):  # 256 neurons at a time: no 400 MB temporary
            weight[r:r + 256].add_(self._mask[r:r + 256] * share[r:r + 256].unsqueeze(-1))
        self._start.copy_(self.weight)


def masked_fit(head: VGGHead, masks: Sequence[torch.Tensor], train_set, epochs: int = 1, batch_size: int = 128,
               lr: float = 2e-4, seed: int = 0, device="auto", fold: bool = True, moments: dict | None = None,
               scale_dropout: bool = True) -> list[dict]:
    """Train `head` with Adam and cross-entropy while each Linear layer's `masks` (bool, kept) hold.

    Pruned weights get no gradient and are multiplied by their mask after every step, so they stay exactly
    zero. fold=True at 1 x 1 maps trains the first layer folded (`MaskedFold`: the same updates, 5x cheaper).
    moments: Adam's moments to go on from, and where this call leaves them (a dict it fills), so iterative
    pruning continues one optimizer; it may also be a start's train.AdamState payload (study.train_start's
    record["optimizer"]): a fresh Adam's first steps move every weight by about lr whatever its gradient.
    scale_dropout: Han et al.'s (2015) retraining dropout, p x sqrt(density of the layer it feeds), since
    pruning has already taken capacity away. One dict per epoch: epoch, loss, accuracy (training batches,
    dropout on), seconds. The head is left in eval mode with its dropout as it was.
    """
    epochs = checks.integer("epochs", epochs, minimum=1)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    checks.number("lr", lr, above=0)
    device = pick_device(device)
    head.to(device).train()
    masks = [m.to(device) for m in masks]
    lins = head.linears()
    folded = MaskedFold(head, masks[0]) if fold and head.map_size == 1 else None
    weights = [folded.weight if folded else lins[0].weight] + [lin.weight for lin in lins[1:]]
    params = weights + [lin.bias for lin in lins]
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)
    _load_moments(optimizer, params, moments, folded is not None)
    keep = [None if folded else masks[0].float()] + [m.float() for m in masks[1:]]
    dropout = _scaled_dropout(head, masks) if scale_dropout else {}
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    maps, labels = train_set.on(device)
    net, n, history = folded or head, len(labels), []
    try:
        for epoch in range(1, epochs + 1):
            began, total, correct = time.perf_counter(), 0.0, 0
            for idx in torch.randperm(n, generator=generator).to(device).split(batch_size):
                with autocast(device):
                    logits = net(maps[idx]).float()
                loss = F.cross_entropy(logits, labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for w, k in zip(weights, keep):
                    if k is not None:
                        w.grad.mul_(k)
                previous = folded.weight.detach().clone() if folded else None
                optimizer.step()
                with torch.no_grad():
                    for w, k in zip(weights, keep):
                        if k is not None:
                            w.mul_(k)
                if folded:
                    folded.scale_step(previous)
                total += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == labels[idx]).sum())
            history.append({"epoch": epoch, "loss": total / n, "accuracy": correct / n,
                            "seconds": time.perf_counter() - began})
            checks.number("training loss", history[-1]["loss"], hint=f"training diverged: lower lr={lr:g}")
    finally:
        if folded:
            folded.write_back()
        for m, p in dropout.items():
            m.p = p
    if moments is not None:
        _save_moments(optimizer, params, moments, folded is not None)
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


def _save_moments(optimizer, params, into: dict, folded: bool) -> None:
    into.clear()
    into.update(folded=folded, state=[{k: v.detach().clone() for k, v in optimizer.state[p].items()}
                                      if p in optimizer.state else None for p in params])


def _from_start(payload: dict, folded: bool) -> list[dict | None]:
    """A train.AdamState payload (each Linear's weight then bias) in masked_fit's order (weights, then biases)."""
    layers = len(payload["exp_avg"]) // 2
    order = [2 * i for i in range(layers)] + [2 * i + 1 for i in range(layers)]
    state = []
    for j in order:
        m, v = payload["exp_avg"][j], payload["exp_avg_sq"][j]
        if j == 0 and bool(payload["folded"]) != folded:  # the 49 copies of a feature share their moments
            if folded:
                m, v = (t.view(t.shape[0], FEATURE_CHANNELS, -1).mean(-1) for t in (m, v))
            else:
                m, v = (t.unsqueeze(-1).expand(-1, -1, POOLED * POOLED).reshape(t.shape[0], -1) for t in (m, v))
        state.append({"step": torch.tensor(float(payload["steps"][j])), "exp_avg": m, "exp_avg_sq": v})
    return state


def _load_moments(optimizer, params, moments: dict | None, folded: bool) -> None:
    """Give `optimizer` the moments a previous masked_fit left, or a start's AdamState payload; a parameter whose
    saved moments have another shape (or none) is skipped silently and starts with fresh moments."""
    if not moments:
        return
    state = moments["state"] if "state" in moments else _from_start(moments, folded)
    for p, s in zip(params, state):
        if s is not None and s["exp_avg"].shape == p.shape:
            optimizer.state[p] = {k: v.to(p.device, dtype=torch.float32).clone() for k, v in s.items()}


def prune_and_retrain(head: VGGHead, train_set, sparsities, *, steps: int = 2, epochs: int = 1,
                      batch_size: int = 128, lr: float = 2e-4, seed: int = 0, device="auto",
                      fold: bool = True, optimizer: dict | None = None
                      ) -> tuple[list[torch.Tensor], list[dict]]:
    """Han et al.'s iterative pruning: `steps` times, prune to the next sparsity of `schedule`, retrain
    `epochs` epochs with the masks held, one Adam throughout (continuing `optimizer`, a start's
    train.AdamState payload, when given). Returns (masks, one row per step)."""
    sparsities = check_sparsities(sparsities, head)
    masks, rows = None, []
    moments = dict(optimizer) if optimizer else {}
    for step, target in enumerate(schedule(sparsities, steps), 1):
        masks = prune_weights(head, target, masks)
        history = masked_fit(head, masks, train_set, epochs, batch_size, lr, seed=derive_seed(seed, step),
                             device=device, fold=fold, moments=moments)
        rows.append({"step": step, "sparsities": target, "loss": history[-1]["loss"],
                     "seconds": sum(h["seconds"] for h in history)})
        reporter.say(f"prune step {step}/{steps}: kept {', '.join(f'{1 - s:.1%}' for s in target)}; "
                     f"retrained {epochs} epoch(s), loss {history[-1]['loss']:.3f}")
    return masks, rows


# ---------------------------------------------------------------- stage 2: trained quantization

@dataclass
class SharedWeights:
    """One layer's weights as indices into a shared codebook (Deep Compression's weight sharing).

    positions: int64 flat (row-major) positions of the kept weights, or None when every weight is kept;
    index: int64 codebook entry of each kept weight (1..2**bits - 1); codebook: float32, 2**bits entries,
    entry 0 = 0.0 (the value of the padding entries of the relative indices); shape: (out, in).
    """

    positions: torch.Tensor | None
    index: torch.Tensor
    codebook: torch.Tensor
    bits: int
    shape: tuple
    _relative: dict = field(default_factory=dict, repr=False, compare=False)

    def relative(self, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """huffman.relative_indices of the positions (computed once per index width)."""
        if index_bits not in self._relative:
            self._relative[index_bits] = huffman.relative_indices(self.positions, index_bits)
        return self._relative[index_bits]

    def dense(self) -> torch.Tensor:
        """The layer's weight matrix (float32, shape) these shared values make."""
        if self.positions is None:
            return self.codebook[self.index].view(self.shape)
        w = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.float32)
        w[self.positions] = self.codebook[self.index]
        return w.view(self.shape)


def _check_bits_per_layer(bits, layers: int) -> list[int]:
    bits = [bits] * layers if not isinstance(bits, (list, tuple)) else list(bits)
    if len(bits) != layers:
        raise ValueError(f"bits={bits} name {len(bits)} layers, the head has {layers}: give one width per layer "
                         "or one for all (Han et al.: 5 for fully connected layers)")
    return [checks.integer(f"bits of fc{i + 1}", b, 1, 8, hint="2**bits - 1 shared values per layer plus zero "
                           "(Han et al.: 5 for fully connected layers)") for i, b in enumerate(bits)]


@torch.no_grad()
def share_weights(head: VGGHead, bits=5) -> list[SharedWeights]:
    """k-means weight sharing of each layer's kept (nonzero) weights: 2**bits - 1 centroids, linearly
    initialized between the smallest and largest weight (compress.kmeans_centroids), plus the zero entry.
    bits: one width for all layers or one per layer."""
    bits = _check_bits_per_layer(bits, len(head.linears()))
    shared = []
    for lin, b in zip(head.linears(), bits):
        w = lin.weight.detach().float().cpu().flatten()
        positions = torch.nonzero(w).flatten()
        dense = len(positions) == len(w)
        values = w if dense else w[positions]
        if len(values) == 0:
            centroids, index = torch.zeros((1 << b) - 1), torch.zeros(0, dtype=torch.int64)
        else:
            centroids, index = compress.kmeans_centroids(values, (1 << b) - 1, sample=KMEANS_SAMPLE)
        shared.append(SharedWeights(None if dense else positions, index + 1,
                                    torch.cat([torch.zeros(1), centroids]), b, tuple(lin.weight.shape)))
    return shared


@torch.no_grad()
def write_shared(head: VGGHead, shared: Sequence[SharedWeights]) -> None:
    """Set each Linear layer's weights to the shared values (kept positions) and zero (the others)."""
    for lin, s in zip(head.linears(), shared):
        lin.weight.copy_(s.dense().to(lin.weight.device))


class _SharedLayer:
    """One layer's trainable codebook and where its entries land in the (folded) dense weight."""

    def __init__(self, s: SharedWeights, fold: bool, device):
        out, width = s.shape
        positions = s.positions if s.positions is not None else torch.arange(out * width)
        if fold:  # each kept copy adds its value to its feature's sum (out x 512)
            rows, cols = positions // width, positions % width
            positions = rows * FEATURE_CHANNELS + cols // (POOLED * POOLED)
            width = FEATURE_CHANNELS
        self.shape, self.fold = (out, width), fold
        self.target = positions.to(device)
        self.index = s.index.to(device)
        self.codebook = nn.Parameter(s.codebook.clone().to(device))
        self.buffer = torch.zeros(out * width, device=device)  # positions never written stay zero

    @torch.no_grad()
    def weight(self) -> torch.Tensor:
        """The dense (folded) weight, a leaf tensor whose gradient `centroid_gradient` sums per entry."""
        values = self.codebook[self.index]
        if self.fold:
            self.buffer.zero_().index_add_(0, self.target, values)
        else:
            self.buffer[self.target] = values
        return self.buffer.view(self.shape).detach().requires_grad_()

    def centroid_gradient(self, weight: torch.Tensor) -> None:
        """Each centroid's gradient: the sum of the gradients of the weights that share it (entry 0 stays 0)."""
        g = weight.grad.flatten()[self.target]
        summed = torch.bincount(self.index, weights=g.double(), minlength=len(self.codebook)).float()
        summed[0] = 0
        self.codebook.grad = summed


def finetune_centroids(head: VGGHead, shared: list[SharedWeights], train_set, epochs: int = 1,
                       batch_size: int = 128, lr: float = 1e-4, seed: int = 0, device="auto") -> list[dict]:
    """Train the shared values (Adam on each layer's codebook; weights, positions and biases fixed).

    Every step builds each layer's weight from its codebook, back-propagates, and moves each centroid by the
    summed gradient of its weights (Han et al.'s figure 3). At 1 x 1 maps the first layer is built folded
    (kept copies add into their feature's sum). Updates `shared` and the head's weights; one dict per epoch.
    """
    epochs = checks.integer("epochs", epochs, minimum=1)
    checks.number("lr", lr, above=0)
    device = pick_device(device)
    head.to(device).train()
    fold = head.map_size == 1
    layers = [_SharedLayer(s, fold and i == 0, device) for i, s in enumerate(shared)]
    optimizer = torch.optim.Adam([layer.codebook for layer in layers], lr=lr)
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    maps, labels = train_set.on(device)
    n, history = len(labels), []
    for epoch in range(1, epochs + 1):
        began, total = time.perf_counter(), 0.0
        for idx in torch.randperm(n, generator=generator).to(device).split(batch_size):
            weights = [layer.weight() for layer in layers]
            with autocast(device):
                logits = _forward_with(head, weights, maps[idx], fold).float()
            loss = F.cross_entropy(logits, labels[idx])
            loss.backward()
            for layer, w in zip(layers, weights):
                layer.centroid_gradient(w)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "loss": total / n, "seconds": time.perf_counter() - began})
    for s, layer in zip(shared, layers):
        s.codebook = layer.codebook.detach().cpu().clone()
    write_shared(head, shared)
    head.eval()
    return history


def _forward_with(head: VGGHead, weights: list[torch.Tensor], maps: torch.Tensor, fold: bool) -> torch.Tensor:
    """The head's function on `maps` with its Linear weights replaced by `weights` (the first folded if fold)."""
    x = head.norm(maps).flatten(1) if fold else head.embed(maps)
    k = 0
    for m in head.layers:
        if isinstance(m, nn.Linear):
            x = F.linear(x, weights[k], m.bias.detach())
            k += 1
        else:
            x = m(x)
    return x


# ---------------------------------------------------------------- MEC of a sparse head

@torch.no_grad()
def mec_sparse_table(head: VGGHead, rule: str = "previous", effective: bool = False) -> list[dict]:
    """Per Linear layer: live inputs, live neurons, kept weights, parameters and capacity in bits.

    Rule 2 counts parameters, so a sparse layer counts its kept weights: those from a live input to a live
    neuron, plus one bias per live neuron. A neuron is live when some kept weight reaches it from the inputs
    and (hidden layers) some kept weight carries it on towards the classes; every class is live. Rule 4 caps
    layer l >= 2 by the live width before it (rule "previous") or the narrowest upstream ("bottleneck"), as
    capacity.layer_capacities does. effective=True at 1 x 1 maps counts the first layer on its 512 distinct
    inputs: a (neuron, feature) pair counts once however many of its 49 copies are kept.
    """
    checks.choice("rule", rule, capacity.RULES)
    masks = masks_of(head)
    if effective and head.map_size == 1:
        out = masks[0].shape[0]
        masks[0] = masks[0].view(out, FEATURE_CHANNELS, POOLED * POOLED).any(-1)
    elif effective:
        raise ValueError(f"effective=True counts distinct inputs at 1 x 1 maps; this head reads "
                         f"{head.map_size} x {head.map_size} maps: use capacity.mec_effective_of")
    forward = [masks[0].any(0)]  # inputs that feed a kept weight
    for m in masks:
        forward.append(m[:, forward[-1]].any(1))
    backward = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for m in reversed(masks):
        backward.insert(0, m[backward[0]].any(0))
    live = [f & b for f, b in zip(forward, backward)]
    live[-1] = torch.ones_like(live[-1])  # every class is an output
    widths = [int(v.sum()) for v in live]
    rows = []
    for i, m in enumerate(masks):
        weights = int(m[live[i + 1]][:, live[i]].sum())
        parameters = weights + widths[i + 1]
        cap = parameters
        if i > 0:
            cap = min(cap, widths[i] if rule == "previous" else min(widths[:i + 1]))
        rows.append({"layer": i, "inputs": widths[i], "live_neurons": widths[i + 1], "weights": weights,
                     "parameters": parameters, "capacity_bits": cap})
    return rows


def mec_sparse(head: VGGHead, rule: str = "previous", effective: bool = False) -> int:
    """MEC in bits of a (fine-grained) pruned head: kept weights and live neurons' biases (see mec_sparse_table).
    Equals capacity.mec_of for a dense head."""
    return sum(r["capacity_bits"] for r in mec_sparse_table(head, rule, effective))


# ---------------------------------------------------------------- the one-file stage format

def _layer_entry(lin: nn.Linear, stage: str, shared: SharedWeights | None, index_bits: int) -> dict:
    """One Linear layer as stored at `stage` (see save_stage). Tensors that are the layer's own (a dense layer's
    values) are referenced, not copied, as a state_dict references them: the 400 MB first layer is not copied
    to be measured or written, and its positions are listed only when some weight is zero."""
    w = lin.weight.detach().float().cpu().flatten()
    entry = {"shape": list(lin.weight.shape), "bias": lin.bias.detach().float().cpu().clone()}
    if stage == "sparse":
        dense = int(torch.count_nonzero(w)) == len(w)  # a dense layer's 100M positions would take 800 MB
        positions = None if dense else torch.nonzero(w).flatten()
        values = w if dense else w[positions]
    else:
        positions = shared.positions
        values = shared.index
        entry["codebook"], entry["bits"] = shared.codebook.float().clone(), shared.bits
    if positions is None or len(positions) == len(w):
        entry["dense"] = True
        symbols = values
    else:
        gaps, real = (huffman.relative_indices(positions, index_bits) if stage == "sparse"
                      else shared.relative(index_bits))
        symbols = torch.zeros(len(gaps), dtype=values.dtype)  # padding entries hold zero (codebook entry 0)
        symbols[real] = values
        entry["entries"] = len(gaps)
        entry["gaps"] = (huffman.compress_symbols(gaps, 1 << index_bits) if stage == "huffman"
                         else huffman.pack_fixed(gaps, index_bits))
    if stage == "sparse":
        entry["values"] = symbols
    elif stage == "quantized":
        entry["symbols"] = huffman.pack_fixed(symbols, shared.bits)
    else:
        entry["symbols"] = huffman.compress_symbols(symbols, 1 << shared.bits)
    return entry


def stage_payload(head: VGGHead, stage: str, shared: Sequence[SharedWeights] | None = None, index_bits: int = 5,
                  bits=5) -> dict:
    """What `save_stage` writes. shared: the trained quantization (share_weights, finetune_centroids) for
    the quantized stages; None: k-means at `bits` on the head as it is (untrained quantization)."""
    checks.choice("stage", stage, STAGES)
    index_bits = checks.integer("index_bits", index_bits, 1, 16, hint="Han et al. used 5 for fully connected "
                                "layers (a longer gap is bridged by padding entries)")
    lins = head.linears()
    if stage != "sparse":
        shared = share_weights(head, bits) if shared is None else list(shared)
        if len(shared) != len(lins) or any(tuple(s.shape) != tuple(l.weight.shape) for s, l in zip(shared, lins)):
            raise ValueError("shared weights do not match the head's layers: make them with share_weights(head)")
    dropout = next((m.p for m in head.layers if isinstance(m, nn.Dropout)), 0.0)
    return {"format": FORMAT, "stage": stage, "index_bits": index_bits, "widths": head.widths(),
            "map_size": head.map_size, "dropout": dropout, "mean": head.norm.mean.float().cpu().clone(),
            "std": head.norm.std.float().cpu().clone(),
            "layers": [_layer_entry(lin, stage, None if stage == "sparse" else s, index_bits)
                       for lin, s in zip(lins, shared or [None] * len(lins))]}


def save_stage(head: VGGHead, path: str | os.PathLike, stage: str, shared: Sequence[SharedWeights] | None = None,
               index_bits: int = 5, bits=5) -> int:
    """Write the head as stored after `stage` ("sparse", "quantized", "huffman") atomically; returns bytes."""
    return files.save_torch(stage_payload(head, stage, shared, index_bits, bits), path)


def _decode_layer(entry: dict, stage: str, index_bits: int) -> torch.Tensor:
    out, width = entry["shape"]
    if entry.get("dense"):
        count = out * width
    else:
        count = int(entry["entries"])
        gaps = (huffman.decompress_symbols(entry["gaps"]) if stage == "huffman"
                else huffman.unpack_fixed(entry["gaps"], index_bits, count))
    if stage == "sparse":
        values = entry["values"].float()
    else:
        symbols = (huffman.decompress_symbols(entry["symbols"]) if stage == "huffman"
                   else huffman.unpack_fixed(entry["symbols"], int(entry["bits"]), count))
        values = entry["codebook"].float()[symbols]
    if len(values) != count:
        raise CheckpointError(f"a layer holds {len(values)} values, {count} expected")
    if entry.get("dense"):
        return values.view(out, width)
    w = torch.zeros(out * width)
    w[huffman.positions_from_gaps(gaps)] = values  # padding entries write their zero
    return w.view(out, width)


def head_from_payload(payload: dict) -> VGGHead:
    """A float32 VGGHead (eval mode) from a `stage_payload` dict."""
    with torch.device("meta"):
        head = VGGHead(payload["widths"], payload["map_size"], payload["dropout"])
    state = {"norm.mean": payload["mean"].float(), "norm.std": payload["std"].float()}
    names = [name for name, m in head.layers.named_children() if isinstance(m, nn.Linear)]
    for name, entry in zip(names, payload["layers"]):
        state[f"layers.{name}.weight"] = _decode_layer(entry, payload["stage"], int(payload["index_bits"]))
        state[f"layers.{name}.bias"] = entry["bias"].float()
    head.load_state_dict(state, assign=True)
    return head.eval()


def load_stage(path: str | os.PathLike) -> VGGHead:
    """Read a file written by `save_stage` back into a working float32 head (eval mode)."""
    return files.load_format(path, "Deep Compression head", "write it again with labkit.finegrained.save_stage "
                             "(finegrained.deep_compression does)", FORMAT, head_from_payload, CheckpointError)


# ---------------------------------------------------------------- histograms

@torch.no_grad()
def weight_histograms(before: VGGHead, pruned: VGGHead, shared: Sequence[SharedWeights] | None = None,
                      bins: int = 80, sample: int = 1 << 21) -> list[dict]:
    """Per layer: histograms of the weights before pruning and of the kept weights after pruning, on the same
    edges (symmetric, to the largest magnitude of either), and the shared values with their counts
    (`add_shared`, here when `shared` is given).

    Layers of more than `sample` weights are histogrammed on evenly spaced weights, counts scaled to the layer.
    Keys: layer, name, edges (bins + 1), before, pruned (counts, floats), weights, kept, and codebook,
    codebook_counts (the padding zero left out).
    """
    out = []
    for i, (a, b) in enumerate(zip(before.linears(), pruned.linears())):
        w0, w1 = a.weight.detach().float().flatten(), b.weight.detach().float().flatten()
        step = max(1, len(w0) // sample)
        top = max(float(w0[::step].abs().max()), float(w1[::step].abs().max())) or 1.0  # retraining may grow them
        edges = torch.linspace(-top, top, bins + 1)
        kept = w1[::step]
        kept = kept[kept != 0]
        out.append({"layer": i, "name": f"fc{i + 1}", "edges": edges.tolist(),
                    "before": (torch.histc(w0[::step].cpu(), bins, -top, top) * step).tolist(),
                    "pruned": (torch.histc(kept.cpu(), bins, -top, top) * step).tolist(),
                    "weights": len(w0), "kept": int(len(kept) * step)})
    return add_shared(out, shared) if shared is not None else out


def add_shared(histograms: list[dict], shared: Sequence[SharedWeights]) -> list[dict]:
    """Give each layer's histogram its shared values (codebook) and the weights that share each one."""
    for h, s in zip(histograms, shared):
        counts = torch.bincount(s.index, minlength=len(s.codebook))
        h.update(codebook=s.codebook[1:].tolist(), codebook_counts=counts[1:].tolist(), kept=len(s.index))
    return histograms


# ---------------------------------------------------------------- the three stages together

def _evaluate(head: VGGHead, splits, device, which=("val", "test")) -> dict:
    """{"val_accuracy", "test_accuracy"} of the head (its inference form built once for both)."""
    from . import train

    results = train.evaluate_sets(head, {name: getattr(splits, name) for name in which}, device=device)
    return {f"{name}_accuracy": r["accuracy"] for name, r in results.items()}


@torch.no_grad()
def same_head(a: VGGHead, b: VGGHead) -> bool:
    """True when two heads have the same widths and bitwise the same weights, biases and standardization."""
    if a.widths() != b.widths() or a.map_size != b.map_size:
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _stage_file(head: VGGHead, stage: str, path: Path, shared, index_bits: int, accuracy: dict, kept: int,
                splits, device) -> dict:
    """Write one stage file and read it back: bitwise the head it was written from (so its accuracies are that
    head's, measured once), or else evaluated itself. The row keeps the head read back under "_head"."""
    size = save_stage(head, path, stage, shared, index_bits)
    back = load_stage(path)
    same = same_head(back, head)
    return {"stage": stage, "bytes": size, "weights_kept": kept,
            **(accuracy if same else _evaluate(back, splits, device)),
            "read_back": "bitwise the head written" if same else "differs: evaluated as read", "path": str(path),
            "_head": back}


def deep_compression(head: VGGHead, splits, *, sparsity="han", scan_tolerance: float = 1.0,
                     scan_sparsities: Sequence[float] = SCAN_SPARSITIES, scan_limit: int | None = 500,
                     bits=5, index_bits: int = 5, steps: int = 2, epochs: int = 1, finetune_epochs: int = 1,
                     lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 128, seed: int = 0,
                     optimizer: dict | None = None, folder: str | os.PathLike, name: str = "head", device="auto",
                     unpruned: dict | None = None) -> dict:
    """Han et al.'s three stages on a copy of `head`; every stage written as a file and read back.

    splits: (train, val, test) FeatureSets (study.Splits). sparsity: "han" (fc1/fc2 kept 4%, the others 23%),
    "scan" (each layer's largest scanned sparsity within `scan_tolerance` points of the unpruned head on
    validation; see sensitivity_scan, which runs either way for its figure), or one fraction removed per
    layer. Pruning is iterated over `steps` steps of `epochs` retraining epochs at `lr` (continuing the
    start's Adam moments `optimizer`, a train.AdamState payload such as study.train_start's
    record["optimizer"], when given); the shared values (2**bits - 1 per layer, plus zero) are then fine-tuned
    `finetune_epochs` epochs at `finetune_lr`. unpruned: {"val_accuracy", "test_accuracy"} of `head` if known.

    Returns a dict: stages (one row per stage: stage, description, bytes, ratio to the unpruned float32
    head's file, weights_kept, bits_per_weight, val_accuracy, test_accuracy, read_back, path), sensitivity
    (scan rows), sparsities (per layer, used), histograms (weight_histograms), steps (prune-retrain rows),
    untrained_quantization_val_accuracy (the shared values before fine-tuning, what fine-tuning buys),
    epochs_total (epochs trained after `head`: the equal-budget control trains as many), seconds (per
    phase and "total"), head (the Huffman file read back), shared (its SharedWeights), paths.
    """
    import copy

    from . import model

    if sparsity != "scan":
        check_sparsities(sparsity, head)
    _check_bits_per_layer(bits, len(head.linears()))
    checks.integer("index_bits", index_bits, 1, 16, hint="Han et al. used 5 for fully connected layers")
    for key, value in (("steps", steps), ("epochs", epochs), ("finetune_epochs", finetune_epochs)):
        checks.integer(key, value, minimum=1)
    say, device, clock = reporter.say, pick_device(device), _Clock()
    folder = files.writable_folder(folder, "Deep Compression folder", "give another folder")
    unpruned = unpruned or _evaluate(head, splits, device)
    scan = sensitivity_scan(head, splits.val, scan_sparsities, scan_limit, device)
    chosen = choose_sparsities(scan, scan_tolerance) if sparsity == "scan" else check_sparsities(sparsity, head)
    say(f"sparsity per layer: {', '.join(f'{s:.0%}' for s in chosen)} removed")
    clock.lap("scan")

    work = copy.deepcopy(head).to(device)
    masks, step_rows = prune_and_retrain(work, splits.train, chosen, steps=steps, epochs=epochs, lr=lr, seed=seed,
                                         batch_size=batch_size, device=device, optimizer=optimizer)
    kept = sum(int(m.sum()) for m in masks)
    clock.lap("prune_retrain")
    rows = [{"stage": "float32", "bytes": model.head_bytes(head), "weights_kept": sum(l.weight.numel()
                                                                                     for l in head.linears()),
             "val_accuracy": unpruned["val_accuracy"], "test_accuracy": unpruned["test_accuracy"],
             "read_back": "the head itself", "path": None}]
    rows.append(_stage_file(work, "sparse", folder / f"{name}-pruned-sparse.pt", None, index_bits,
                            _evaluate(work, splits, device), kept, splits, device))
    histograms = weight_histograms(head, work)
    clock.lap("sparse_file")

    shared = share_weights(work, bits)  # the pruned head, quantized in place: it is on disk and in the histograms
    write_shared(work, shared)
    untrained = _evaluate(work, splits, device, ("val",))["val_accuracy"]
    finetune_centroids(work, shared, splits.train, finetune_epochs, batch_size, finetune_lr, seed=seed + 1,
                       device=device)
    clock.lap("quantize")
    accuracy = _evaluate(work, splits, device)
    for stage in ("quantized", "huffman"):
        rows.append(_stage_file(work, stage, folder / f"{name}-{stage}.pt", shared, index_bits, accuracy, kept,
                                splits, device))
    clock.lap("quantized_files")
    final = rows[-1].pop("_head")
    for r in rows:
        r.pop("_head", None)
        r.update(ratio=rows[0]["bytes"] / r["bytes"], bits_per_weight=8 * r["bytes"] / max(1, r["weights_kept"]),
                 description=STAGE_NAMES[r["stage"]])
    return {"stages": rows, "sensitivity": scan, "sparsities": chosen, "histograms": add_shared(histograms, shared),
            "steps": step_rows, "untrained_quantization_val_accuracy": untrained,
            "epochs_total": steps * epochs + finetune_epochs, "seconds": clock.total(), "head": final,
            "shared": shared, "paths": {r["stage"]: r["path"] for r in rows}}


class _Clock:
    """Seconds per phase: lap(name) records the time since the last lap; total() adds "total"."""

    def __init__(self):
        self.seconds, self._began = {}, time.perf_counter()
        self._last = self._began

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now

    def total(self) -> dict:
        return {**self.seconds, "total": time.perf_counter() - self._began}


def stage_table(stages: Sequence[dict], control_val_accuracy: float, control_test_accuracy: float,
                tolerance: float = 1.0) -> list[dict]:
    """The stage rows of `deep_compression` beside the equal-budget control and Han et al.'s VGG16.

    Adds control_val_accuracy, control_test_accuracy, val_drop_points (the control's validation accuracy
    minus the stage's, in points), within_tolerance (validation, `tolerance` points), han_vgg16_bytes and
    han_vgg16_ratio (Han et al.'s published figures for the same stage; None where the paper gives none).
    """
    out = []
    for r in stages:
        drop = 100 * (control_val_accuracy - r["val_accuracy"])
        out.append({**r, "control_val_accuracy": control_val_accuracy,
                    "control_test_accuracy": control_test_accuracy, "val_drop_points": drop,
                    "within_tolerance": drop <= tolerance + 1e-9, **HAN_VGG16[r["stage"]]})
    return out


# ---------------------------------------------------------------- structured against fine-grained

@torch.no_grad()
def _sparse_linear(lin: nn.Linear) -> nn.Module:
    """A Linear computed with torch's CSR sparse kernel: y = x W^T + b as (W_csr @ x^T)^T + b."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        weight = lin.weight.detach().to_sparse_csr()
    bias = lin.bias.detach()

    class SparseLinear(nn.Module):
        def forward(self, x):
            return (weight @ x.T).T + bias

    return SparseLinear()


SPARSE_KERNEL_DENSITY = 0.5  # layers denser than this are timed with dense kernels only


@torch.no_grad()
def _seconds(net: nn.Module, x: torch.Tensor, repeats: int) -> float:
    net(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def inference_times(head: VGGHead, maps: torch.Tensor, repeats: int = 5) -> dict:
    """Median CPU seconds for one forward pass of `maps` through the head's inference form, with dense kernels
    and with torch's sparse CSR kernel on each Linear layer where it is faster (measured layer by layer).

    Layers denser than SPARSE_KERNEL_DENSITY are not tried sparse (a dense head's sparse timings took most of
    the comparison's time). Returns dense_seconds, sparse_seconds, sparse_layers (names of the layers run
    sparse), densities (of the
    inference form's weights: at 1 x 1 maps the first layer is folded, so a feature counts as kept when any
    of its 49 copies is).
    """
    net = head.cpu().inference_form()
    maps = maps.cpu()
    dense = _seconds(net, maps, repeats)
    at, inputs = _linear_inputs(net, maps)
    mods, sparse_layers, dens = list(net), [], []
    for k, (pos, x) in enumerate(zip(at, inputs)):
        lin = net[pos]
        dens.append(float((lin.weight != 0).float().mean()))
        if dens[-1] > SPARSE_KERNEL_DENSITY:  # CSR kernels lose to dense ones long before this: not timed
            continue
        candidate = _sparse_linear(lin)
        if _seconds(candidate, x, repeats) < _seconds(lin, x, repeats):
            mods[pos] = candidate
            sparse_layers.append(f"fc{k + 1}")
    sparse_net = nn.Sequential(*mods)
    sparse = _seconds(sparse_net, maps, repeats) if sparse_layers else dense
    if sparse >= dense:  # layer by layer faster, not as a whole: dense kernels throughout
        sparse, sparse_layers, sparse_net = dense, [], net
    return {"dense_seconds": dense, "sparse_seconds": sparse, "sparse_layers": sparse_layers,
            "inference_densities": dens, "fastest": sparse_net if sparse_layers else net}


@torch.no_grad()
def alternated_times(nets: Sequence[nn.Module], x: torch.Tensor, rounds: int = 15) -> list[list[float]]:
    """CPU seconds of one forward pass of `x` through each of `nets`, measured in `rounds` rounds that take the
    nets in turn (the machine's drift then falls on all of them alike): one list of times per net."""
    for net in nets:
        net(x)  # warm-up: first-touch pages, kernel choice
    times: list[list[float]] = [[] for _ in nets]
    for _ in range(rounds):
        for i, net in enumerate(nets):
            t = time.perf_counter()
            net(x)
            times[i].append(time.perf_counter() - t)
    return times


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of `values` (the middle of the sorted list, no interpolation)."""
    v = sorted(values)
    return v[len(v) // 4], v[len(v) // 2], v[(3 * len(v)) // 4]


def structured_vs_finegrained(heads: dict, sets: dict, *, stored_bytes: dict | None = None, batch: int = 256,
                              repeats: int = 5, rounds: int = 15, device="auto") -> list[dict]:
    """One row per head ({label: VGGHead}, e.g. the structured knee head and the fine-grained one).

    Columns: pruning (the label), widths, weights_kept, parameters (kept weights + biases), density,
    <set>_accuracy for each of `sets`, float32_sparse_bytes (the head as a "sparse" stage file: float32 kept
    values and 5-bit relative indices, or dense), stored_bytes (from `stored_bytes`, e.g. its Huffman file),
    mec_bits and mec_effective_bits (the four rules on the widths as read, and on the distinct inputs: what they
    mean in every table), mec_kept_bits and mec_kept_effective_bits (rule 2 on the weights kept: mec_sparse),
    CPU milliseconds for `batch` images with dense kernels and with sparse ones where they help (a first look,
    median of `repeats`), then ms_q1, ms, ms_q3: the quartiles of `rounds` rounds that time every head's
    fastest form in turn (`alternated_times`), the spread a speed sentence must exceed.
    """
    from . import capacity, train

    rows, fastest = [], []
    for label, head in heads.items():
        row = {"pruning": label, "widths": cfg.Widths(head.widths()), "weights_kept": kept_weights(head)}
        row["parameters"] = row["weights_kept"] + sum(l.bias.numel() for l in head.linears())
        row["density"] = row["weights_kept"] / sum(l.weight.numel() for l in head.linears())
        for name, result in train.evaluate_sets(head, sets, device=device).items():  # one inference form
            row[f"{name}_accuracy"] = result["accuracy"]
        row["float32_sparse_bytes"] = files.serialized_size(stage_payload(head.cpu(), "sparse"))
        row["stored_bytes"] = (stored_bytes or {}).get(label)
        row["mec_bits"] = capacity.mec(head.widths())  # the four rules on the widths as the head reads them
        row["mec_effective_bits"] = capacity.mec_effective(head.widths(), head.map_size)
        row["mec_kept_bits"] = mec_sparse(head)  # rule 2 on the weights kept, live neurons only
        row["mec_kept_effective_bits"] = mec_sparse(head, effective=True) if head.map_size == 1 else None
        maps = next(iter(sets.values())).maps[:batch]
        times = inference_times(head, maps, repeats)
        row.update(dense_ms=1e3 * times["dense_seconds"], sparse_ms=1e3 * times["sparse_seconds"],
                   sparse_layers=",".join(times["sparse_layers"]) or "none")
        fastest.append(times["fastest"])
        rows.append(row)
    maps = next(iter(sets.values())).maps[:batch].cpu()
    for row, t in zip(rows, alternated_times(fastest, maps, rounds)):  # the timing the sentences read
        row["ms_q1"], row["ms"], row["ms_q3"] = (1e3 * v for v in quartiles(t))
        row["timing_rounds"] = rounds
    return rows
