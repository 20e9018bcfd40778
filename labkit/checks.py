"""Argument validation, one message shape everywhere: the value, what it may be, and the fix. Integers may be ints,
numpy or torch integer scalars, or integral floats (5.0); bools and other floats are refused; nothing is capped."""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence


def _as_int(value):
    """`value` as an int when it is an integer in any of the forms accepted, else None."""
    if _is_bool(value):
        return None
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor: only a single number
        if value.numel() != 1 or value.dtype.is_floating_point and not float(value.item()).is_integer():
            return None
        value = value.item()
        if isinstance(value, bool):
            return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return None


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """`value` as an int in [minimum, maximum], else ValueError naming `name`, the range and `hint`."""
    number = _as_int(value)
    low = "" if minimum is None else f" of at least {minimum}"
    high = "" if maximum is None else (f" and at most {maximum}" if low else f" of at most {maximum}")
    if number is None or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if minimum == 1 and maximum is None:
            want = "a positive integer"
        else:
            want = f"an integer{low}{high}"
        raise ValueError(f"{name}={value!r} must be {want}" + (f"; {hint}" if hint else ""))
    return number


def optional_integer(name: str, value, minimum: int | None = None, maximum: int | None = None,
                     hint: str = "") -> int | None:
    """None, or `value` checked as by `integer`."""
    if value is None:
        return None
    return integer(name, value, minimum, maximum, hint or "or None")


def number(name: str, value, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, hint: str = "") -> float:
    """`value` as a finite float with minimum <= value <= maximum and above < value < below."""
    ok = isinstance(value, numbers.Real) and not _is_bool(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = ((minimum is None or v >= minimum) and (maximum is None or v <= maximum)
              and (above is None or v > above) and (below is None or v < below))
    if not ok:
        parts = []
        if above is not None and below is not None:
            parts.append(f"strictly between {above:g} and {below:g}")
        else:
            if minimum is not None:
                parts.append(f"at least {minimum:g}")
            if above is not None:
                parts.append(f"above {above:g}")
            if maximum is not None:
                parts.append(f"at most {maximum:g}")
            if below is not None:
                parts.append(f"below {below:g}")
        want = "a number" + (" " + " and ".join(parts) if parts else "")
        raise ValueError(f"{name}={value!r} must be {want}" + (f"; {hint}" if hint else ""))
    return float(value)


def choice(name: str, value, allowed: Sequence, hint: str = ""):
    """The entry of `allowed` equal to `value` (a bool never stands for 1 or 0), else ValueError naming both."""
    for a in allowed:
        if _is_bool(a) == _is_bool(value) and _equal(a, value):
            return a
    raise ValueError(f"{name}={value!r} is not allowed; choose one of: " + ", ".join(repr(a) for a in allowed)
                     + (f". {hint}" if hint else ""))


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # an array compared with a scalar
        return False


def integers(name: str, values, minimum: int | None = 1, length: int | None = None, hint: str = "") -> list[int]:
    """A sequence of integers (list, tuple, numpy array, 1-D tensor) as a list of ints, each >= minimum."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name}={values!r} must be a list of integers"
                         + (f"; {hint}" if hint else ""))
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()
    out = []
    for v in values:
        number_ = _as_int(v)
        if number_ is None or (minimum is not None and number_ < minimum):
            bound = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
            raise ValueError(f"{name}={list(values)!r}: every entry must be {bound} (got {v!r})"
                             + (f"; {hint}" if hint else ""))
        out.append(number_)
    if length is not None and len(out) < length:
        raise ValueError(f"{name}={out} needs at least {length} entries" + (f"; {hint}" if hint else ""))
    return out


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite (the message names the learning rate and the fix)."""


def finite_loss(loss: float, lr: float, where: str = "training") -> float:
    """`loss` if finite, else raises TrainingDiverged naming `lr`, `where` (e.g. "epoch 2 of cycle 1") and the fix.
    Call it on each epoch's mean loss: a NaN loss stays NaN, and the head then scores chance (10%) without a word."""
    value = float(loss)
    if math.isfinite(value):
        return value
    raise TrainingDiverged(
        f"the training loss became {value} in {where} with lr={lr:g}: the learning rate is far too high for this "
        f"head, and what it trains is noise. Fix: lower lr (--lr; the profiles use 2e-4, try {min(lr / 10, 1e-3):g} "
        "or less) and run again; nothing of this cycle was recorded")
