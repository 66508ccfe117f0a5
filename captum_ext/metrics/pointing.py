"""Pointing games: does the saliency maximum hit the object (Zhang et al. 2016), and how much of the saliency
energy lies on it (Wang et al. 2020, Score-CAM)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from scipy import ndimage
from torch import Tensor

from captum_ext._utils.maps import safe_div
from captum_ext._utils.validation import check_scalar
from captum_ext.metrics._batching import checked_saliency_and_masks, per_image, reduce_mean
from captum_ext.metrics._checks import TensorLike, check_labels, device_path

__all__ = ["default_tolerance", "energy_pointing_game", "pointing_game"]

#: TorchRay's pointing-game tolerance (15 px) and the image side it was chosen for (224 px, ImageNet crops).
TORCHRAY_TOLERANCE = 15.0
TORCHRAY_SIDE = 224


def default_tolerance(height: int, width: int) -> float:
    r"""The pointing game's default hit radius for an ``height×width`` map: TorchRay's 15 px at 224 px, scaled with
    the image, ``15 · max(height, width) / 224``.

    A fixed 15 px saturates the game on small images: on 64-pixel scenes it is a quarter of the image side, and a
    maximum that plainly misses the object still scores a hit. Scaling keeps the radius the same *share* of the
    image as in the benchmark it comes from.

    Args:
        height (int): map height in pixels, ``>= 1``.
        width (int): map width in pixels, ``>= 1``.

    Returns:
        float: the tolerance in pixels (15.0 at 224×224, about 4.29 at 64×64).

    Raises:
        TypeError: if a size is not an integer.
        ValueError: if a size is below 1.

    Example::

        >>> default_tolerance(224, 224)
        15.0
        >>> round(default_tolerance(64, 64), 3)
        4.286
    """
    side = max(check_scalar(height, "height", low=1, integer=True), check_scalar(width, "width", low=1, integer=True))
    return TORCHRAY_TOLERANCE * side / TORCHRAY_SIDE


def _check_tolerance(tolerance: Optional[float]) -> Optional[float]:
    """``None`` (the size-scaled default) or a pixel radius ``>= 0``, as a float.

    Args:
        tolerance (float, optional): the argument to check.

    Returns:
        float or None: the checked tolerance.

    Raises:
        TypeError / ValueError: naming ``tolerance`` (not a number; negative, NaN or inf).
    """
    return None if tolerance is None else check_scalar(tolerance, "tolerance", low=0.0)


def _first_peak(saliency: Tensor) -> Tensor:
    """The flat index of each map's first maximum in row-major order, the pixel the pointing game tests (one rule
    for the host path and :func:`~captum_ext.metrics._on_device.pointing_hits`, so both pick the same pixel).

    Args:
        saliency (Tensor): checked ``N×H×W`` maps, on any device.

    Returns:
        Tensor: ``N`` int64 row-major indices on the maps' device.
    """
    flat = saliency.flatten(1)
    if flat.dtype == torch.bool:  # argmax is not implemented for bool
        flat = flat.to(torch.uint8)
    return flat.argmax(dim=1)


def pointing_game(
    saliency: TensorLike,
    masks: TensorLike,
    tolerance: Optional[float] = None,
    labels: Optional[TensorLike] = None,
    reduce: bool = True,
) -> Union[float, Tensor]:
    r"""Pointing game (Zhang et al., *Top-down neural attention by excitation backprop*, ECCV 2016): does the
    saliency maximum fall on (or near) the object?

    For each image the maximum of the saliency map is located; ties are broken by taking the *first* maximum in
    row-major order (``torch.argmax`` of the flattened map), so a constant map points at pixel ``(0, 0)``. The image is
    a hit when the Euclidean distance between that pixel's centre and the nearest mask pixel's centre is
    ``<= tolerance`` (computed with :func:`scipy.ndimage.distance_transform_edt` of the mask's complement).
    TorchRay's ``PointingGame`` counts a distance strictly below the tolerance, so a maximum exactly at the tolerance
    (15 px, or offsets such as (9, 12)) is a hit here and a miss there; its class mean also runs over every class,
    where this one runs over the classes present.

    The default tolerance scales with the maps' size: TorchRay's 15 px at 224 px, ``15 · max(H, W) / 224``
    (:func:`default_tolerance`; about 4.3 px on 64-pixel maps). A fixed 15 px would make the game nearly
    saturate on small images. An explicit number is a radius in pixels at any size (pass ``tolerance=15`` for
    TorchRay's fixed radius).

    Accuracy follows TorchRay: with ``labels``, the mean over classes of ``hits / (hits + misses)`` (every class
    weighted equally); without, the mean over images.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1); each must contain at least one pixel.
            A box can be turned into a mask with :func:`boxes_to_masks`.
        tolerance (float, optional): hit radius in pixels, ``>= 0``. Default: ``None``,
            ``default_tolerance(H, W)`` (15 px at 224×224, scaled with the maps' larger side).
        labels (Tensor, optional): ``N`` integer class ids, for the class-mean accuracy. Default: None.
        reduce (bool, optional): return the accuracy (``True``) or the per-image hits. Default: True.

    Returns:
        float or Tensor: the accuracy in ``[0, 1]``, or a bool tensor of ``N`` hits.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes disagree, a map holds NaN/inf, ``tolerance < 0``, or a mask is empty (the
            message lists the empty images' indices).

    Example::

        >>> import torch
        >>> saliency = torch.zeros(2, 32, 32)
        >>> saliency[0, 5, 20] = 1.0   # 14 px right of the mask's last column (x = 6)
        >>> saliency[1, 5, 22] = 1.0   # 16 px away
        >>> masks = torch.zeros(2, 32, 32, dtype=torch.bool); masks[:, :, :7] = True
        >>> pointing_game(saliency, masks, tolerance=15, reduce=False)
        tensor([ True, False])
        >>> pointing_game(saliency, masks, tolerance=15, labels=torch.tensor([0, 1]))
        0.5
        >>> pointing_game(saliency, masks, reduce=False)  # default at 32 px: 15 · 32 / 224 ≈ 2.1 px
        tensor([False, False])
    """
    sal, gt = checked_saliency_and_masks(saliency, masks)
    tol = _check_tolerance(tolerance)
    n, height, width = sal.shape
    if tol is None:
        tol = default_tolerance(height, width)
    label_t = check_labels(labels, "labels", n) if labels is not None else None

    if device_path(sal):  # distances computed where the maps are, with the same values
        from captum_ext.metrics._on_device import pointing_hits

        hits = pointing_hits(sal, gt, tol)
    else:
        peak = _first_peak(sal)
        ys, xs = (peak // width).tolist(), (peak % width).tolist()
        gt_np = gt.cpu().numpy()
        hits = torch.zeros(n, dtype=torch.bool)
        for i in range(n):
            if gt_np[i, ys[i], xs[i]]:
                hits[i] = True
            else:
                distance = ndimage.distance_transform_edt(~gt_np[i])
                hits[i] = bool(distance[ys[i], xs[i]] <= tol)
    if not reduce:
        return hits
    if label_t is None:
        return float(hits.double().mean())
    _, inverse = torch.unique(label_t.cpu(), return_inverse=True)
    per_class_hits = torch.bincount(inverse, weights=hits.cpu().double())
    per_class_total = torch.bincount(inverse).double()
    return float((per_class_hits / per_class_total).mean())


def energy_pointing_game(
    saliency: TensorLike, masks: TensorLike, reduce: bool = True
) -> Union[float, Tensor]:
    r"""Energy-based pointing game (Wang et al., *Score-CAM*, CVPR Workshops 2020): share of the saliency mass that
    lies inside the ground truth.

    The saliency is clamped at 0 first (negative evidence is not "energy"), then per image
    ``sum(S · G) / sum(S)``; an all-zero (or all-negative) map scores 0.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1), e.g. from :func:`boxes_to_masks`;
            each must contain at least one pixel (no energy can lie inside an empty region, so such an image
            would only pull the mean towards 0).
        reduce (bool, optional): return the mean over images (``True``) or the per-image values. Default: True.

    Returns:
        float or Tensor: the mean energy fraction, or an ``N`` float64 tensor of fractions in ``[0, 1]``.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes disagree, a map holds NaN/inf, or a mask is empty (the message lists the empty
            images' indices).

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[3., 1.], [0., -5.]]])
        >>> mask = torch.tensor([[[True, False], [False, True]]])
        >>> energy_pointing_game(saliency, mask)
        0.75
    """
    def energy(sal: Tensor, gt: Tensor) -> Tensor:
        # In place on one float64 copy: fresh full-size buffers cost more (page faults) than the arithmetic.
        positive = sal.to(torch.float64, copy=True).clamp_(min=0)
        total = positive.sum(dim=1)
        return safe_div(positive.masked_fill_(~gt.bool(), 0).sum(dim=1), total)

    return reduce_mean(per_image(saliency, masks, energy), reduce)
