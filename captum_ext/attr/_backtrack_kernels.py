"""A compiled CPU kernel for the heaviest step of NodeBacktrack's convolution rule (optional: with Numba, from the
``fast`` extra; without it, or on other devices, the rule's tensor operations do the same work).

For each kept node the tensor path gathers its receptive field tap by tap, multiplies it with the weights, sums per
input channel, keeps the strongest channels with ``topk`` and gathers the chosen channels' windows again to find
their strongest position: a dozen passes over ``nodes × channels`` intermediates, with memory traffic and ``topk``
(a third of the two-channel walk on ResNet-50) dominating. The kernel does all of it per node with the node's
channel sums in one small buffer: the same products, summed in the same order (first tap, then each next one), the
channels chosen with ties to the lower index (as the reference loop), the positions with ties to the first tap.
:func:`conv_entries` does it for all of a layer's kept nodes in one launch and writes the input's entries directly.

Choosing the strongest channels is the kernel's own cost (a 1×1 layer's products take a fraction of it): a chain of
float comparisons runs one channel per cycle at best and mispredicts on each new leader. A positive float32's bits,
read as an int32, order as the float does, so the choice is made with integer maxima and minima, which compile to
vector instructions: ResNet-50's two-channel walk spends about a third less time in the kernel.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_ext.attr._backtrack_core import WindowTable

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
#: Up to this many channels per group (an image's colour channels, depthwise layers) each channel's sum over the taps
#: is kept in a register: added in memory tap by tap, each addition would wait for the previous one's store.
FEW_CHANNELS = 4
#: From this many taps on (7×7 windows and larger) a chosen channel's strongest tap is found with the integer
#: reading of its products; a 3×3 window's nine are cheaper to scan.
MANY_TAPS = 16
_INT32_MIN = np.int32(-2**31)
_INFINITY_BITS = np.int32(0x7F800000)


def _strongest_by_bits(buffer: np.ndarray, bits: np.ndarray, iota: np.ndarray, n: int, p: int, sums: np.ndarray,
                       channels: np.ndarray, largest_first: np.int32) -> bool:  # pragma: no cover - compiled
    # Each channel is the largest bits among those not yet chosen (``largest``: the first one's, when the sums'
    # loop found them, else _INT32_MIN), then the first channel holding exactly those bits (ties to the lower
    # channel). Where a chosen sum is not positive (zero, whose sign bit would break the order, negative or NaN)
    # this returns False and the ordered scan decides.
    width = np.int32(bits.shape[0])
    chosen = np.int32(-1)
    for k in range(n):
        if k == 0 and largest_first != _INT32_MIN:
            largest = largest_first
        else:
            largest = _INT32_MIN
            for c in range(bits.shape[0]):
                largest = max(largest, bits[c] if iota[c] != chosen else _INT32_MIN)
        if largest <= 0 or largest > _INFINITY_BITS:
            return False
        first = width
        for c in range(bits.shape[0]):
            first = min(first, iota[c] if bits[c] == largest and iota[c] != chosen else width)
        chosen = first
        channels[p, k], sums[p, k] = first, buffer[first]
    return True


def _strongest_in_order(buffer: np.ndarray, n: int, p: int, sums: np.ndarray,
                        channels: np.ndarray) -> None:  # pragma: no cover - compiled
    # The n strongest channels in one pass, kept sorted (strongest first; a later equal sum goes after an earlier
    # one, so ties go to the lower channel).
    for k in range(n):
        sums[p, k], channels[p, k] = -np.inf, 0
    weakest = sums[p, n - 1]
    for c in range(buffer.shape[0]):
        value = buffer[c]
        if value > weakest:
            j = n - 1
            while j > 0 and value > sums[p, j - 1]:
                sums[p, j], channels[p, j] = sums[p, j - 1], channels[p, j - 1]
                j -= 1
            sums[p, j], channels[p, j] = value, c
            weakest = sums[p, n - 1]


def _few_channel_sums(rows: np.ndarray, weights: np.ndarray, base: int, tap_rows: np.ndarray, o: int,
                      buffer: np.ndarray) -> None:  # pragma: no cover - compiled
    # Up to FEW_CHANNELS sums in registers, in the same order as the general path (first tap, then each next one).
    width, zero = buffer.shape[0], np.float32(0)
    row = base + tap_rows[0]
    s0 = rows[row, 0] * weights[o, 0, 0]
    s1 = rows[row, 1] * weights[o, 0, 1] if width > 1 else zero
    s2 = rows[row, 2] * weights[o, 0, 2] if width > 2 else zero
    s3 = rows[row, 3] * weights[o, 0, 3] if width > 3 else zero
    for t in range(1, tap_rows.shape[0]):
        row = base + tap_rows[t]
        s0 += rows[row, 0] * weights[o, t, 0]
        if width > 1:
            s1 += rows[row, 1] * weights[o, t, 1]
        if width > 2:
            s2 += rows[row, 2] * weights[o, t, 2]
        if width > 3:
            s3 += rows[row, 3] * weights[o, t, 3]
    buffer[0] = s0
    if width > 1:
        buffer[1] = s1
    if width > 2:
        buffer[2] = s2
    if width > 3:
        buffer[3] = s3


def _strongest_tap(products: np.ndarray, bits: np.ndarray, iota: np.ndarray) -> int:  # pragma: no cover - compiled
    # The first tap of the largest product, by the same integer reading of positive floats as the channels
    # (taps outside the input hold -inf); otherwise the ordered scan.
    largest = _INT32_MIN
    for t in range(bits.shape[0]):
        largest = max(largest, bits[t])
    if 0 < largest <= _INFINITY_BITS:
        count = np.int32(bits.shape[0])
        first = count
        for t in range(bits.shape[0]):
            first = min(first, iota[t] if bits[t] == largest else count)
        return first
    strongest, position = -np.inf, 0
    for t in range(products.shape[0]):
        if products[t] > strongest:
            strongest, position = products[t], t
    return position


def _choose(rows: np.ndarray, weights: np.ndarray, base: int, tap_rows: np.ndarray, o: int, pixel: int,
            inside: np.ndarray, masked: bool, bias: np.ndarray, n: int, q: int, buffer: np.ndarray,
            iota: np.ndarray, products: np.ndarray, tap_iota: np.ndarray, channels: np.ndarray, sums: np.ndarray,
            taps: np.ndarray) -> None:  # pragma: no cover - compiled
    # One node (window corner row ``base``, output channel ``o``, output position ``pixel``): its channel sums in
    # ``buffer``, its n strongest channels, their sums and strongest taps in row ``q`` of the outputs.
    n_taps, width = tap_rows.shape[0], buffer.shape[0]
    bits, product_bits = buffer.view(np.int32), products.view(np.int32)
    first = base + tap_rows[0]
    largest = _INT32_MIN
    if width <= FEW_CHANNELS:
        _few_channel_sums_compiled(rows, weights, base, tap_rows, o, buffer)
    elif n_taps == 1 and bias.shape[0] == 0:  # one pass: the products and their largest bits
        for c in range(width):
            buffer[c] = rows[first, c] * weights[o, 0, c]
            largest = max(largest, bits[c])
    else:
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
    if n > 2 or not _strongest_by_bits_compiled(buffer, bits, iota, n, q, sums, channels, largest):
        _strongest_in_order_compiled(buffer, n, q, sums, channels)
    for k in range(n):
        chosen = channels[q, k]
        if n_taps >= MANY_TAPS:
            for t in range(n_taps):
                products[t] = rows[base + tap_rows[t], chosen] * weights[o, t, chosen] \
                    if not masked or inside[pixel, t] else -np.inf
            taps[q, k] = _strongest_tap_compiled(products, product_bits, tap_iota)
            continue
        strongest, position = -np.inf, 0
        for t in range(n_taps):
            if masked and not inside[pixel, t]:
                continue
            value = rows[base + tap_rows[t], chosen] * weights[o, t, chosen]
            if value > strongest:
                strongest, position = value, t
        taps[q, k] = position


def _strongest_channels_kernel(rows: np.ndarray, weights: np.ndarray, top_left: np.ndarray, tap_rows: np.ndarray,
                               out_channel: np.ndarray, pixel: np.ndarray, inside: np.ndarray, masked: bool,
                               bias: np.ndarray, n: int, channels: np.ndarray, sums: np.ndarray,
                               taps: np.ndarray) -> None:  # pragma: no cover - compiled
    n_nodes, n_taps, width = top_left.shape[0], tap_rows.shape[0], rows.shape[1]
    for task in numba.prange((n_nodes + NODES_PER_TASK - 1) // NODES_PER_TASK):
        buffer, products = np.empty(width, np.float32), np.empty(n_taps, np.float32)
        iota, tap_iota = np.arange(width).astype(np.int32), np.arange(n_taps).astype(np.int32)
        for p in range(task * NODES_PER_TASK, min(n_nodes, (task + 1) * NODES_PER_TASK)):
            _choose_compiled(rows, weights, top_left[p], tap_rows, out_channel[p], pixel[p], inside, masked, bias, n,
                             p, buffer, iota, products, tap_iota, channels, sums, taps)


def _position_major_order(batch: np.ndarray, flat: np.ndarray,
                          out_area: int) -> np.ndarray:  # pragma: no cover - compiled
    # The nodes ordered by (image, output position), stably (channels stay in their order): a counting sort.
    starts = np.zeros((batch.max() + 1) * out_area + 1, np.int64)
    for p in range(batch.shape[0]):
        starts[batch[p] * out_area + flat[p] % out_area + 1] += 1
    for key in range(1, starts.shape[0]):
        starts[key] += starts[key - 1]
    order = np.empty(batch.shape[0], np.int64)
    for p in range(batch.shape[0]):
        key = batch[p] * out_area + flat[p] % out_area
        order[starts[key]] = p
        starts[key] += 1
    return order


def _conv_entries_kernel(rows: np.ndarray, weights: np.ndarray, batch: np.ndarray, flat: np.ndarray,
                         count: np.ndarray, origin: np.ndarray, padded_area: int, groups: int, out_area: int,
                         tap_rows: np.ndarray, source: np.ndarray, inside: np.ndarray, masked: bool,
                         reaches: np.ndarray, can_miss: bool, bias: np.ndarray, n: int, positive_only: bool,
                         in_area: int, out_batch: np.ndarray, out_flat: np.ndarray,
                         out_count: np.ndarray) -> None:  # pragma: no cover - compiled
    n_nodes, n_taps, width = batch.shape[0], tap_rows.shape[0], rows.shape[1]
    out_per_group = weights.shape[0] // groups
    # Nodes are visited position by position, and their entries written in that order: neighbouring windows share
    # input rows, and the channels kept at one position share a window, so a row is read while it is still cached
    # (kept nodes come channel by channel, and at 224² a layer's input far exceeds the caches). Writing each
    # node's entries back in its own place would scatter the writes instead.
    order = _position_major_order_compiled(batch, flat, out_area)
    for task in numba.prange((n_nodes + NODES_PER_TASK - 1) // NODES_PER_TASK):
        buffer, products = np.empty(width, np.float32), np.empty(n_taps, np.float32)
        iota, tap_iota = np.arange(width).astype(np.int32), np.arange(n_taps).astype(np.int32)
        channels, taps = np.empty((NODES_PER_TASK, n), np.int64), np.empty((NODES_PER_TASK, n), np.int64)
        sums = np.empty((NODES_PER_TASK, n), np.float32)
        start = task * NODES_PER_TASK
        for visit in range(start, min(n_nodes, start + NODES_PER_TASK)):
            p = order[visit]
            q, b = visit - start, batch[p]
            o = flat[p] // out_area
            pixel = flat[p] - o * out_area
            group = o // out_per_group
            base = (b * padded_area + origin[pixel]) * groups + group
            _choose_compiled(rows, weights, base, tap_rows, o, pixel, inside, masked, bias, n, q, buffer, iota,
                             products, tap_iota, channels, sums, taps)
            reached = not can_miss or reaches[pixel]
            for k in range(n):
                entry = visit * n + k
                alive = reached and (not positive_only or sums[q, k] > 0)
                out_batch[entry] = b
                out_flat[entry] = (group * width + channels[q, k]) * in_area + source[pixel, taps[q, k]]
                out_count[entry] = count[p] * (1.0 if alive else 0.0)


if numba is not None:
    _strongest_by_bits_compiled = numba.njit(nogil=True, cache=True)(_strongest_by_bits)
    _strongest_in_order_compiled = numba.njit(nogil=True, cache=True)(_strongest_in_order)
    _strongest_tap_compiled = numba.njit(nogil=True, cache=True)(_strongest_tap)
    _few_channel_sums_compiled = numba.njit(nogil=True, cache=True)(_few_channel_sums)
    _choose_compiled = numba.njit(nogil=True, cache=True, inline="always")(_choose)
    _position_major_order_compiled = numba.njit(nogil=True, cache=True)(_position_major_order)
_kernel = None if numba is None else numba.njit(parallel=True, nogil=True, cache=True)(_strongest_channels_kernel)
_entries_kernel = None if numba is None else numba.njit(parallel=True, nogil=True, cache=True)(_conv_entries_kernel)


@contextmanager
def launching() -> Iterator[None]:
    """Within the block, compiled kernels may be launched: the one-launch-at-a-time lock is held and Numba uses as
    many threads as torch.

    Yields:
        None
    """
    with _LAUNCH:
        threads = torch.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            # Numba's OpenMP layer starts its pool on the first launch and sets the OpenMP thread count that torch
            # shares to all cores: later convolutions then round differently (a run's second batch differed from
            # the same batch run first). The caller's count is put back.
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


def _launch(kernel: "numba.core.registry.CPUDispatcher", *args: Any) -> None:
    with launching():
        kernel(*args)


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
        _launch(_kernel, rows.numpy(), weights.numpy(), top_left.numpy(), tap_rows.numpy(), out_channel.numpy(),
                pixel.numpy(), _mask(inside), inside is not None, _bias(bias), n, channels.numpy(), sums.numpy(),
                taps.numpy())
    return channels, sums, taps


def _mask(inside: Optional[Tensor]) -> np.ndarray:
    return np.ones((1, 1), np.bool_) if inside is None else inside.numpy()


def _bias(bias: Optional[Tensor]) -> np.ndarray:
    return np.empty(0, np.float32) if bias is None else bias.numpy()


def conv_entries(rows: Tensor, weights: Tensor, batch: Tensor, flat: Tensor, count: Tensor, table: WindowTable,
                 tap_rows: Tensor, groups: int, in_area: int, bias: Optional[Tensor], n: int, positive_only: bool
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """A convolution's kept nodes walked back to its input in one launch: for each node, its ``n`` strongest input
    channels (:func:`strongest_channels`) and in each the strongest tap, as entries of the input's selection.

    Args:
        rows (Tensor): the padded input as a channels-last matrix, one row per (image, position, group), float32.
        weights (Tensor): ``Co×T×Cg`` weights, float32.
        batch (Tensor): each kept node's example (``P``, int64).
        flat (Tensor): each kept node's index in the flattened ``Co×Ho×Wo`` output (``P``, int64).
        count (Tensor): each kept node's path count (``P``).
        table (WindowTable): the convolution's window geometry on this input size.
        tap_rows (Tensor): the taps' row offsets from the window's corner row in ``rows`` (``T``, int64).
        groups (int): the convolution's groups.
        in_area (int): the unpadded input's ``H·W``.
        bias (Tensor, optional): per output channel, added ``T`` times to every channel's sum.
        n (int): channels per node (at most ``Cg``).
        positive_only (bool): an entry whose channel sum is not positive is dead (count 0).

    Returns:
        tuple: ``(batch, flat, count)`` of the ``P·n`` entries, node by node in the order of their example and
        output position (nodes at one position in their given order), strongest channel first: the example, the index
        in the flattened ``C×H×W`` input and the count (0 where the path ends: a non-positive sum with
        ``positive_only``, a window wholly in the padding).
    """
    entries = len(batch) * n
    out_batch, out_flat = torch.empty(entries, dtype=torch.int64), torch.empty(entries, dtype=torch.int64)
    out_count = torch.empty(entries, dtype=count.dtype)
    if entries:
        out_area = table.origin.numel()
        _launch(_entries_kernel, rows.numpy(), weights.numpy(), batch.numpy(), flat.numpy(), count.numpy(),
                table.origin.numpy(), table.padded_area, groups, out_area, tap_rows.numpy(), table.source.numpy(),
                _mask(table.inside if table.leaves_input else None), table.leaves_input, table.reaches.numpy(),
                table.can_miss, _bias(bias), n, positive_only, in_area, out_batch.numpy(), out_flat.numpy(),
                out_count.numpy())
    return out_batch, out_flat, out_count

