"""Splitting work into slices: batches of examples, or chunks bounded by how many elements they gather."""
from __future__ import annotations

from typing import Iterator, List

import torch

ELEMENT_BUDGET = 1 << 22  # gathered elements per chunk: bounds the extra memory of one vectorised step
# A GPU takes bigger chunks: each chunk costs a fixed number of kernel launches, and the device has the memory.
DEVICE_ELEMENT_BUDGET = 1 << 26


def chunk_budget(device: torch.device) -> int:
    """Elements gathered per vectorised step on ``device``."""
    return ELEMENT_BUDGET if device.type == "cpu" else DEVICE_ELEMENT_BUDGET


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices ``[0, b), [b, 2b), …`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def budget_chunks(total: int, per_item: int, budget: int = ELEMENT_BUDGET) -> List[slice]:
    """Slices of ``range(total)`` holding at most ``budget // per_item`` items each (at least one)."""
    return list(iter_batches(total, max(1, budget // max(per_item, 1))))
