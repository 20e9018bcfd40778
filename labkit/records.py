"""`Row`, the one row type of every table labkit writes (history.csv, the notebooks' tables), the CSV reader and
writer that round-trip it (`write(read(text)) == text` for what labkit writes), and the per-image correctness
records rows carry (`pack_right`: which images a head got right, as text)."""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Sequence, TypedDict, Union

from .config import Widths, parse_widths


class Row(TypedDict, total=False):
    """The columns labkit writes (a table holds some of them, and may hold others)."""

    cycle: int
    method: str
    layer: Union[int, str]  # (not int | str: get_type_hints evaluates it, and Python 3.9 cannot)
    removed: int
    widths: Widths
    mec_bits: int
    mec_effective_bits: int
    epochs_total: int
    val_correct: int
    val_total: int
    val_accuracy: float
    test_correct: int
    test_total: int
    test_accuracy: float
    rho: float
    rho_effective: float
    parameters: int
    model_bytes: int
    train_loss: float
    seconds: float
    val_right: str
    test_right: str
    seed: int
    cycle_epochs: int
    epochs_run: int
    step_phase: str
    scale: float
    control_epochs_total: int
    control_cycle: int
    control_val_accuracy: float
    control_test_accuracy: float
    control_val_right: str
    control_test_right: str
    tolerance: float
    within_tolerance: bool
    step_within_tolerance: bool
    smallest: bool
    ran_on: str


def _types(cls) -> dict[str, type]:
    import typing

    hints = typing.get_type_hints(cls)
    return {k: (v if isinstance(v, type) else "int|str") for k, v in hints.items()}


TYPES: dict[str, object] = _types(Row)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # ValueError for what is not a number at all
        if not value.is_integer():
            raise ValueError(f"{text!r} is not a whole number") from None
        return int(value)


def _flag(text: str) -> bool:
    if text in ("True", "False"):
        return text == "True"
    raise ValueError(f"{text!r} is not True or False")


def _as_written(text: str):
    """An unknown column's cell: the int, float or bool whose text it is exactly, else the text."""
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if str(value) == text:
            return value
    return _flag(text) if text in ("True", "False") else text


def cell(column: str, text: str, decimal_comma: bool = False):
    """One CSV cell typed by its column in `Row` (`widths` a config.Widths, `layer` an int or "all", an empty number
    or flag None); a column not in `Row`: the int, float or bool its text is exactly, else the text. ValueError when a
    known column's text does not fit its type."""
    kind = TYPES.get(column)
    if kind is None:
        return _as_written(text)
    if kind is str:
        return text
    if text.strip() == "":
        return None
    text = text.strip()
    if kind is Widths:
        return parse_widths(text)
    if kind is bool:
        return _flag(text)
    if kind == "int|str":
        return int(text) if text.isdigit() else text
    number = text.replace(",", ".") if decimal_comma else text
    if kind is int:
        return _integer(number)
    try:
        return float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def typed(row: dict) -> Row:
    """A row whose cells may be text (or a checkpoint's plain values), typed by column (what `read` gives)."""
    return {k: cell(k, v) if isinstance(v, str) else (parse_widths(v) if k == "widths" else v)
            for k, v in row.items()}


def plain(row: dict) -> dict:
    """The row with its widths as text: what a checkpoint stores (torch.load(weights_only=True) reads it)."""
    return {k: str(v) if isinstance(v, Widths) else v for k, v in row.items()}


def parse(text: str, required: Sequence[str] = ()) -> list[Row]:
    """Typed rows from CSV text, also as spreadsheets write it (a BOM, ';' or tabs with decimal commas, blank lines);
    ValueError naming the line and what is wrong (a missing `required` column, a bad number, a short line)."""
    text = text.lstrip("\ufeff")
    header = text.split("\n", 1)[0]
    # a spreadsheet set to a language that writes decimal commas separates fields with ';' (or tabs)
    delimiter = next((d for d in ";\t" if d in header and "," not in header), ",")
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if reader.fieldnames:
        reader.fieldnames = [f.strip() for f in reader.fieldnames]
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"no column {missing[0]!r}" if reader.fieldnames else "no header line")
    rows = []
    for n, r in enumerate(reader, start=2):
        if None in r and any(v.strip() for v in r[None]):
            raise ValueError(f"line {n} has more fields than the header")
        r.pop(None, None)
        if not any((v or "").strip() for v in r.values()):
            continue
        if any(r[c] is None for c in required):
            raise ValueError(f"line {n} is cut short")
        r.pop("", None)  # a column without a name (a spreadsheet's trailing comma)
        try:
            row = {k: cell(k, v if v is not None else "", delimiter != ",") for k, v in r.items()}
        except ValueError as err:
            raise ValueError(f"line {n}: {err}") from None
        for k in required:
            if row[k] is None and TYPES.get(k) not in (str, None):
                raise ValueError(f"line {n}: column {k!r} is empty")
        rows.append(row)
    return rows


def read(path: str | os.PathLike, required: Sequence[str] = ()) -> list[Row]:
    """A CSV file labkit wrote (history.csv, a notebook's table) back as typed rows."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return parse(fh.read(), required)


def write_text(rows: Sequence[dict], columns: Sequence[str] = (), keep_extra: bool = True) -> str:
    """Rows as CSV text: `columns`, then (keep_extra) the rows' other columns in order of first appearance;
    widths as "25088-4096-4096-256-10", floats as Python writes them (`parse` reads them back), None empty."""
    columns = list(columns)
    if keep_extra or not columns:
        columns += [k for k in dict.fromkeys(k for r in rows for k in r)
                    if k not in columns and isinstance(k, str) and k]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def same(a: Sequence[dict], b: Sequence[dict], ignore: Sequence[str] = ()) -> bool:
    """Whether two lists of rows hold the same values (NaN equal to NaN), `ignore` columns aside."""
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return len(a) == len(b) and all({k: norm(v) for k, v in x.items() if k not in ignore}
                                    == {k: norm(v) for k, v in y.items() if k not in ignore} for x, y in zip(a, b))


# ---------------------------------------------------------------- per-image correctness, as a row keeps it

def pack_right(right) -> str:
    """Which images a head got right (bool, N) as "x" and hex digits, 8 images a byte (a history row keeps it)."""
    import numpy as np

    return "x" + np.packbits(right.cpu().numpy().astype(bool)).tobytes().hex()  # "x": never read as a number


def unpack_right(text: str, n: int):
    """The inverse of `pack_right`: a bool tensor of the first `n` images; ValueError if `text` is too short."""
    import numpy as np
    import torch

    if not isinstance(text, str) or not text.startswith("x"):
        raise ValueError(f"{str(text)[:20]!r} is not a correctness record (pack_right writes 'x' and hex digits)")
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text[1:]), dtype=np.uint8))
    if len(bits) < n:
        raise ValueError(f"the correctness record holds {len(bits)} images, {n} expected")
    return torch.from_numpy(bits[:n].astype(bool))


def right(row: dict, split: str):
    """Which images of `split` ("val" or "test") the head of `row` got right: a bool tensor in the order every head
    is scored in, so two rows' records pair image by image."""
    return unpack_right(row[f"{split}_right"], int(row[f"{split}_total"]))


def paired_rights(rows_a: Sequence[dict], rows_b: Sequence[dict], split: str):
    """The `split` records of rows paired one to one (the same seed's two heads) as two lists of bool tensors;
    None when there are no pairs or a row has no record."""
    if not rows_a or len(rows_a) != len(rows_b) or not all(r.get(f"{split}_right") for r in [*rows_a, *rows_b]):
        return None
    return [right(r, split) for r in rows_a], [right(r, split) for r in rows_b]
