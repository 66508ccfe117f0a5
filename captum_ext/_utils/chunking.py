"""Splitting work into slices: batches of examples, or chunks bounded by how many elements they gather."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List

import torch

ELEMENT_BUDGET = 1 << 22  # gathered elements per chunk: bounds the extra memory of one vectorised step
# On an accelerator each chunk costs a fixed number of kernel launches, which dwarf small ones' work: chunks there
# are bigger (256 MB of float32 per gathered tensor), so that the number of operations does not grow with the batch.
DEVICE_ELEMENT_BUDGET = 1 << 26
# Chunks of steps that choose by device on the CPU: 4 MB of float32, which stays in its caches (about 2× faster
# than 64 MB chunks on ResNet-50's kept nodes).
HOST_ELEMENT_BUDGET = 1 << 20

_host_takes_device_paths = False


def launch_bound(device: torch.device) -> bool:
    """Whether operations on ``device`` are bound by their launch cost (accelerators): code paths that choose
    between fewer, larger operations and cache-sized ones ask this (the CPU prefers the latter)."""
    return device.type != "cpu" or _host_takes_device_paths


@contextmanager
def accelerator_code_paths() -> Iterator[None]:
    """Within the block, the CPU takes the code paths chosen for accelerators, to count their operations in tests
    (they dispatch the same operations on every device).

    Returns:
        a context manager; nothing is bound by ``as``.

    Examples::

        >>> import torch
        >>> from captum_ext.testing import accelerator_code_paths
        >>> from captum_ext._utils.chunking import launch_bound
        >>> with accelerator_code_paths():
        ...     launch_bound(torch.device("cpu"))
        True
    """
    global _host_takes_device_paths
    before, _host_takes_device_paths = _host_takes_device_paths, True
    try:
        yield
    finally:
        _host_takes_device_paths = before


def chunk_budget(device: torch.device) -> int:
    """Elements gathered per vectorised step on ``device``."""
    return DEVICE_ELEMENT_BUDGET if launch_bound(device) else HOST_ELEMENT_BUDGET


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices ``[0, b), [b, 2b), …`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def budget_chunks(total: int, per_item: int, budget: int = ELEMENT_BUDGET) -> List[slice]:
    """Slices of ``range(total)`` holding at most ``budget // per_item`` items each (at least one)."""
    return list(iter_batches(total, max(1, budget // max(per_item, 1))))
