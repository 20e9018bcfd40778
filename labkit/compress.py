"""Deep Compression's second stage for the head: quantized weights, the real bytes on disk, loading back.

Each Linear weight is stored as int8 with a float32 scale per output row (bits=8), or as indices into a per-layer
k-means codebook of 2**bits float32 values, packed `bits` to a weight (bits=1..7, Han et al. 2016). Biases and
standardization stay float32; `load_compressed` gives back an ordinary float32 VGGHead.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from . import checks, files, huffman
from .model import CheckpointError, VGGHead

FORMAT = "labkit-compressed-head/2"  # /2: indices packed by huffman.pack_fixed (most significant bit first)


# ---------------------------------------------------------------- 8 bits, one scale per output channel

def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 out x in, scale float32 out): w ~ scale_i * q_ij, q in -127..127, scale_i = max_j |w_ij| / 127."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


# ---------------------------------------------------------------- weight sharing

@torch.no_grad()
def kmeans_share(weight: torch.Tensor, bits: int, iterations: int = 25,
                 clusters: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep Compression's weight sharing by 1-D k-means (Lloyd): (codebook float32 ascending, 2**bits values, or
    `clusters` if given; indices int64 shaped like weight). The reference of notebook 03's exercise. Centroids
    start linearly spaced from the smallest to the largest weight (Deep Compression found this best: it keeps the
    rare large weights, which matter most); stops when no centroid moves, or after `iterations`."""
    w = weight.detach().float().flatten()
    k = clusters or 1 << bits
    codebook = torch.linspace(float(w.min()), float(w.max()), k)
    for _ in range(iterations):
        index = _nearest(w, codebook)
        counts = torch.bincount(index, minlength=k)
        sums = torch.bincount(index, weights=w.double(), minlength=k)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), codebook.double()).float()
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # an idle centroid restarts at the weight worst served, splitting the widest cluster
            moved[empty[0]] = w[int((w - codebook[index]).abs().argmax())]
        moved, _ = torch.sort(moved)
        if torch.equal(moved, codebook):
            break
        codebook = moved
    return codebook, _nearest(w, codebook).view(weight.shape)


def _sampled(values: torch.Tensor, sample: int) -> torch.Tensor:
    """At most `sample` evenly spaced values of a flat tensor, and its two extremes (a large layer's k-means)."""
    if len(values) <= sample:
        return values
    picked = values[torch.arange(sample, dtype=torch.int64) * len(values) // sample]  # integer steps: exact
    return torch.cat([picked, values.min().view(1), values.max().view(1)])


@torch.no_grad()
def kmeans_codebook(weight: torch.Tensor, bits: int, iterations: int = 25, sample: int = 1 << 20,
                    share=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook float32 2**bits ascending, index int64 like weight.flatten()): `kmeans_share` fitted on at most
    `sample` evenly spaced weights and the extremes (seconds, not minutes, for 100M weights), then every weight
    assigned to its nearest value. `share`: a kmeans_share-like function (a student's) fits instead."""
    _check_one_width(bits, allowed=range(1, 8))
    fit = share or (lambda values, b: kmeans_share(values, b, iterations))
    everything = weight.detach().float().flatten()
    codebook, _ = fit(_sampled(everything, sample).clone(), bits)  # a copy: a student's fit cannot edit the layer
    codebook = torch.sort(torch.as_tensor(codebook).detach().float().flatten()).values
    if len(codebook) != 1 << bits:
        raise ValueError(f"kmeans_share returned {len(codebook)} values for bits={bits}, not {1 << bits}: see its "
                         "check in notebook 03")
    return codebook, _nearest(everything, codebook)


@torch.no_grad()
def kmeans_centroids(values: torch.Tensor, clusters: int, iterations: int = 25, sample: int = 1 << 20,
                     index_dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids float32 ascending, `clusters` of them; index like values.flatten(), of `index_dtype`):
    `kmeans_codebook` for any number of clusters, the index found 4M values at a time (a uint8 index of 66M
    weights never passes through a 533 MB int64 one)."""
    everything = values.detach().float().flatten()
    if len(everything) == 0 or clusters < 1:
        raise ValueError(f"k-means needs values (got {len(everything)}) and clusters >= 1 (got {clusters})")
    codebook, _ = kmeans_share(_sampled(everything, sample), 0, iterations, clusters=clusters)
    index = torch.empty(len(everything), dtype=index_dtype)
    for i in range(0, len(everything), 1 << 22):
        index[i:i + (1 << 22)] = _nearest(everything[i:i + (1 << 22)], codebook)
    return codebook, index


def _nearest(w: torch.Tensor, sorted_codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest value of an ascending codebook for every element of w."""
    midpoints = (sorted_codebook[1:] + sorted_codebook[:-1]) / 2
    return torch.bucketize(w, midpoints)


# ---------------------------------------------------------------- the head as a file

def _check_one_width(bits, allowed=range(1, 9)) -> None:
    """One storage width: 8 (int8) or 1..7 (a codebook of 2**bits values); `check_bit_widths` checks a list."""
    checks.integer("bits", bits, min(allowed), max(allowed),
                   hint="use 8 (int8, a scale per output channel) or 1..7 (weight sharing, a 2**bits-entry "
                        "codebook per layer)")


@torch.no_grad()
def compress_head(head: VGGHead, bits: int = 8, share=None) -> dict:
    """The payload `save_compressed` writes: widths, standardization, and each layer's stored weights
    (`share`: the codebooks fitted by this kmeans_share-like function, see `kmeans_codebook`)."""
    _check_one_width(bits)
    dropout = next((m.p for m in head.layers if isinstance(m, torch.nn.Dropout)), 0.0)
    layers = []
    for lin in head.linears():
        entry = {"shape": list(lin.weight.shape), "bias": lin.bias.detach().float().clone()}
        if bits == 8:
            entry["q"], entry["scale"] = quantize_per_channel(lin.weight)
        else:
            codebook, index = kmeans_codebook(lin.weight, bits, share=share)
            entry["codebook"], entry["packed"] = codebook, huffman.pack_fixed(index, bits)
        layers.append(entry)
    return {"format": FORMAT, "bits": bits, "widths": head.widths(), "map_size": head.norm.mean.shape[-1],
            "dropout": dropout, "mean": head.norm.mean.float().clone(), "std": head.norm.std.float().clone(),
            "layers": layers}


def save_compressed(head: VGGHead, path: str | os.PathLike, bits: int = 8, share=None) -> int:
    """Write the head with `bits`-bit weights (atomically; `share`: see `compress_head`); return its size in bytes."""
    return files.save_torch(compress_head(head, bits, share), path)


def decompress(payload: dict) -> VGGHead:
    """A float32 VGGHead from a `compress_head` payload."""
    head = VGGHead(payload["widths"], payload["map_size"], payload["dropout"])
    head.norm.mean.copy_(payload["mean"])
    head.norm.std.copy_(payload["std"])
    bits = payload["bits"]
    with torch.no_grad():
        for lin, entry in zip(head.linears(), payload["layers"]):
            shape = tuple(entry["shape"])
            if bits == 8:
                w = dequantize_per_channel(entry["q"], entry["scale"])
            else:
                index = huffman.unpack_fixed(entry["packed"], bits, shape[0] * shape[1])
                w = entry["codebook"][index].view(shape)
            lin.weight.copy_(w.view(shape))
            lin.bias.copy_(entry["bias"])
    return head.eval()


def load_compressed(path: str | os.PathLike) -> VGGHead:
    """Read a file written by `save_compressed` back into a working float32 head (eval mode)."""
    return files.load_format(path, "compressed labkit head", "write it again with labkit.compress.save_compressed "
                             "(python -m labkit compress does)", FORMAT, decompress, CheckpointError)


def compression_table(head: VGGHead, sets: dict, folder: str | os.PathLike, reference_bytes: int,
                      bits=(8, 4), name: str = "head", device="auto",
                      float32_file: str | os.PathLike | None = None, share=None) -> list[dict]:
    """Write `head` to `folder` as <name>-float32.pt and <name>-<b>bit.pt per `bits`, load each back, evaluate it
    on `sets` ({set name: FeatureSet}). One row per file: storage, bytes (on disk), ratio (reference_bytes, the
    unpruned float32 file's, / bytes), <set>_correct, <set>_accuracy, <set>_right, path. `float32_file`: the
    save_head file `head` was just loaded from, measured, not rewritten. `share`: see `compress_head`."""
    from . import model, records, train

    check_bit_widths(bits)
    folder = Path(folder)
    if float32_file is None:
        path = folder / f"{name}-float32.pt"
        model.save_head(head, path)
        loaded, _ = model.load_head(path)
    else:
        path, loaded = Path(float32_file), head
    files_ = [("float32", path.stat().st_size, loaded, path)]
    for b in bits:
        path = folder / f"{name}-{b}bit.pt"
        size = save_compressed(head, path, b, share)
        kind = f"{b}-bit k-means codebook" + (" (your kmeans_share)" if share is not None else "")
        files_.append(("int8, scale per channel" if b == 8 else kind, size,
                       load_compressed(path), path))
    rows = []
    for storage, size, stored, path in files_:
        row = {"storage": storage, "bytes": size, "ratio": reference_bytes / size}
        for split, result in train.evaluate_sets(stored, sets, device=device).items():
            row[f"{split}_correct"], row[f"{split}_accuracy"] = result["correct"], result["accuracy"]
            row[f"{split}_right"] = records.pack_right(result["right"])
        rows.append({**row, "path": str(path)})
    return rows


def check_bit_widths(bits) -> list[int]:
    """A list of storage widths, each 8 or 1..7; ValueError naming the first that is not (before any work)."""
    bits = [bits] if not isinstance(bits, (list, tuple)) else list(bits)
    if not bits:
        raise ValueError("bits=[] names no storage width: give 8 and/or 1..7")
    for b in bits:
        _check_one_width(b)
    return bits
