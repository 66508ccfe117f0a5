"""A compiled CPU kernel for the heaviest step of NodeBacktrack's convolution rule (optional: with Numba, from the
``fast`` extra; without it, or on other devices, the rule's tensor operations do the same work).

For each kept node the tensor path gathers its receptive field tap by tap, multiplies it with the weights, sums per
input channel, keeps the strongest channels with ``topk`` and gathers the chosen channels' windows again to find
their strongest position: a dozen passes over ``nodes × channels`` intermediates, with memory traffic and ``topk``
(a third of the two-channel walk on ResNet-50) dominating. The kernel does all of it per node with the node's
channel sums in one small buffer: the same products, summed in the same order (first tap, then each next one), the
channels chosen with ties to the lower index (as the reference loop), the positions with ties to the first tap.
"""
from __future__ import annotations

import threading
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

#: Whether the compiled kernel is used where it applies (tests switch it off to compare with the tensor path).
ENABLED = True
# One parallel launch at a time: the kernel already uses every core it is given, and Numba's fallback threading
# layer (workqueue) aborts the process when two threads launch parallel kernels at once.
_LAUNCH = threading.Lock()


def available() -> bool:
    """Whether the compiled kernel can run here (Numba installed) and is switched on.

    Returns:
        bool: ``True`` when :func:`strongest_channels` may be called.
    """
    return ENABLED and numba is not None


#: Nodes per scratch buffer: each worker reuses one buffer of channel sums for this many nodes instead of
#: allocating one per node.
NODES_PER_TASK = 64


def _strongest_channels_kernel(rows: np.ndarray, weights: np.ndarray, top_left: np.ndarray, tap_rows: np.ndarray,
                               out_channel: np.ndarray, pixel: np.ndarray, inside: np.ndarray, masked: bool,
                               bias: np.ndarray, n: int, channels: np.ndarray, sums: np.ndarray,
                               taps: np.ndarray) -> None:  # pragma: no cover - compiled
    n_nodes, n_taps, width = top_left.shape[0], tap_rows.shape[0], rows.shape[1]
    for task in numba.prange((n_nodes + NODES_PER_TASK - 1) // NODES_PER_TASK):
        buffer = np.empty(width, np.float32)
        for p in range(task * NODES_PER_TASK, min(n_nodes, (task + 1) * NODES_PER_TASK)):
            base, o = top_left[p], out_channel[p]
            first = base + tap_rows[0]
            for c in range(width):
                buffer[c] = rows[first, c] * weights[o, 0, c]
            for t in range(1, n_taps):
                row = base + tap_rows[t]
                for c in range(width):
                    buffer[c] += rows[row, c] * weights[o, t, c]
            if bias.shape[0] > 0:
                shift = np.float32(bias[o] * np.float32(n_taps))
                for c in range(width):
                    buffer[c] += shift
            # The n strongest channels in one pass, kept sorted (strongest first; a later equal sum goes after an
            # earlier one, so ties go to the lower channel): a new entry is rare after the first channels, so
            # this reads the sums once where n argmax passes read them n times. One and two channels (the
            # default and the two-channel rules) are held in registers, a third faster than in memory.
            if n == 1:
                best, best_channel = np.float32(-np.inf), 0
                for c in range(width):
                    if buffer[c] > best:
                        best, best_channel = buffer[c], c
                sums[p, 0], channels[p, 0] = best, best_channel
            elif n == 2:
                best, second, best_channel, second_channel = np.float32(-np.inf), np.float32(-np.inf), 0, 0
                for c in range(width):
                    value = buffer[c]
                    if value > second:
                        if value > best:
                            second, second_channel, best, best_channel = best, best_channel, value, c
                        else:
                            second, second_channel = value, c
                sums[p, 0], channels[p, 0], sums[p, 1], channels[p, 1] = best, best_channel, second, second_channel
            else:
                for k in range(n):
                    sums[p, k], channels[p, k] = -np.inf, 0
                weakest = sums[p, n - 1]
                for c in range(width):
                    value = buffer[c]
                    if value > weakest:
                        j = n - 1
                        while j > 0 and value > sums[p, j - 1]:
                            sums[p, j], channels[p, j] = sums[p, j - 1], channels[p, j - 1]
                            j -= 1
                        sums[p, j], channels[p, j] = value, c
                        weakest = sums[p, n - 1]
            for k in range(n):
                chosen = channels[p, k]
                strongest, position = -np.inf, 0
                for t in range(n_taps):
                    if masked and not inside[pixel[p], t]:
                        continue
                    value = rows[base + tap_rows[t], chosen] * weights[o, t, chosen]
                    if value > strongest:
                        strongest, position = value, t
                taps[p, k] = position


_kernel = None if numba is None else numba.njit(parallel=True, nogil=True, cache=True)(_strongest_channels_kernel)


def strongest_channels(rows: Tensor, weights: Tensor, top_left: Tensor, tap_rows: Tensor, out_channel: Tensor,
                       pixel: Tensor, inside: Optional[Tensor], bias: Optional[Tensor], n: int
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    """Each node's ``n`` strongest input channels, their summed contributions and the strongest tap of each.

    Args:
        rows (Tensor): the padded input as a channels-last matrix, one row per (image, position, group), float32.
        weights (Tensor): ``Co×T×Cg`` weights, float32.
        top_left (Tensor): each node's window corner row in ``rows`` (``P``, int64).
        tap_rows (Tensor): the taps' row offsets from the corner (``T``, int64).
        out_channel (Tensor): each node's output channel (``P``, int64).
        pixel (Tensor): each node's output position (``P``, int64), the row of ``inside``.
        inside (Tensor, optional): ``positions×T`` bool, whether a tap lies inside the input (``None``: all do).
        bias (Tensor, optional): per output channel, added ``T`` times to every channel's sum.
        n (int): channels per node (at most ``Cg``).

    Returns:
        tuple: ``(channels, sums, taps)``, each ``P×n``: the channel within the group (int64), its summed
        contribution (float32) and the tap of its largest product (int64), strongest channel first.
    """
    count = len(top_left)
    channels = torch.empty(count, n, dtype=torch.int64)
    sums = torch.empty(count, n, dtype=torch.float32)
    taps = torch.empty(count, n, dtype=torch.int64)
    if count:
        empty_mask = np.ones((1, 1), np.bool_)
        with _LAUNCH:
            numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
            _kernel(
                rows.numpy(), weights.numpy(), top_left.numpy(), tap_rows.numpy(), out_channel.numpy(), pixel.numpy(),
                empty_mask if inside is None else inside.numpy(), inside is not None,
                np.empty(0, np.float32) if bias is None else bias.numpy(), n, channels.numpy(), sums.numpy(),
                taps.numpy())
    return channels, sums, taps
