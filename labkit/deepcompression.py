"""Deep Compression (Han, Mao, Dally, ICLR 2016) around its stages, and fine-grained against structured.

The training budget (`plan`), each stage's file read back (`stage_file`), the stage table, structured against
fine-grained pruning (`finish`: bytes, MEC, CPU time) and weight histograms. The stages themselves live in
labkit.finegrained, labkit.quantize and labkit.stagefiles.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import checks, files
from . import config as cfg
from .device import give_back_memory
from .finegrained import linear_inputs, kept_weights, mec_sparse
from .model import VGGHead
from .quantize import SharedWeights
from .stagefiles import load_stage, save_stage, stage_payload

DC_EPOCHS = {"ci": 1, "quick": 3, "paper": 3}  # Deep Compression's retraining epochs per prune step
DC_LR_FACTOR = 2  # its retraining rate, times the schedule's lr (see `plan`)
STAGE_NAMES = {"float32": "unpruned, float32", "sparse": "pruned, stored sparse (float32, relative indices)",
               "quantized": "+ trained quantization", "huffman": "+ Huffman coding"}
# Han et al.'s published VGG16 figures (arXiv 1510.00149 and 1506.02626): file bytes and ratio after each stage
HAN_VGG16 = {"float32": {"han_vgg16_bytes": 552_000_000, "han_vgg16_ratio": 1.0},
             "sparse": {"han_vgg16_bytes": None, "han_vgg16_ratio": 13.0},  # 138M -> 10.3M parameters
             "quantized": {"han_vgg16_bytes": None, "han_vgg16_ratio": 31.0},
             "huffman": {"han_vgg16_bytes": 11_300_000, "han_vgg16_ratio": 49.0}}


# ---------------------------------------------------------------- histograms

@torch.no_grad()
def weight_histograms(before, pruned: VGGHead, shared: Sequence[SharedWeights] | None = None,
                      bins: int = 80, sample: int = 1 << 21) -> list[dict]:
    """Per layer, on common symmetric edges: histograms of the weights before pruning (`before`: the head, or its
    `sampled_weights`) and of the kept weights after, plus the shared values and their counts if `shared` is given.
    Over `sample` weights, evenly spaced weights are counted, scaled to the layer. Keys: layer, name, edges
    (bins + 1), before, pruned (float counts), weights, kept, and codebook, codebook_counts (zero left out)."""
    out = []
    taken = before if isinstance(before, list) else sampled_weights(before, sample)
    for i, ((w0, step, n), b) in enumerate(zip(taken, pruned.linears())):
        w1 = b.weight.detach().float().flatten()
        top = max(float(w0.abs().max()), float(w1[::step].abs().max())) or 1.0  # retraining may grow them
        edges = torch.linspace(-top, top, bins + 1)
        kept = w1[::step]
        kept = kept[kept != 0]
        out.append({"layer": i, "name": f"fc{i + 1}", "edges": edges.tolist(),
                    "before": (torch.histc(w0.cpu(), bins, -top, top) * step).tolist(),
                    "pruned": (torch.histc(kept.cpu(), bins, -top, top) * step).tolist(),
                    "weights": n, "kept": int(len(kept) * step)})
    return add_shared(out, shared) if shared is not None else out


def sampled_weights(head: VGGHead, sample: int = 1 << 21) -> list[tuple[torch.Tensor, int, int]]:
    """Each layer's evenly spaced weights, at most about `sample`: [(weights, step, layer's count)], taken early so
    `weight_histograms` need not hold the unpruned head."""
    out = []
    for lin in head.linears():
        w = lin.weight.detach().float().flatten()
        step = max(1, len(w) // sample)
        out.append((w[::step].clone(), step, len(w)))
    return out


def add_shared(histograms: list[dict], shared: Sequence[SharedWeights]) -> list[dict]:
    """Give each layer's histogram its shared values (codebook) and the weights that share each one."""
    for h, s in zip(histograms, shared):
        counts = torch.bincount(s.index.long(), minlength=len(s.codebook))
        h.update(codebook=s.codebook[1:].tolist(), codebook_counts=counts[1:].tolist(), kept=len(s.index))
    return histograms


# ---------------------------------------------------------------- the three stages together

def accuracies(head: VGGHead, splits, device, which=("val", "test")) -> dict:
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


def stage_file(head: VGGHead, stage: str, path: str | os.PathLike, shared, accuracy: dict, kept: int, splits,
               device, index_bits: int = 5) -> dict:
    """Write one stage's file ("sparse", "quantized" or "huffman") and read it back: `accuracy` stands if it reads
    back bitwise `head`, else the read head is evaluated. Returns stage, bytes, weights_kept (`kept`),
    val_accuracy, test_accuracy, read_back, path."""
    path = Path(path)
    files.writable_folder(path.parent, "the Deep Compression folder", "set LABKIT_RESULTS to a folder you can "
                                                                      "write to")
    size = save_stage(head, path, stage, shared, index_bits)
    back = load_stage(path)
    same = same_head(back, head)
    return {"stage": stage, "bytes": size, "weights_kept": kept,
            **(accuracy if same else accuracies(back, splits, device)),
            "read_back": "bitwise the head written" if same else "differs: evaluated as read", "path": str(path)}


def stage_table(stages: Sequence[dict], control_val_accuracy: float, control_test_accuracy: float,
                tolerance: float = 1.0) -> list[dict]:
    """The stage rows (`stage_file`) beside the equal-budget control and Han's VGG16: adds control_val_accuracy,
    control_test_accuracy, val_drop_points (control minus stage, validation, in points), within_tolerance
    (`tolerance` points), han_vgg16_bytes and han_vgg16_ratio (None where the paper gives none)."""
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
    """Median CPU seconds of a forward pass of `maps` through the inference form (the head is moved to the CPU), dense
    and with torch's CSR kernel on each Linear layer (up to SPARSE_KERNEL_DENSITY) where it is faster. Returns
    dense_seconds, sparse_seconds, sparse_layers (names), inference_densities (each Linear's nonzero share in the
    inference form; at 1 x 1 maps fc1 is folded, so a weight counts as kept when any of its 49 copies is) and fastest
    (the faster net)."""
    net = head.cpu().inference_form()
    maps = maps.cpu()
    dense = _seconds(net, maps, repeats)
    at, inputs = linear_inputs(net, maps)
    mods, sparse_layers, dens = list(net), [], []
    for k, (pos, x) in enumerate(zip(at, inputs)):
        lin = net[pos]
        dens.append(int(torch.count_nonzero(lin.weight)) / lin.weight.numel())
        if dens[-1] > SPARSE_KERNEL_DENSITY:  # CSR kernels lose to dense ones long before this
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
    """One row per head ({label: VGGHead, or a function loading one so one full head is held at a time}):
    pruning (label), widths, weights_kept, parameters (kept weights + biases), density, <set>_accuracy,
    float32_sparse_bytes (as a "sparse" stage file), stored_bytes (from `stored_bytes`), mec_bits and
    mec_effective_bits (the four rules on the widths, and on distinct inputs), mec_kept_bits and
    mec_kept_effective_bits (`mec_sparse`), dense_ms, sparse_ms, sparse_layers (CPU, `batch` images, median of
    `repeats`), then ms_q1, ms, ms_q3: quartiles of `rounds` rounds timing every head's fastest form in turn
    (`alternated_times`), the spread a speed sentence must exceed, and timing_rounds. VGGHeads given are moved
    to the CPU."""
    from . import capacity, train

    rows, fastest = [], []
    for label, head in heads.items():
        head = head if isinstance(head, nn.Module) else head()  # a loader
        row = {"pruning": label, "widths": cfg.Widths(head.widths()), "weights_kept": kept_weights(head)}
        row["parameters"] = row["weights_kept"] + sum(l.bias.numel() for l in head.linears())
        row["density"] = row["weights_kept"] / sum(l.weight.numel() for l in head.linears())
        for name, result in train.evaluate_sets(head, sets, device=device).items():  # one inference form
            row[f"{name}_accuracy"] = result["accuracy"]
        row["float32_sparse_bytes"] = files.serialized_size(stage_payload(head.cpu(), "sparse"))
        row["stored_bytes"] = (stored_bytes or {}).get(label)
        row["mec_bits"] = capacity.mec(head.widths())
        row["mec_effective_bits"] = capacity.mec_effective(head.widths(), head.map_size)
        row["mec_kept_bits"] = mec_sparse(head)
        row["mec_kept_effective_bits"] = mec_sparse(head, effective=True) if head.map_size == 1 else None
        maps = next(iter(sets.values())).maps[:batch]
        times = inference_times(head, maps, repeats)
        row.update(dense_ms=1e3 * times["dense_seconds"], sparse_ms=1e3 * times["sparse_seconds"],
                   sparse_layers=",".join(times["sparse_layers"]) or "none")
        fastest.append(times["fastest"])
        rows.append(row)
        del head
    maps = next(iter(sets.values())).maps[:batch].cpu()
    for row, t in zip(rows, alternated_times(fastest, maps, rounds)):  # the timing the sentences read
        row["ms_q1"], row["ms"], row["ms_q3"] = (1e3 * v for v in quartiles(t))
        row["timing_rounds"] = rounds
    return rows


def plan(c, steps: int = 3, epochs: int | None = None) -> dict:
    """Deep Compression's budget on a notebook config `c`: `steps` prune-and-retrain steps of `epochs` epochs (None:
    the profile's DC_EPOCHS) at DC_LR_FACTOR x c.lr (removing 96% of a layer's weights is a new start; at quick, 2
    steps of 1 epoch ended 1.5-3 points below the control at every rate from 2e-5 to 1e-3); then shared-value
    fine-tuning at that rate x c.lr_drop up to whole control cycles (at least `epochs`). Returns {"steps", "epochs",
    "finetune_epochs", "lr", "finetune_lr", "cycles": the equal-budget control's cycles after its start}."""
    checks.integer("steps", steps, minimum=1, hint="Han et al. prune and retrain in a few steps")
    epochs = DC_EPOCHS.get(c.profile, 3) if epochs is None else epochs
    checks.integer("epochs", epochs, minimum=1, hint="retraining epochs after each prune step")
    cycles = math.ceil((steps + 1) * epochs / c.epochs)  # every epoch trained, in whole cycles of the control
    return {"steps": steps, "epochs": epochs, "finetune_epochs": cycles * c.epochs - steps * epochs,
            "lr": DC_LR_FACTOR * c.lr, "finetune_lr": DC_LR_FACTOR * c.lr * c.lr_drop, "cycles": cycles}


def finish(stages: Sequence[dict], control: dict, c, splits, start: str | os.PathLike, folder: Path,
           knee: dict | None = None, seed: int = 0, bits: int = 5) -> dict:
    """The stage table (`stages`: their rows, the unpruned head's first; `control`: the equal-budget control's row),
    then structured (the knee head of `knee`, also written Huffman-coded to `folder`) against fine-grained pruning:
    bytes, MEC, CPU time. Returns {"stages", "control", "versus"}; adds ratio, bits_per_weight and description
    to the `stages` rows in place."""
    from . import model

    for r in stages:
        r.update(ratio=stages[0]["bytes"] / r["bytes"], bits_per_weight=8 * r["bytes"] / max(1, r["weights_kept"]),
                 description=STAGE_NAMES[r["stage"]])
    table = stage_table(stages, control["val_accuracy"], control["test_accuracy"], c.tolerance)
    # loaders, not heads: each is read when its turn comes and let go after
    heads = {"unpruned": lambda: model.load_head(start)[0]}
    stored = {"unpruned": stages[0]["bytes"]}
    if knee is not None:  # seed 0's knee head, as knee.compress_knee stored it
        best = knee["smallest"]
        structured, _ = model.load_head(next(r["path"] for r in knee["table"] if r["storage"] == "float32"))
        label = f"structured (the knee, {best['widths']})"
        stored[label] = save_stage(structured, folder / f"seed{seed}-knee-huffman.pt",
                                   "huffman", bits=bits)
        heads[label] = [structured].pop
        del structured
    label = "fine-grained (Deep Compression)"
    heads[label], stored[label] = (lambda: load_stage(stages[-1]["path"])), stages[-1]["bytes"]
    give_back_memory()
    versus = structured_vs_finegrained(heads, {"val": splits.val, "test": splits.test}, stored_bytes=stored,
                                       device=c.device)
    for row in versus:  # what each stored_bytes counts
        row["stored_as"] = "float32 file" if row["pruning"] == "unpruned" else f"{bits}-bit Huffman-coded file"
    return {"stages": table, "control": control, "versus": versus}
