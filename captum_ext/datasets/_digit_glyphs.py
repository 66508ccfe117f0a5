"""Handwritten digit glyphs for the scenes: scikit-learn's ``load_digits`` split into train/test instances,
up-sampled to any side, their stroke opacity, and class-free *clutter* glyphs made by scrambling quadrants."""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=None)
def digits(split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real handwritten digits of one split: ``M×8×8`` float32 in [0, 1], ``M`` int64 labels and their ``M``
    indices in ``load_digits()``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    index = np.arange(len(bunch.target))
    keep = {"train": index % 4 != 3, "test": index % 4 == 3, "all": np.ones_like(index, dtype=bool)}[split]
    images = (bunch.images[keep] / 16.0).astype(np.float32)
    return images, bunch.target[keep].astype(np.int64), index[keep]


@lru_cache(maxsize=None)
def digits_at(split: str, side: int) -> np.ndarray:
    """All digits of ``split`` bilinearly up-sampled to ``side×side``, as uint8 (cached per side)."""
    images = torch.from_numpy(digits(split)[0])[:, None]
    resized = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    return (resized[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def alpha(intensity: np.ndarray) -> np.ndarray:
    """Opacity of a digit stroke from its (up-sampled) intensity; the mask is ``alpha >= 0.5``."""
    return np.clip((intensity.astype(np.float32) / 255.0 - 0.15) / 0.5, 0.0, 1.0)


@lru_cache(maxsize=None)
def clutter_at(split: str, side: int) -> np.ndarray:
    """Every digit of ``split`` at ``side×side`` (even) with its quadrants shuffled and rotated.

    Clutter shares the digits' strokes, colours and sizes but shows no class. One fixed scramble per digit and side
    (seeded by ``side``), computed for all digits at once.
    """
    glyphs = digits_at(split, side)
    count, half = glyphs.shape[0], side // 2
    rng = np.random.default_rng([7919, side])
    quads = glyphs.reshape(count, 2, half, 2, half).transpose(0, 1, 3, 2, 4).reshape(count, 4, half, half)
    quads = quads[np.arange(count)[:, None], np.argsort(rng.random((count, 4)), axis=1)]
    turns = rng.integers(0, 4, size=(count, 4))
    for k in range(1, 4):
        quads[turns == k] = np.rot90(quads[turns == k], k, axes=(1, 2))
    scrambled = quads.reshape(count, 2, 2, half, half).transpose(0, 1, 3, 2, 4).reshape(count, side, side)
    return np.ascontiguousarray(scrambled)


