"""Training and evaluating the head on cached features (fit, evaluate), with progress bars.

The backbone never runs here: every function takes a FeatureSet of cached maps, placed on the
device once and kept there. The head stays on its device too. On CUDA the head runs under bf16
autocast; on the CPU it runs in float32 and, for a fixed seed and thread count, gives the same
numbers every time. Loss and accuracy are summed on the device and read once per epoch.

At 1 x 1 maps (32 px inputs) the head is trained through `model.FoldedFirstLayer`: the same
updates as full-width training at a 49th of the first layer's cost (see there).

Under torchrun (torch.distributed initialized), `fit` trains with DistributedDataParallel:
every rank draws the same shuffled order, takes its own slice of each global batch and
weights its loss so that the averaged gradient is the global batch's mean, as in one process.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import checks, progress as bars
from .device import autocast, pick_device, set_seed
from .distributed import world
from .features import FeatureSet
from .model import FoldedFirstLayer, VGGHead


def fit(head: torch.nn.Module, train_set: FeatureSet, epochs: int = 3, batch_size: int = 256, lr: float = 1e-4,
        seed: int = 0, device="auto", progress: bool = True, desc: str = "train",
        val_set: FeatureSet | None = None, fold: bool = True) -> list[dict]:
    """Train `head` on cached features with Adam and cross-entropy; one dict per epoch.

    Each dict: epoch, loss (mean over the epoch), accuracy (on the training batches, dropout on),
    seconds, images_per_s, and val_accuracy / val_loss after the epoch when `val_set` is given.
    The head stays on `device`, in eval mode. fold=False trains the full-width first layer even at
    1 x 1 maps (the same numbers up to float rounding, 4-5x slower; for tests and benchmarks).
    """
    epochs = checks.integer("epochs", epochs, minimum=1)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    checks.number("lr", lr, above=0)
    device = pick_device(device)
    rank, size = world()
    if batch_size < size:
        raise ValueError(f"batch_size={batch_size} is smaller than the {size} processes sharing each batch")
    set_seed(seed + 100_003 * rank)  # dropout differs between ranks; the shuffle below does not
    generator = torch.Generator().manual_seed(seed)
    head.to(device).train()
    folded = FoldedFirstLayer(head) if fold and isinstance(head, VGGHead) and head.map_size == 1 else None
    net = folded or head
    groups = folded.param_groups(lr) if folded else [{"params": list(head.parameters()), "lr": lr}]
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    maps, labels = train_set.on(device)
    # fused Adam: one pass over the 100M parameters instead of several (5x faster steps on a CPU)
    optimizer = torch.optim.Adam(groups, lr=lr, fused=True)
    history = []
    n = len(labels)
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator).to(device)
            total_loss = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            start = time.perf_counter()
            bar = bars.bar(n, f"{desc} epoch {epoch}/{epochs}", "img", enabled=progress and rank == 0)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                mine = idx.tensor_split(size)[rank] if size > 1 else idx  # this rank's shard of the global batch
                x, y = maps[mine], labels[mine]
                with autocast(device):
                    logits = net(x)
                    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
                    # DDP averages gradients over ranks: scaled so the result is the global batch's mean
                    loss = loss_sum * (size / len(idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss_sum.detach()
                correct += (logits.argmax(1) == y).sum()
                bar.update(len(idx))
            bar.close()
            if size > 1:
                import torch.distributed as dist

                sums = torch.stack([total_loss, correct.double()])
                dist.all_reduce(sums)
                total_loss, correct = sums[0], sums[1]
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "loss": float(total_loss) / n, "accuracy": int(correct) / n,
                   "seconds": seconds, "images_per_s": n / seconds}
            if val_set is not None:
                # the folded view computes the head's function, so it is evaluated as it stands: a write-back
                # now would change the rounding, and a monitored fit would no longer equal an unmonitored one
                result = evaluate(folded or head, val_set, device=device)
                row.update(val_accuracy=result["accuracy"], val_loss=result["loss"])
                (folded or head).train()
            history.append(row)
    finally:
        if folded:
            folded.write_back()
    head.eval()
    return history


@torch.no_grad()
def evaluate(head: torch.nn.Module, feature_set: FeatureSet, batch_size: int = 512, device="auto",
             return_predictions: bool = False) -> dict:
    """Accuracy (fraction), correct (count), total, loss (mean cross-entropy) of `head` on `feature_set`.

    With return_predictions=True the dict also holds `predictions` (int64, N, on the CPU).
    A VGGHead at 1 x 1 maps is evaluated in its inference form (the same function, 49x fewer FLOPs
    in the first layer). The head stays on `device`, in eval mode.
    """
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    device = pick_device(device)
    head.to(device).eval()
    net = head.inference_form() if isinstance(head, VGGHead) and head.map_size == 1 else head
    maps, labels = feature_set.on(device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    preds = []
    for i in range(0, len(feature_set), batch_size):
        x, y = maps[i:i + batch_size], labels[i:i + batch_size]
        with autocast(device):
            logits = net(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum")
        p = logits.argmax(1)
        correct += (p == y).sum()
        if return_predictions:
            preds.append(p)
    n = len(feature_set)
    result = {"accuracy": int(correct) / n, "correct": int(correct), "total": n, "loss": float(total_loss) / n}
    if return_predictions:
        result["predictions"] = torch.cat(preds).cpu()
    return result
