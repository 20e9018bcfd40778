"""Files labkit writes and reads: atomic writes (a temporary name renamed over the target, so no reader sees half
a file), checked reads (FileProblem naming the file, what is wrong with it and the fix), writable folders."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch


class FileProblem(RuntimeError):
    """A file labkit reads is missing, empty, damaged or not what it should hold (the message says which)."""


def temporary(path: Path) -> Path:
    """`path`'s temporary name: unique to this process, so two processes writing one file never share it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class WriteFailed(FileProblem):
    """The OS refused a write (full disk, quota, permissions); the message names the folder, bytes needed, fix."""


_REASONS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file is larger than this system allows", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.ENOTDIR: "a part of that path is a file, not a folder",
            errno.EEXIST: "a file of that name is in the way", errno.EIO: "an input/output error (a failing disk?)",
            errno.ENAMETOOLONG: "the name is too long for this file system"}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SPACE_FIX = ("free space on that disk, or put labkit's files on another one (--results or LABKIT_RESULTS for "
              "runs and tables, LABKIT_DATA for MNIST and the feature cache), then run the same command again: "
              "nothing was half-written and finished work is kept")
_OTHER_FIX = ("make that folder writable, or choose another one (--results or LABKIT_RESULTS for runs and tables, "
              "LABKIT_DATA for MNIST and the feature cache), then run the same command again; nothing was "
              "half-written")


def reason(err: OSError) -> str:
    """What an OSError means for a write, in words ("no space left on the disk", "permission denied", ...)."""
    return _REASONS.get(err.errno, err.strerror or str(err))


def write_failure(path: Path, err: OSError, needed: int | None = None) -> WriteFailed:
    """One line naming the folder `path` is in, what went wrong, the bytes needed where known, and the fix."""
    path = Path(path)
    room = ""
    if err.errno in _FULL:
        try:
            free = shutil.disk_usage(_existing(path.parent)).free
        except OSError:
            free = None
        if needed is not None:
            room = f" ({path.name} needs {_size(needed)}" + (f", {_size(free)} are free there)" if free is not None
                                                             else ")")
        elif free is not None:
            room = f" ({_size(free)} are free there)"
    fix = _SPACE_FIX if err.errno in _FULL else _OTHER_FIX
    return WriteFailed(f"cannot write {path.name} in {path.parent}: {reason(err)}{room}; {fix}")


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,} bytes"


class _Descriptor(io.RawIOBase):
    """A file opened for writing, written with os.write (every byte of labkit's files goes through it)."""

    def __init__(self, path: Path):
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.error: OSError | None = None  # the first failed write, kept: torch reports it as its own error

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as err:
            self.error = self.error or err
            raise
        return done

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                os.close(self.fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with _Descriptor(path) as fh:
        fh.write(data)


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[Path], None],
                 needed: int | Callable[[], int] | None = None) -> int:
    """Write text, bytes, or whatever `content(temporary_path)` writes, then rename onto `path`; returns bytes.
    An OSError raises WriteFailed (with `needed` or the content's length); the target is left untouched."""
    path = Path(path)
    tmp = temporary(path)
    if isinstance(content, str):
        content = content.encode()
    try:
        if isinstance(content, bytes):
            _write_bytes(tmp, content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        size = len(content) if isinstance(content, bytes) else needed() if callable(needed) else needed
        raise write_failure(path, err, size if err.errno in _FULL else None) from None
    finally:
        _remove(tmp)
    return path.stat().st_size


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def save_torch(obj, path: str | os.PathLike) -> int:
    """torch.save `obj` to `path` atomically, making the folder; returns the size in bytes. Written through a file
    object, so the bytes do not depend on the name and equal `serialized_size(obj)`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(path, err) from None

    obj = _tight(obj)

    def write(tmp: Path) -> None:
        raw = _Descriptor(tmp)
        try:
            with io.BufferedWriter(raw, 1 << 20) as fh:
                torch.save(obj, fh)
        except Exception:
            if raw.error is not None:  # torch reports a failed write as "unexpected pos ..." or "file write failed"
                raise raw.error from None
            raise
        finally:
            raw.close()

    return write_atomic(path, write, needed=lambda: serialized_size(obj))


# temporary files: .NAME.<pid>.tmp (write_atomic) and .labkit-write-test.<pid> (writable_folder)
_TEMPORARY = re.compile(r"^\.(?:.+\.(\d+)\.tmp|labkit-write-test\.(\d+))$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there (signal 0 is CTRL_C_EVENT)
        try:
            import psutil  # comes with Jupyter
        except ImportError:
            return True  # cannot tell: leave the file alone
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a number no process can have: leave its file alone
    return True


def remove_dead_temporaries(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove the temporary files in `folder` (not below) whose writer is dead; returns (path, bytes) of each."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or _alive(int(match.group(1) or match.group(2))):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append((Path(entry.path), size))
    return removed


def said_removed(removed: list[tuple[Path, int]]) -> str:
    """A sentence naming the temporary files `remove_dead_temporaries` removed ("" when none)."""
    if not removed:
        return ""
    folders = sorted({str(p.parent) for p, _ in removed})
    return (f"removed {len(removed)} temporary file(s) ({_size(sum(n for _, n in removed))}) left in "
            f"{', '.join(folders)} by a process killed while writing: "
            + ", ".join(p.name for p, _ in removed[:3]) + (", ..." if len(removed) > 3 else ""))


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
    torch.save(_tight(obj, measure=True), counter)
    return counter.end


def _tight(obj, measure: bool = False):
    """`obj` with over-allocated tensors copied tight (torch.save writes whole storages);
    measure=True: uninitialized tensors of the same shape, for sizing."""
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.untyped_storage().nbytes() <= obj.numel() * obj.element_size():
            return obj
        return torch.empty(obj.shape, dtype=obj.dtype) if measure else obj.clone()
    if isinstance(obj, dict):
        new = {k: _tight(v, measure) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else type(obj)(new.items())
    if type(obj) in (list, tuple):
        new = [_tight(v, measure) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else type(obj)(new)
    return obj


def writable_folder(folder: str | os.PathLike, what: str, fix: str) -> Path:
    """Make `folder` (and its parents) and check a file can be written in it; FileProblem naming it else."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".labkit-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FileProblem(f"cannot write in {what} {folder} ({reason(err)}); {fix}") from None
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


def load_format(path: str | os.PathLike, what: str, fix: str, fmt: str, build: Callable,
                error: type[FileProblem] = FileProblem):
    """`build(payload)` of a dict file marked {"format": fmt}; `error` naming it if not one or if `build` fails."""
    path = Path(path)
    payload = load_torch(path, what, fix, error)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path} is not a {what} (format {fmt}); {fix}")
    try:
        return build(payload)
    except error as err:
        raise error(f"{what} {path} is damaged ({err}); {fix}") from None
    except Exception as err:
        raise error(f"{what} {path} is damaged ({type(err).__name__}: {err}); {fix}") from None


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


def _exists_and_not_empty(path: Path, what: str, fix: str, error: type[FileProblem] = FileProblem) -> None:
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes), as after a full disk or a crash; {fix}")
