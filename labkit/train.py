"""Training and evaluating the head on cached features (fit, evaluate), with progress bars.

The backbone never runs here: every function takes a FeatureSet of cached maps.
On CUDA the head runs under bf16 autocast; on the CPU it runs in float32 and,
for a fixed seed and thread count, gives the same numbers every time.

Under torchrun (torch.distributed initialized), `fit` trains with DistributedDataParallel:
every rank draws the same shuffled order, takes its own slice of each global batch and
weights its loss so that the averaged gradient is the global batch's mean, as in one process.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checks
from .device import autocast, pick_device, set_seed
from .distributed import world
from .features import FeatureSet


def fit(head: torch.nn.Module, train_set: FeatureSet, epochs: int = 3, batch_size: int = 256, lr: float = 1e-4,
        seed: int = 0, device="auto", progress: bool = True, desc: str = "train",
        test_set: FeatureSet | None = None) -> list[dict]:
    """Train `head` on cached features with Adam and cross-entropy; one dict per epoch.

    Each dict: epoch, loss (mean over the epoch), accuracy (on the training batches, dropout on),
    seconds, images_per_s, and test_accuracy / test_loss after the epoch when `test_set` is given.
    The head ends on the CPU in eval mode.
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
    net = head
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    maps = train_set.maps.to(device, non_blocking=True)
    labels = train_set.labels.to(device)
    # fused Adam: one pass over the 100M parameters instead of several (5x faster steps on a CPU)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, fused=True)
    history = []
    n = len(labels)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator).to(device)
        total_loss, correct, start = 0.0, 0, time.perf_counter()
        bar = tqdm(total=n, desc=f"{desc} epoch {epoch}/{epochs}", unit="img",
                   disable=not progress or rank > 0, leave=False)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            mine = idx.tensor_split(size)[rank] if size > 1 else idx  # this rank's shard of the global batch
            x, y = maps[mine], labels[mine]
            with autocast(device):
                logits = net(x)
                if size > 1:  # DDP averages gradients over ranks: scale so the result is the global batch mean
                    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
                    loss = loss_sum * (size / len(idx))
                else:
                    loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_loss = loss_sum.item() if size > 1 else loss.item() * len(y)
            total_loss += batch_loss
            correct += int((logits.argmax(1) == y).sum())
            bar.update(len(idx))
            bar.set_postfix(loss=f"{batch_loss / max(1, len(y)):.3f}")
        bar.close()
        if size > 1:
            import torch.distributed as dist

            sums = torch.tensor([total_loss, float(correct)], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            total_loss, correct = float(sums[0]), int(sums[1])
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "loss": total_loss / n, "accuracy": correct / n,
               "seconds": seconds, "images_per_s": n / seconds}
        if test_set is not None:
            result = evaluate(head, test_set, device=device)
            row.update(test_accuracy=result["accuracy"], test_loss=result["loss"])
            head.to(device).train()
        history.append(row)
    head.cpu().eval()
    return history


@torch.no_grad()
def evaluate(head: torch.nn.Module, feature_set: FeatureSet, batch_size: int = 512, device="auto",
             return_predictions: bool = False) -> dict:
    """Accuracy (fraction), correct (count), total, loss (mean cross-entropy) of `head` on `feature_set`.

    With return_predictions=True the dict also holds `predictions` (int64, N).
    """
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    device = pick_device(device)
    head.to(device).eval()
    total_loss, correct, preds = 0.0, 0, []
    for i in range(0, len(feature_set), batch_size):
        x = feature_set.maps[i:i + batch_size].to(device)
        y = feature_set.labels[i:i + batch_size].to(device)
        with autocast(device):
            logits = head(x).float()
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        p = logits.argmax(1)
        correct += int((p == y).sum())
        preds.append(p.cpu())
    head.cpu()
    n = len(feature_set)
    result = {"accuracy": correct / n, "correct": correct, "total": n, "loss": total_loss / n}
    if return_predictions:
        result["predictions"] = torch.cat(preds)
    return result
