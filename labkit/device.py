"""Where computation runs and where its randomness starts: device choice, seeding, autocast.

`pick_device` is the one place a device is chosen (features, training, evaluation). `seeded` draws from a fixed seed without disturbing the caller's
random state; `set_seed` seeds Python's and torch's generators for a training run.
"""
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
    """The one rule labkit derives every seed by: a run's `seed` x 1,000, plus the `step` within the run (a cycle,
    a prune step, a head of a ladder; 500 for cycle 0's fine-tuning), plus 7,919 (a prime) per pruned `layer`,
    so each layer draws its own neurons. Seeds below 1,000 steps apart never meet within a run."""
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
    """Run the block on one CPU thread, then restore the caller's thread count (also a decorator).

    For loops of small tensor operations (Huffman decoding, the memorization ladder's 2,000 x 512 x ~150
    matrices): waking torch's thread pool for each costs more than the operation, far more on a busy machine
    (7x the CPU time measured on a shared 2-core one), and one thread gives the same numbers everywhere.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def peak_memory_bytes() -> int | None:
    """This process's peak resident memory in bytes: getrusage on Linux and macOS, the peak working set (through
    psutil, which Jupyter brings) on Windows; None where neither can be read."""
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
    """Hand the memory of freed tensors back to the operating system now. glibc (Linux) keeps freed blocks
    under 32 MB in its heaps for reuse, so after a knee probe or a Deep Compression stage a process's resident
    memory stays near its high-water mark (measured: 0.3-1 GB more at the next peak); malloc_trim returns it.
    Elsewhere (macOS, Windows, another C library) nothing is done."""
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
            pass
