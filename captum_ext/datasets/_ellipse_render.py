"""Generation of the three ellipse datasets, one seeded chunk of samples at a time (see
:mod:`captum_ext.datasets.ellipses` for what each dataset contains)."""
from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

import numpy as np

from captum_ext.datasets._ellipse_raster import (
    MARGIN,
    dilate,
    disk_masks,
    ellipse_masks,
    intersect,
    paint,
    sample_ellipses,
)
from captum_ext.datasets._photos import background_bank, random_backgrounds

GAP = 2  # minimum background pixels between an ellipse and any other shape (Chebyshev distance > GAP)
MIN_AXIS_ANGLE = 20.0  # degrees between the two major axes (datasets 2, 3)
NOISE_STD = 0.02
MAX_ROUNDS = 1000  # rejection rounds; acceptance per round is >= 13 % (two ellipses, size 16)


def _chunk_one(rng: np.random.Generator, n: int, size: int) -> List[np.ndarray]:
    """Dataset 1: one ellipse and 2–4 circle distractors of the same intensity distribution."""
    scale = size / 32.0
    cx, cy, a, b, theta = sample_ellipses(rng, n, size)
    emask = ellipse_masks(cx, cy, a, b, theta, size)
    images = np.broadcast_to(rng.uniform(0.0, 0.1, n)[:, None, None], emask.shape).astype(np.float32)
    occupied = dilate(emask, GAP)  # circle pixels may not enter this zone
    n_circles = rng.integers(2, 5, n)
    for k in range(4):
        pending = np.flatnonzero(n_circles > k)
        for _ in range(MAX_ROUNDS):
            if pending.size == 0:
                break
            m = pending.size
            r = rng.uniform(1.5, 3.0, m) * scale
            ccx = rng.uniform(r + MARGIN, size - r - MARGIN)
            ccy = rng.uniform(r + MARGIN, size - r - MARGIN)
            value = rng.uniform(0.6, 1.0, m)
            disk = disk_masks(ccx, ccy, r, size)
            ok = disk.any(axis=(1, 2)) & ~(disk & occupied[pending]).any(axis=(1, 2))
            idx = pending[ok]
            sub = images[idx]
            paint(sub, disk[ok], value[ok])
            images[idx] = sub
            # Circles may not touch each other either (>= 1 background pixel between them).
            occupied[idx] |= dilate(disk[ok], 1)
            pending = pending[~ok]
        # A circle that found no room after MAX_ROUNDS tries would be left out (practically impossible).
    paint(images, emask, rng.uniform(0.6, 1.0, n))
    targets = theta.astype(np.float32)
    return [images, emask, targets, np.stack([cx, cy], 1)[:, None], np.stack([a, b], 1)[:, None], theta[:, None]]


def _sample_two_ellipses(rng: np.random.Generator, n: int, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two non-touching ellipses per sample whose major axes differ by >= 20° and cross inside the image."""
    params = np.zeros((n, 2, 5))
    masks = np.zeros((n, 2, size, size), dtype=bool)
    target = np.zeros((n, 2))
    pending = np.arange(n)
    for _ in range(MAX_ROUNDS):
        if pending.size == 0:
            break
        m = pending.size
        e1 = sample_ellipses(rng, m, size)
        e2 = sample_ellipses(rng, m, size)
        diff = np.abs(e1[4] - e2[4]) % 180.0
        diff = np.minimum(diff, 180.0 - diff)
        px, py = intersect(e1[0], e1[1], e1[4], e2[0], e2[1], e2[4])
        ok = (diff >= MIN_AXIS_ANGLE) & (px >= MARGIN) & (px <= size - MARGIN)
        ok &= (py >= MARGIN) & (py <= size - MARGIN)
        cand = np.flatnonzero(ok)
        m1 = ellipse_masks(*(v[cand] for v in e1), size)
        m2 = ellipse_masks(*(v[cand] for v in e2), size)
        apart = ~(dilate(m1, GAP) & m2).any(axis=(1, 2))
        good = cand[apart]
        dest = pending[good]
        params[dest, 0] = np.stack(e1, 1)[good]
        params[dest, 1] = np.stack(e2, 1)[good]
        masks[dest, 0], masks[dest, 1] = m1[apart], m2[apart]
        target[dest] = np.stack([px, py], 1)[good]
        done = np.zeros(m, dtype=bool)
        done[good] = True
        pending = pending[~done]
    if pending.size:  # pragma: no cover - acceptance is 13-26 % per round: 0.87**1000 ~ 1e-61
        raise RuntimeError("could not place two ellipses; please report this seed")
    return params, masks, target


def _chunk_two(rng: np.random.Generator, n: int, size: int, dataset: int) -> List[np.ndarray]:
    """Datasets 2 (point noise) and 3 (photo clutter): two ellipses whose major axes cross inside the image."""
    params, pair_masks, target = _sample_two_ellipses(rng, n, size)
    emask = pair_masks[:, 0] | pair_masks[:, 1]
    if dataset == 2:
        images = np.broadcast_to(rng.uniform(0.0, 0.1, n)[:, None, None], emask.shape).astype(np.float32)
        density = rng.uniform(0.05, 0.10, n)
        points = (rng.random(emask.shape) < density[:, None, None]) & ~emask
        values = rng.uniform(0.5, 1.0, emask.shape).astype(np.float32)
        np.copyto(images, values, where=points)
        ellipse_values = rng.uniform(0.6, 1.0, (n, 2))
    else:
        images = _clutter(rng, n, size)
        ellipse_values = rng.uniform(0.7, 1.0, (n, 2))
    paint(images, pair_masks[:, 0], ellipse_values[:, 0])
    paint(images, pair_masks[:, 1], ellipse_values[:, 1])
    centers = params[:, :, 0:2]
    semi_axes = params[:, :, 2:4]
    angles = params[:, :, 4]
    return [images, emask, target, centers, semi_axes, angles]


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of ``…×3`` RGB, float32."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


_PATCH_MAX_ZOOM = 1.6  # patches come from photos whose shorter side is at most 1.6× the image: object parts


@lru_cache(maxsize=None)
def _patch_bank(size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grayscale photos for clutter patches, flattened into one array: (flat, offsets, heights, widths).

    Reuses the (cached) background bank, keeping its less zoomed-in versions of every photo.
    """
    limit = int(np.ceil(size * _PATCH_MAX_ZOOM)) + 1
    photos = [_to_gray(p) for p in background_bank(size) if min(p.shape[:2]) <= limit]
    heights = np.array([p.shape[0] for p in photos])
    widths = np.array([p.shape[1] for p in photos])
    offsets = np.concatenate([[0], np.cumsum(heights * widths)[:-1]])
    return np.concatenate([p.ravel() for p in photos]), offsets, heights, widths


def _clutter(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Dataset 3 background: low-contrast photo crop + 4–8 pasted photo patches (module docstring).

    Patches are pasted in layers (the k-th patch of every image at once) with gathered indices, so there is no
    per-patch Python loop; later patches cover earlier ones.
    """
    scale = size / 32.0
    images = _to_gray(random_backgrounds(rng, n, size))
    images *= rng.uniform(0.1, 0.25, n)[:, None, None].astype(np.float32)
    images += rng.uniform(0.0, 0.1, n)[:, None, None].astype(np.float32)
    flat, offsets, heights, widths = _patch_bank(size)
    counts = rng.integers(4, 9, n)
    lo_side, hi_side = max(2, int(round(5 * scale))), max(3, int(round(10 * scale)))
    span = np.arange(hi_side)
    for layer in range(int(counts.max())):
        owner = np.flatnonzero(counts > layer)
        m = owner.size
        h = rng.integers(lo_side, hi_side + 1, m)
        w = rng.integers(lo_side, hi_side + 1, m)
        y0 = (rng.random(m) * (size - h + 1)).astype(np.int64)
        x0 = (rng.random(m) * (size - w + 1)).astype(np.int64)
        src = rng.integers(0, offsets.size, m)
        sy = (rng.random(m) * (heights[src] - h + 1)).astype(np.int64)
        sx = (rng.random(m) * (widths[src] - w + 1)).astype(np.int64)
        offset = rng.uniform(0.0, 0.1, m).astype(np.float32)
        gain = rng.uniform(0.45, 0.75, m).astype(np.float32)
        rows = np.minimum(span[None, :], h[:, None] - 1)  # m×S, clamped: padding repeats the last row/column
        cols = np.minimum(span[None, :], w[:, None] - 1)
        row_start = offsets[src][:, None] + (sy[:, None] + rows) * widths[src][:, None]  # m×S flat indices
        index = row_start[:, :, None] + (sx[:, None] + cols)[:, None, :]
        patch = flat[index]  # m×S×S
        low = patch.min(axis=(1, 2), keepdims=True)
        high = patch.max(axis=(1, 2), keepdims=True)
        patch = (patch - low) / (high - low + np.float32(0.05))  # stretch: texture visible, flat stays flat
        patch = offset[:, None, None] + gain[:, None, None] * patch
        images[owner[:, None, None], (y0[:, None] + rows)[:, :, None], (x0[:, None] + cols)[:, None, :]] = patch
    return images


def chunk_size(size: int) -> int:
    """Samples per chunk (fixed per ``size``, which keeps the prefix property): about 2**18 pixels per chunk."""
    return int(max(8, min(256, 2**18 // (size * size))))


def render_chunk(seed: int, dataset: int, chunk: int, count: int, size: int) -> List[np.ndarray]:
    """Chunk ``chunk`` of a request, from ``numpy.random.default_rng([seed, dataset, chunk])``, with the sensor
    noise added (not yet clipped).

    Args:
        seed (int): the request's seed.
        dataset (int): 1, 2 or 3.
        chunk (int): chunk index.
        count (int): samples per chunk (:func:`chunk_size`; always the full chunk, so a prefix never changes).
        size (int): image side in pixels.

    Returns:
        list of numpy.ndarray: ``[images, masks, targets, centers, semi_axes, angles]`` for ``count`` samples.
    """
    rng = np.random.default_rng([seed, dataset, chunk])
    if dataset == 1:
        out = _chunk_one(rng, count, size)
    else:
        out = _chunk_two(rng, count, size, dataset)
    out[0] += rng.standard_normal(out[0].shape, dtype=np.float32) * np.float32(NOISE_STD)
    return out
