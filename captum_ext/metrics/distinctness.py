"""Class-map distinctness (Shimoda & Yanai's claim): a class's map should not light up the objects of the other
classes present in the image."""
from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch
from torch import Tensor

from captum_ext._utils.validation import check_tensor


class DistinctnessResult(NamedTuple):
    """Summary of :func:`class_distinctness` over the pairs.

    Attributes:
        median_ratio (float): median over pairs of (mass on the other classes' objects) / (mass on the own object);
            lower is more distinct.
        pooled_ratio (float): the same masses summed over all pairs first, then divided.
        own_first (float): share of pairs whose own object gets more mass than any other class's object.
    """

    median_ratio: float
    pooled_ratio: float
    own_first: float


def class_distinctness(
    saliency: Tensor, own_masks: Tensor, other_masks: Sequence[Tensor], reduce: bool = True
) -> Union[DistinctnessResult, Tensor]:
    """How distinct class maps are: for each (image, class) pair, the map's mass (clamped at 0) on the objects of
    the *other* classes present, relative to its mass on the pair's own object.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` maps, one per (image, class) pair.
        own_masks (Tensor): ``N×H×W`` (or ``N×1×H×W``) bool masks of each pair's own object.
        other_masks (sequence of Tensor): per pair, a ``K_i×H×W`` bool stack with one mask per other class
            present (``K_i >= 1``).
        reduce (bool, optional): return a :class:`DistinctnessResult` (default) or an ``N×2`` float64 tensor of
            per-pair ``(ratio, own_first)``.

    Returns:
        DistinctnessResult or Tensor: the summary, or per-pair values. A pair whose map has no mass on its own
        object has ratio ``inf`` when it has mass on the others (0 when it has none).

    Raises:
        ValueError: shapes that do not match, or a pair without another class (named by index).

    Example::

        >>> import torch
        >>> from captum_ext import metrics
        >>> sal = torch.tensor([[[3.0, 1.0]]])                    # 1 pair, a 1×2 map
        >>> own = torch.tensor([[[True, False]]]); other = [torch.tensor([[[False, True]]])]
        >>> metrics.class_distinctness(sal, own, other)
        DistinctnessResult(median_ratio=0.3333333333333333, pooled_ratio=0.3333333333333333, own_first=1.0)
    """
    maps = check_tensor(saliency, "saliency", ndim=(3, 4), kind="real")
    own = check_tensor(own_masks, "own_masks", ndim=(3, 4))
    maps = maps[:, 0] if maps.dim() == 4 else maps
    own = (own[:, 0] if own.dim() == 4 else own).bool()
    if own.shape != maps.shape:
        raise ValueError(f"`own_masks` must match `saliency` {tuple(maps.shape)}, got {tuple(own.shape)}")
    if len(other_masks) != maps.shape[0]:
        raise ValueError(f"`other_masks` must hold one stack per pair ({maps.shape[0]}), got {len(other_masks)}")
    mass = maps.to(torch.float64).clamp_min(0)
    values = torch.zeros(maps.shape[0], 2, dtype=torch.float64)
    own_total, other_total = 0.0, 0.0
    for i, others in enumerate(other_masks):
        others = check_tensor(others, f"other_masks[{i}]", ndim=3).bool()
        if others.shape[0] == 0:
            raise ValueError(f"`other_masks[{i}]` is empty: pair {i} has no other class to be distinct from")
        if others.shape[-2:] != maps.shape[-2:]:
            raise ValueError(f"`other_masks[{i}]` must be K×{maps.shape[-2]}×{maps.shape[-1]}, got "
                             f"{tuple(others.shape)}")
        on_own = float(mass[i][own[i]].sum())
        on_others = (mass[i][None] * others).flatten(1).sum(dim=1)
        total_others = float(on_others.sum())
        values[i, 0] = total_others / on_own if on_own > 0 else (float("inf") if total_others > 0 else 0.0)
        values[i, 1] = float(on_own > float(on_others.max()))
        own_total, other_total = own_total + on_own, other_total + total_others
    if not reduce:
        return values
    pooled = other_total / own_total if own_total > 0 else float("inf")
    return DistinctnessResult(float(values[:, 0].median()), pooled, float(values[:, 1].mean()))
