"""Checks of the graded exercises on notebook 03's methods (pruning, k-means sharing, the fine-grained mask) and
04's (bits stored, the memorization search, thresholds). Each raises exercise_checks.Wrong or returns.
"""
from __future__ import annotations

import math
import random

import torch
from torch import nn

from . import guard, memorization, prune
from .exercise_checks import Wrong, _same, _scalar


# ---------------------------------------------------------------- notebook 03: prune and compress

# rows of distinct distances from the mean row (1, 2, 3.5 / 1, 2.5, 1 ...), worked by hand
_W = torch.tensor([[1.0, 2.0, 0.0], [3.0, -2.0, 1.0], [-1.0, 3.0, 5.0], [1.0, 1.0, -2.0]])


def _scores_check(fn, name: str, square: bool) -> None:
    w_bar = _W.mean(0)  # [1, 1, 1]
    want = ((_W - w_bar).square() if square else (_W - w_bar).abs()).sum(1)  # l1 [2, 5, 8, 3], l2 [2, 13, 29, 9]
    got = torch.as_tensor(fn(_W.clone())).detach()
    if got.shape != (4,):
        raise Wrong(f"{name} gives shape {tuple(got.shape)} for 4 neurons of 3 inputs; it needs one score per "
                    "neuron (row): shape (4,)")
    if got.dtype != torch.float64:
        values = got.double()
        if torch.allclose(values, want.double(), atol=1e-5):
            raise Wrong(f"{name} gives the right scores in {got.dtype}: compute in float64 (weight.double()), "
                        "float32 sums of 25,088 terms tie for dozens of neurons")
    got = got.double()
    wrong = {"the plain sum of each row's weights, the 2019 code's score": _W.sum(1),
             "the sum of |w| (the magnitude criterion): subtract the mean neuron first": _W.abs().sum(1),
             "a distance from each neuron's own mean (over dim 1); w_bar is the mean neuron, over the rows (dim 0)":
                 ((_W - _W.mean(1, keepdim=True)).square() if square else (_W - _W.mean(1, keepdim=True)).abs()).sum(1)}
    if square:
        wrong["the Euclidean distance (a square root): l2 here is the sum of squares, no root"] = want.sqrt()
        wrong["the L1 distance: square the differences"] = (_W - w_bar).abs().sum(1)
    else:
        wrong["squared differences (that is l2): take |w - w_bar|"] = (_W - w_bar).square().sum(1)
    for what, value in wrong.items():
        if torch.allclose(got, value.double(), atol=1e-6):
            raise Wrong(f"{name} gives {got.tolist()}: that is {what}")
    if not torch.allclose(got, want.double(), atol=1e-6):
        raise Wrong(f"{name} of {_W.tolist()} gives {got.tolist()}, not {want.tolist()} (w_bar = {w_bar.tolist()})")
    torch.manual_seed(0)
    w = torch.randn(50, 300) * torch.linspace(0.5, 2, 300)
    reference = prune.l2_scores(w) if square else prune.l1_scores(w)
    mine = torch.as_tensor(fn(w.clone())).detach().double().flatten()
    if not torch.allclose(mine, reference, rtol=1e-5):
        raise Wrong(f"{name} agrees on the small example but not on a random 50 x 300 layer (largest gap "
                    f"{(mine - reference).abs().max().item():.3g})")
    guard.at_study_size(name, fn, lambda n: (torch.randn(n, n),), _FIRST_LAYER, "the 4,096 x 25,088 first layer")


_FIRST_LAYER = 4096 * 25088  # weights of the study's first layer, the largest a student's function is handed


def check_l1_scores(fn) -> None:
    _scores_check(fn, "l1_scores", square=False)


def check_l2_scores(fn) -> None:
    _scores_check(fn, "l2_scores", square=True)


def check_reservoir_sample(fn) -> None:
    for n, k in ((10, 0), (10, 10), (5, 1)):
        got = sorted(int(i) for i in fn(n, k, random.Random(0)))
        if len(got) != k:
            raise Wrong(f"reservoir_sample({n}, {k}, rng) returns {len(got)} indices, not {k}")
    if sorted(fn(10, 10, random.Random(0))) != list(range(10)):
        raise Wrong("with k = n every index is in the sample")
    runs = [sorted(fn(20, 5, random.Random(s))) for s in (3, 3, 4)]
    if runs[0] != runs[1]:
        raise Wrong("two calls with random.Random(3) gave different samples: draw every random number from rng")
    if runs[0] == runs[2] == list(range(5)):
        raise Wrong("reservoir_sample returns the first k items: each later item i replaces a random slot with "
                    "probability k / (i + 1)")
    counts, trials = [0] * 10, 20_000
    for t in range(trials):
        got = list(fn(10, 3, random.Random(t)))
        if len(set(got)) != 3 or not all(0 <= int(i) < 10 for i in got):
            raise Wrong(f"reservoir_sample(10, 3, rng) returned {got}: 3 distinct indices of range(10) are needed")
        for i in got:
            counts[int(i)] += 1
    share = [c / trials for c in counts]
    off = max(range(10), key=lambda i: abs(share[i] - 0.3))
    if abs(share[off] - 0.3) > 0.03:  # 20,000 draws: the share's spread is 0.003, so 0.03 is ten of it
        raise Wrong(f"over {trials:,} samples of 3 from 10, index {off} was drawn {share[off]:.1%} of the time, not "
                    f"30%: every index must be equally likely to end in the sample; in Algorithm R each later item i "
                    "(i >= k) enters with probability k / (i + 1)")


def check_remove_neurons(fn) -> None:
    torch.manual_seed(0)
    fc, next_fc = nn.Linear(5, 6), nn.Linear(6, 3)
    keep = torch.tensor([0, 2, 3, 5])
    x = torch.randn(7, 5)
    mask = torch.zeros(6)
    mask[keep] = 1
    other = torch.zeros(6)
    other[[1, 4]] = 1
    with torch.no_grad():
        want = next_fc(torch.relu(fc(x)) * mask)  # the head with neurons 1 and 4 silenced
        complement = next_fc(torch.relu(fc(x)) * other)  # ... and with the others silenced
    import copy

    got = fn(copy.deepcopy(fc), copy.deepcopy(next_fc), keep.clone())  # copies: a cut in place is fine too
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(m, nn.Linear) for m in got)):
        raise Wrong("remove_neurons must return (new_fc, new_next_fc), two torch.nn.Linear")
    new, new_next = got
    if tuple(new.weight.shape) == (6, 4):
        raise Wrong("new_fc has weight shape (6, 4): you cut fc's columns (its inputs); a neuron is a row of "
                    "fc.weight, so keep its rows: fc.weight[keep]")
    if tuple(new.weight.shape) != (4, 5):
        raise Wrong(f"new_fc has weight shape {tuple(new.weight.shape)}, not (4, 5): one row per kept neuron")
    if new.bias is None or new.bias.shape != (4,):
        raise Wrong("new_fc's bias must keep one entry per kept neuron: fc.bias[keep]")
    if tuple(new_next.weight.shape) == (3, 6):
        raise Wrong("new_next_fc still reads 6 inputs: the removed neurons' outputs are gone, so cut its columns "
                    "too, next_fc.weight[:, keep] (its bias stays as it is)")
    if tuple(new_next.weight.shape) != (3, 4):
        raise Wrong(f"new_next_fc has weight shape {tuple(new_next.weight.shape)}, not (3, 4): next_fc's rows "
                    "stay, its columns of the removed neurons go")
    with torch.no_grad():
        out = new_next(torch.relu(new(x)))
    if torch.allclose(out[:, :], complement, atol=1e-5) and not torch.allclose(out, want, atol=1e-5):
        raise Wrong("your layers compute the head with the neurons of `keep` removed: keep lists the neurons "
                    "that stay")
    if not torch.allclose(out, want, atol=1e-5):
        raise Wrong(f"the smaller layers compute outputs up to {(out - want).abs().max().item():.3g} away from the "
                    "head with the removed neurons silenced: check each layer's bias and which rows/columns stay")
    guard.at_study_size("remove_neurons", fn, lambda n: (nn.Linear(n, n), nn.Linear(n, n), torch.arange(0, n, 2)),
                        _FIRST_LAYER, "the 4,096 x 25,088 first layer")


def check_kmeans_share(fn) -> None:
    values = torch.tensor([0.0, 0.1, 0.9, 1.0])  # start [0, 1]; means [0.05, 0.95]; nothing moves after
    codebook, index = fn(values, 1)
    codebook, index = torch.as_tensor(codebook).flatten().float(), torch.as_tensor(index).flatten().long()
    if len(codebook) != 2:
        raise Wrong(f"bits=1 shares 2**1 = 2 values; your codebook holds {len(codebook)}")
    if len(index) != 4:
        raise Wrong(f"one index per weight: 4 weights, {len(index)} indices")
    if not torch.allclose(codebook[index], torch.tensor([0.05, 0.05, 0.95, 0.95]), atol=1e-6):
        raise Wrong(f"kmeans_share([0, 0.1, 0.9, 1], bits=1) stores {codebook[index].tolist()}, not "
                    "[0.05, 0.05, 0.95, 0.95]: start the centroids linearly from the smallest to the largest weight, "
                    "assign each weight to its nearest centroid, move each centroid to its weights' mean, repeat")
    torch.manual_seed(0)
    centres = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    w = (centres[torch.randint(0, 4, (400,))] + 0.05 * torch.randn(400)).view(20, 20)
    codebook, index = fn(w, 2)
    codebook, index = torch.as_tensor(codebook).flatten().float(), torch.as_tensor(index).long()
    if len(codebook) != 4:
        raise Wrong(f"bits=2 shares 4 values; your codebook holds {len(codebook)}")
    if index.numel() != w.numel() or int(index.min()) < 0 or int(index.max()) >= 4:
        raise Wrong(f"the indices must number one per weight ({w.numel()}) and lie in 0..3")
    flat, index = w.flatten(), index.flatten()
    nearest = (flat[:, None] - codebook[None, :]).abs().argmin(1)
    far = (flat - codebook[index]).abs() > (flat - codebook[nearest]).abs() + 1e-6
    if far.any():
        raise Wrong(f"{int(far.sum())} weights are not assigned to their nearest shared value")
    for c in range(4):
        mine = flat[index == c]
        if len(mine) and abs(float(mine.mean()) - float(codebook[c])) > 1e-4:
            raise Wrong(f"shared value {float(codebook[c]):.4f} is not the mean of its weights "
                        f"({float(mine.mean()):.4f}): k-means moves each centroid to that mean until nothing moves")
    if not torch.allclose(torch.sort(codebook).values, torch.tensor([-1.0, 0.0, 1.0, 3.0]), atol=0.05):
        raise Wrong(f"four clear clusters around -1, 0, 1 and 3 give the shared values {codebook.tolist()}")
    guard.at_study_size("kmeans_share", fn, lambda n: (torch.randn(n * n), 4), 1 << 20,
                        "a sample of 1,048,576 weights of each layer, at 4 bits")


def check_fine_grained_mask(fn) -> None:
    w = torch.tensor([[0.5, -3.0, 0.1, 2.0, -0.2], [1.5, 0.05, -1.0, 0.3, 4.0],
                      [-0.7, 0.9, 2.5, -0.01, 0.6], [0.02, -0.4, 0.8, 1.2, -1.8]])  # 20 distinct magnitudes
    for fraction in (0.4, 0.2, 0.6, 0.1):
        got = torch.as_tensor(fn(w.clone(), fraction))
        kept = round(fraction * w.numel())
        want = w.abs() >= w.abs().flatten().sort(descending=True).values[kept - 1]
        if got.shape != w.shape:
            raise Wrong(f"the mask has shape {tuple(got.shape)}; it needs one entry per weight, {tuple(w.shape)}")
        if got.dtype != torch.bool:
            raise Wrong(f"the mask is {got.dtype}; make it torch.bool (True: the weight stays)")
        if int(got.sum()) != kept:
            raise Wrong(f"keep_fraction={fraction} of {w.numel()} weights keeps {kept}; your mask keeps {int(got.sum())}")
        if torch.equal(got, w >= w.flatten().sort(descending=True).values[kept - 1]):
            raise Wrong("your mask keeps the largest signed weights: -3.0 is large too; rank by magnitude |w|")
        if torch.equal(got, w.abs() <= w.abs().flatten().sort().values[kept - 1]):
            raise Wrong("your mask keeps the smallest weights; Deep Compression keeps the largest magnitudes")
        if not torch.equal(got, want):
            per_row = torch.zeros_like(got)
            per_row.scatter_(1, w.abs().topk(max(1, round(fraction * w.shape[1])), dim=1).indices, True)
            if torch.equal(got, per_row):
                raise Wrong("your mask keeps a share of each row; the share is of the whole layer")
            raise Wrong(f"keep_fraction={fraction}: the mask must keep the {kept} weights of largest |w|")
    guard.at_study_size("fine_grained_mask", fn, lambda n: (torch.randn(n, n), 0.04), _FIRST_LAYER,
                        "layers of up to 4,096 x 25,088 weights")


# ---------------------------------------------------------------- notebook 04: capacity measured

def check_bits_stored(fn) -> None:
    cases = [(100, 1.0, 10, 100 * math.log2(10)), (100, 0.1, 10, 0.0), (1000, 0.05, 10, 0.0),
             (100, 0.9, 10, 100 * (math.log2(10) - memorization.binary_entropy(0.9) - 0.1 * math.log2(9))),
             (10, 0.9, 2, 10 * (1 - memorization.binary_entropy(0.9)))]
    for n, a, k, want in cases:
        got = float(fn(n, a, k))
        if a == 0.9 and k == 10 and math.isclose(got, n * (math.log2(10) - memorization.binary_entropy(a)), rel_tol=1e-6):
            raise Wrong("bits_stored leaves out (1 - a) log2 9: a wrong label still says which of the 9 other "
                        "classes it is not, so it costs more than h(a)")
        if math.isclose(got, n * a * math.log2(k), rel_tol=1e-6) and not math.isclose(got, want, rel_tol=1e-6):
            raise Wrong("n a log2 K counts only the right labels, as if the wrong ones cost nothing; use "
                        "n (log2 K - h(a) - (1 - a) log2 (K - 1))")
        if a <= 1 / k and got != 0:
            raise Wrong(f"bits_stored({n}, {a}, classes={k}) gives {got:.3g}: at or below chance (a <= 1/K) a fit "
                        "stores nothing, 0 bits")
        _same(got, want, f"bits_stored({n}, {a}, classes={k})")


def check_images_memorized(fn) -> None:
    limit, start = 2000, 100
    for largest in (0, 3, 37, 150, 1000, 1999, 2000, 5000):
        asked, answers = [], {}

        def fits(n, largest=largest):
            if not 1 <= n <= limit:
                raise Wrong(f"fits({n}) was asked: try 1 to limit={limit} images")
            asked.append(n)
            if len(asked) > 40:
                raise Wrong(f"more than 40 calls to fits for a head that fits {min(largest, limit)} (asked "
                            f"{asked[:6]} ...): each call trains heads; double n until it fails, stop at limit, then "
                            "bisect (about 20 calls at most here)")
            answers[n] = n <= largest
            return answers[n]

        got = fn(fits, limit)
        got = int(_scalar(got, "images_memorized"))
        true = min(largest, limit)
        doubling = []
        n = start
        while True:  # what doubling from `start` asks before the first failure (or the limit)
            doubling.append(min(n, limit))
            if min(n, limit) > largest or n >= limit:
                break
            n *= 2
        if asked[:len(doubling)] != doubling:
            raise Wrong(f"for a head that fits {true} images your search asked {asked[:len(doubling)]} first; "
                        f"doubling from start={start} asks {doubling} (capped at limit) before it bisects")
        if got > true:
            raise Wrong(f"a head that fits at most {true} images: yours says {got}")
        if got and not answers.get(got):
            raise Wrong(f"yours returns {got}, an n the head was not seen to fit: return the last n that fitted")
        if true - got > max(1, math.ceil(0.125 * got)):
            raise Wrong(f"a head fits at most {true} images and yours says {got}: after doubling, bisect between "
                        "the last n that fitted and the first that failed until they are within 1/8 of it")


def check_count_thresholds(fn) -> None:
    sums = torch.tensor([0.3, 2.0, 1.1, 5.0, 0.7, 3.2, 4.1])
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0])  # sorted by sum: 0 1 0 1 0 0 1 -> 5 changes
    got = int(fn(sums, labels))
    unsorted = int((labels[1:] != labels[:-1]).sum())  # 4
    if got == unsorted:
        raise Wrong(f"count_thresholds gives {got}: the changes of label in the data's order; sort the samples by "
                    "their sum first")
    _same(got, 5, "count_thresholds for the sums and labels of the example", "sorted by sum the labels read "
          "0 1 0 1 0 0 1: five changes")
    _same(int(fn(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2, 2, 2]))), 0, "one class only")


def check_requirement_bits(fn) -> None:
    for t, d, want in ((4, 10, (4 * 11 + 4 + 1, 3 * 10)), (7, 512, (7 * 513 + 8, 3 * 512)), (0, 5, (1, 0))):
        got = tuple(int(v) for v in fn(t, d))
        if got[1] == round(math.log2(t + 1)) * d != want[1]:
            raise Wrong(f"requirement_bits({t}, {d}): log2({t + 1}) = {math.log2(t + 1):.2f} rounds up: a part "
                        "of a bit is a whole bit")
        if t and got[0] == t * (d + 1):
            raise Wrong(f"requirement_bits({t}, {d}): max counts only the hidden neurons; the output neuron reads "
                        f"the {t} hidden ones, and stores bits too")
        if t and got[0] == t * (d + 1) + t:
            raise Wrong(f"requirement_bits({t}, {d}): max leaves out the output neuron's bias: by rule 2 a neuron of "
                        "n inputs stores n + 1 bits")
        _same(got, want, f"requirement_bits({t}, {d})", "max: t neurons of d inputs and one of t inputs, rule 2 each; "
              "expected: the bits that name one of t + 1 intervals, for each of the d inputs")