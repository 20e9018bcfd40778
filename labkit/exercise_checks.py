"""Checks of notebooks 01 and 02's graded exercises (03's and 04's methods: `labkit.method_checks`; the experiment's:
`labkit.design_checks`). Each takes the student's function and raises `Wrong`, in the student's terms, or returns.
Checks compare with answers known without the function, never with one that hangs on tie-breaking or rounding.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn
import torch.nn.functional as F

from . import capacity, metrics


class Wrong(AssertionError):
    """A check's finding: what is wrong, said so that the student can fix it."""


def _scalar(value, what: str) -> float:
    """A Python number or 0-d tensor as a float; Wrong for anything else (a 1-element vector breaks f-strings)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # int, float, numpy scalars
        return float(value)
    if torch.is_tensor(value) and value.dim() == 0:
        return float(value)
    raise Wrong(f"{what} returned {type(value).__name__}"
                + (f" of shape {tuple(value.shape)}" if torch.is_tensor(value) else "")
                + ": return one number, a float (tensor.item() turns a 0-d tensor into one)")


# ---------------------------------------------------------------- notebook 01: the four rules

def _same(got, want, what: str, hint: str = "") -> None:
    if isinstance(want, float) or isinstance(got, float):
        ok = got is not None and isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    else:
        ok = got == want
    if not ok:
        raise Wrong(f"{what} gives {got!r}, not {want!r}" + (f": {hint}" if hint else ""))


def check_perceptron_bits(fn) -> None:
    for d in (784, 3, 25088):
        got = fn(d)
        if got == d:
            raise Wrong(f"perceptron_bits({d}) gives {d}: that counts the weights, but rule 2 counts every "
                        "parameter, the bias too")
        if got == 8 * (d + 1):
            raise Wrong(f"perceptron_bits({d}) gives {got}: that is 8 bits a parameter (bytes); rule 2 counts one")
        _same(got, d + 1, f"perceptron_bits({d})", "rule 2: one bit per parameter")


_HAND_MEC = {(2, 3, 1): 12, (10, 3, 50, 20, 2): 106, (784, 1): 785, (4, 2, 8, 3): 10 + 2 + 8}
_HAND_BOTTLENECK = {(2, 3, 1): 11, (10, 3, 50, 20, 2): 42, (784, 1): 785, (4, 2, 8, 3): 10 + 2 + 2}


def check_mec(fn) -> None:
    for widths, want in _HAND_MEC.items():
        got = fn(list(widths))
        if got == capacity.parameter_count(widths) != want:
            raise Wrong(f"mec({list(widths)}) gives {got:,}, every parameter counted (rules 2 and 3): rule 4 caps "
                        "each later layer at the bits the layer before it can pass on, one per neuron")
        if got == _HAND_BOTTLENECK[widths] != want:
            raise Wrong(f"mec({list(widths)}) gives {got}: that is the bottleneck reading (the narrowest layer "
                        "upstream); here each layer is capped by the one just before it")
        _same(got, want, f"mec({list(widths)})",
              "(d + 1) n1 for the first layer, then min(n_prev, (n_prev + 1) n) for each later one")
    _same(fn(list(capacity.VGG16_HEAD)), capacity.mec(capacity.VGG16_HEAD), "mec of the VGG16 head")


def check_mec_bottleneck(fn) -> None:
    for widths, want in _HAND_BOTTLENECK.items():
        got = fn(list(widths))
        if got == _HAND_MEC[widths] != want:
            raise Wrong(f"mec_bottleneck({list(widths)}) gives {got}: that caps each layer by the one just before "
                        "it (exercise 2); here the cap is the narrowest layer anywhere upstream (inputs included)")
        _same(got, want, f"mec_bottleneck({list(widths)})")


def check_fold(fn) -> None:
    torch.manual_seed(0)
    features = torch.randn(5, 512)
    layer = nn.Linear(512 * 49, 4)
    copies = features.repeat_interleave(49, dim=1)  # feature c at inputs 49c .. 49c + 48, as VGG16's pool
    with torch.no_grad():
        summed = fn(layer.weight.detach())
    if tuple(summed.shape) != (4, 512):
        raise Wrong(f"fold gives shape {tuple(summed.shape)}; it needs one weight per neuron and feature, (4, 512)")
    interleaved = layer.weight.detach().view(4, 49, 512).sum(1)
    if torch.allclose(summed, interleaved):
        raise Wrong("fold summed every 512th weight: the 49 copies of feature c are the consecutive inputs "
                    "49c .. 49c + 48, so view the weights as (4, 512, 49)")
    gap = (nn.functional.linear(features, summed, layer.bias) - layer(copies)).abs().max().item()
    if gap > 1e-4:
        raise Wrong(f"a layer with the folded weights computes outputs up to {gap:.3g} away from the 25,088-input "
                    "layer's: sum each neuron's 49 weights on one feature")


def check_effective_mec(fn) -> None:
    cases = {((25088, 4096, 4096, 256, 10), 512): capacity.mec_effective(capacity.VGG16_HEAD, 1),
             ((100, 5, 2), 10): 11 * 5 + 5, ((25088, 8, 10), 25088): capacity.mec((25088, 8, 10))}
    for (widths, distinct), want in cases.items():
        got = fn(list(widths), distinct)
        if got == capacity.mec(widths) != want:
            raise Wrong(f"effective_mec({list(widths)}, {distinct}) gives the count on the inputs as read "
                        f"({got:,}): the first layer reads only {distinct} distinct inputs")
        _same(got, want, f"effective_mec({list(widths)}, {distinct})")


# ---------------------------------------------------------------- notebook 02: train and measure

def check_confusion_matrix(fn) -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    want = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    got = torch.as_tensor(fn(labels, predictions, 4))
    if tuple(got.shape) != (4, 4):
        raise Wrong(f"confusion_matrix(labels, predictions, classes=4) has shape {tuple(got.shape)}, not (4, 4): "
                    "one row and one column per class, even a class no image has")
    if torch.equal(got.long(), want.T):
        raise Wrong("your matrix is transposed: row i counts the images whose true label is i, column j those "
                    "predicted j")
    if not torch.equal(got.long(), want):
        raise Wrong(f"confusion_matrix gives {got.tolist()} for labels {labels.tolist()} and predictions "
                    f"{predictions.tolist()}, not {want.tolist()}")


def check_cohen_kappa(fn) -> None:
    hand = torch.tensor([[20, 5], [10, 15]])  # p_o = 0.7, p_e = (25 x 30 + 25 x 20) / 50^2 = 0.5: kappa 0.4
    got = _scalar(fn(hand), "cohen_kappa")
    if math.isclose(got, 0.6, abs_tol=1e-9):
        raise Wrong("cohen_kappa gives 0.6 = (1 - p_o) / (1 - p_e) for [[20, 5], [10, 15]]: that is the 2019 "
                    "report's formula, the disagreement over the chance disagreement; kappa is "
                    "(p_o - p_e) / (1 - p_e)")
    if math.isclose(got, 0.7, abs_tol=1e-9):
        raise Wrong("cohen_kappa gives 0.7 = p_o, the share of agreement; kappa subtracts the agreement expected "
                    "by chance, p_e, from the two raters' marginal frequencies")
    _same(got, 0.4, "cohen_kappa([[20, 5], [10, 15]])", "p_o = 0.7, p_e = 0.5, kappa = (p_o - p_e) / (1 - p_e)")
    for matrix in (torch.tensor([[30, 2, 3], [4, 25, 6], [1, 7, 22]]), torch.diag(torch.tensor([5, 7, 9]))):
        _same(_scalar(fn(matrix), "cohen_kappa"), metrics.cohens_kappa(matrix), f"cohen_kappa({matrix.tolist()})")


def check_train_one_epoch(fn) -> None:
    import copy

    torch.manual_seed(0)
    for n, batch in ((40, 8), (42, 8)):
        features, labels = torch.randn(n, 6), torch.randint(0, 3, (n,))
        head = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        start = copy.deepcopy(head)
        seen, modes = [], []
        hook = head.register_forward_pre_hook(lambda m, args: (seen.append(args[0].detach().clone()),
                                                                modes.append(m.training)) and None)
        head.eval()  # the function must put it in training mode itself
        loss = fn(head, features, labels, torch.optim.SGD(head.parameters(), lr=0.1), batch,
                  torch.Generator().manual_seed(1))
        hook.remove()
        if not seen:
            raise Wrong("train_one_epoch never called the head")
        if not all(modes):
            raise Wrong("the head ran in eval mode: call head.train() first (dropout trains only in train mode)")
        rows = {tuple(r.tolist()): i for i, r in enumerate(features)}
        try:
            order = [rows[tuple(r.tolist())] for x in seen for r in x]
        except KeyError:
            raise Wrong("the head was called on rows that are not the features given") from None
        if sorted(order) != list(range(n)):
            raise Wrong(f"one epoch must show each of the {n} images once; yours showed {len(order)} rows, "
                        f"{len(set(order))} distinct")
        if any(len(x) > batch for x in seen) or len(seen) != -(-n // batch):
            raise Wrong(f"{n} images in batches of {batch} make {-(-n // batch)} batches; yours made "
                        f"{[len(x) for x in seen]}")
        if order == list(range(n)):
            raise Wrong("the images came in their stored order: shuffle them with "
                        "torch.randperm(len(labels), generator=generator)")
        again, probe = [], copy.deepcopy(start)
        probe.register_forward_pre_hook(lambda m, args: again.append(args[0].detach().clone()))
        fn(probe, features, labels, torch.optim.SGD(probe.parameters(), lr=0.1), batch,
           torch.Generator().manual_seed(1))
        if [rows[tuple(r.tolist())] for x in again for r in x] != order:
            raise Wrong("two epochs with the same generator seed drew different orders: draw the order with the "
                        "generator you are given, torch.randperm(len(labels), generator=generator)")
        if order != torch.randperm(n, generator=torch.Generator().manual_seed(1)).tolist():
            raise Wrong("the images did not come in the order torch.randperm(len(labels), generator=generator) "
                        "draws: draw it once per epoch with the generator you are given and take it in slices")
        # replay on the same order: one SGD step per batch on its mean cross-entropy (each loss before its step)
        replay, losses = start, []
        replay.train()
        sgd = torch.optim.SGD(replay.parameters(), lr=0.1)
        for rows_of_batch in torch.randperm(n, generator=torch.Generator().manual_seed(1)).split(batch):
            loss_of_batch = F.cross_entropy(replay(features[rows_of_batch]), labels[rows_of_batch])
            losses.append((float(loss_of_batch), len(rows_of_batch)))
            sgd.zero_grad()
            loss_of_batch.backward()
            sgd.step()
        for got, want in zip(head.parameters(), replay.parameters()):
            if not torch.allclose(got, want, atol=1e-5):
                raise Wrong("the weights after your epoch are not those of one optimizer step per batch on its mean "
                            "cross-entropy: in each batch clear the gradients (optimizer.zero_grad), "
                            "backpropagate (loss.backward) and step the optimizer (without zero_grad the gradients "
                            "of earlier batches add up)")
        mean = sum(l * k for l, k in losses) / n
        loss = _scalar(loss, "train_one_epoch")
        if math.isclose(float(loss), sum(l for l, _ in losses) / len(losses), rel_tol=1e-5) and n % batch:
            raise Wrong("you returned the mean of the batch means; the last batch is smaller, so weight each "
                        "batch's loss by its images (the mean over the epoch's images)")
        if not math.isclose(float(loss), mean, rel_tol=1e-5):
            raise Wrong(f"train_one_epoch returned {float(loss):.5f}; the epoch's mean loss over its images "
                        f"(each batch's loss, before its step, weighted by its size) is {mean:.5f}")


def check_early_stop(fn) -> None:
    cases = [([0.5, 0.6, 0.55, 0.58, 0.57, 0.7], 3, (5, 2)), ([0.5, 0.6, 0.55, 0.58, 0.57, 0.7], 4, (6, 6)),
             ([0.9, 0.8, 0.7], 1, (2, 1)), ([0.1, 0.2, 0.3], 2, (3, 3)), ([0.5, 0.6, 0.6, 0.6], 2, (4, 2))]
    for accuracies, patience, want in cases:
        got = tuple(fn(list(accuracies), patience))
        if accuracies == [0.5, 0.6, 0.6, 0.6] and got == (4, 4):
            raise Wrong("early_stop counts an equal accuracy as a gain: only a higher one is a new best (use >)")
        if got == (want[0], want[1] - 1):
            raise Wrong(f"early_stop({accuracies}, {patience}) gives best epoch {got[1]}: epochs count from 1")
        if got[1] == want[1] and got[0] in (want[0] - 1, want[0] + 1):
            raise Wrong(f"early_stop({accuracies}, patience={patience}) stops after epoch {got[0]}, not "
                        f"{want[0]}: it stops once {patience} epoch(s) in a row bring no new best")
        if got[0] == want[0] and got[1] == want[0] != want[1]:
            raise Wrong(f"early_stop({accuracies}, {patience}) keeps the last epoch; it keeps the best one")
        _same(got, want, f"early_stop({accuracies}, patience={patience})")
