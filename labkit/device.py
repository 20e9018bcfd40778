"""Where computation runs and where its randomness starts: device choice (`pick_device`, the one place a device is
chosen), seeding, autocast, CPU threads and returning memory."""
from __future__ import annotations

import contextlib
import random

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> CUDA when present, else the CPU; "cpu", "cuda" or "cuda:N" as named."""
    name = "auto" if requested is None else str(requested)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={str(requested)!r} is not a device; choose one of {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(requested)!r} is not supported; choose one of {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(requested)!r} but no CUDA GPU is visible here; use device 'cpu' or "
                             "'auto' (--device cpu on the command line)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(requested)!r} but only {torch.cuda.device_count()} GPU(s) are visible "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


def derive_seed(seed: int, step: int = 0, *, layer: int = 0) -> int:
    """labkit's one seed rule: a run's `seed` x 1,000 + the `step` within the run (a cycle, a prune step, a ladder's
    head; 500 for cycle 0's fine-tuning) + 7,919 (a prime) per pruned `layer`, so each layer draws its own neurons."""
    return seed * 1000 + step + 7919 * layer


def set_seed(seed: int) -> None:
    """Seed Python's and torch's generators (CPU and every GPU) for a training run."""
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the block with torch's generators (the CPU's and every GPU's) seeded by `seed`, then restore the
    caller's state of each (None: no-op)."""
    if seed is None:
        yield
        return
    state = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@contextlib.contextmanager
def one_thread():
    """Run the block on one CPU thread, then restore the caller's thread count (also a decorator). For loops of small
    tensor operations (Huffman decoding, the memorization ladder), where waking the thread pool costs more than the
    operation (7x the CPU time on a shared 2-core machine); one thread also gives the same numbers everywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def peak_memory_bytes() -> int | None:
    """This process's peak resident memory in bytes (getrusage; psutil's peak working set on Windows), else None."""
    import sys

    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            return int(psutil.Process().memory_info().peak_wset)
        except (ImportError, AttributeError):
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, kilobytes on Linux


def give_back_memory() -> None:
    """Hand freed tensors' memory back to the OS now: glibc keeps freed blocks under 32 MB for reuse, so resident
    memory stays near its peak (measured after a knee probe: 0.3-1 GB more at the next peak); malloc_trim returns
    them. Elsewhere only gc.collect() runs."""
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
            pass
