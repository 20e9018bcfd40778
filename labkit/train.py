"""Training and evaluating the head on cached features (kept on their device): `train_epochs`, the one loop every
labkit trainer runs with its own hooks; `fit` (Adam) on it; `evaluate`. CUDA runs under bf16 autocast, the CPU in
float32 (the same numbers for a fixed seed and thread count). At 1 x 1 maps (32 px inputs) the head trains through
`model.FoldedFirstLayer`: the same updates at a 49th of the first layer's cost."""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from . import checks
from . import progress as reporter
from .device import autocast, derive_seed, pick_device, set_seed
from .features import FeatureSet
from .model import FEATURE_CHANNELS, POOLED, FoldedFirstLayer, VGGHead


class AdamState:
    """Adam's moments and step counts for a head's parameters, carried from one `fit` to the next.

    A fresh Adam's first steps move every weight by about the learning rate (the unpruned control lost 2.9 points
    of validation accuracy after a restart). Tensors follow `trained_parameters`' order, the first layer's as
    trained (`folded`: out x 512 at 1 x 1 maps); `drop` removes a pruned layer's neurons from the moments too.
    """

    def __init__(self, folded: bool | None = None, steps: list | None = None, exp_avg: list | None = None,
                 exp_avg_sq: list | None = None):
        self.folded, self.steps = folded, steps or []
        self.exp_avg, self.exp_avg_sq = exp_avg or [], exp_avg_sq or []

    def __bool__(self) -> bool:
        return bool(self.exp_avg)

    def drop(self, layer: int, kept: torch.Tensor) -> None:
        """Follow `prune.prune_neurons(head, layer, ...)`: keep rows `kept` (int64 indices into the layer as it was,
        see `prune.kept_indices`) of hidden layer `layer`, and the same columns of the next layer."""
        if not self:
            return
        rows = [2 * layer, 2 * layer + 1]  # weight and bias of the pruned layer
        for moments in (self.exp_avg, self.exp_avg_sq):
            for i in rows:
                moments[i] = moments[i].index_select(0, kept.to(moments[i].device))
            nxt = 2 * layer + 2
            moments[nxt] = moments[nxt].index_select(1, kept.to(moments[nxt].device))

    def payload(self) -> dict:
        """Plain data and CPU tensors, for a checkpoint (loads with torch.load(weights_only=True))."""
        return {"folded": self.folded, "steps": list(self.steps),
                "exp_avg": [t.detach().cpu() for t in self.exp_avg],
                "exp_avg_sq": [t.detach().cpu() for t in self.exp_avg_sq]}

    @classmethod
    def from_payload(cls, payload: dict | None) -> "AdamState":
        """The state `payload()` wrote; an empty state (a fresh Adam) for None or {}."""
        if not payload:
            return cls()
        return cls(payload["folded"], list(payload["steps"]), list(payload["exp_avg"]), list(payload["exp_avg_sq"]))

    def load_into(self, optimizer: torch.optim.Optimizer, params: list, folded: bool) -> None:
        """Give `optimizer` these moments for `params` (the head's canonical order, see `trained_parameters`)."""
        if not self:
            return
        if len(self.exp_avg) != len(params):
            raise ValueError(f"the optimizer state holds {len(self.exp_avg)} tensors, but the head has {len(params)} "
                             "parameters: it belongs to another head")
        for i, p in enumerate(params):
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            if i == 0 and self.folded != folded:  # the first layer trained the other way: same moments, other view
                m, v = (_fold(m), _fold(v)) if folded else (_unfold(m), _unfold(v))
            if m.shape != p.shape:
                raise ValueError(f"the optimizer state's tensor {i} has shape {tuple(m.shape)}, the parameter "
                                 f"{tuple(p.shape)}: it belongs to another head")
            # the optimizer takes the tensors as they are (no copy of 160 MB a cycle) and updates them in place
            optimizer.state[p] = {"step": torch.tensor(float(self.steps[i]), dtype=torch.float32, device=p.device),
                                  "exp_avg": m.to(p.device), "exp_avg_sq": v.to(p.device)}

    @classmethod
    def read(cls, optimizer: torch.optim.Optimizer, params: list, folded: bool, copy: bool = True) -> "AdamState":
        """The moments `optimizer` holds for `params` now (copies, or the optimizer's own tensors)."""
        state = [optimizer.state.get(p, {}) for p in params]
        if not all(state):
            return cls()
        take = (lambda t: t.detach().clone()) if copy else (lambda t: t.detach())
        return cls(folded, [float(s["step"]) for s in state], [take(s["exp_avg"]) for s in state],
                   [take(s["exp_avg_sq"]) for s in state])

    def take(self, other: "AdamState") -> None:
        """Hold `other`'s moments from now on (its tensors, not copies): where a trainer leaves its state."""
        self.folded, self.steps = other.folded, other.steps
        self.exp_avg, self.exp_avg_sq = other.exp_avg, other.exp_avg_sq

    def copy(self) -> "AdamState":
        return AdamState(self.folded, list(self.steps), [t.clone() for t in self.exp_avg],
                         [t.clone() for t in self.exp_avg_sq])


def _fold(t: torch.Tensor) -> torch.Tensor:
    """Full-width first-layer moments (out x 25,088) as the folded view's (out x 512): the 49 copies agree."""
    return t.view(t.shape[0], FEATURE_CHANNELS, -1).mean(-1)


def _unfold(t: torch.Tensor) -> torch.Tensor:
    """Folded first-layer moments (out x 512) for each of the 49 copies of a feature (out x 25,088)."""
    return t.unsqueeze(-1).expand(-1, -1, POOLED * POOLED).reshape(t.shape[0], -1)


def trained_parameters(head: torch.nn.Module, folded: FoldedFirstLayer | None) -> list:
    """The parameters Adam trains in AdamState's order: each Linear's weight then bias (with `folded`, the
    folded view's summed weight in place of the first Linear's)."""
    if not isinstance(head, VGGHead):
        return list(head.parameters())
    params = [p for lin in head.linears() for p in (lin.weight, lin.bias)]
    if folded is not None:
        params[0] = folded.weight
    return params


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, share: float) -> tuple:
    """`train_epochs`' default objective: (the batch's mean loss to back-propagate, its summed cross-entropy, how
    many it classified right); `share` is 1 / the batch's size."""
    summed = F.cross_entropy(logits.float(), labels, reduction="sum")
    return summed * share, summed, (logits.argmax(1) == labels).sum()


def train_epochs(net, optimizer: torch.optim.Optimizer, maps: torch.Tensor, labels: torch.Tensor, epochs: int,
                 batch_size: int, generator: torch.Generator | None = None, *, objective=cross_entropy,
                 before_step=None, after_step=None, watch=None, desc: str | None = None,
                 mixed_precision: bool = True) -> list[dict]:
    """The training loop every labkit trainer runs: `epochs` epochs of minibatches, one optimizer step each.

    Each epoch takes the images in torch.randperm(N, generator=generator) order (generator None: the stored order, as
    full-batch training uses), `batch_size` at a time: `objective(net(maps), labels, share)`, zero_grad, backward,
    `before_step()`, step, `after_step()`. watch(epoch, row) runs before the first epoch (0, None) and after each (it
    may add to row); True stops. desc: a progress bar title (None: no bar). mixed_precision: bf16 autocast on CUDA.
    Returns one dict per epoch: epoch, loss (mean over images), accuracy (training batches), seconds, images_per_s.
    """
    device, n, history = maps.device, len(labels), []
    precision = (lambda: autocast(device)) if mixed_precision else contextlib.nullcontext
    if watch is not None and watch(0, None):
        return history
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator).to(device) if generator is not None else None
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        began = time.perf_counter()
        bar = reporter.bar(n, f"{desc} epoch {epoch}/{epochs}", "img", enabled=desc is not None)
        for i in range(0, n, batch_size):
            batch = order[i:i + batch_size] if order is not None else slice(i, i + batch_size)
            count = min(batch_size, n - i)
            with precision():
                loss, summed, right = objective(net(maps[batch]), labels[batch], 1 / count)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += summed.detach()
            correct += right
            bar.update(count)
        bar.close()
        seconds = time.perf_counter() - began
        row = {"epoch": epoch, "loss": float(total) / n, "accuracy": int(correct) / n, "seconds": seconds,
               "images_per_s": n / seconds}
        checks.finite_loss(row["loss"], optimizer.defaults["lr"], f"{desc or 'training'} epoch {epoch}")
        history.append(row)
        if watch is not None and watch(epoch, row):
            break
    return history


class _Watch:
    """`fit`'s between-epoch hook: validation metrics and, with `patience`, early stopping (see `fit`)."""

    def __init__(self, net, val_set, device, patience, params, optimizer, state, folded: bool):
        self.net, self.val_set, self.device, self.patience = net, val_set, device, patience
        self.params, self.optimizer, self.state, self.folded = params, optimizer, state, folded
        self.best = None

    def _accuracy(self) -> dict:
        # evaluated as it stands: a write-back would change the rounding, so a monitored fit would no longer
        # equal an unmonitored one
        result = evaluate(self.net, self.val_set, device=self.device)
        self.net.train()
        return result

    def _keep(self, row: dict, state: "AdamState") -> None:
        self.best = {"row": row, "params": [p.detach().clone() for p in self.params], "state": state}

    def __call__(self, epoch: int, row: dict | None) -> bool:
        if epoch == 0:
            if self.patience is not None:
                self._keep({"epoch": 0, "val_accuracy": self._accuracy()["accuracy"]},
                           self.state.copy() if self.state else AdamState())
            return False
        if self.val_set is not None:
            result = self._accuracy()
            row.update(val_accuracy=result["accuracy"], val_loss=result["loss"])
        if self.patience is None:
            return False
        if row["val_accuracy"] > self.best["row"]["val_accuracy"]:
            self._keep(row, AdamState.read(self.optimizer, self.params, self.folded))
            return False
        return epoch - self.best["row"]["epoch"] >= self.patience

    def restore(self, history: list[dict]) -> "AdamState":
        """With early stopping, copy the best point's weights back and mark each `history` row best or not (in place);
        returns the optimizer state to keep: the best point's, or without early stopping the optimizer's own."""
        if self.best is None:
            return AdamState.read(self.optimizer, self.params, self.folded, copy=False)
        with torch.no_grad():
            for p, kept in zip(self.params, self.best["params"]):
                p.copy_(kept)
        for row in history:
            row["best"] = row is self.best["row"]
        return self.best["state"]


def fit(head: torch.nn.Module, train_set: FeatureSet, epochs: int = 3, batch_size: int = 256, lr: float = 1e-4,
        seed: int = 0, device="auto", desc: str = "train",
        val_set: FeatureSet | None = None, fold: bool = True, state: AdamState | None = None,
        patience: int | None = None) -> list[dict]:
    """Train `head` on cached features with Adam and cross-entropy (`train_epochs`); one dict per epoch.

    Each dict: epoch, loss, accuracy (training batches, dropout on), seconds, images_per_s, and val_accuracy /
    val_loss when `val_set` is given. The head is left on `device`, in eval mode. fold=False trains the full-width
    first layer even at 1 x 1 maps (same numbers up to rounding, 4-5x slower). state: an AdamState to go on from and
    to leave the moments in (None: a fresh Adam). patience (needs val_set): stop once validation accuracy has not
    risen for that many epochs and go back to the best point, the incoming head included (weights and `state`); each
    dict then says "best" (all False: the incoming head was kept). Reseeds Python's and torch's global generators.
    """
    epochs = checks.integer("epochs", epochs, minimum=1)
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    checks.number("lr", lr, above=0)
    if patience is not None:
        checks.integer("patience", patience, minimum=1)
        if val_set is None:
            raise ValueError("patience (early stopping) watches validation accuracy: give val_set too")
    device = pick_device(device)
    set_seed(derive_seed(0, seed))
    generator = torch.Generator().manual_seed(seed)
    head.to(device).train()
    folded = FoldedFirstLayer(head) if fold and isinstance(head, VGGHead) and head.map_size == 1 else None
    params = trained_parameters(head, folded)
    # fused Adam: one pass over the 100M parameters instead of several (5x faster steps on a CPU)
    optimizer = torch.optim.Adam(folded.param_groups(lr) if folded else [{"params": params, "lr": lr}], lr=lr,
                                 fused=True)
    if state is not None:
        state.load_into(optimizer, params, folded is not None)
    watch = _Watch(folded or head, val_set, device, patience, params, optimizer, state, folded is not None)
    maps, labels = train_set.on(device)
    try:
        history = train_epochs(folded or head, optimizer, maps, labels, epochs, batch_size,
                               generator, watch=watch, desc=desc)
        kept = watch.restore(history)
        if state is not None:
            state.take(kept)
    finally:
        if folded:
            folded.write_back()
    head.eval()
    return history


def train_one_epoch(head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor,
                    optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator) -> float:
    """One epoch: images in torch.randperm(N, generator=generator) order, `batch_size` at a time (the last may be
    smaller), a step on each batch's mean cross-entropy; returns the mean loss. Notebook 02's exercise reference."""
    head.train()
    return train_epochs(head, optimizer, features, labels, 1, batch_size, generator)[0]["loss"]


def early_stop(val_accuracies, patience: int) -> tuple[int, int]:
    """(epochs run, best epoch), both 1-based, of early stopping on validation accuracies after epochs 1, 2, ...: stop
    once `patience` epochs bring no new best (a tie is no gain). Notebook 02's exercise reference."""
    best = 1
    for epoch, accuracy in enumerate(val_accuracies, start=1):
        if accuracy > val_accuracies[best - 1]:
            best = epoch
        elif epoch - best >= patience:
            return epoch, best
    return len(val_accuracies), best


def best_epoch(history: list[dict]) -> int:
    """The epoch `fit` kept: the one marked best (0: the incoming head), else the last."""
    if any("best" in e for e in history):
        return next((e["epoch"] for e in history if e.get("best")), 0)
    return history[-1]["epoch"] if history else 0


@torch.no_grad()
def evaluate(head: torch.nn.Module, feature_set: FeatureSet, batch_size: int = 1024, device="auto",
             return_predictions: bool = False) -> dict:
    """Accuracy (fraction), correct, total, loss (mean cross-entropy) and right (bool per image, CPU, for paired
    tests) of `head` on `feature_set`; return_predictions adds `predictions` (int64, N, CPU). The head is left on
    `device` in eval mode; a VGGHead at 1 x 1 maps runs its inference form (49x fewer first-layer FLOPs)."""
    return evaluate_sets(head, {"set": feature_set}, batch_size, device, return_predictions)["set"]


@torch.no_grad()
def evaluate_sets(head: torch.nn.Module, sets: dict, batch_size: int = 1024, device="auto",
                  return_predictions: bool = False) -> dict:
    """`evaluate` on each FeatureSet of `sets` ({name: set}), the inference form built once for all of them."""
    batch_size = checks.integer("batch_size", batch_size, minimum=1)
    device = pick_device(device)
    head.to(device).eval()
    net = head.inference_form() if isinstance(head, VGGHead) and head.map_size == 1 else head
    return {name: _evaluate(net, fs, batch_size, device, return_predictions) for name, fs in sets.items()}


def _evaluate(net: torch.nn.Module, feature_set: FeatureSet, batch_size: int, device: torch.device,
              return_predictions: bool) -> dict:
    maps, labels = feature_set.on(device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    preds = []
    for i in range(0, len(feature_set), batch_size):
        x, y = maps[i:i + batch_size], labels[i:i + batch_size]
        with autocast(device):
            logits = net(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum")
        preds.append(logits.argmax(1))
    n = len(feature_set)
    predictions = torch.cat(preds)
    right = (predictions == labels).cpu()
    correct = int(right.sum())
    result = {"accuracy": correct / n, "correct": correct, "total": n, "loss": float(total_loss) / n, "right": right}
    if return_predictions:
        result["predictions"] = predictions.cpu()
    return result
