"""Files labkit writes and reads: atomic writes and checked reads that name what is wrong.

Every file is written to a temporary name first and then renamed over the target, so a reader never sees
half a file. Every file read back is checked: a missing, empty, truncated or foreign file raises
FileProblem with one message that names the file, says what is wrong with it and how to fix it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch


class FileProblem(RuntimeError):
    """A file labkit reads is missing, empty, damaged or not what it should hold (the message says which)."""


def temporary(path: Path) -> Path:
    """The temporary name `path` is written under before the rename."""
    return path.with_name(path.name + ".tmp")


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[Path], None]) -> int:
    """Write text, bytes, or whatever `content(temporary_path)` writes, then rename onto `path`; returns bytes."""
    path = Path(path)
    tmp = temporary(path)
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def save_torch(obj, path: str | os.PathLike) -> int:
    """torch.save `obj` to `path` atomically (the folder is made if needed); returns the file's size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike, what: str, fix: str, error: type[FileProblem] = FileProblem):
    """torch.load (weights only, onto the CPU) of a file labkit wrote; `error` naming `what` and `fix` else."""
    path = Path(path)
    _exists_and_not_empty(path, what, fix, error)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            first = "it holds Python objects other than tensors and plain data"
        raise error(f"{what} {path} is damaged or not a labkit file ({first}); {fix}") from None


def _exists_and_not_empty(path: Path, what: str, fix: str, error: type[FileProblem] = FileProblem) -> None:
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes), as after a full disk or a crash; {fix}")
