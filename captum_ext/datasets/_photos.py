"""Real photographs and textures bundled in the scikit-image wheel, used as scene backgrounds and clutter.

Only images shipped inside ``skimage/data`` are used (nothing is downloaded), so every machine builds identical
scenes from the same seed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np

#: skimage.data loaders bundled in the wheel; photographs first, then textures.
PHOTO_NAMES: Tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock", "horse", "moon", "page",
    "retina", "hubble_deep_field", "immunohistochemistry",
)
TEXTURE_NAMES: Tuple[str, ...] = ("brick", "grass", "gravel")


def _load(name: str) -> np.ndarray:
    from skimage import data, img_as_float32

    loader = getattr(data, name, None)
    if loader is None:
        raise RuntimeError(f"scikit-image has no bundled image {name!r}; upgrade scikit-image")
    image = loader()
    if isinstance(image, tuple):  # stereo pairs return (left, right, disparity)
        image = image[0]
    image = img_as_float32(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@lru_cache(maxsize=None)
def load_photos(names: Tuple[str, ...] = PHOTO_NAMES + TEXTURE_NAMES) -> Tuple[np.ndarray, ...]:
    """Return the named skimage images as ``H×W×3`` float32 arrays in [0, 1] (cached)."""
    return tuple(_load(name) for name in names)


@lru_cache(maxsize=None)
def background_bank(size: int, zooms: Tuple[float, ...] = (1.0, 1.6, 2.5, 4.0)) -> Tuple[np.ndarray, ...]:
    """Every photo resized so its shorter side is ``size * zoom`` for each zoom (cached per size).

    Cropping ``size×size`` windows from these gives backgrounds at several apparent scales without a resize per
    scene.
    """
    import torch
    import torch.nn.functional as F

    bank = []
    for photo in load_photos():
        h, w = photo.shape[:2]
        tensor = torch.from_numpy(photo).permute(2, 0, 1)[None]
        for zoom in zooms:
            scale = size * zoom / min(h, w)
            out_hw = (max(size, int(round(h * scale))), max(size, int(round(w * scale))))
            resized = F.interpolate(tensor, size=out_hw, mode="bilinear", antialias=True, align_corners=False)
            bank.append(np.ascontiguousarray(resized[0].permute(1, 2, 0).clamp(0, 1).numpy()))
    return tuple(bank)


def random_backgrounds(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count×size×size×3`` random crops (random source, zoom, position, flips) of the background bank."""
    bank = background_bank(size)
    out = np.empty((count, size, size, 3), dtype=np.float32)
    choices = rng.integers(0, len(bank), size=count)
    for i, k in enumerate(choices):
        src = bank[k]
        y = rng.integers(0, src.shape[0] - size + 1)
        x = rng.integers(0, src.shape[1] - size + 1)
        crop = src[y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        out[i] = crop
    return out
