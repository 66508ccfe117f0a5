"""Mask overlap: per-image IoU of a predicted region with the ground-truth region."""
from __future__ import annotations

from typing import Union

from torch import Tensor

from captum_ext._utils.maps import mask_iou_rows
from captum_ext.metrics._batching import reduce_mean
from captum_ext.metrics._checks import TensorLike, check_masks, check_nonempty_masks, check_pair

__all__ = ["mask_iou"]


def mask_iou(pred_masks: TensorLike, gt_masks: TensorLike, reduce: bool = False) -> Union[float, Tensor]:
    r"""Per-image intersection-over-union of boolean masks.

    An empty *prediction* is a valid answer (it scores 0); an empty *ground truth* is rejected, as in every metric of
    the package (see :mod:`captum_ext.metrics`): against nothing, IoU would be 0 for any prediction but the empty one.

    Args:
        pred_masks (Tensor): ``N×H×W`` or ``N×1×H×W`` predicted masks (bool or 0/1); may be empty.
        gt_masks (Tensor): ground-truth masks of the same shape; each must contain at least one pixel.
        reduce (bool, optional): return the mean IoU (``True``) or the per-image values. Default: False.

    Returns:
        float or Tensor: the mean IoU, or an ``N`` float64 tensor of IoUs in ``[0, 1]``.

    Raises:
        TypeError: if a mask batch has the wrong type or a complex dtype.
        ValueError: if the shapes disagree, a mask is not 0/1, or a ground-truth mask is empty (the message lists
            the empty images' indices).

    Example::

        >>> import torch
        >>> pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
        >>> gt = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]])
        >>> mask_iou(pred, gt)
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    pred = check_masks(pred_masks, "pred_masks")
    gt = check_masks(gt_masks, "gt_masks")
    check_pair(pred, "pred_masks", gt, "gt_masks")
    check_nonempty_masks(gt, "gt_masks")
    return reduce_mean(mask_iou_rows(pred, gt), reduce)
