"""VGG16 with a frozen backbone and the study's fully connected head 25088 -> 4096 -> 4096 -> 256 -> 10."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import torch
from torch import nn

from . import files
from .config import CLASSES
from .device import seeded

FEATURE_CHANNELS = 512
POOLED = 7  # VGG16's adaptive pool makes 7 x 7 maps, so the head sees 512 * 7 * 7 = 25,088 inputs


class Standardize(nn.Module):
    """(x - mean) / std per cached feature, with fixed training-set statistics (buffers, no parameters)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Copy training-set statistics in; features with (near) zero spread keep std 1."""
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).reshape(self.std.shape))

    def forward(self, x):
        return (x.to(self.mean.dtype) - self.mean) / self.std


class AsFloat32(nn.Module):
    """Casts its input to float32 (cached 224 px maps are float16)."""

    def forward(self, x):
        return x.float()


class _KeepMask(torch.autograd.Function):
    """x * keep / (1 - p) with its gradient, `keep` computed once and saved as bytes."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad):
        keep, = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


class Dropout(nn.Dropout):
    """nn.Dropout with 4x cheaper CPU draws (torch's bernoulli_ was a quick cycle's largest cost after the matmuls):
    one 64-bit draw per 4 activations, p rounded to the nearest 1/65,536. On a GPU and in eval mode, nn.Dropout
    itself."""

    def forward(self, x):
        if not self.training or self.p == 0 or x.device.type != "cpu" or x.numel() % 4:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        draws = torch.empty(x.numel() // 4, dtype=torch.int64).random_(-2 ** 63, None)  # all 64 bits
        keep = draws.view(torch.int16).view(x.shape) < round((1 - self.p) * 65536) - 32768
        return _KeepMask.apply(x, keep, 1 / (1 - self.p))


class VGGHead(nn.Module):
    """Backbone maps N x 512 x s x s -> logits N x classes: standardize, VGG16's adaptive pool, then `layers`
    (an nn.Sequential of Linear, ReLU, Dropout; `linears()` lists its Linear layers in order)."""

    def __init__(self, widths=(25088, 4096, 4096, 256, 10), map_size: int = 1, dropout: float = 0.5):
        super().__init__()
        self.norm = Standardize((FEATURE_CHANNELS, map_size, map_size))
        self.pool = nn.AdaptiveAvgPool2d((POOLED, POOLED))
        mods: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            mods.append(nn.Linear(n_in, n_out))
            if i < len(widths) - 2:
                mods += [nn.ReLU(inplace=True), Dropout(dropout)]
        self.layers = nn.Sequential(*mods)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    @property
    def map_size(self) -> int:
        """Side of the backbone maps the head reads: 1 at 32 px inputs, 7 at 224 px."""
        return self.norm.mean.shape[-1]

    def widths(self) -> list[int]:
        """[inputs, n1, ..., classes] as the layers now stand."""
        lin = self.linears()
        return [lin[0].in_features] + [m.out_features for m in lin]

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """Standardized, pooled, flattened head input N x 25088, from the backbone's N x 512 x s x s maps (as cached)
        or torchvision's flattened avgpool output N x 25,088. The latter only at s = 1 or 7, where standardizing
        before or after the pool is the same; elsewhere it raises ValueError."""
        if maps.dim() == 2:
            side, inputs = self.map_size, FEATURE_CHANNELS * POOLED * POOLED
            if maps.shape[1] != inputs:
                raise ValueError(f"a flattened head input has {inputs:,} columns (VGG16's avgpool output, "
                                 f"512 x 7 x 7), not {maps.shape[1]:,}")
            if side not in (1, POOLED):
                raise ValueError(f"this head standardizes {side} x {side} maps before VGG16's pool, so it cannot "
                                 "read the pooled, flattened vector: give it the backbone's maps")
            return self.norm(maps.view(len(maps), FEATURE_CHANNELS, POOLED, POOLED)).reshape(len(maps), -1)
        x = self.norm(maps)
        side = x.shape[-1]
        if side == 1:
            x = x.expand(-1, -1, POOLED, POOLED)
        elif side != POOLED:
            x = self.pool(x)
        return x.reshape(len(x), -1)

    def forward(self, maps):
        return self.layers(self.embed(maps))

    @torch.no_grad()
    def inference_form(self) -> nn.Sequential:
        """The same function as a plain eval-mode stack Flatten, Linear, ReLU, ..., Linear: standardization is folded
        into the first Linear (W' = W / std, b' = b - W' mean), and at 1 x 1 maps so is the 49-fold replication, so
        every FLOP left is a Linear's. Outputs equal the head's up to float rounding; later Linears are shared."""
        first, *rest = self.linears()
        side = self.norm.mean.shape[-1]
        if side not in (1, POOLED):  # other map sizes: keep the standardize and pool steps as they are
            return nn.Sequential(self.norm, self.pool, nn.Flatten(), *[m for m in self.layers
                                                                     if not isinstance(m, nn.Dropout)]).eval()
        w = first.weight.detach()
        if side == 1:
            w = w.view(first.out_features, FEATURE_CHANNELS, POOLED * POOLED).sum(-1)
        w = w / self.norm.std.flatten()  # the one new matrix: no float64 or second copy of the 400 MB layer
        b = (first.bias.detach() if first.bias is not None else 0) - w @ self.norm.mean.flatten()
        fused = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], device="meta")
        fused.weight, fused.bias = nn.Parameter(w), nn.Parameter(b)
        mods: list[nn.Module] = [AsFloat32(), nn.Flatten(), fused]
        for m in self.layers[1:]:
            if isinstance(m, nn.Linear):
                mods.append(m)
            elif isinstance(m, nn.ReLU):
                mods.append(nn.ReLU(inplace=True))  # each Linear output is fresh: no copy
        return nn.Sequential(*mods).eval()


class FoldedFirstLayer(nn.Module):
    """A training view of a head that reads 1 x 1 maps (32 px inputs; else ValueError): its updates, 49x cheaper.
    The pool repeats each feature 49 times, so a neuron's 49 weights on it get equal gradients and equal Adam steps
    (elementwise, no weight decay); this view trains their sum (512 columns) at lr x 49, and `write_back()` adds a
    49th of the change to each, as full-width training would up to float rounding. Bias and later layers are the
    head's. `mask` (bool, out x 25,088, a fine-grained pruned first layer's kept weights): the sum trains at lr,
    `scale_step` scales each step by the feature's kept count, and pruned weights stay exactly zero."""

    def __init__(self, head: VGGHead, mask: torch.Tensor | None = None):
        super().__init__()
        if head.map_size != 1:
            raise ValueError(f"FoldedFirstLayer needs a head that reads 1 x 1 maps, not {head.map_size} x "
                             f"{head.map_size}")
        first = head.linears()[0]
        self._head = [head]  # a plain reference: the head is not a submodule of its view
        self.norm = head.norm
        self.copies = POOLED * POOLED
        self._shape = (first.out_features, FEATURE_CHANNELS, self.copies)
        self._mask = None if mask is None else mask.view(self._shape)
        with torch.no_grad():
            self.kept = None if mask is None else self._mask.sum(-1, dtype=torch.float32)
            self._written = first.weight.view(self._shape).sum(-1)
        self.weight = nn.Parameter(self._written.clone())
        self.bias = first.bias
        self.rest = head.layers[1:]

    def param_groups(self, lr: float) -> list[dict]:
        """Adam parameter groups: the summed matrix at lr x 49 (masked: at lr, see `scale_step`), the rest at lr."""
        return [{"params": [self.weight], "lr": lr * self.copies if self._mask is None else lr},
                {"params": [self.bias, *self.rest.parameters()], "lr": lr}]

    def forward(self, maps):
        return self.rest(nn.functional.linear(self.norm(maps).flatten(1), self.weight, self.bias))

    @torch.no_grad()
    def scale_step(self, previous: torch.Tensor) -> None:
        """Masked view: the step just taken from `previous` (the prior weight) times each feature's kept copies."""
        self.weight.sub_(previous).mul_(self.kept).add_(previous)

    @torch.no_grad()
    def write_back(self) -> None:
        """Give the head's full-width first layer the change trained here so far (kept copies only, if masked)."""
        weight = self._head[0].linears()[0].weight.view(self._shape)
        if self._mask is None:
            weight.add_(((self.weight - self._written) / self.copies).unsqueeze(-1))
        else:
            share = torch.where(self.kept > 0, (self.weight - self._written) / self.kept.clamp(min=1), 0.0)
            for r in range(0, len(share), 256):  # 256 neurons at a time: no 400 MB temporary
                weight[r:r + 256].add_(self._mask[r:r + 256] * share[r:r + 256].unsqueeze(-1))
        self._written.copy_(self.weight)


class VGG16Lab(nn.Module):
    """VGG16 as torchvision lays it out: `features` (13 frozen convolutions), `avgpool` (to 7 x 7) and `classifier`
    (the study's VGGHead, which also reads the backbone's maps directly, as the feature caches are used).
    `weights_used` names the features' weights; `backbone` and `head` alias `features` and `classifier`."""

    def __init__(self, features: nn.Module, classifier: VGGHead, weights_used: str):
        super().__init__()
        self.features = features
        self.avgpool = classifier.pool
        self.classifier = classifier
        self.weights_used = weights_used

    @property
    def backbone(self) -> nn.Module:
        return self.features

    @property
    def head(self) -> VGGHead:
        return self.classifier

    def forward(self, images):
        """torchvision's VGG.forward: features, avgpool, flatten, classifier."""
        return self.classifier(torch.flatten(self.avgpool(self.features(images)), 1))


def build_head(hidden=(4096, 4096, 256), num_classes: int = CLASSES, map_size: int = 1, dropout: float = 0.5,
               seed: int | None = None) -> VGGHead:
    """A fresh head 25088 -> hidden... -> num_classes; seeded when `seed` is given."""
    widths = [FEATURE_CHANNELS * POOLED * POOLED, *hidden, num_classes]
    if any(int(w) <= 0 for w in widths):
        raise ValueError(f"hidden widths {list(hidden)} and num_classes={num_classes} must all be positive")
    with seeded(seed):
        return VGGHead(widths, map_size, dropout)


def map_size_for(image_size: int) -> int:
    """Side of the backbone's output map for square inputs of `image_size` (five 2x2 max-pools)."""
    return image_size // 32


def describe_head_input(image_size: int) -> str:
    """How the backbone's maps at `image_size` become the head's 25,088 inputs, in a sentence."""
    side = map_size_for(image_size)
    inputs = FEATURE_CHANNELS * POOLED * POOLED
    if side == 1:
        return (f"At {image_size} x {image_size} pixels the five max-pools leave a 1 x 1 map of {FEATURE_CHANNELS} "
                f"features per image; VGG16's adaptive average pool repeats each of them {POOLED * POOLED} times to "
                f"make the {POOLED} x {POOLED} x {FEATURE_CHANNELS} = {inputs:,} inputs the head reads, so the cache "
                f"keeps {FEATURE_CHANNELS} numbers per image.")
    if side == POOLED:
        return (f"At {image_size} x {image_size} pixels the backbone leaves a {POOLED} x {POOLED} map of "
                f"{FEATURE_CHANNELS} features, which VGG16's adaptive pool passes on unchanged: {inputs:,} inputs.")
    return (f"At {image_size} x {image_size} pixels the backbone leaves a {side} x {side} map of {FEATURE_CHANNELS} "
            f"features, which VGG16's adaptive average pool turns into {POOLED} x {POOLED}: {inputs:,} inputs.")


def build_vgg16(weights: str = "auto", hidden=(4096, 4096, 256), num_classes: int = CLASSES, image_size: int = 32,
                dropout: float = 0.5, seed: int = 0) -> VGG16Lab:
    """torchvision's VGG16 with its classifier replaced by the study's head, backbone frozen."""
    from .backbone import build_backbone

    backbone, tag = build_backbone(weights, seed)
    return VGG16Lab(backbone, build_head(hidden, num_classes, map_size_for(image_size), dropout, seed), tag)


def head_payload(head: VGGHead, extra: dict | None = None, with_state: bool = True) -> dict:
    """What a head file holds: widths, map size, dropout, the state (on the CPU), and `extra` (plain data)."""
    dropout = next((m.p for m in head.layers if isinstance(m, nn.Dropout)), 0.0)
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()} if with_state else {}
    return {"widths": head.widths(), "map_size": head.norm.mean.shape[-1], "dropout": dropout,
            "state": state, "extra": extra or {}}


def save_head(head: VGGHead, path: str | os.PathLike, extra: dict | None = None) -> int:
    """Write the head (widths, dropout, state) atomically; return the file's size in bytes."""
    return files.save_torch(head_payload(head, extra), path)


def head_bytes(head: VGGHead) -> int:
    """The size in bytes of the file `save_head(head, path)` writes, measured without writing it (once per
    shape and dtype, which alone decide it; a GPU head is measured on empty CPU tensors, not copied off)."""
    payload = head_payload(head, with_state=False)
    state = head.state_dict()
    shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in state.items())
    key = (tuple(payload["widths"]), payload["map_size"], payload["dropout"], shapes)
    if key not in _sizes:
        on_cpu = all(v.device.type == "cpu" for v in state.values())
        payload["state"] = ({k: v.detach() for k, v in state.items()} if on_cpu else
                            {k: torch.empty(shape, dtype=dtype) for k, shape, dtype in shapes})
        _sizes[key] = files.serialized_size(payload)
    return _sizes[key]


_sizes: dict[tuple, int] = {}


def read_extra(path: str | os.PathLike) -> dict:
    """The `extra` data of a head file, read without loading its weights (memory-mapped); {} if unreadable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        extra = payload.get("extra") if isinstance(payload, dict) else None
    except Exception:
        return {}
    return extra if isinstance(extra, dict) else {}


class CheckpointError(files.FileProblem):
    """A checkpoint file is missing, truncated or not a labkit head."""


def load_head(path: str | os.PathLike, fix: str = "delete its run folder to start that run over"
              ) -> tuple[VGGHead, dict]:
    """Read a head written by `save_head`; returns (head, extra). A bad file raises CheckpointError saying `fix`."""
    path = Path(path)
    # heads let go can sit in reference cycles (torch's optimizer makes one) that tensor loops seldom collect:
    # collected before another 482 MB is read (at ci a probe held three unpruned heads, two of them garbage)
    gc.collect()
    payload = files.load_torch(path, "checkpoint", fix, CheckpointError)
    try:
        with torch.device("meta"):  # shapes only: the file's tensors become the head's (no init, no copy)
            head = VGGHead(payload["widths"], payload["map_size"], payload["dropout"])
        head.load_state_dict(payload["state"], assign=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is not a labkit head ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); {fix}") from None
    return head, payload.get("extra", {})
