"""SensitivityBBox's box features: named blocks of numbers computed from a sensitivity map, concatenated and read by
the learned linear map. The table :data:`FEATURE_BLOCKS` documents each block; :func:`box_feature_matrix` computes
them. Kept apart from the attribution (:mod:`captum_ext.attr.sensitivity_bbox`) and the fitting
(:mod:`captum_ext.attr._box_fitting`)."""
from __future__ import annotations

import math

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from captum_ext._utils.smoothing import gaussian_blur

#: Each block: what it holds and its length (``g`` = ``grid_size``, ``K`` = ``num_classes``). Every block is computed
#: from the channel-reduced map of one image; coordinates are fractions of the image width/height.
FEATURE_BLOCKS: Dict[str, str] = {
    "grid": "the paper's features: the map blurred by `sigma`, average-pooled to g×g, max-normalised, raised to "
            "`power` and normalised to sum 1 (g² numbers)",
    "multiscale": "the same pooled distribution at the coarser grids 4×4 and 8×8 (80 numbers)",
    "moments": "mass centroid (x, y), standard deviations (x, y), variances (x, y) and covariance of the map blurred "
               "by `sigma`, weighted by (map / max)^p for p in 1, 2, 4, 8 (28 numbers)",
    "cam": "CAM-threshold boxes (x1, y1, x2, y2) of the largest connected region above t·max, t in 0.2 … 0.6, "
           "on the map blurred by `sigma` / 2 (20 numbers)",
    "window": "the map around its peak (the maximum of the map blurred by max(H, W)/10), so clutter elsewhere does "
              "not pull the box: the peak (x, y); moments as above (p in 1, 2) of the map blurred by `sigma` / 2 "
              "inside square windows of half-side max(H, W)·(1/8, 3/16, 1/4); CAM-threshold boxes as above of the "
              "map blurred by `sigma` / 4 inside the middle window (64 numbers)",
    "class": "one-hot of the explained class: a per-class box offset (K numbers; needs `num_classes`)",
}
#: The paper's feature set (the only one before feature sets existed; files saved without a set hold it).
PAPER_FEATURES: Tuple[str, ...] = ("grid",)
#: The default, chosen on validation scenes among the class-agnostic sets (see the benchmark).
DEFAULT_FEATURES: Tuple[str, ...] = ("window",)
MOMENT_POWERS = (1.0, 2.0, 4.0, 8.0)
CAM_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)
MULTISCALE_GRIDS = (4, 8)
#: The ``"window"`` block's sizes, as fractions of the image side: the peak-finding blur and the windows' half-sides.
WINDOW_PEAK_BLUR = 1 / 10
WINDOW_HALF_SIDES = (1 / 8, 3 / 16, 1 / 4)
WINDOW_MOMENT_POWERS = (1.0, 2.0)


def check_features(features: Union[str, Sequence[str]], num_classes: Optional[int]) -> Tuple[str, ...]:
    """The feature set as a tuple of block names in table order, checked.

    Args:
        features (str or sequence of str): block names from :data:`FEATURE_BLOCKS`, or one name.
        num_classes (int, optional): required when ``"class"`` is selected.

    Returns:
        tuple of str: the distinct names, ordered as in :data:`FEATURE_BLOCKS` (so equal sets compare equal).

    Raises:
        ValueError: an empty set, an unknown name, or ``"class"`` without a positive integer ``num_classes``.
    """
    names = (features,) if isinstance(features, str) else tuple(features)
    if not names:
        raise ValueError(f"`features` must name at least one block of {list(FEATURE_BLOCKS)}")
    unknown = [n for n in names if n not in FEATURE_BLOCKS]
    if unknown:
        raise ValueError(f"`features` has unknown blocks {unknown}; choose from {list(FEATURE_BLOCKS)}")
    if "class" in names and not (isinstance(num_classes, int) and not isinstance(num_classes, bool)
                                 and num_classes >= 1):
        raise ValueError(f"`num_classes` must be a positive int when `features` includes 'class', got {num_classes!r}")
    return tuple(n for n in FEATURE_BLOCKS if n in names)


def feature_count(features: Sequence[str], grid_size: int, num_classes: Optional[int]) -> int:
    """Length of the feature vector of a (checked) feature set.

    Args:
        features (sequence of str): block names.
        grid_size (int): side of the ``"grid"`` block.
        num_classes (int, optional): length of the ``"class"`` block.

    Returns:
        int: the number of features.
    """
    lengths = {"grid": grid_size**2, "multiscale": sum(g * g for g in MULTISCALE_GRIDS),
               "moments": 7 * len(MOMENT_POWERS), "cam": 4 * len(CAM_THRESHOLDS),
               "window": 2 + 7 * len(WINDOW_MOMENT_POWERS) * len(WINDOW_HALF_SIDES) + 4 * len(CAM_THRESHOLDS),
               "class": num_classes or 0}
    return sum(lengths[n] for n in features)


def pooled_distribution(maps: Tensor, grid: int, power: float) -> Tensor:
    """``N×grid²`` float64: the pooled map, max-normalised, sharpened by ``power``, summing to 1 (an all-zero map
    gives the uniform distribution)."""
    pooled = F.adaptive_avg_pool2d(maps, grid).flatten(1).to(torch.float64)
    peak = pooled.amax(dim=1, keepdim=True)
    sharpened = torch.where(peak > 0, pooled / peak.clamp_min(1e-300), torch.ones_like(pooled)) ** power
    return sharpened / sharpened.sum(dim=1, keepdim=True)


def map_moments(maps: Tensor, powers: Sequence[float] = MOMENT_POWERS) -> Tensor:
    """``N×7·len(powers)`` float64: for each power p, the centroid, standard deviations, variances and covariance of
    the pixel weights ``(map / max)^p`` (normalised to sum 1), in fractions of the width/height.

    Pixel centres sit at ``(i + 0.5) / size``, so a uniform map has its centroid at 0.5. A higher power follows the
    strongest region; a lower one the whole map: together they let a linear map weigh peak against spread.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.
        powers (sequence of float, optional): the exponents p. Default: 1, 2, 4, 8.

    Returns:
        Tensor: ``N×7·len(powers)`` float64, per power ``(cx, cy, sx, sy, vx, vy, cov)``.

    Example::

        >>> import torch
        >>> maps = torch.zeros(1, 1, 2, 4); maps[0, 0, 1, 2:] = 1.0   # bottom row, right half
        >>> map_moments(maps, powers=(1.0,))[0, :2].tolist()
        [0.75, 0.75]
    """
    n, _, height, width = maps.shape
    values = maps.reshape(n, height, width).to(torch.float64)
    peak = values.amax(dim=(1, 2), keepdim=True)
    base = torch.where(peak > 0, values / peak.clamp_min(1e-300), torch.ones_like(values))
    ys = (torch.arange(height, dtype=torch.float64, device=maps.device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64, device=maps.device) + 0.5) / width
    powered: Dict[float, Tensor] = {1.0: base}
    blocks = []
    for power in powers:
        if power not in powered:
            # Squaring the previous power (the default 1, 2, 4, 8) is much cheaper than a general pow.
            half = powered.get(power / 2)
            powered[power] = half * half if half is not None else base**power
        weights = powered[power]
        weights = weights / weights.sum(dim=(1, 2), keepdim=True)
        # Marginals give the centroid and variances; the covariance needs the joint weights once.
        px, py = weights.sum(dim=1), weights.sum(dim=2)
        cx, cy = px @ xs, py @ ys
        vx = (px @ xs**2 - cx**2).clamp_min(0)
        vy = (py @ ys**2 - cy**2).clamp_min(0)
        cov = torch.einsum("nhw,h,w->n", weights, ys, xs) - cx * cy
        blocks.append(torch.stack([cx, cy, vx.sqrt(), vy.sqrt(), vx, vy, cov], dim=1))
    return torch.cat(blocks, dim=1)


def threshold_boxes(maps: Tensor, thresholds: Sequence[float] = CAM_THRESHOLDS) -> Tensor:
    """``N×4·len(thresholds)`` float64: the CAM box (largest 8-connected region above ``t · max``) at each
    threshold, in fractions of the width/height; the full image for a map without a positive value.

    The same rule as :func:`captum_ext.metrics.boxes_from_saliency` (ties: the region found first in row-major
    order), with every image and threshold labelled in one call: the masks are stacked as planes that a structure
    without links across planes keeps apart.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.
        thresholds (sequence of float, optional): fractions of each map's maximum. Default: 0.2 … 0.6.

    Returns:
        Tensor: ``N×4·len(thresholds)`` float64 boxes ``(x1, y1, x2, y2)`` / ``(W, H, W, H)``, per threshold.

    Example::

        >>> import torch
        >>> maps = torch.zeros(1, 1, 4, 4); maps[0, 0, 1:3, 2:] = 1.0
        >>> (threshold_boxes(maps, thresholds=(0.5,)) * 4).tolist()
        [[2.0, 1.0, 4.0, 3.0]]
    """
    n, _, height, width = maps.shape
    count_t = len(thresholds)
    values = maps[:, 0].detach().to("cpu", torch.float64).numpy()
    peak = values.reshape(n, -1).max(axis=1)
    levels = np.asarray(thresholds, dtype=np.float64)[None, :, None, None] * peak[:, None, None, None]
    keep = values[:, None] >= levels  # n × T × H × W
    keep[peak <= 0] = True  # no salient pixel: the full image
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity within a plane, none across planes
    planes = keep.reshape(n * count_t, height, width)
    labelled, count = ndimage.label(planes, structure=structure)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    planes_count = n * count_t
    # Labels run in raster order over the stack, so each plane holds a contiguous range of them.
    last = np.maximum.accumulate(labelled.reshape(planes_count, -1).max(axis=1))
    first = np.concatenate([[1], last[:-1] + 1])
    has = last >= first
    chosen = np.zeros(planes_count, dtype=labelled.dtype)
    if count:
        owners = np.flatnonzero(has)
        owner_of_label = np.repeat(owners, (last - first + 1)[has])  # plane of labels 1 … count
        largest = np.maximum.reduceat(sizes[1:], first[has] - 1)  # per plane with labels
        is_largest = sizes[1:] == largest[np.searchsorted(owners, owner_of_label)]
        # Among equally large regions the smallest label wins: the first found in row-major order.
        candidates = np.flatnonzero(is_largest)
        planes, where = np.unique(owner_of_label[candidates], return_index=True)
        chosen[planes] = candidates[where] + 1
    mask = (labelled == chosen[:, None, None]) & (chosen > 0)[:, None, None]  # planes × H × W
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    boxes = np.tile(np.array([0.0, 0.0, width, height]), (planes_count, 1))
    found = chosen > 0
    boxes[found, 0] = cols[found].argmax(axis=1)
    boxes[found, 1] = rows[found].argmax(axis=1)
    boxes[found, 2] = width - cols[found, ::-1].argmax(axis=1)
    boxes[found, 3] = height - rows[found, ::-1].argmax(axis=1)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return torch.from_numpy((boxes / scale).reshape(n, 4 * count_t)).to(maps.device)


def _peak_positions(maps: Tensor, peak_blur: float) -> Tuple[Tensor, Tensor]:
    """Row and column of each map's maximum after a blur (ties: the first pixel in row-major order)."""
    index = gaussian_blur(maps, peak_blur).flatten(1).argmax(dim=1)
    return index // maps.shape[-1], index % maps.shape[-1]


def _crops(maps: Tensor, rows: Tensor, cols: Tensor, reach: int) -> Tensor:
    """``N×(2·reach+1)²`` squares of ``N×1×H×W`` maps centred on ``(rows, cols)``, zero outside the image."""
    size = 2 * reach + 1
    padded = F.pad(maps[:, 0], (reach, reach, reach, reach))
    offsets = torch.arange(size, device=maps.device)
    return padded[torch.arange(maps.shape[0], device=maps.device)[:, None, None],
                  (rows[:, None] + offsets)[:, :, None], (cols[:, None] + offsets)[:, None, :]]


def window_moments(maps: Tensor, rows: Tensor, cols: Tensor, half_sides: Sequence[float],
                   powers: Sequence[float] = WINDOW_MOMENT_POWERS) -> Tensor:
    """:func:`map_moments` of the maps masked to each square window around ``(rows, cols)``, computed on a crop
    around the windows and moved back to image coordinates: the same numbers (to rounding), a few times faster.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.
        rows, cols (Tensor): ``N`` window centres.
        half_sides (sequence of float): the windows' half-sides in pixels.
        powers (sequence of float, optional): the exponents of :func:`map_moments`. Default: 1, 2.

    Returns:
        Tensor: ``N×7·len(powers)·len(half_sides)`` float64, window by window.
    """
    n, _, height, width = maps.shape
    reach = int(max(half_sides))
    size = 2 * reach + 1
    crops = _crops(maps, rows, cols, reach)
    distance = (torch.arange(size, device=maps.device) - reach).abs()
    # Moments of a crop are in fractions of the crop: scale spreads, shift the centroid to the image.
    scale = torch.tensor([size / width, size / height] * 2 + [(size / width) ** 2, (size / height) ** 2,
                          size * size / (width * height)], dtype=torch.float64, device=maps.device)
    shift = torch.zeros(n, 7, dtype=torch.float64, device=maps.device)
    shift[:, 0], shift[:, 1] = (cols - reach).double() / width, (rows - reach).double() / height
    blocks = []
    for half in half_sides:
        inside = (distance <= half)[:, None] & (distance <= half)[None, :]
        masked = (crops * inside)[:, None]
        local = map_moments(masked, powers).view(n, len(powers), 7)
        block = (local * scale + shift[:, None]).view(n, -1)
        empty = masked.flatten(1).amax(dim=1) <= 0
        if bool(empty.any()):  # no mass in the window: map_moments' uniform weights span the whole image
            _, windows = _windows_at(rows[empty], cols[empty], (half,), height, width)
            block[empty] = map_moments(maps[empty] * windows[0], powers)
        blocks.append(block)
    return torch.cat(blocks, dim=1)


def window_boxes(maps: Tensor, rows: Tensor, cols: Tensor, half_side: float,
                 thresholds: Sequence[float] = CAM_THRESHOLDS) -> Tensor:
    """:func:`threshold_boxes` of the maps masked to the square window around ``(rows, cols)`` (pixels at most
    ``half_side`` rows and columns away), labelling only the window's pixels: the same boxes, several times faster.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.
        rows, cols (Tensor): ``N`` window centres.
        half_side (float): the window's half-side in pixels.
        thresholds (sequence of float, optional): as in :func:`threshold_boxes`.

    Returns:
        Tensor: ``N×4·len(thresholds)`` float64 boxes in fractions of the width/height; the full image for a map
        without a positive value in its window.
    """
    n, _, height, width = maps.shape
    reach = int(half_side)
    size = 2 * reach + 1
    crops = _crops(maps, rows, cols, reach)  # zeros outside the image are never selected
    boxes = threshold_boxes(crops[:, None], thresholds).view(n, len(thresholds), 4) * size
    shift = torch.stack([cols, rows, cols, rows], dim=1).to(boxes.device, torch.float64) - reach
    scale = torch.tensor([width, height, width, height], dtype=torch.float64, device=boxes.device)
    boxes = (boxes + shift[:, None]) / scale
    boxes[crops.flatten(1).amax(dim=1) <= 0] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64,
                                                             device=boxes.device)
    return boxes.view(n, -1)


def peak_windows(maps: Tensor, half_sides: Sequence[float], peak_blur: float) -> Tuple[Tensor, Tensor]:
    """The peak of each map after a blur, and square windows centred on it.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.
        half_sides (sequence of float): the windows' half-sides in pixels (a pixel is inside when its row and column
            are each at most this far from the peak's).
        peak_blur (float): Gaussian blur in pixels applied before taking the maximum (ties: the first pixel in
            row-major order).

    Returns:
        tuple: the peaks ``N×2`` float64 ``(x, y)`` pixel centres in fractions of the width/height, and the windows
        ``len(half_sides)×N×1×H×W`` bool.

    Example::

        >>> import torch
        >>> maps = torch.zeros(1, 1, 5, 5); maps[0, 0, 1, 3] = 1.0
        >>> peaks, windows = peak_windows(maps, (1.0,), peak_blur=0.0)
        >>> peaks.tolist(), int(windows.sum())
        ([[0.7, 0.3]], 9)
    """
    rows, cols = _peak_positions(maps, peak_blur)
    return _windows_at(rows, cols, half_sides, maps.shape[-2], maps.shape[-1])


def _windows_at(rows: Tensor, cols: Tensor, half_sides: Sequence[float], height: int, width: int
                ) -> Tuple[Tensor, Tensor]:
    row_distance = (torch.arange(height, device=rows.device)[None, :] - rows[:, None]).abs()  # N×H
    col_distance = (torch.arange(width, device=cols.device)[None, :] - cols[:, None]).abs()  # N×W
    # Distances are whole pixels, so "within r" is "within floor(r)": comparing the integers keeps r out of float32
    # (which rounds 1.9999999999999964 up to 2 and would disagree with window_boxes' int(half_side)).
    reaches = [math.floor(r) for r in half_sides]
    windows = torch.stack([((row_distance <= d)[:, :, None] & (col_distance <= d)[:, None, :])[:, None]
                           for d in reaches])
    return _pixel_centres(rows, cols, height, width), windows


def _pixel_centres(rows: Tensor, cols: Tensor, height: int, width: int) -> Tensor:
    """``N×2`` float64 ``(x, y)`` centres of pixels, in fractions of the width/height."""
    return torch.stack([(cols.double() + 0.5) / width, (rows.double() + 0.5) / height], dim=1)


def window_features(maps: Tensor, sigma: float) -> Tensor:
    """The ``"window"`` block: the peak, then the moments and CAM boxes of the map inside windows around it.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps (not blurred).
        sigma (float): the box features' blur in pixels (moments use half of it, boxes a quarter).

    Returns:
        Tensor: ``N×64`` float64.
    """
    side = max(maps.shape[-2:])
    half_sides = [side * h for h in WINDOW_HALF_SIDES]
    rows, cols = _peak_positions(maps, side * WINDOW_PEAK_BLUR)
    peaks = _pixel_centres(rows, cols, maps.shape[-2], maps.shape[-1])
    moments = window_moments(gaussian_blur(maps, sigma / 2), rows, cols, half_sides)
    boxes = window_boxes(gaussian_blur(maps, sigma / 4), rows, cols, half_sides[len(half_sides) // 2])
    return torch.cat([peaks, moments, boxes], dim=1)


def box_feature_matrix(maps: Tensor, features: Sequence[str], grid_size: int, sigma: float, power: float,
                       num_classes: Optional[int] = None, classes: Any = None) -> Tensor:
    """The feature vectors of channel-reduced maps: the blocks of ``features`` concatenated in table order.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative float32 maps (channels already reduced, not blurred).
        features (sequence of str): a set checked by :func:`check_features`.
        grid_size (int): side of the ``"grid"`` block.
        sigma (float): blur in pixels (``"cam"`` uses half of it).
        power (float): sharpening exponent of the pooled grids.
        num_classes (int, optional): length of the ``"class"`` block.
        classes (int, list or Tensor, optional): the class of every map (an int for all), required by the
            ``"class"`` block.

    Returns:
        Tensor: ``N×feature_count(...)`` float64.

    Raises:
        ValueError: ``"class"`` is selected but ``classes`` is missing, of the wrong length or out of range.
    """
    if maps.shape[0] == 0:
        return torch.zeros(0, feature_count(features, grid_size, num_classes), dtype=torch.float64,
                           device=maps.device)
    # The blocks of the whole map share one blur; the default "window" block blurs its own way and needs none.
    blurred = gaussian_blur(maps, sigma) if {"grid", "multiscale", "moments"} & set(features) else maps
    parts = []
    for name in features:
        if name == "grid":
            parts.append(pooled_distribution(blurred, grid_size, power))
        elif name == "multiscale":
            parts.extend(pooled_distribution(blurred, g, power) for g in MULTISCALE_GRIDS)
        elif name == "moments":
            parts.append(map_moments(blurred))
        elif name == "cam":
            # A lighter blur than the grid's keeps the region edges, which is what the boxes measure.
            parts.append(threshold_boxes(gaussian_blur(maps, sigma / 2)))
        elif name == "window":
            parts.append(window_features(maps, sigma))
        else:
            parts.append(_one_hot(classes, maps.shape[0], int(num_classes or 0), maps.device))
    return torch.cat(parts, dim=1)


def _one_hot(classes: Any, n: int, num_classes: int, device: torch.device) -> Tensor:
    if classes is None:
        raise ValueError("`target` is required: the 'class' features need the explained class of each map")
    if isinstance(classes, bool) or not isinstance(classes, (int, list, tuple, Tensor)):
        raise ValueError(f"`target` must be an int, a list or a tensor of class indices, got {type(classes).__name__}")
    index = torch.as_tensor(classes, device=device).reshape(-1).long()
    if index.numel() == 1 and n != 1:
        index = index.expand(n)
    if index.shape[0] != n:
        raise ValueError(f"`target` must hold one class per map ({n}), got {index.shape[0]}")
    if bool(((index < 0) | (index >= num_classes)).any()):
        raise ValueError(f"`target` (or, without one, the predicted classes) holds classes outside [0, {num_classes}) "
                         f"(num_classes={num_classes})")
    return F.one_hot(index, num_classes).to(torch.float64)
