"""labkit: the helper package of the VGG16 deep-compression and capacity lab.

Modules: see README.md ("The package"); each module's docstring names the one thing it owns.
"""
import os as _os

__version__ = "0.1.0"

# Tensors of 2 MB and more on transparent huge pages (torch's own switch; read at allocation, so it holds
# even where torch was imported first). A training step frees and allocates about 100 MB of gradients and
# activations; on 4 kB pages each new tensor first pays tens of thousands of page faults. Measured on the quick
# profile (2 CPU cores): a cycle's training 15-25% faster. Set THP_MEM_ALLOC_ENABLE=0 to switch it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _one_malloc_arena() -> None:
    """On Linux (glibc), every thread that allocates gets a malloc arena of its own, and memory freed in the
    arenas of torch's worker threads stays with the process: measured at ci, notebook 03's comparison cell left
    1.40 GiB resident with no tensor alive (0.73 GiB with one arena), and every later peak sat that much higher.
    One arena: for the processes started from this one (the lab's kernels, which read MALLOC_ARENA_MAX when
    they start), and in this one for the threads that start after this import (torch's start at its first
    parallel operation; a Jupyter kernel's own threads already have theirs). Set MALLOC_ARENA_MAX to choose
    otherwise; elsewhere (macOS, Windows, musl) nothing is done."""
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in _os.environ:
        return
    _os.environ["MALLOC_ARENA_MAX"] = "1"
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


_one_malloc_arena()
