"""Compiled CPU kernels for NodeBacktrack's index work between convolutions (optional, as
:mod:`captum_ext.attr._backtrack_kernels`): windowed pooling's kept nodes, and the de-duplication of a value's kept
nodes. Each gives what the tensor operations give, in one launch over the nodes instead of a dozen passes over
index tensors.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_ext.attr._backtrack_kernels import NODES_PER_TASK, _launch, launching, numba

#: Flag bytes per block of the de-duplication's parallel scan (a multiple of 8: blocks are counted in 8-byte words).
FLAG_BLOCK = 1 << 16
_BYTE_ONES = np.uint64(0x0101010101010101)


def _window_argmax_kernel(activations: np.ndarray, batch: np.ndarray, flat: np.ndarray, out_size: np.ndarray,
                          kernel: np.ndarray, stride: np.ndarray, padding: np.ndarray, dilation: np.ndarray,
                          out_flat: np.ndarray) -> None:  # pragma: no cover - compiled
    _, _, height, width = activations.shape
    h_out, w_out = out_size[0], out_size[1]
    for task in numba.prange((batch.shape[0] + NODES_PER_TASK - 1) // NODES_PER_TASK):
        for p in range(task * NODES_PER_TASK, min(batch.shape[0], (task + 1) * NODES_PER_TASK)):
            b, c = batch[p], flat[p] // (h_out * w_out)
            y, x = (flat[p] // w_out) % h_out, flat[p] % w_out
            top, left = y * stride[0] - padding[0], x * stride[1] - padding[1]
            # As argmax over the window with positions outside at -inf: the first largest, a NaN first of all,
            # the window's first position when nothing inside beats -inf.
            best, chosen = -np.inf, top * width + left
            for ky in range(kernel[0]):
                iy = top + ky * dilation[0]
                if iy < 0 or iy >= height:
                    continue
                for kx in range(kernel[1]):
                    ix = left + kx * dilation[1]
                    if ix < 0 or ix >= width:
                        continue
                    value = activations[b, c, iy, ix]
                    if value > best or (value != value and best == best):
                        best, chosen = value, iy * width + ix
            out_flat[p] = c * height * width + chosen


def _flag_kernel(batch: np.ndarray, flat: np.ndarray, count: np.ndarray, numel: int,
                 flags: np.ndarray) -> None:  # pragma: no cover - compiled
    # Concurrent writes of the same byte value: whichever lands, the flag is set.
    for p in numba.prange(batch.shape[0]):
        if count[p] > 0:
            flags[batch[p] * numel + flat[p]] = 1


def _count_flags_kernel(words: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - compiled
    per_block = FLAG_BLOCK // 8
    for block in numba.prange(counts.shape[0]):
        total = np.uint64(0)
        for w in range(block * per_block, min(words.shape[0], (block + 1) * per_block)):
            total += (words[w] * _BYTE_ONES) >> np.uint64(56)  # the sum of the word's bytes (each 0 or 1)
        counts[block] = total


def _list_flags_kernel(flags: np.ndarray, words: np.ndarray, starts: np.ndarray, numel: int,
                       out_batch: np.ndarray, out_flat: np.ndarray, nodes: np.ndarray) -> None:  # pragma: no cover
    # Each block writes its flagged slots from its start on and clears the flags for the next use. Most words of
    # eight flags are zero and skipped whole; the example index advances with the slots (no division per node).
    for block in numba.prange(starts.shape[0] - 1):
        position, end = starts[block], starts[block + 1]
        first, last = block * FLAG_BLOCK, min(flags.shape[0], (block + 1) * FLAG_BLOCK)
        example = first // numel
        boundary = (example + 1) * numel
        slot = first
        while slot < last and position < end:
            if slot + 8 <= last and slot % 8 == 0 and words[slot // 8] == 0:
                slot += 8
                continue
            if flags[slot]:
                while slot >= boundary:
                    example += 1
                    boundary += numel
                nodes[position] = slot
                out_batch[position], out_flat[position] = example, slot - (boundary - numel)
                flags[slot] = 0
                position += 1
            slot += 1


def _sum_counts_kernel(batch: np.ndarray, flat: np.ndarray, count: np.ndarray, numel: int,
                       slots: np.ndarray) -> None:  # pragma: no cover - compiled
    for p in range(batch.shape[0]):  # one thread: several entries may add to one slot
        if count[p] > 0:
            slots[batch[p] * numel + flat[p]] += count[p]


def _clear_slots_kernel(nodes: np.ndarray, slots: np.ndarray) -> None:  # pragma: no cover - compiled
    for j in numba.prange(nodes.shape[0]):
        slots[nodes[j]] = 0


def _read_slots_kernel(nodes: np.ndarray, slots: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    for j in numba.prange(nodes.shape[0]):
        out[j] = slots[nodes[j]]


if numba is not None:
    _parallel = numba.njit(parallel=True, nogil=True, cache=True)
    _pool_kernel = _parallel(_window_argmax_kernel)
    _flag, _count_flags, _list_flags = _parallel(_flag_kernel), _parallel(_count_flags_kernel), \
        _parallel(_list_flags_kernel)
    _clear_slots, _read_slots = _parallel(_clear_slots_kernel), _parallel(_read_slots_kernel)
    _sum_counts = numba.njit(nogil=True, cache=True)(_sum_counts_kernel)


def window_argmax(activations: Tensor, batch: Tensor, flat: Tensor, out_size: Tuple[int, int],
                  kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                  dilation: Tuple[int, int]) -> Tensor:
    """For kept output nodes of a windowed pooling, the input element each backtracks to: the largest input in its
    window (never the padding or past the edge; ties to the first), as in the pooling rule's tensor operations.

    Args:
        activations (Tensor): the pooling's ``N×C×H×W`` input (float32 or float64, any strides).
        batch (Tensor): each kept node's example (``P``, int64).
        flat (Tensor): each kept node's index in the flattened ``C×Ho×Wo`` output (``P``, int64).
        out_size (tuple): ``(Ho, Wo)``.
        kernel, stride, padding, dilation (tuple): the pooling window's geometry, as pairs.

    Returns:
        Tensor: each node's index in the flattened ``C×H×W`` input (``P``, int64).
    """
    out_flat = torch.empty(len(batch), dtype=torch.int64)
    if len(batch):
        pairs = [np.asarray(v, np.int64) for v in (out_size, kernel, stride, padding, dilation)]
        _launch(_pool_kernel, activations.numpy(), batch.numpy(), flat.numpy(), *pairs, out_flat.numpy())
    return out_flat


def live_nodes(parts: Sequence[Tuple[Tensor, Tensor, Tensor]], numel: int, flags: Tensor, slots: Tensor,
               collapse: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The distinct live nodes of a value's selections, in order, with their counts summed (or 1 with
    ``collapse``): the de-duplication's dense way in one pass over the entries and one over the flags.

    Args:
        parts (sequence of tuple): each selection's ``(batch, flat, count)`` (``count`` float64; 0 marks a dead
            entry).
        numel (int): the value's element count per example.
        flags (Tensor): one bool per node of the value over the batch, all false (left all false).
        slots (Tensor): one float64 per node of the value over the batch, any content.
        collapse (bool): count each live node once.

    Returns:
        tuple: ``(batch, flat, count)`` of the live nodes, ordered by example and index.
    """
    flag_bytes = flags.numpy().view(np.uint8)
    with launching():
        for batch, flat, count in parts:
            _flag(batch.numpy(), flat.numpy(), count.numpy(), numel, flag_bytes)
        padded = flag_bytes[:len(flag_bytes) - len(flag_bytes) % 8]
        blocks = (len(flag_bytes) + FLAG_BLOCK - 1) // FLAG_BLOCK
        per_block = np.zeros(blocks, np.int64)
        _count_flags(padded.view(np.uint64), per_block)
        for slot in range(len(padded), len(flag_bytes)):  # the bytes past the last whole word
            per_block[-1] += flag_bytes[slot]
        starts = np.zeros(blocks + 1, np.int64)
        np.cumsum(per_block, out=starts[1:])
        found = int(starts[-1])
        out_batch, out_flat = torch.empty(found, dtype=torch.int64), torch.empty(found, dtype=torch.int64)
        nodes = np.empty(found, np.int64)
        _list_flags(flag_bytes, padded.view(np.uint64), starts, numel, out_batch.numpy(), out_flat.numpy(), nodes)
        if collapse:
            return out_batch, out_flat, torch.ones(found, dtype=torch.float64)
        counts, slot_values = torch.empty(found, dtype=torch.float64), slots.numpy()
        _clear_slots(nodes, slot_values)
        for batch, flat, count in parts:
            _sum_counts(batch.numpy(), flat.numpy(), count.numpy(), numel, slot_values)
        _read_slots(nodes, slot_values, counts.numpy())
    return out_batch, out_flat, counts
