"""Scoring hidden neurons and removing them physically (smaller Linear layers, not masks)."""
from __future__ import annotations

import contextlib
import random

import torch
from torch import nn

from . import checks
from . import config as cfg
from .config import CONTROLS, METHODS  # noqa: F401  (re-exported as prune.METHODS)

_ROWS = 256  # rows scored at a time


@torch.no_grad()
def neuron_scores(weight: torch.Tensor, method: str) -> torch.Tensor:
    """One float64 score per neuron (row of `weight`, n x inputs); the lowest-scoring neurons are removed first.
    With w_bar the layer's mean row (the average neuron):
      "l1"        sum_j |w_ij - w_bar_j|      distance of neuron i from the average neuron
      "l2"        sum_j (w_ij - w_bar_j)^2    the same, squared: the most redundant neurons go first
      "magnitude" sum_j |w_ij|                the classic L1-norm criterion (Li et al. 2017)
    Summed in float64 (float32 sums of 25,088 terms tie for dozens of neurons), a block of rows at a time through
    one reused buffer (a fresh block each time measured 3.5x slower). `l1_scores`, `l2_scores`: plain references.
    """
    checks.choice("method", method, ("l1", "l2", "magnitude"), hint="reservoir sampling scores nothing")
    w = weight.detach()
    buffer = torch.empty((min(_ROWS, len(w)), w.shape[1]), dtype=torch.float64, device=w.device)

    def blocks():  # each block of rows as float64, in the one buffer (consumed before the next is copied)
        for i in range(0, len(w), _ROWS):
            rows = w[i:i + _ROWS]
            yield buffer[:len(rows)].copy_(rows)

    if method == "magnitude":
        return torch.cat([b.abs_().sum(1) for b in blocks()])
    w_bar = sum(b.sum(0) for b in blocks()) / len(w)
    if method == "l1":
        return torch.cat([b.sub_(w_bar).abs_().sum(1) for b in blocks()])
    return torch.cat([b.sub_(w_bar).square_().sum(1) for b in blocks()])


def reservoir_sample(n: int, k: int, rng: random.Random | int | None = None) -> list[int]:
    """Algorithm R, the reference for notebook 03's exercise: a uniformly random k (0 to n) of range(n), sorted, drawn
    with `rng` (a random.Random; an int seeds one). The first k items fill the reservoir; item i (i >= k) then
    replaces a random slot with probability k / (i + 1)."""
    n = checks.integer("n", n, minimum=0, hint="it is how many items there are to draw from")
    k = checks.integer("k", k, 0, n, hint=f"a sample of distinct indices from range({n}) holds at most {n}")
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    reservoir = list(range(k))
    for i in range(k, n):
        j = rng.randint(0, i)
        if j < k:
            reservoir[j] = i
    return sorted(reservoir)


# ---------------------------------------------------------------- the exercises' references (notebook 03)

def l1_scores(weight: torch.Tensor) -> torch.Tensor:
    """sum_j |w_ij - w_bar_j| for every neuron i (row of `weight`), in float64: the plain reference of notebook 03's
    exercise, equal to `neuron_scores(weight, "l1")` (tested)."""
    w = weight.detach().double()
    return (w - w.mean(0)).abs().sum(1)


def l2_scores(weight: torch.Tensor) -> torch.Tensor:
    """sum_j (w_ij - w_bar_j)^2 for every neuron i, in float64 (the reference; see `l1_scores`)."""
    w = weight.detach().double()
    return (w - w.mean(0)).square().sum(1)


@torch.no_grad()
def remove_neurons(fc: nn.Linear, next_fc: nn.Linear, keep: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """fc with only the neurons `keep` (ascending row indices) and next_fc with only those inputs (bias unchanged):
    the two layers with the other neurons silenced. The plain reference of notebook 03's exercise; `prune_neurons`
    cuts the rows in place instead (the same layers, tested)."""
    new_fc = nn.utils.skip_init(nn.Linear, fc.in_features, len(keep), bias=fc.bias is not None)
    new_fc.weight.copy_(fc.weight[keep])
    if fc.bias is not None:
        new_fc.bias.copy_(fc.bias[keep])
    new_next = nn.utils.skip_init(nn.Linear, len(keep), next_fc.out_features, bias=next_fc.bias is not None)
    new_next.weight.copy_(next_fc.weight[:, keep])
    if next_fc.bias is not None:
        new_next.bias.copy_(next_fc.bias)
    return new_fc, new_next


# functions a notebook swaps in for the references (`using`): the student's, once their checks passed
_IN_USE: dict = {}


@contextlib.contextmanager
def using(**functions):
    """Within the block, prune with these functions (l1_scores, l2_scores, reservoir_sample, remove_neurons,
    each optional) instead of labkit's; `ran_on(method)` then names the ones a prune step used."""
    unknown = set(functions) - {"l1_scores", "l2_scores", "reservoir_sample", "remove_neurons"}
    if unknown:
        raise ValueError(f"prune.using knows l1_scores, l2_scores, reservoir_sample and remove_neurons, not "
                         f"{', '.join(sorted(unknown))}")
    before = dict(_IN_USE)
    _IN_USE.update({k: f for k, f in functions.items() if f is not None})
    try:
        yield
    finally:
        _IN_USE.clear()
        _IN_USE.update(before)


_SCORED_BY = {"l1": "l1_scores", "l2": "l2_scores", "reservoir": "reservoir_sample"}
_ADDED: dict = {}  # criteria defined outside labkit (notebook 03): name -> scoring function


def criterion(name: str, score) -> str:
    """Add a pruning criterion defined outside labkit (a notebook's cell) and return `name`; from then on `name` is a
    method like "l1", run beside the other criteria and both controls. `score(weight)` takes a layer's own n x inputs
    weight (checked unchanged after) and gives one number per neuron; the lowest are removed first. Runs are keyed by
    a fingerprint of its source and defaults (not of helpers or globals it uses), so an edited function runs anew."""
    import hashlib

    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"criterion name {name!r}: use a short name of letters, digits and _ (it names the runs)")
    if name in (*METHODS, *CONTROLS):
        raise ValueError(f"{name!r} is labkit's own {'control' if name in CONTROLS else 'criterion'}: give yours "
                         "another name")
    if not callable(score):
        raise ValueError(f"criterion {name!r}: give the scoring function itself (def {name}_scores(weight): ...)")
    trial = torch.as_tensor(score(torch.randn(5, 7, generator=torch.Generator().manual_seed(0))))
    if trial.shape != (5,):
        raise ValueError(f"criterion {name!r} gives shape {tuple(trial.shape)} for 5 neurons of 7 inputs; it needs "
                         "one score per neuron (row): shape (5,)")
    cfg.ADDED_CRITERIA[name] = hashlib.sha1(_code_text(score).encode()).hexdigest()[:6]
    _ADDED[name] = score
    return name


def _code_text(fn) -> str:
    """A criterion's fingerprint text: its source and defaults, else its compiled code (never an address)."""
    import inspect

    try:
        return inspect.getsource(fn) + repr(getattr(fn, "__defaults__", None))
    except (OSError, TypeError):
        pass

    def code(c) -> str:
        return repr((c.co_code, [code(k) if inspect.iscode(k) else repr(k) for k in c.co_consts], c.co_names))

    inner = getattr(fn, "__code__", None)
    return code(inner) + repr(getattr(fn, "__defaults__", None)) if inner else type(fn).__qualname__


def ran_on(method: str) -> str:
    """Whose functions a prune step by `method` runs on now: "labkit", or "yours: l2_scores, remove_neurons"."""
    names = [n for n in (_SCORED_BY.get(method), "remove_neurons") if n and n in _IN_USE]
    if method in _ADDED:
        names.insert(0, method)
    return "yours: " + ", ".join(names) if names else "labkit"


def choose_neurons(weight: torch.Tensor, k: int, method: str, seed: int | None = None) -> list[int]:
    """Indices (sorted) of the k neurons of `weight` that `method` removes; k larger than its rows is refused."""
    rows = weight.shape[0]
    k = checks.integer("k", k, 0, rows, hint=f"the layer has {rows} neurons (rows of its weight), so at most "
                                             f"{rows} can be chosen")
    if method == "reservoir":
        return sorted(int(i) for i in _IN_USE.get("reservoir_sample", reservoir_sample)(rows, k, random.Random(seed)))
    name = _SCORED_BY.get(method, "")
    if method in _ADDED:  # a criterion defined in a notebook: the weight itself (no 400 MB copy), checked after
        from . import guard

        before = guard.fingerprint(weight)
        scores = torch.as_tensor(_ADDED[method](weight.detach())).detach().double().flatten().cpu()
        if not guard.same_fingerprint(before, guard.fingerprint(weight)):
            raise guard.ChangedInput(guard.changed_message(method, "weight") + "; the study stopped, since the head "
                                     "it reports on would not be the head it pruned")
        if len(scores) != rows:
            raise ValueError(f"criterion {method!r} returned {len(scores)} scores for a layer of {rows} neurons")
    elif name in _IN_USE:
        scores = _scores_by(_IN_USE[name], name, weight)
    else:
        scores = neuron_scores(weight, method)
    # stable sort: ties go to the lower index, so the choice is reproducible
    order = torch.sort(scores, stable=True).indices
    return sorted(order[:k].tolist())


def _linear_positions(seq: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]


def _check(model: nn.Module, layer, k, method) -> tuple[nn.Sequential, list[int], int, int]:
    """The head's Sequential, its Linear positions, and layer and k as ints; ValueError naming a bad one."""
    head = getattr(model, "classifier", model)
    seq = getattr(head, "layers", None)
    if not isinstance(seq, nn.Sequential):
        raise TypeError("prune_neurons needs a labkit VGGHead or a VGG16 model whose .classifier is one "
                        "(see labkit.model)")
    positions = _linear_positions(seq)
    hidden = len(positions) - 1
    checks.choice("method", method, (*METHODS, *_ADDED))
    layer = checks.integer("layer", layer, 0, hidden - 1,
                           hint=f"the head has {hidden} hidden layers, so layer must be 0..{hidden - 1}")
    width = seq[positions[layer]].out_features
    k = checks.integer("k", k, 1, width - 1,
                       hint=f"hidden layer {layer} has {width} neurons and at least one must stay")
    return seq, positions, layer, k


@torch.no_grad()
def prune_neurons(model: nn.Module, layer: int, k: int, method: str, seed: int | None = None):
    """Remove k neurons from hidden layer `layer` (0-based) physically, in place; returns (model, removed indices
    into the layer as it was). That Linear loses k rows and the next k input columns, so parameters, file size and
    compute drop (memory too, once a quarter of the layer's rows are gone: see `_cut_rows`)."""
    seq, positions, layer, k = _check(model, layer, k, method)
    this, nxt = seq[positions[layer]], seq[positions[layer + 1]]
    removed = choose_neurons(this.weight, k, method, seed)
    kept = kept_indices(this.out_features, removed, this.weight.device)
    if "remove_neurons" in _IN_USE:
        seq[positions[layer]], seq[positions[layer + 1]] = _removed_by(_IN_USE["remove_neurons"], this, nxt, kept)
    else:
        seq[positions[layer]] = _sliced(this, rows=kept)
        seq[positions[layer + 1]] = _sliced(nxt, cols=kept)
    return model, removed


_COLUMNS = 1024  # columns of a layer handed to a student's scoring function at a time


def _scores_by(score, name: str, weight: torch.Tensor) -> torch.Tensor:
    """A student's l1_scores or l2_scores summed over copies of `_COLUMNS` columns (each column's terms need only
    that column): a copy cannot be changed behind the study's back, and is 32 MB in float64 (the layer: 800 MB)."""
    w = weight.detach()
    total = torch.zeros(len(w), dtype=torch.float64)
    for j in range(0, w.shape[1], _COLUMNS):
        block = torch.as_tensor(score(w[:, j:j + _COLUMNS].clone())).detach()
        if block.numel() != len(w):
            raise ValueError(f"your {name} returned {block.numel()} scores for a layer of {len(w)} neurons: one "
                             "score per row (see its check in notebook 03)")
        total += block.double().flatten().cpu()
    return total


def _removed_by(remove, this: nn.Linear, nxt: nn.Linear, kept: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """A student's remove_neurons on (this, nxt): ValueError on bad shapes, guard.ChangedInput if it changed them."""
    from . import guard

    before = [guard.fingerprint(this), guard.fingerprint(nxt)]
    new, new_next = remove(this, nxt, kept)
    for name, layer, was in (("fc", this, before[0]), ("next_fc", nxt, before[1])):
        if not guard.same_fingerprint(was, guard.fingerprint(layer)):
            raise guard.ChangedInput(guard.changed_message("remove_neurons", name, layer=True) + "; the study "
                                     "stopped, since the head it reports on would not be the head it pruned")
    want = {"fc": (len(kept), this.in_features), "next_fc": (nxt.out_features, len(kept))}
    for name, layer in (("fc", new), ("next_fc", new_next)):
        if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != want[name]:
            raise ValueError(f"remove_neurons returned a {name} of weight shape "
                             f"{tuple(getattr(getattr(layer, 'weight', None), 'shape', ()))}, not {want[name]}: "
                             "see its check in notebook 03")
    for layer, like in ((new, this), (new_next, nxt)):
        layer.to(like.weight.device).requires_grad_(like.weight.requires_grad)
    return new, new_next


def kept_indices(n: int, removed, device=None) -> torch.Tensor:
    """The indices of range(n) not in `removed`, in order (int64): what index_select keeps."""
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[list(removed)] = False
    return keep.nonzero().squeeze(1)


# Share of a cut layer's storage that may stay unused (rows removed in place) before the layer is copied tight
_UNUSED_AT_MOST = 0.25


def _cut_rows(w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows `rows` (ascending int64 indices) of the 2-D weight `w`. On the CPU, while at most a quarter of w's
    storage would go unused, the kept rows move up in place (rows only move lower, so none is overwritten unread)
    and a view is returned: a fresh 390 MB tensor cost ~0.25 s of page faults per prune step, in place ~0.08 s
    (files.save_torch writes only the view's elements). Otherwise, and on a GPU, index_select copies."""
    row_bytes = w.shape[1] * w.element_size()
    room = w.untyped_storage().nbytes() // max(row_bytes, 1)  # rows the storage holds
    if (w.device.type != "cpu" or not w.is_contiguous() or w.storage_offset() != 0
            or len(rows) < (1 - _UNUSED_AT_MOST) * room):
        return w.index_select(0, rows)
    buffer = torch.empty((min(_ROWS, len(rows)), w.shape[1]), dtype=w.dtype)
    for start in range(0, len(rows), _ROWS):
        block = rows[start:start + _ROWS]
        torch.index_select(w, 0, block, out=buffer[:len(block)])
        w[start:start + len(block)].copy_(buffer[:len(block)])
    return w[:len(rows)]


def _sliced(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    """A Linear of the kept rows (neurons) or columns (inputs) of `linear`, given as indices: rows by `_cut_rows`,
    columns by index_select (0.05 s against a boolean mask's 0.08 s for 4,096 columns), used as is, not copied."""
    w = linear.weight.detach()
    if rows is not None:
        w = _cut_rows(w, rows)
    if cols is not None:
        w = w.index_select(1, cols)
    new = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=linear.bias is not None,
                             device="meta")
    new.weight = nn.Parameter(w, requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        b = linear.bias.detach()
        new.bias = nn.Parameter(b.index_select(0, rows) if rows is not None else b.clone(),
                                requires_grad=linear.bias.requires_grad)
    return new
