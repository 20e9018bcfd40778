"""Deep Compression's second stage (Han, Mao, Dally, ICLR 2016): trained quantization.

Each layer's kept weights share 2**bits - 1 k-means values plus the zero of the padding entries; each shared value
is then fine-tuned by the summed gradient of the weights that share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checks, compress, huffman, train
from .device import pick_device, set_seed
from .model import FEATURE_CHANNELS, POOLED, VGGHead

KMEANS_SAMPLE = 1 << 18  # weights k-means fits its centroids on (evenly spaced; all are then assigned)


# ---------------------------------------------------------------- stage 2: trained quantization

@dataclass
class SharedWeights:
    """One layer's weights as indices into a shared codebook. positions: int64 flat (row-major) positions of the kept
    weights, None when all are kept; index: each kept weight's codebook entry, 1..2**bits - 1, as uint8 (an eighth of
    int64's memory; `.long()` to index); codebook: float32, 2**bits entries, entry 0 = 0.0 (what relative-index
    padding holds); shape: (out, in)."""

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
            return self.codebook[self.index.long()].view(self.shape)
        w = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.float32)
        w[self.positions] = self.codebook[self.index.long()]
        return w.view(self.shape)


def check_bits(bits, layers: int) -> list[int]:
    bits = [bits] * layers if not isinstance(bits, (list, tuple)) else list(bits)
    if len(bits) != layers:
        raise ValueError(f"bits={bits} name {len(bits)} layers, the head has {layers}: give one width per layer "
                         "or one for all (Han et al.: 5 for fully connected layers)")
    return [checks.integer(f"bits of fc{i + 1}", b, 1, 8, hint="2**bits - 1 shared values per layer plus zero "
                           "(Han et al.: 5 for fully connected layers)") for i, b in enumerate(bits)]


@torch.no_grad()
def share_weights(head: VGGHead, bits=5) -> list[SharedWeights]:
    """k-means weight sharing of each layer's kept (nonzero) weights: 2**bits - 1 centroids
    (compress.kmeans_centroids) plus the zero entry; `bits`: one width for all layers or one per layer."""
    bits = check_bits(bits, len(head.linears()))
    shared = []
    for lin, b in zip(head.linears(), bits):
        w = lin.weight.detach().float().cpu().flatten()
        dense = int(torch.count_nonzero(w)) == len(w)  # a dense layer needs no positions (66M int64: 533 MB)
        positions = None if dense else torch.nonzero(w).flatten()
        values = w if dense else w[positions]
        if len(values) == 0:
            centroids, index = torch.zeros((1 << b) - 1), torch.zeros(0, dtype=torch.uint8)
        else:
            centroids, index = compress.kmeans_centroids(values, (1 << b) - 1, sample=KMEANS_SAMPLE,
                                                         index_dtype=torch.uint8)
        shared.append(SharedWeights(positions, index.add_(1),
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
        self.index = s.index.to(device).long()
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
    """Train the shared values with Adam (positions and biases fixed): each centroid moves by the summed gradient
    of its weights (Han et al.'s figure 3; at 1 x 1 maps the first layer is built folded). Updates `shared` and
    the head's weights; returns one dict per epoch (train.train_epochs)."""
    epochs = checks.integer("epochs", epochs, minimum=1)
    checks.number("lr", lr, above=0)
    device = pick_device(device)
    head.to(device).train()
    fold = head.map_size == 1
    layers = [_SharedLayer(s, fold and i == 0, device) for i, s in enumerate(shared)]
    optimizer = torch.optim.Adam([layer.codebook for layer in layers], lr=lr)
    built: list[torch.Tensor] = []

    def net(maps: torch.Tensor) -> torch.Tensor:  # the head on the weights its codebooks give now
        built[:] = [layer.weight() for layer in layers]
        return _forward_with(head, built, maps, fold)

    def centroid_gradients() -> None:
        for layer, w in zip(layers, built):
            layer.centroid_gradient(w)

    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    maps, labels = train_set.on(device)
    history = train.train_epochs(net, optimizer, maps, labels, epochs, batch_size, generator,
                                 before_step=centroid_gradients)
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
