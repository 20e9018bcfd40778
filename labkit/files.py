"""Files labkit writes and reads: atomic writes, checked reads that name what is wrong, writable folders.

Every file is written to a temporary name first and then renamed over the target, so a reader never sees
half a file. Every file read back is checked: a missing, empty, truncated or foreign file raises
FileProblem with one message that names the file, says what is wrong with it and how to fix it.
"""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Callable

import torch


class FileProblem(RuntimeError):
    """A file labkit reads is missing, empty, damaged or not what it should hold (the message says which)."""


def temporary(path: Path) -> Path:
    """The temporary name `path` is written under before the rename: unique to this process, so two
    processes writing the same file (two notebooks filling one feature cache) never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


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
    """torch.save `obj` to `path` atomically (the folder is made if needed); returns the file's size in bytes.

    The file is written through a file object, so its bytes do not depend on its name and equal
    `serialized_size(obj)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    return write_atomic(path, write)


class _Counter(io.RawIOBase):
    """A write-only stream that keeps nothing and counts the bytes a file would hold."""

    def __init__(self):
        self.position = self.end = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.position += n
        self.end = max(self.end, self.position)
        return n

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset if whence == 0 else (self.position + offset if whence == 1 else self.end + offset)
        return self.position


def serialized_size(obj) -> int:
    """Bytes `save_torch(obj, ...)` would write, measured without writing anything."""
    counter = _Counter()
    torch.save(obj, counter)
    return counter.end


def writable_folder(folder: str | os.PathLike, what: str, fix: str) -> Path:
    """Make `folder` (and its parents) and check a file can be written in it; FileProblem naming it else."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".labkit-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = {errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
                  errno.ENOTDIR: "a part of that path is a file, not a folder",
                  errno.EEXIST: "a file of that name is in the way",
                  errno.ENOSPC: "no space left on the disk"}.get(err.errno, err.strerror or str(err))
        raise FileProblem(f"cannot write in {what} {folder} ({reason}); {fix}") from None
    return folder


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


def contents(path: str | os.PathLike) -> bytes:
    """The bytes of a small file labkit reads back; ValueError saying it is missing or empty otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError("it is missing")
    raw = path.read_bytes()
    if not raw:
        raise ValueError("it is empty (0 bytes), as after a full disk or a crash")
    return raw


def json_object(path: str | os.PathLike) -> dict:
    """The object (dict) a JSON file holds; ValueError saying what is wrong with the file otherwise."""
    raw = contents(path)
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"it is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"it holds a JSON {type(value).__name__}, not an object of settings")
    return value


def read_json_object(path: str | os.PathLike, what: str, fix: str) -> dict:
    """A JSON file that must hold an object (a dict); FileProblem naming `what` and `fix` else."""
    try:
        return json_object(path)
    except ValueError as err:
        raise FileProblem(f"{what} {path} is unreadable ({err}); {fix}") from None


def _exists_and_not_empty(path: Path, what: str, fix: str, error: type[FileProblem] = FileProblem) -> None:
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes), as after a full disk or a crash; {fix}")
