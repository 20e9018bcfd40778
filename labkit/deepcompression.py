"""Deep Compression's three stages together (Han, Mao, Dally, ICLR 2016), and fine-grained against structured.

`deep_compression` prunes (labkit.finegrained), quantizes (labkit.quantize) and writes and reads back each
stage's file (labkit.stagefiles) on a copy of a head; notebook 03 runs it on its trained start beside its
equal-budget control (`plan` gives both budgets, `finish` sets them side by side); `stage_table`, `weight_histograms` and
`structured_vs_finegrained` (bytes, MEC, CPU time) are what notebook 03 shows.
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
from . import progress as reporter
from .device import derive_seed, give_back_memory, pick_device
from .finegrained import (SCAN_SPARSITIES, linear_inputs, check_sparsities, choose_sparsities, kept_weights,
                          masked_fit, mec_sparse, prune_weights, schedule, sensitivity_scan)
from .train import AdamState
from .model import VGGHead
from .quantize import SharedWeights, check_bits, finetune_centroids, share_weights, write_shared
from .stagefiles import load_stage, save_stage, stage_payload

DC_EPOCHS = {"ci": 1, "quick": 3, "paper": 3}  # Deep Compression's retraining epochs per prune step
DC_LR_FACTOR = 2  # its retraining rate, times the schedule's lr (see Session.deep_compression)
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
    """Per layer: histograms of the weights before pruning (`before`: the head, or its `sampled_weights`) and of
    the kept weights after pruning, on the same
    edges (symmetric, to the largest magnitude of either), and the shared values with their counts
    (`add_shared`, here when `shared` is given).

    Layers of more than `sample` weights are histogrammed on evenly spaced weights, counts scaled to the layer.
    Keys: layer, name, edges (bins + 1), before, pruned (counts, floats), weights, kept, and codebook,
    codebook_counts (the padding zero left out).
    """
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
    """Each layer's evenly spaced weights, at most about `sample` of them: [(weights, step, layer's count)], what
    `weight_histograms` draws the weights before pruning from (taken early, the unpruned head need not be held)."""
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


def deep_compression(head: VGGHead | str | os.PathLike, splits, *, sparsity="han", scan_tolerance: float = 1.0,
                     scan_sparsities: Sequence[float] = SCAN_SPARSITIES, scan_limit: int | None = 500,
                     bits=5, index_bits: int = 5, steps: int = 2, epochs: int = 1, finetune_epochs: int = 1,
                     lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 128, seed: int = 0,
                     optimizer: dict | None = None, folder: str | os.PathLike, name: str = "head", device="auto",
                     unpruned: dict | None = None) -> dict:
    """Han et al.'s three stages on a copy of `head` (a head, or the path of its file: read here and let go once
    copied, so that the unpruned head and its working copy are not both held); every stage written as a file
    and read back.

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

    if isinstance(head, (str, os.PathLike)):  # read here, so that this function holds the only reference
        head, _ = model.load_head(head)
    if sparsity != "scan":
        check_sparsities(sparsity, head)
    check_bits(bits, len(head.linears()))
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
    before = sampled_weights(head)
    rows = [{"stage": "float32", "bytes": model.head_bytes(head), "weights_kept": sum(l.weight.numel()
                                                                                     for l in head.linears()),
             "val_accuracy": unpruned["val_accuracy"], "test_accuracy": unpruned["test_accuracy"],
             "read_back": "the head itself", "path": None}]
    del head  # the work copy is all that is needed from here (a caller may hand over its only reference)
    # Han's iterative pruning: `steps` times, prune to the next sparsity of the schedule, retrain `epochs` epochs
    # with the masks held, one Adam throughout (going on from the start's moments; the payload is left as it was)
    masks, step_rows, state = None, [], AdamState.from_payload(optimizer).copy()
    for step, target in enumerate(schedule(chosen, steps), 1):
        masks = prune_weights(work, target, masks)
        history = masked_fit(work, masks, splits.train, epochs, batch_size, lr, seed=derive_seed(seed, step),
                             device=device, state=state)
        step_rows.append({"step": step, "sparsities": target, "loss": history[-1]["loss"],
                          "seconds": sum(h["seconds"] for h in history)})
        say(f"prune step {step}/{steps}: kept {', '.join(f'{1 - s:.1%}' for s in target)}; "
            f"retrained {epochs} epoch(s), loss {history[-1]['loss']:.3f}")
    kept = sum(int(torch.count_nonzero(m)) for m in masks)
    clock.lap("prune_retrain")
    rows.append(_stage_file(work, "sparse", folder / f"{name}-pruned-sparse.pt", None, index_bits,
                            _evaluate(work, splits, device), kept, splits, device))
    rows[-1].pop("_head")  # only the last stage's head read back is kept: each is a full dense head
    histograms = weight_histograms(before, work)
    clock.lap("sparse_file")

    shared = share_weights(work, bits)  # the pruned head, quantized in place: it is on disk and in the histograms
    write_shared(work, shared)
    untrained = _evaluate(work, splits, device, ("val",))["val_accuracy"]
    finetune_centroids(work, shared, splits.train, finetune_epochs, batch_size, finetune_lr, seed=seed + 1,
                       device=device)
    clock.lap("quantize")
    accuracy = _evaluate(work, splits, device)
    rows.append(_stage_file(work, "quantized", folder / f"{name}-quantized.pt", shared, index_bits, accuracy, kept,
                            splits, device))
    rows[-1].pop("_head")
    rows.append(_stage_file(work, "huffman", folder / f"{name}-huffman.pt", shared, index_bits, accuracy, kept,
                            splits, device))
    clock.lap("quantized_files")
    final = rows[-1].pop("_head")
    for r in rows:
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
    at, inputs = linear_inputs(net, maps)
    mods, sparse_layers, dens = list(net), [], []
    for k, (pos, x) in enumerate(zip(at, inputs)):
        lin = net[pos]
        dens.append(int(torch.count_nonzero(lin.weight)) / lin.weight.numel())
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
        head = head if isinstance(head, nn.Module) else head()  # a loader: one full head held at a time
        row = {"pruning": label, "widths": cfg.Widths(head.widths()), "weights_kept": kept_weights(head)}
        row["parameters"] = row["weights_kept"] + sum(l.bias.numel() for l in head.linears())
        row["density"] = row["weights_kept"] / sum(l.weight.numel() for l in head.linears())
        for name, result in train.evaluate_sets(head, sets, device=device).items():  # one inference form
            row[f"{name}_accuracy"] = result["accuracy"]
        row["float32_sparse_bytes"] = files.serialized_size(stage_payload(head.cpu(), "sparse"))
        row["stored_bytes"] = (stored_bytes or {}).get(label)
        row["mec_bits"] = capacity.mec(head.widths())  # the four rules on the widths as the head reads them
        row["mec_effective_bits"] = capacity.mec_effective(head.widths(), head.map_size)
        row["mec_kept_bits"] = mec_sparse(head)  # rule 2 on the weights kept, connected neurons only
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
    """Deep Compression's budget on a notebook session's config `c`: `steps` prune-and-retrain steps of `epochs`
    epochs each at DC_LR_FACTOR x c.lr (removing 96% of a layer's weights is a new start, not fine-tuning).
    Measured at quick (seed 0, control 91.75%): 2 steps of 1 epoch left the three-stage file 1.5-3 points below
    its control at every rate from 2e-5 to 1e-3; 3 steps of 3 epochs at 2e-4, 4e-4 and 1e-3 left it 1.00, 0.20
    and 0.45 points below. None: DC_EPOCHS of the profile (ci: 1, a test of the path). Then the shared values
    are fine-tuned at the retraining rate x c.lr_drop for the epochs that round the total up to whole cycles of
    the control (at least `epochs`). Returns {"steps", "epochs", "finetune_epochs", "lr", "finetune_lr",
    "cycles": the control's cycles after its start, trained as many epochs in all}."""
    checks.integer("steps", steps, minimum=1, hint="Han et al. prune and retrain in a few steps")
    epochs = DC_EPOCHS.get(c.profile, 3) if epochs is None else epochs
    checks.integer("epochs", epochs, minimum=1, hint="retraining epochs after each prune step")
    cycles = math.ceil((steps + 1) * epochs / c.epochs)  # every epoch trained, in whole cycles of the control
    return {"steps": steps, "epochs": epochs, "finetune_epochs": cycles * c.epochs - steps * epochs,
            "lr": DC_LR_FACTOR * c.lr, "finetune_lr": DC_LR_FACTOR * c.lr * c.lr_drop, "cycles": cycles}


def finish(result: dict, control: dict, c, splits, start: str | os.PathLike, folder: Path, knee: dict | None = None,
           seed: int = 0, bits: int = 5) -> dict:
    """After `deep_compression` (`result`) and its equal-budget control (`control`, its row at as many epochs):
    the stage table beside the control and Han's VGG16 figures, then structured (the knee head of `knee`, stored
    the same way) against fine-grained pruning: bytes, MEC, CPU time. Returns {"stages", "result" (its "head"
    let go: None, the file is in its "paths"), "control", "versus"}."""
    from . import model

    stages = stage_table(result["stages"], control["val_accuracy"], control["test_accuracy"], c.tolerance)
    # the side by side reads each head when its turn comes and lets it go after (loaders, not heads): the
    # unpruned head is read again from its file, the fine-grained one handed over (result keeps its file's path)
    heads = {"unpruned": lambda: model.load_head(start)[0]}
    stored = {"unpruned": result["stages"][0]["bytes"]}
    if knee is not None:  # seed 0's knee head, as knee.compress_knee stored it
        best = knee["smallest"]
        structured, _ = model.load_head(next(r["path"] for r in knee["table"] if r["storage"] == "float32"))
        label = f"structured (the knee, {best['widths']})"
        stored[label] = save_stage(structured, folder / f"seed{seed}-knee-huffman.pt",
                                   "huffman", bits=bits)
        heads[label] = [structured].pop
        del structured
    label = "fine-grained (Deep Compression)"
    heads[label], stored[label] = [result.pop("head")].pop, result["stages"][-1]["bytes"]
    give_back_memory()
    versus = structured_vs_finegrained(heads, {"val": splits.val, "test": splits.test}, stored_bytes=stored,
                                       device=c.device)
    result["head"] = None  # the Huffman file read back was let go; result["paths"]["huffman"] is its file
    for row in versus:  # what each stored_bytes counts
        row["stored_as"] = "float32 file" if row["pruning"] == "unpruned" else f"{bits}-bit Huffman-coded file"
    return {"stages": stages, "result": result, "control": control, "versus": versus}
