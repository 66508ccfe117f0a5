"""Scene composition: photo backgrounds, digits and clutter alpha-composited into one seeded chunk of scenes."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from captum_ext.datasets import _digit_glyphs as glyphs
from captum_ext.datasets._photos import random_backgrounds

NUM_CLASSES = 10

#: Context-plate colour of each class in ``"roi"`` mode (hues 36° apart).
CONTEXT_PALETTE: np.ndarray = np.array(
    [colorsys.hsv_to_rgb(k / NUM_CLASSES, 0.75, 0.85) for k in range(NUM_CLASSES)], dtype=np.float32
)

# Codes mixed into each chunk's seed, so modes and splits draw independent scenes from the same user seed.
_MODE_CODE = {"single": 1, "multi": 2, "roi": 3}
_SPLIT_CODE = {"train": 1, "test": 2, "all": 3}


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from ``under``: dark over bright ground, pale over dark or saturated ground.

    Brightness alone is not enough on saturated ground (a bright purple digit on a purple plate vanishes), so pale
    colours are only mildly saturated.
    """
    hue = rng.random()
    if float(_luminance(under.mean(axis=(0, 1)))) > 0.45:
        sat, value = rng.uniform(0.3, 1.0), rng.uniform(0.0, 0.3)
    else:
        sat, value = rng.uniform(0.0, 0.4), rng.uniform(0.85, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, value), dtype=np.float32)


def _place(
    rng: np.random.Generator, side: int, size: int, occupied: List[Tuple[int, int, int, int]], margin: int = 0,
    gap: int = 1, tries: int = 40,
) -> Optional[Tuple[int, int]]:
    """Top-left corner for a ``side×side`` glyph whose ``margin``-padded box avoids ``occupied`` boxes.

    Draws ``tries`` candidate corners at once and returns the first that fits, or ``None``.
    """
    low, high = margin, size - side - margin
    if high < low:
        return None
    xs, ys = rng.integers(low, high + 1, tries), rng.integers(low, high + 1, tries)
    if occupied:
        taken = np.asarray(occupied)[None, :, :]
        x1, y1 = (xs - margin)[:, None], (ys - margin)[:, None]
        x2, y2 = x1 + side + 2 * margin, y1 + side + 2 * margin
        clash = (x1 < taken[..., 2] + gap) & (taken[..., 0] < x2 + gap) & (y1 < taken[..., 3] + gap) & (
            taken[..., 1] < y2 + gap
        )
        free = np.flatnonzero(~clash.any(axis=1))
        if free.size == 0:
            return None
        xs, ys = xs[free], ys[free]
    return int(xs[0]), int(ys[0])


def _paint(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int) -> None:
    side_y, side_x = alpha.shape
    region = canvas[y : y + side_y, x : x + side_x]
    region *= 1.0 - alpha[:, :, None]
    region += alpha[:, :, None] * colour


@dataclass
class _Object:
    label: int
    mask: np.ndarray  # H×W bool
    source: int  # index in loadglyphs.digits()


def _compose_scene(
    rng: np.random.Generator, mode: str, size: int, split: str, context_prob: float, clutter: Tuple[int, int],
    background: np.ndarray,
) -> Tuple[np.ndarray, List[_Object]]:
    """One scene: returns the image and its digits, the object of interest first."""
    _, labels, sources = glyphs.digits(split)
    scale = size / 64.0
    canvas = background.copy()
    occupied: List[Tuple[int, int, int, int]] = []
    objects: List[_Object] = []

    def add_digit(label: int, side: int, plate_colour: Optional[np.ndarray] = None, margin: int = 0) -> bool:
        candidates = np.flatnonzero(labels == label)
        pick = candidates[rng.integers(len(candidates))]
        glyph = glyphs.digits_at(split, side)[pick]
        spot = _place(rng, side, size, occupied, margin=margin)
        if spot is None:
            return False
        x, y = spot
        occupied.append((x - margin, y - margin, x + side + margin, y + side + margin))
        if plate_colour is not None:
            plate = canvas[y - margin : y + side + margin, x - margin : x + side + margin]
            plate *= 0.15
            plate += 0.85 * plate_colour
        alpha = glyphs.alpha(glyph)
        _paint(canvas, alpha, _contrasting_colour(rng, canvas[y : y + side, x : x + side]), x, y)
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + side, x : x + side] = alpha >= 0.5
        objects.append(_Object(label, mask, int(sources[pick])))
        return True

    def add_clutter(count: int, low: int, high: int) -> None:
        for _ in range(count):
            side = 2 * int(rng.integers(low // 2, high // 2 + 1))
            glyph = glyphs.clutter_at(split, side)[rng.integers(len(labels))]
            spot = _place(rng, side, size, occupied[: len(objects)])  # may overlap other clutter, not digits
            if spot is not None:
                x, y = spot
                _paint(canvas, glyphs.alpha(glyph), _contrasting_colour(rng, canvas[y : y + side, x : x + side]), x, y)

    def sides(low: float, high: float, count: int = 1, log: bool = False) -> np.ndarray:
        lo, hi = max(5, round(low * scale)), max(5, round(high * scale))
        if log:
            return np.round(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.5), count))).astype(int)
        return rng.integers(lo, hi + 1, count)

    if mode == "single":
        while not add_digit(int(rng.integers(NUM_CLASSES)), int(sides(16, 30)[0])):
            pass
        add_clutter(
            int(rng.integers(clutter[0], clutter[1] + 1)), max(6, round(10 * scale)), max(8, round(22 * scale))
        )
    elif mode == "multi":
        count = int(rng.integers(2, 4))
        classes = rng.choice(NUM_CLASSES, size=count, replace=False)
        for label, side in zip(classes, np.sort(sides(14, 26, count))[::-1]):
            while not add_digit(int(label), int(side)):
                side = max(5, int(side) - 1)
        add_clutter(
            int(rng.integers(clutter[0], clutter[1] + 1)), max(6, round(10 * scale)), max(8, round(20 * scale))
        )
    else:  # roi: the selected digit first, then 1-3 others where they fit
        def plate(label: int) -> np.ndarray:
            shown = label if rng.random() < context_prob else int(rng.choice(np.delete(np.arange(NUM_CLASSES), label)))
            return CONTEXT_PALETTE[shown]

        label = int(rng.integers(NUM_CLASSES))
        side = int(sides(5, 40, log=True)[0])
        while not add_digit(label, side, plate(label), margin=max(2, round(0.35 * side))):
            side -= 1
        for other in rng.integers(0, NUM_CLASSES, int(rng.integers(1, 4))):
            other_side = int(sides(6, 24)[0])
            add_digit(int(other), other_side, plate(int(other)), margin=max(2, round(0.35 * other_side)))
    return canvas, objects


def render_chunk(
    mode: str, split: str, seed: int, chunk: int, count: int, size: int, context_prob: float, clutter: Tuple[int, int]
) -> Dict[str, np.ndarray]:
    """Chunk ``chunk`` of a scene request: ``count`` scenes from ``default_rng([seed, mode, split, size, chunk])``.

    Each chunk is seeded on its own, so the first ``n`` scenes of a request do not depend on how many follow.

    Args:
        mode, split, seed, size, context_prob, clutter: as :func:`captum_ext.datasets.scenes.make_scenes`.
        chunk: chunk index.
        count: scenes in this chunk.

    Returns:
        dict: ``images`` ``count×size×size×3`` float32, and per digit slot ``object_labels`` (``-1`` padding),
        ``object_masks`` and ``object_sources`` (``-1`` padding).
    """
    rng = np.random.default_rng([seed, _MODE_CODE[mode], _SPLIT_CODE[split], size, chunk])
    max_objects = {"single": 1, "multi": 3, "roi": 4}[mode]
    images = np.empty((count, size, size, 3), dtype=np.float32)
    object_labels = np.full((count, max_objects), -1, dtype=np.int64)
    object_masks = np.zeros((count, max_objects, size, size), dtype=bool)
    object_sources = np.full((count, max_objects), -1, dtype=np.int64)
    for i in range(count):
        background = random_backgrounds(rng, 1, size)[0]  # drawn per scene so n scenes prefix n + k scenes
        canvas, objects = _compose_scene(rng, mode, size, split, context_prob, clutter, background)
        images[i] = canvas
        for k, obj in enumerate(objects):
            object_labels[i, k] = obj.label
            object_masks[i, k] = obj.mask
            object_sources[i, k] = obj.source
    return {
        "images": images, "object_labels": object_labels, "object_masks": object_masks, "object_sources": object_sources
    }
