"""torchrun helpers: this process's rank, the lead rank that writes files, barriers, and joining the group.

Under torchrun every rank trains; rank 0 (the lead) logs, writes files and takes decisions. labkit.train splits
each global batch over the ranks with `processes`, `shard`, `summed_over_processes` and `wrap` (below).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import sys


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialized."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_lead() -> bool:
    """True in a single process and on rank 0 of a distributed run (the one that writes files)."""
    return world()[0] == 0


def local_rank() -> int | None:
    """LOCAL_RANK as torchrun sets it, or None outside torchrun."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def device_for_rank(name: str, rank: int | None) -> str:
    """The device a rank uses when `name` is asked for: under torchrun CUDA always means cuda:LOCAL_RANK."""
    if rank is not None and name.split(":")[0] == "cuda":
        return f"cuda:{rank}"
    return name


# how long a rank waits for another (rank 0 extracting the paper profile's features takes minutes on a
# GPU and hours on a CPU); LABKIT_WAIT_MINUTES changes it
WAIT_MINUTES = float(os.environ.get("LABKIT_WAIT_MINUTES") or 240)


def barrier(waiting_for: str = "the other ranks") -> None:
    """Wait for every rank (nothing to do in a single process), saying what this rank waits for."""
    rank, size = world()
    if size > 1:
        import torch.distributed as dist

        print(f"rank {rank}: waiting for {waiting_for} (at most {WAIT_MINUTES:g} minutes, LABKIT_WAIT_MINUTES)",
              file=sys.stderr, flush=True)
        dist.barrier()


def from_lead(value):
    """Rank 0's `value` on every rank (a decision taken once, by rank 0); `value` itself in one process."""
    if world()[1] <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launched_by_torchrun() -> bool:
    """True when WORLD_SIZE says there is more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_type: str) -> None:
    """Join torchrun's process group: NCCL on GPUs (one per rank), gloo on CPUs."""
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(minutes=WAIT_MINUTES)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank() or 0)
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def leave() -> None:
    """Leave the process group if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device_type: str):
    """The block as one rank of a torchrun job when launched by torchrun (else as it is). `device_type`: "cuda" or
    "cpu", the picked device's type (device.pick_device(...).type; this module imports nothing of labkit's).

    Joins the group (NCCL on GPUs, gloo on CPUs), silences every rank's standard output but
    rank 0's (rank 0 speaks for all), says how many processes share the work, and leaves the group
    (after a barrier when the block ended normally; at once when it raised).
    """
    if not launched_by_torchrun():
        yield
        return
    join(device_type)
    stdout = sys.stdout
    if not is_lead():
        sys.stdout = io.StringIO()
    try:
        print(f"labkit: {world()[1]} processes (torchrun), DistributedDataParallel; rank 0 writes the results")
        yield
        barrier("the other ranks to finish")  # no rank leaves while another still communicates
    finally:
        sys.stdout = stdout
        leave()


# ---------------------------------------------------------------- one global batch over the ranks (labkit.train)

def processes(net) -> tuple[int, int]:
    """(this process's rank, how many share each batch): the world under DDP, else (0, 1)."""
    from torch.nn.parallel import DistributedDataParallel

    return world() if isinstance(net, DistributedDataParallel) else (0, 1)


def shard(batch, rank: int, size: int):
    """This process's part of a global batch: the images a DDP rank trains on (all of them in one process)."""
    return batch.tensor_split(size)[rank] if size > 1 else batch


def summed_over_processes(total, correct, size: int) -> tuple:
    """An epoch's summed loss and right count over every process (as they are in one process)."""
    if size == 1:
        return total, correct
    import torch
    import torch.distributed as dist

    sums = torch.stack([total, correct.double()])
    dist.all_reduce(sums)
    return sums[0], sums[1]


def wrap(net, device):
    """`net` wrapped in DistributedDataParallel under torchrun, else itself: every rank draws the same shuffled
    order, takes its own slice of each global batch and weights its loss so that the averaged gradient is the
    global batch's mean, as in one process."""
    if world()[1] == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
