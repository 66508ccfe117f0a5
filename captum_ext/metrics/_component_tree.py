"""Every threshold's connected components in one pass over a map: its component tree (max-tree), compiled.

MaxBoxAccV2 needs, for each of ``T`` map thresholds τ, the tight boxes of all 8-connected components of
``{map >= τ}``. These regions are nested (each inside the one of a lower threshold), so their components form a
tree: quantise the map to the number of thresholds each pixel reaches, then flood it from the highest level down,
merging components as the flood reaches lower levels. Each tree node is one component that stays the same over a
range of thresholds; its box is the union of its pixels' and its children's. One pass gives every threshold's
components, instead of labelling ``T`` planes one by one.

The loops are compiled with Numba (the ``fast`` extra: ``pip install "captum_ext[fast]"``). Without Numba the
metrics label plane by plane with SciPy, with identical values (tests compare the two).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor


try:  # an optional compiled path; the plane-by-plane labelling is the fallback
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None


def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """Compile with Numba (cached on disk, releasing the GIL) where it is installed; else leave as Python."""
    if numba is None:  # pragma: no cover - depends on the environment
        return function
    return numba.njit(cache=True, nogil=True)(function)


@_compiled
def _quantise(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """For each value, how many of the ascending ``thresholds`` are ``<= value`` (``np.searchsorted(...,
    side="right")``), guessed from the sweep's spacing and corrected by comparisons, so exact for any sweep."""
    count = thresholds.shape[0]
    first = thresholds[0]
    span = thresholds[count - 1] - first
    scale = (count - 1) / span if span > 0 else 0.0
    levels = np.empty(values.shape[0], np.int32)
    for i in range(values.shape[0]):
        value = values[i]
        guess = 0
        if value >= first:
            guess = min(max(int((value - first) * scale) + 1, 0), count)
        while guess < count and thresholds[guess] <= value:
            guess += 1
        while guess > 0 and thresholds[guess - 1] > value:
            guess -= 1
        levels[i] = guess
    return levels


@_compiled
def _joint_histogram(
    values: np.ndarray, inside: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """``(T+1)×2`` int64 counts of the pixels by (how many thresholds they reach, whether they are inside)."""
    levels = _quantise(values, thresholds)
    counts = np.zeros((thresholds.shape[0] + 1, 2), np.int64)
    for i in range(values.shape[0]):
        counts[levels[i], 1 if inside[i] else 0] += 1
    return counts


@_compiled
def _largest_component_boxes(keep: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``N×4`` int64 tight boxes of each plane's largest 8-connected component of ``keep`` (``N×H×W`` bool; ties:
    the component met first in row-major order; ``-1`` rows for an empty plane)."""
    planes, height, width = keep.shape
    boxes = np.full((planes, 4), -1, np.int64)
    seen = np.zeros((height, width), np.bool_)
    queue = np.empty(height * width, np.int64)
    for n in range(planes):
        seen[:, :] = False
        best = 0
        for start in range(height * width):
            y0, x0 = start // width, start % width
            if not keep[n, y0, x0] or seen[y0, x0]:
                continue
            seen[y0, x0] = True
            queue[0] = start
            head, tail = 0, 1
            x1, y1, x2, y2 = x0, y0, x0 + 1, y0 + 1
            while head < tail:
                p = queue[head]
                head += 1
                y, x = p // width, p % width
                x1, y1, x2, y2 = min(x1, x), min(y1, y), max(x2, x + 1), max(y2, y + 1)
                for yy in range(max(y - 1, 0), min(y + 2, height)):
                    for xx in range(max(x - 1, 0), min(x + 2, width)):
                        if keep[n, yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            queue[tail] = yy * width + xx
                            tail += 1
            if tail > best:
                best = tail
                boxes[n, 0], boxes[n, 1], boxes[n, 2], boxes[n, 3] = x1, y1, x2, y2
    return boxes


@_compiled
def _push_box(stack: np.ndarray, at: int, level: int, width: int, height: int) -> None:  # pragma: no cover - compiled
    """Start an empty component at ``level`` in row ``at`` of the ``depth×5`` component stack."""
    stack[at, 0] = level
    stack[at, 1] = width
    stack[at, 2] = height
    stack[at, 3] = 0
    stack[at, 4] = 0


@_compiled
def _emit(
    stack: np.ndarray, at: int, until: int, top: int, boxes: np.ndarray, low: np.ndarray, high: np.ndarray, node: int
) -> int:  # pragma: no cover - compiled
    """Record the component in stack row ``at``, unchanged from its flooding level up to ``until``, as node ``node``
    (in thresholds: ``low = top - until``, ``high = top - level``); returns the next node index."""
    boxes[node, 0] = stack[at, 1]
    boxes[node, 1] = stack[at, 2]
    boxes[node, 2] = stack[at, 3]
    boxes[node, 3] = stack[at, 4]
    low[node] = top - until
    high[node] = top - stack[at, 0]
    return node + 1


@_compiled
def _tree_nodes(
    levels: np.ndarray, height: int, width: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The component tree of a quantised map: each node's box and the thresholds over which it is a component.

    Flooding with a stack of open components and one stack of boundary pixels per level (Nistér & Stewénius,
    *Linear time maximally stable extremal regions*, ECCV 2008), on ``depth = top - levels`` so that the highest
    pixels flood first. The flood moves from a pixel to its neighbours, so memory is read mostly in order.

    Args:
        levels: ``H·W`` int32, row-major; a pixel lies in the region of threshold ``k`` iff ``levels > k``.
        height, width: the map's size.

    Returns:
        ``(boxes, low, high)``: ``K×4`` float64 boxes ``(x1, y1, x2, y2)`` with exclusive right / bottom edges, and
        ``K`` int32 ``low`` / ``high``: node ``i`` is a component of the regions of thresholds
        ``low[i] .. high[i] - 1``.
    """
    size = height * width
    top = 0
    for p in range(size):
        top = max(top, levels[p])
    reached = np.zeros(size, np.bool_)
    next_edge = np.zeros(size, np.int8)  # where to resume a pixel's neighbours when it is popped again
    below = np.empty(size, np.int32)  # the boundary stacks, linked through the pixels
    head = np.full(top + 1, -1, np.int32)
    stack = np.empty((top + 3, 5), np.int64)  # per open component: depth, x1, y1, x2, y2
    capacity = 2 * size + top + 2  # each node is recorded when its component is merged or goes down a level
    boxes = np.empty((capacity, 4), np.float64)
    low = np.empty(capacity, np.int32)
    high = np.empty(capacity, np.int32)
    rows = np.array([-1, -1, -1, 0, 0, 1, 1, 1], np.int64)
    cols = np.array([-1, 0, 1, -1, 1, -1, 0, 1], np.int64)
    _push_box(stack, 0, top + 1, width, height)  # a sentinel deeper than every pixel
    _push_box(stack, 1, top - levels[0], width, height)
    open_components, nodes, current, depth = 1, 0, 0, top - levels[0]
    reached[0] = True
    while True:
        y = current // width
        x = current - y * width
        interior = 0 < y < height - 1 and 0 < x < width - 1
        went_up = False
        while next_edge[current] < 8:
            j = next_edge[current]
            next_edge[current] += 1
            if not interior and not (0 <= y + rows[j] < height and 0 <= x + cols[j] < width):
                continue
            q = current + rows[j] * width + cols[j]
            if reached[q]:
                continue
            reached[q] = True
            if top - levels[q] >= depth:
                below[q] = head[top - levels[q]]
                head[top - levels[q]] = q
                continue
            # A higher neighbour: park this pixel, flood from the neighbour in a new component.
            below[current] = head[depth]
            head[depth] = current
            current, depth = q, top - levels[q]
            open_components += 1
            _push_box(stack, open_components, depth, width, height)
            went_up = True
            break
        if went_up:
            continue
        stack[open_components, 1] = min(stack[open_components, 1], x)
        stack[open_components, 2] = min(stack[open_components, 2], y)
        stack[open_components, 3] = max(stack[open_components, 3], x + 1)
        stack[open_components, 4] = max(stack[open_components, 4], y + 1)
        following = depth
        while following <= top and head[following] == -1:
            following += 1
        if following != depth:
            # The flood goes down to `following`: close the components above it, merging each into the next.
            while True:
                parent_depth = stack[open_components - 1, 0]
                if following < parent_depth:
                    nodes = _emit(stack, open_components, following, top, boxes, low, high, nodes)
                    stack[open_components, 0] = following
                    break
                nodes = _emit(stack, open_components, parent_depth, top, boxes, low, high, nodes)
                for c in (1, 2):
                    stack[open_components - 1, c] = min(stack[open_components - 1, c], stack[open_components, c])
                for c in (3, 4):
                    stack[open_components - 1, c] = max(stack[open_components - 1, c], stack[open_components, c])
                open_components -= 1
                if following <= stack[open_components, 0]:
                    break
        if following > top:  # every pixel flooded; the last component was closed against the sentinel
            break
        current = head[following]
        head[following] = below[current]
        depth = following
    # Keep the nodes that are a component of at least one threshold's region (level-0 pixels lie in none).
    kept = 0
    for i in range(nodes):
        first = max(low[i], 0)
        if high[i] > first:
            boxes[kept] = boxes[i]
            low[kept] = first
            high[kept] = high[i]
            kept += 1
    return boxes[:kept].copy(), low[:kept].copy(), high[:kept].copy()


@_compiled
def _best_iou_per_threshold(
    boxes: np.ndarray, gt: np.ndarray, low: np.ndarray, high: np.ndarray, count: int
) -> np.ndarray:  # pragma: no cover - compiled
    """``count`` float64: for each threshold, the best IoU of a node that is a component of its region with a
    ground-truth box (0 where there is none).

    The IoU takes torchvision's ``box_iou`` steps in its order (areas; clamped intersection; ``(area + area) -
    intersection``; one division; ``0 / 0`` as 0), so each value has the same bits as
    :func:`~captum_ext._utils.boxes.box_iou_matrix`.
    """
    truth_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    best = np.zeros(count, np.float64)
    for i in range(boxes.shape[0]):
        area = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        value = 0.0
        for j in range(gt.shape[0]):
            width = min(boxes[i, 2], gt[j, 2]) - max(boxes[i, 0], gt[j, 0])
            height = min(boxes[i, 3], gt[j, 3]) - max(boxes[i, 1], gt[j, 1])
            inter = max(width, 0.0) * max(height, 0.0)
            union = area + truth_area[j] - inter
            if union != 0.0 or inter != 0.0:
                value = max(value, inter / union)
        for k in range(low[i], high[i]):
            best[k] = max(best[k], value)
    return best


def available() -> bool:
    """Whether the compiled component tree can be used (Numba is installed)."""
    return numba is not None


def quantise(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each value, how many of the ascending ``thresholds`` are ``<= value``.

    Args:
        values (np.ndarray): 1-D float64 values.
        thresholds (np.ndarray): ``T`` float64 ascending thresholds.

    Returns:
        np.ndarray: int32 counts in ``0 .. T``, as ``np.searchsorted(thresholds, values, side="right")``.
    """
    return _quantise(np.ascontiguousarray(values, dtype=np.float64), np.ascontiguousarray(thresholds, np.float64))


def joint_histogram(values: np.ndarray, inside: np.ndarray, thresholds: np.ndarray, threads: int = 1) -> np.ndarray:
    """Pixel counts by level and mask, in one pass: PxAP's foreground and background histograms.

    Args:
        values (np.ndarray): 1-D float64 values.
        inside (np.ndarray): 1-D bool, whether each pixel lies in the ground truth.
        thresholds (np.ndarray): ``T`` float64 ascending thresholds.
        threads (int, optional): most threads used, each counting a part of the pixels (integer counts: the
            same sums in any split). Default: 1.

    Returns:
        np.ndarray: ``(T+1)×2`` int64: row ``b`` counts the pixels reaching exactly ``b`` thresholds, column 1 those
        inside, column 0 those outside.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    inside = np.ascontiguousarray(inside, dtype=np.bool_)
    thresholds = np.ascontiguousarray(thresholds, dtype=np.float64)
    parts = _parts(len(values), threads, smallest=1 << 16)
    counts = in_threads(lambda part: _joint_histogram(values[part], inside[part], thresholds), parts, threads)
    return np.sum(counts, axis=0) if len(counts) > 1 else counts[0]


def largest_component_boxes(keep: np.ndarray, threads: int = 1) -> np.ndarray:
    """Tight boxes of each plane's largest 8-connected component.

    Args:
        keep (np.ndarray): ``N×H×W`` bool planes.
        threads (int, optional): most threads used, each labelling a run of planes. Default: 1.

    Returns:
        np.ndarray: ``N×4`` int64 boxes ``(x1, y1, x2, y2)`` with exclusive right / bottom edges; ties go to the
        component whose first pixel comes first in row-major order; ``-1`` rows for an empty plane.
    """
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    parts = _parts(len(keep), threads)
    boxes = in_threads(lambda part: _largest_component_boxes(keep[part]), parts, threads)
    return np.concatenate(boxes) if len(boxes) > 1 else boxes[0]


def _parts(count: int, threads: int, smallest: int = 1) -> List[slice]:
    """``count`` items cut into at most ``threads`` contiguous runs of at least ``smallest`` items (one run, maybe
    empty, when there is little to share)."""
    pieces = max(1, min(threads, count // max(1, smallest)))
    bounds = np.linspace(0, count, pieces + 1).astype(np.int64)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def in_threads(function: Callable[[Any], Any], items: Sequence[Any], threads: int) -> List[Any]:
    """``[function(item) for item in items]``, on up to ``threads`` threads when there are several items: for the
    compiled loops, which release the GIL.

    Args:
        function (callable): applied to each item.
        items (sequence): the items, results keep their order.
        threads (int): most threads used.

    Returns:
        list: the results.
    """
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(min(threads, len(items))) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]


def iou_curve(normalised: np.ndarray, gt: Tensor, thresholds: np.ndarray) -> Tensor:
    """For each threshold τ, the best IoU between a component box of ``{normalised >= τ}`` and a ground-truth box.

    Args:
        normalised (np.ndarray): ``H×W`` float64 map in ``[0, 1]``.
        gt (Tensor): ``K×4`` float64 ground-truth boxes on the CPU.
        thresholds (np.ndarray): ``T`` float64 ascending thresholds.

    Returns:
        Tensor: ``T`` float64 IoUs (0 where the region is empty); the same values as labelling each region.
    """
    height, width = normalised.shape
    levels = quantise(normalised.ravel(), thresholds)
    boxes, low, high = _tree_nodes(levels, height, width)
    truth = np.ascontiguousarray(gt.numpy(), dtype=np.float64)
    return torch.from_numpy(_best_iou_per_threshold(boxes, truth, low, high, len(thresholds)))


def iou_curves(normalised: np.ndarray, gts: Sequence[Tensor], thresholds: np.ndarray, threads: int = 1) -> Tensor:
    """:func:`iou_curve` for each of ``N`` maps, on up to ``threads`` threads: the compiled loops release the GIL,
    so the maps' trees are built in parallel (each map's curve is computed alone: the same values on any number of
    threads).

    Args:
        normalised (np.ndarray): ``N×H×W`` float64 maps in ``[0, 1]``.
        gts (sequence of Tensor): ``N`` tensors ``K_i×4``, float64 ground-truth boxes on the CPU.
        thresholds (np.ndarray): ``T`` float64 ascending thresholds.
        threads (int, optional): most threads used. Default: 1.

    Returns:
        Tensor: ``N×T`` float64 IoUs.
    """
    rows = in_threads(lambda i: iou_curve(normalised[i], gts[i], thresholds), range(len(normalised)), threads)
    return torch.stack(rows) if rows else torch.zeros(0, len(thresholds), dtype=torch.float64)
