"""Gaussian smoothing of batches of maps, vectorised and device-agnostic (used for densities and box features)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float32,
                      device: "torch.device | None" = None) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` (pixels), radius ``ceil(truncate · sigma)``."""
    radius = max(int(math.ceil(truncate * sigma)), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Blur ``N×C×H×W`` maps with an isotropic Gaussian, separably, with zero padding.

    Zero padding means mass near the border is not mirrored back into the image: a single count at a pixel
    spreads exactly as the Gaussian would on an infinite canvas, cut at the edge. ``sigma <= 0`` returns the maps
    unchanged.
    """
    if sigma <= 0:
        return maps
    n, c, h, w = maps.shape
    kernel = gaussian_kernel1d(sigma, truncate, dtype=maps.dtype, device=maps.device)
    radius = kernel.numel() // 2
    flat = maps.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)
