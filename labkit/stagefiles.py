"""The one-file format of each Deep Compression stage, written and read back into an ordinary float32 VGGHead.

"sparse": float32 values and fixed-width relative indices; "quantized": codebook indices packed `bits` to a
weight; "huffman": both streams Huffman-coded (labkit.huffman), as both are skewed.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from . import checks, files, huffman
from .model import CheckpointError, VGGHead
from .quantize import SharedWeights, share_weights

FORMAT = "labkit-deep-compression/1"
STAGES = ("sparse", "quantized", "huffman")


# ---------------------------------------------------------------- the one-file stage format

def _layer_entry(lin: nn.Linear, stage: str, shared: SharedWeights | None, index_bits: int) -> dict:
    """One Linear layer as stored at `stage`; a dense layer's values are referenced, not copied (400 MB fc1)."""
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
    return files.load_format(path, "Deep Compression head", "write it again with labkit.stagefiles.save_stage "
                             "(notebook 03's Deep Compression cells do)", FORMAT, head_from_payload, CheckpointError)
