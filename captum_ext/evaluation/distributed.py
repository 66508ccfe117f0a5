"""Processes of one evaluation run: torch.distributed set up from torchrun's environment, and the work each
process takes. Launching is torchrun's job; summing metrics is torchmetrics'; this module only reads who we are."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place in the run.

    Attributes:
        rank (int): this process, ``0 … world_size − 1``.
        world_size (int): number of processes.
        local_rank (int): this process on its node (its GPU index).
        device (torch.device): where the model runs.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the summary."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op in a single process)."""
        if self.world_size > 1:
            dist.barrier()


@contextmanager
def processes(device: str = "cpu") -> Iterator[Processes]:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), or run alone.

    The backend is nccl for CUDA and gloo for the CPU. A group the caller created (e.g. a Lightning or torchrun
    script) is used as it is and left alone; one this function created is ended on exit by
    :func:`end_process_group`.

    Args:
        device (str): ``"cpu"``, ``"cuda"`` (one GPU per process, ``cuda:LOCAL_RANK``) or ``"cuda:N"``.

    Returns:
        Iterator[Processes]: a context manager yielding this process's rank, world size and device.

    Raises:
        ValueError: ``device`` is not a device, or asks for CUDA on a machine without it.
    """
    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError):  # torch's words list every device type it was built with
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if wanted.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available here")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wanted.type == "cuda" and wanted.index is None:
        wanted = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if wanted.type == "cuda":
        torch.cuda.set_device(wanted)
    try:
        yield Processes(rank, world, local_rank, wanted)
    finally:
        if created:
            end_process_group()


def end_process_group() -> None:
    """Destroy the default process group; a gloo group on torch older than 2.4 only once every rank is there.

    Measured on this project's CI machine: a gloo group left alive could abort the process at exit ("terminate
    called without an active exception", torch 2.15 and 2.3), and with torch 2.3 destroying a gloo group could hang
    after the other rank had left. So on torch 2.3 the ranks first meet at a monitored barrier; a rank that does not
    come within a minute (it failed) leaves the group to end with the process.
    """
    if not dist.is_initialized():
        return
    if dist.get_backend() == "gloo" and _TORCH_VERSION < (2, 4):
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:
            return
    dist.destroy_process_group()


_TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def batches_of(n_items: int, batch_size: int) -> List[List[int]]:
    """The run's global batches: consecutive indices, the same for every number of processes, so that a batch is
    computed identically whoever computes it.

    Args:
        n_items (int): dataset length.
        batch_size (int): items per batch.

    Returns:
        list of list of int: batch ``k`` holds ``[k·b, (k+1)·b)``.
    """
    return [list(range(start, min(start + batch_size, n_items))) for start in range(0, n_items, batch_size)]


def my_batches(n_batches: int, group: Processes) -> List[int]:
    """The batches this process computes: ``k ≡ rank (mod world_size)``, disjoint and without padding (unlike
    ``DistributedSampler``, which repeats samples to even out the shards and so biases metrics).

    Args:
        n_batches (int): number of global batches.
        group (Processes): this process.

    Returns:
        list of int: batch numbers.
    """
    return list(range(group.rank, n_batches, group.world_size))
