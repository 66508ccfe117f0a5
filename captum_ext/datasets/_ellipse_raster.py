"""Rasterisation of ellipses and disks on the pixel grid of the ellipse datasets (vectorised over the batch).

Coordinates follow :mod:`captum_ext.datasets.ellipses`: ``x`` = column, ``y`` = row (down), pixel ``(i, j)`` covers
``[j, j + 1) × [i, i + 1)``; a pixel belongs to a shape iff its centre lies inside.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

MARGIN = 1.0  # px between an ellipse's bounding box and the image border; also the target's border margin


def centres(size: int) -> np.ndarray:
    """Continuous coordinates of the ``size`` pixel centres along one axis: ``0.5, 1.5, …``."""
    return np.arange(size, dtype=np.float64) + 0.5


def ellipse_masks(cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray, theta: np.ndarray,
                  size: int) -> np.ndarray:
    """``N×H×W`` bool: pixel centres inside each ellipse (θ in degrees, counter-clockwise as displayed).

    With the major-axis direction ``(cos θ, -sin θ)`` (``y`` pointing down), a point is inside iff
    ``(along / a)² + (across / b)² <= 1``, ``along = dx cos θ - dy sin θ``, ``across = dx sin θ + dy cos θ``;
    expanded as ``A dx² + B dx dy + C dy²`` so only the cross term needs a full ``N×H×W`` product.
    """
    grid = centres(size)
    rad = np.deg2rad(theta)
    c, s = np.cos(rad), np.sin(rad)
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    coef_xx = c * c * ia + s * s * ib
    coef_yy = s * s * ia + c * c * ib
    coef_xy = 2.0 * c * s * (ib - ia)
    dx = grid[None, None, :] - cx[:, None, None]  # N×1×W
    dy = grid[None, :, None] - cy[:, None, None]  # N×H×1
    quad = (coef_xy[:, None, None] * dy) * dx
    quad += coef_xx[:, None, None] * dx * dx
    quad += coef_yy[:, None, None] * dy * dy
    return quad <= 1.0


def disk_masks(cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """``N×H×W`` bool: pixel centres inside each disk of centre ``(cx, cy)`` and radius ``r``."""
    grid = centres(size)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    return (dx * dx - (r * r)[:, None, None]) + dy * dy <= 0.0


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Chebyshev (square ``2r+1``) dilation of ``N×H×W`` bool masks, separable shifts."""
    out = mask
    for axis in (1, 2):
        for _ in range(radius):
            grown = out.copy()
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(1, None), slice(None, -1)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
            out = grown
    return out if out is not mask else mask.copy()


def paint(images: np.ndarray, masks: np.ndarray, values: np.ndarray) -> None:
    """In place: ``images[i][masks[i]] = values[i]``."""
    np.copyto(images, np.broadcast_to(values[:, None, None], images.shape), where=masks)


def sample_ellipses(rng: np.random.Generator, n: int, size: int) -> Tuple[np.ndarray, ...]:
    """Random ellipses entirely inside the image; returns float32-representable float64 (cx, cy, a, b, θ)."""
    scale = size / 32.0
    b = rng.uniform(2.0, 3.2, n) * scale
    a = rng.uniform(np.maximum(5.0 * scale, 1.6 * b), 8.0 * scale)
    theta = rng.uniform(0.0, 180.0, n)
    rad = np.deg2rad(theta)
    half_w = np.sqrt((a * np.cos(rad)) ** 2 + (b * np.sin(rad)) ** 2)  # half extent of the bounding box
    half_h = np.sqrt((a * np.sin(rad)) ** 2 + (b * np.cos(rad)) ** 2)
    cx = rng.uniform(half_w + MARGIN, size - half_w - MARGIN)
    cy = rng.uniform(half_h + MARGIN, size - half_h - MARGIN)
    # Round to float32 once, so everything (masks, targets) is computed from exactly the stored parameters.
    theta = np.mod(theta.astype(np.float32), np.float32(180.0))
    return tuple(v.astype(np.float32).astype(np.float64) for v in (cx, cy, a, b, theta))


def intersect(x1: np.ndarray, y1: np.ndarray, t1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
              t2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Intersection ``(x, y)`` of the lines through ``(x1, y1)`` and ``(x2, y2)`` at inclinations ``t1``, ``t2``
    (degrees, counter-clockwise as displayed); ``inf``/``nan`` for parallel lines."""
    r1, r2 = np.deg2rad(t1), np.deg2rad(t2)
    u1x, u1y = np.cos(r1), -np.sin(r1)
    u2x, u2y = np.cos(r2), -np.sin(r2)
    denom = u1x * u2y - u1y * u2x
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ((x2 - x1) * u2y - (y2 - y1) * u2x) / denom
    return x1 + s * u1x, y1 + s * u1y

