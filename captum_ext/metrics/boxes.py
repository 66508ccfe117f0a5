"""Box overlap: pairwise IoU and CorLoc (weakly supervised localisation)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from captum_ext._utils.boxes import box_areas, box_iou_matrix
from captum_ext._utils.validation import as_tensor, check_boxes, check_tensor
from captum_ext._utils.validation import check_scalar as _check_scalar
from captum_ext.metrics._checks import TensorLike, check_box_batch, without_grad

__all__ = ["box_iou", "corloc"]

# Images per block when matching predicted and ground-truth boxes in :func:`corloc` (each block computes a
# block × (its gt boxes) IoU matrix, so the wasted work grows with the block; the Python overhead shrinks with it).
_BOX_CHUNK = 32


def box_iou(boxes1: TensorLike, boxes2: TensorLike) -> Tensor:
    r"""Pairwise intersection-over-union of two sets of boxes.

    A thin, validating wrapper of :func:`torchvision.ops.box_iou`. The only difference: the IoU of two zero-area
    boxes that do not overlap in area (torchvision's ``0 / 0 = nan``) is reported as ``0``, so a degenerate
    box never counts as a localisation hit. Empty box *sets* (``0×4``) are allowed and give an empty matrix: this
    function compares boxes, it does not score an image against its ground truth.

    Args:
        boxes1 (Tensor): ``M×4`` boxes ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``, numeric (not bool).
        boxes2 (Tensor): ``K×4`` boxes in the same format.

    Returns:
        Tensor: ``M×K`` IoU matrix in ``[0, 1]`` (floating dtype of the promoted inputs, at least float32).

    Raises:
        TypeError: if a box set is not a tensor / array / numeric sequence, or is bool or complex.
        ValueError: if a box set is not ``M×4``, holds NaN/inf, or has ``x2 < x1`` or ``y2 < y1``.

    Example::

        >>> import torch
        >>> box_iou(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[5., 0., 15., 10.], [0., 0., 10., 10.]]))
        tensor([[0.3333, 1.0000]])
    """
    b1 = check_box_batch(boxes1, "boxes1")
    b2 = check_box_batch(boxes2, "boxes2")
    dtype = torch.promote_types(torch.promote_types(b1.dtype, b2.dtype), torch.float32)
    return box_iou_matrix(b1.to(dtype), b2.to(dtype))


def _check_gt_boxes(gt_boxes: Union[TensorLike, Sequence[TensorLike]], n: int) -> Tuple[Tensor, np.ndarray]:
    """Flatten ``gt_boxes`` (``N×4``, ``N×M×4`` or a sequence of ``M_i×4``) to ``K×4`` float64 and ``N`` counts."""
    if isinstance(gt_boxes, (Tensor, np.ndarray)):
        tensor = check_tensor(gt_boxes, "gt_boxes", ndim=(2, 3), kind="real", last_dim=4)
        if tensor.dtype == torch.bool:
            raise TypeError("`gt_boxes` must hold numeric box coordinates, got dtype torch.bool")
        if tensor.shape[0] != n:
            raise ValueError(f"`pred_boxes` and `gt_boxes` must have the same length, got {n} and {tensor.shape[0]}")
        flat = without_grad(check_boxes(tensor.reshape(-1, 4), "gt_boxes").to(torch.float64))
        return flat, np.full(n, flat.shape[0] // n, dtype=np.int64)
    if not isinstance(gt_boxes, (list, tuple)):
        raise TypeError(f"`gt_boxes` must be a tensor or a sequence of tensors, got {type(gt_boxes).__name__}")
    if len(gt_boxes) != n:
        raise ValueError(f"`pred_boxes` and `gt_boxes` must have the same length, got {n} and {len(gt_boxes)}")
    items = []
    for i, item in enumerate(gt_boxes):
        if isinstance(item, (list, tuple)) and len(item) == 0:
            item = torch.zeros(0, 4)
        boxes = as_tensor(item, f"gt_boxes[{i}]")
        boxes = boxes[None] if boxes.dim() == 1 else boxes
        if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.is_complex() or boxes.dtype == torch.bool:
            check_box_batch(boxes, f"gt_boxes[{i}]")  # raises the named shape / dtype error
        items.append(boxes.to(torch.float64))
    flat = without_grad(torch.cat(items))
    counts = np.array([b.shape[0] for b in items], dtype=np.int64)
    # Finiteness and corner order checked once for all boxes; the first offending image is named.
    bad = ~torch.isfinite(flat).all(dim=1) | (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])
    if bool(bad.any()):
        first = int(np.searchsorted(np.cumsum(counts), int(bad.nonzero()[0, 0]), side="right"))
        check_boxes(items[first], f"gt_boxes[{first}]")
    return flat, counts


def _check_nonempty_regions(flat: Tensor, owner: Tensor, n: int, size: Optional[Tuple[int, int]] = None) -> None:
    """The package's empty-ground-truth rule for boxes: every pair needs a ground-truth box of positive area, inside
    the ``size = (H, W)`` map where the metric knows it.

    A pair without one could never be a hit, so it would silently count as a miss and lower the mean; boxes wholly
    outside the map are usually in another coordinate frame (the image's, for a smaller map).
    """
    covered = torch.zeros(n, dtype=torch.bool, device=flat.device)
    covered[owner[box_areas(flat) > 0]] = True
    if not bool(covered.all()):
        raise ValueError(
            "`gt_boxes` must hold at least one box of positive area per pair; none at index(es) "
            f"{(~covered).nonzero().flatten().tolist()}"
        )
    if size is not None:
        inside = torch.zeros(n, dtype=torch.bool, device=flat.device)
        limits = flat.new_tensor([size[1], size[0], size[1], size[0]])
        inside[owner[box_areas(torch.minimum(flat.clamp_min(0), limits)) > 0]] = True
        if not bool(inside.all()):
            raise ValueError(
                f"`gt_boxes` must hold at least one box overlapping the {size[0]}×{size[1]} map per pair (boxes in "
                f"map pixels); none at index(es) {(~inside).nonzero().flatten().tolist()}"
            )


def corloc(
    pred_boxes: TensorLike,
    gt_boxes: Union[TensorLike, Sequence[TensorLike]],
    iou_threshold: float = 0.5,
    reduce: bool = True,
) -> Union[float, Tensor]:
    r"""CorLoc: share of images whose predicted box overlaps a ground-truth box with IoU >= ``iou_threshold``.

    Each row is one (image, class) pair: one predicted box for the target class, and the ground-truth boxes of that
    class in that image. The pair is a hit when the IoU with *any* of its ground-truth boxes reaches the threshold.
    Zero-area ground-truth boxes (e.g. the ``(0, 0, 0, 0)`` padding of ``SceneBatch.object_boxes``) are allowed
    next to real ones, but every pair must have at least one ground-truth box of positive area (the package's
    empty-ground-truth rule, see :mod:`captum_ext.metrics`).

    Args:
        pred_boxes (Tensor): ``N×4`` predicted boxes ``(x1, y1, x2, y2)``.
        gt_boxes (Tensor or sequence of Tensor): ``N×4`` (one ground-truth box per pair), ``N×M×4``, or a sequence
            of ``N`` tensors shaped ``M_i×4`` (a single box may be given as a length-4 vector).
        iou_threshold (float, optional): minimum IoU for a hit, in ``[0, 1]``. Default: 0.5.
        reduce (bool, optional): return the fraction of hits (``True``) or the per-pair hits. Default: True.

    Returns:
        float or Tensor: the CorLoc fraction in ``[0, 1]``, or a bool tensor of ``N`` hits.

    Raises:
        TypeError: if a box argument is not numeric (bool and complex included) or ``iou_threshold`` is no number.
        ValueError: if the boxes are malformed, the lengths differ, ``pred_boxes`` is empty, ``iou_threshold`` is
            outside ``[0, 1]``, or a pair has no ground-truth box of positive area (the message lists its index).

    Example::

        >>> import torch
        >>> pred = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
        >>> gt = [torch.tensor([[20., 20., 30., 30.], [1., 1., 10., 10.]]), torch.tensor([[5., 0., 15., 10.]])]
        >>> corloc(pred, gt)
        0.5
        >>> corloc(pred, gt, reduce=False)
        tensor([ True, False])
    """
    pred = check_box_batch(pred_boxes, "pred_boxes").to(torch.float64)
    n = pred.shape[0]
    if n == 0:
        raise ValueError("`pred_boxes` must hold at least one box")
    flat, counts = _check_gt_boxes(gt_boxes, n)
    flat = flat.to(pred.device)
    threshold = _check_scalar(iou_threshold, "iou_threshold", low=0.0, high=1.0)
    owner = torch.from_numpy(np.repeat(np.arange(n), counts)).to(pred.device)  # image index of each gt box
    _check_nonempty_regions(flat, owner, n)

    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    hits = torch.zeros(n, dtype=torch.bool, device=pred.device)
    # Blocks of images: each block's IoU matrix is (images in block) × (their gt boxes); keep each gt box's own row.
    for start in range(0, n, _BOX_CHUNK):
        stop = min(start + _BOX_CHUNK, n)
        gt_block = flat[offsets[start] : offsets[stop]]
        rows = owner[offsets[start] : offsets[stop]] - start
        iou = box_iou_matrix(pred[start:stop], gt_block)
        own = iou[rows, torch.arange(gt_block.shape[0], device=pred.device)]
        block_hits = torch.zeros(stop - start, dtype=torch.bool, device=pred.device)
        block_hits[rows[own >= threshold]] = True
        hits[start:stop] = block_hits
    return float(hits.double().mean()) if reduce else hits
