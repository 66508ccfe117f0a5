"""Salient-object-detection metrics: max-F / adaptive-F (Achanta et al. 2009, beta^2 = 0.3) and mean absolute
error (Perazzi et al. 2012), on per-image min-max normalised maps."""
from __future__ import annotations

from typing import NamedTuple, Union

import torch
from torch import Tensor

from captum_ext._utils.maps import minmax_normalise, safe_div
from captum_ext._utils.validation import check_scalar
from captum_ext.metrics._batching import checked_saliency_and_masks, chunks, per_image, reduce_mean
from captum_ext.metrics._checks import TensorLike

__all__ = ["FMeasure", "mae", "saliency_fmeasure"]


class FMeasure(NamedTuple):
    """Result of :func:`saliency_fmeasure`.

    Attributes:
        max_f (float): maximum over thresholds of the F-measure of the image-averaged precision and recall.
        adaptive_f (float): mean over images of the F-measure at each image's adaptive threshold.
        precision (Tensor): ``T`` image-averaged precision at each threshold (float64).
        recall (Tensor): ``T`` image-averaged recall at each threshold (float64).
        thresholds (Tensor): ``T`` thresholds, ``linspace(0, 1, T)`` (float64).
    """

    max_f: float
    adaptive_f: float
    precision: Tensor
    recall: Tensor
    thresholds: Tensor


def _f_beta(precision: Tensor, recall: Tensor, beta2: float) -> Tensor:
    return safe_div((1.0 + beta2) * precision * recall, beta2 * precision + recall)


def saliency_fmeasure(
    saliency: TensorLike, masks: TensorLike, beta2: float = 0.3, n_thresholds: int = 256
) -> FMeasure:
    r"""Salient-object F-measure: max-F over thresholds and adaptive-threshold F.

    Each map is min-max normalised to ``[0, 1]`` per image (a constant map becomes all zeros). At threshold ``t`` the
    predicted region is ``map >= t``; precision ``P = TP / (TP + FP)`` (0 when nothing is predicted) and recall
    ``R = TP / (TP + FN)``, and ``F = (1 + beta2) P R / (beta2 P + R)`` (0 when ``P = R = 0``).

    * **max-F** (the standard protocol): ``P`` and ``R`` are averaged over images at each of ``n_thresholds``
      thresholds ``linspace(0, 1, n_thresholds)``, ``F`` is computed from the averaged curves, and its maximum is
      reported.
    * **adaptive F** (Achanta et al., *Frequency-tuned salient region detection*, CVPR 2009): per image,
      threshold ``min(2 · mean(map), 1)``; ``F`` per image, averaged over images.

    All thresholds are evaluated at once from per-image histograms of the threshold bins (no loop over thresholds).

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1); each must contain at least one pixel
            (recall is undefined otherwise). Note that a constant map normalises to zeros, so even for an
            all-foreground mask it only scores ``R = 1`` at threshold 0.
        beta2 (float, optional): ``beta^2``, ``>= 0``. Default: 0.3.
        n_thresholds (int, optional): number of thresholds, ``>= 2``. Default: 256.

    Returns:
        FMeasure: ``(max_f, adaptive_f, precision, recall, thresholds)``.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes disagree, a map holds NaN/inf, ``beta2`` or ``n_thresholds`` is out of range, or a
            mask is empty (the message lists the empty images' indices).

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
        >>> mask = torch.tensor([[[True, False], [False, False]]])
        >>> result = saliency_fmeasure(saliency, mask, n_thresholds=3)  # thresholds 0, 0.5, 1
        >>> result.precision
        tensor([0.2500, 0.5000, 1.0000], dtype=torch.float64)
        >>> result.max_f
        1.0
        >>> round(result.adaptive_f, 4)  # threshold min(2 * 0.375, 1) = 0.75 keeps only the top-left pixel
        1.0
    """
    sal, gt = checked_saliency_and_masks(saliency, masks)
    b2 = check_scalar(beta2, "beta2", low=0.0)
    steps = int(check_scalar(n_thresholds, "n_thresholds", low=2, integer=True))

    sal, gt = sal.flatten(1), gt.flatten(1)
    n, pixels = sal.shape
    device = sal.device
    thresholds = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=device)
    precision_sum = torch.zeros(steps, dtype=torch.float64, device=device)
    recall_sum = torch.zeros(steps, dtype=torch.float64, device=device)
    adaptive = torch.empty(n, dtype=torch.float64, device=device)
    for part in chunks(n, pixels):
        values, truth = minmax_normalise(sal[part]), gt[part]
        rows = values.shape[0]
        # bin k = number of thresholds <= value: the pixel is predicted at thresholds 0 .. k-1.
        bins = torch.bucketize(values, thresholds, right=True)
        index = (bins + (steps + 1) * torch.arange(rows, device=device)[:, None]).flatten()
        size = rows * (steps + 1)
        hist_all = torch.bincount(index, minlength=size).view(rows, steps + 1)
        hist_pos = torch.bincount(index[truth.flatten()], minlength=size).view(rows, steps + 1)
        # predicted at threshold j = pixels with bin > j: reverse cumulative sum, shifted by one.
        predicted = hist_all.flip(1).cumsum(1).flip(1)[:, 1:].double()
        true_pos = hist_pos.flip(1).cumsum(1).flip(1)[:, 1:].double()
        positives = truth.sum(dim=1, keepdim=True).double()
        precision_sum += safe_div(true_pos, predicted).sum(dim=0)
        recall_sum += (true_pos / positives).sum(dim=0)

        level = (2.0 * values.mean(dim=1, keepdim=True)).clamp(max=1.0)
        pred = values >= level
        tp = (pred & truth).sum(dim=1).double()
        p_img = safe_div(tp, pred.sum(dim=1).double())
        r_img = tp / positives[:, 0]
        adaptive[part] = _f_beta(p_img, r_img, b2)

    precision = precision_sum / n
    recall = recall_sum / n
    max_f = float(_f_beta(precision, recall, b2).max())
    return FMeasure(max_f, float(adaptive.mean()), precision, recall, thresholds)


def mae(saliency: TensorLike, masks: TensorLike, reduce: bool = True) -> Union[float, Tensor]:
    r"""Mean absolute error between the min-max normalised saliency map and the binary ground truth (Perazzi et al.,
    *Saliency filters*, CVPR 2012).

    Each map is normalised to ``[0, 1]`` per image (a constant map becomes all zeros, so it scores the foreground
    fraction of its mask -- also for an all-foreground mask), then ``mean |S - G|``.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1); each must contain at least one pixel
            (the package's empty-ground-truth rule: against an empty mask MAE only measures how much the map
            lights up, not where, so such an image is rejected like in every other metric).
        reduce (bool, optional): return the mean over images (``True``) or the per-image values. Default: True.

    Returns:
        float or Tensor: the mean MAE, or an ``N`` float64 tensor of values in ``[0, 1]``.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes disagree, a map holds NaN/inf, or a mask is empty (the message lists the empty
            images' indices).

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[4.0, 2.0], [0.0, 0.0]]])   # normalised: [[1, 0.5], [0, 0]]
        >>> mask = torch.tensor([[[True, True], [False, False]]])
        >>> mae(saliency, mask)
        0.125
    """
    def absolute_error(sal: Tensor, gt: Tensor) -> Tensor:
        return (minmax_normalise(sal) - gt.double()).abs().mean(dim=1)

    return reduce_mean(per_image(saliency, masks, absolute_error), reduce)
