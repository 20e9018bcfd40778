"""Guards on a student's function: `watched` checks its inputs unchanged (an in-place edit can return the right answer
yet leave the study training another head), `fingerprint` detects a change without a copy, `at_study_size` its cost.
"""
from __future__ import annotations

import inspect
import time

import torch
from torch import nn

MINUTE = 60.0  # a function estimated to take longer than this at the study's sizes is refused in its check


class ChangedInput(AssertionError):
    """A student's function changed an input it was given (the message says which, in the student's terms)."""


class TooSlow(AssertionError):
    """A student's function is right but would take more than about a minute at the study's sizes."""


def _copy(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, nn.Module):
        return {k: v.detach().clone() for k, v in value.state_dict().items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]  # compared element by element, so a list stands for a tuple too
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _same(before, value) -> bool:
    if torch.is_tensor(value):
        value = value.detach()
        if value.shape != before.shape or value.dtype != before.dtype:
            return False
        if value.is_floating_point() or value.is_complex():
            return torch.allclose(value, before, rtol=0, atol=0, equal_nan=True)
        return torch.equal(value, before)
    if isinstance(value, nn.Module):
        state = value.state_dict()
        return state.keys() == before.keys() and all(_same(before[k], state[k]) for k in state)
    if isinstance(value, (list, tuple)):
        return len(value) == len(before) and all(_same(b, v) for b, v in zip(before, value))
    if isinstance(value, dict):
        return value.keys() == before.keys() and all(_same(before[k], value[k]) for k in value)
    try:
        return bool(value == before)
    except Exception:
        return True  # an object that cannot be compared is not one the study reads back


def _names(fn, count: int) -> list[str]:
    """The names of fn's first `count` positional parameters ("argument 3" where it takes *args)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"argument {i + 1}" for i in range(count)]


def changed_message(name: str, argument: str, layer: bool = False) -> str:
    how = (f"build new torch.nn.Linear layers and copy into them; do not assign to {argument}.weight or edit it"
           if layer else f"{argument}.clone(), or compute new tensors without in-place operations such as -=, += "
                         "or [...] =")
    return (f"your {name} changed the {argument} it was given; work on a copy ({how}): the study goes on using "
            f"the {argument} it hands your function")


def watched(name: str, fn, may_change: tuple[str, ...] = ()):
    """fn, each call checked: every argument not in `may_change` must equal a copy taken before the call;
    ChangedInput names the first that does not."""
    def call(*args, **kwargs):
        names = _names(fn, len(args)) + list(kwargs)
        values = list(args) + list(kwargs.values())
        before = [None if n in may_change else _copy(v) for n, v in zip(names, values)]
        result = fn(*args, **kwargs)
        for n, v, b in zip(names, values, before):
            if n not in may_change and not _same(b, v):
                raise ChangedInput(changed_message(name, n, isinstance(v, nn.Module)))
        return result

    call.__wrapped__ = fn
    return call


@torch.no_grad()
def fingerprint(layer: nn.Module | torch.Tensor) -> list:
    """What changes when a weight of `layer` changes, without copying it: identity, shape, storage, version counter
    and two fixed random projections per parameter (these catch .data edits; 30 ms for 100M weights)."""
    prints = []
    for name, p in ([("weight", layer)] if torch.is_tensor(layer) else layer.named_parameters()):
        t = p.detach().reshape(len(p), -1) if p.dim() else p.detach().reshape(1, 1)
        g = torch.Generator(device=t.device).manual_seed(0)
        u = torch.randn(t.shape[1], generator=g, device=t.device, dtype=t.dtype)
        v = torch.randn(t.shape[0], generator=g, device=t.device, dtype=t.dtype)
        prints.append((name, id(p), tuple(p.shape), p.dtype, p.data_ptr(), p._version, [t @ u, v @ t]))
    return prints


def same_fingerprint(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[:6] == y[:6] and all(torch.equal(s, t) for s, t in zip(x[6], y[6]))
                                    for x, y in zip(a, b))


def at_study_size(name: str, fn, case, study: float, what: str) -> None:
    """Raise TooSlow if fn would take over a minute on `study` elements (`what` names them): `case(n)` gives its
    arguments for an n x n layer; timed at n = 64 and 256 on one thread, the time per element is extrapolated."""
    from .device import one_thread

    def best(n):
        args = case(n)
        seconds = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            fn(*args)
            seconds = min(seconds, time.perf_counter() - began)
            if seconds > 1:
                break
        return seconds

    with one_thread():  # small tensors: waking the thread pool on a busy machine costs more than the work
        small, large = best(64), best(256)
    per_element = max(large - small, 0.0) / (256 ** 2 - 64 ** 2)
    estimate = large + per_element * (study - 256 ** 2)
    if estimate > MINUTE:
        raise TooSlow(f"your {name} is right, but it took {large * 1e3:,.0f} ms on a 256 x 256 case; the study "
                      f"calls it on {what} ({study:,.0f} elements): some {estimate / 60:,.0f} minutes. A Python "
                      "loop over elements is the likely cause: use whole-tensor operations (a sum over a dimension, "
                      ".abs(), indexing with a tensor of indices) instead")
