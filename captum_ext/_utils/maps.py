"""Per-image arithmetic on batches of maps and masks: the project's one min-max normalisation and one max scaling
to ``[0, 1]``, a division that maps ``x / 0`` to 0, and per-image mask IoU (all unchecked; callers validate their
arguments)."""
from __future__ import annotations

import torch
from torch import Tensor


def minmax_normalise(maps: Tensor) -> Tensor:
    """Min-max normalise each image of an ``N×…`` batch to ``[0, 1]`` in float64; a constant image becomes zeros.

    A constant map carries no ranking of its pixels, so it is mapped to all zeros rather than divided by zero.

    Args:
        maps (Tensor): ``N×…`` real maps (e.g. ``N×H×W`` or flattened ``N×P``).

    Returns:
        Tensor: float64 tensor of the same shape and device.
    """
    values = maps.to(torch.float64)
    rows = values.flatten(1)
    # Everything is halved first: exact for float64's normal numbers (so the result is bit for bit that of the plain
    # formula), and the span of values near ±1.8e308 no longer overflows to inf (which made the peak NaN).
    low = rows.amin(dim=1, keepdim=True).mul_(0.5)
    span = rows.amax(dim=1, keepdim=True).mul_(0.5).sub_(low)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    # A constant row gives exactly 0 already (x - x = +0 for finite x), so no mask is needed; one output buffer,
    # updated in place, because each fresh full-size buffer costs page faults that outweigh the arithmetic.
    halved = rows.mul_(0.5) if values is not maps and values.is_contiguous() else rows * 0.5
    return halved.sub_(low).div_(safe).view(values.shape)


def max_normalise(maps: Tensor) -> Tensor:
    """Scale each image of an ``N×…`` batch of non-negative maps by its maximum, so the peak becomes 1; an image
    whose maximum is ``<= 0`` (no evidence anywhere) becomes zeros.

    Unlike :func:`minmax_normalise` the zero level is kept: a density or an attribution magnitude stays
    proportional to the original. Dtype and device are kept.

    Args:
        maps (Tensor): ``N×…`` real maps, normally non-negative (counts, densities, absolute attributions).

    Returns:
        Tensor: tensor of the same shape, dtype and device.
    """
    peak = maps.flatten(1).amax(dim=1).view((-1,) + (1,) * (maps.dim() - 1))
    return safe_div(maps, peak)


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` element-wise (broadcasting), with 0 wherever ``den <= 0``.

    Args:
        num (Tensor): numerators.
        den (Tensor): non-negative denominators (counts, sums of clamped maps).

    Returns:
        Tensor: the quotients, 0 where the denominator is 0.
    """
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def mask_iou_rows(pred: Tensor, truth: Tensor) -> Tensor:
    """Per-image IoU of two ``N×…`` boolean mask batches; two empty masks agree perfectly and score 1.

    Args:
        pred (Tensor): ``N×…`` bool masks.
        truth (Tensor): bool masks of the same shape.

    Returns:
        Tensor: ``N`` float64 IoUs in ``[0, 1]``.
    """
    pred, truth = pred.flatten(1), truth.flatten(1)
    inter = (pred & truth).sum(dim=1).double()
    union = (pred | truth).sum(dim=1).double()
    return torch.where(union > 0, safe_div(inter, union), torch.ones_like(union))
