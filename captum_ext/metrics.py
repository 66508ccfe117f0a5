"""Localisation and saliency metrics (pure, batched tensor functions).

Every function takes a whole batch of ``N`` images (or (image, class) pairs: one row per pair). The per-image
metrics return one number with ``reduce=True`` and one value per row with ``reduce=False``. The definitions follow
``design.md`` §4 and the papers that introduced them:

* :func:`box_iou`, :func:`corloc` -- box overlap and CorLoc (share of images whose predicted box has
  IoU >= 0.5 with a ground-truth box of the target class), as used for weakly supervised localisation.
* :func:`pointing_game` -- Zhang et al. 2016, with TorchRay's class-mean accuracy.
* :func:`energy_pointing_game` -- Score-CAM's energy-based pointing game.
* :func:`saliency_fmeasure`, :func:`mae` -- the salient-object-detection max-F / adaptive-F (beta^2 = 0.3) and
  mean absolute error.
* :func:`mask_iou` -- IoU of boolean masks.
* :func:`boxes_from_saliency` -- the CAM box heuristic (Zhou et al. 2016).
* :func:`binned_accuracy` -- classification accuracy binned by ROI size, as in Eppel's Tables 1-4.

Conventions shared by all functions:

* Saliency maps are ``N×H×W`` or ``N×1×H×W`` real tensors (numpy arrays are converted); ground-truth masks have
  the same shape and are boolean (or contain only 0 and 1).
* Boxes are ``(x1, y1, x2, y2)`` float pixels with *exclusive* right/bottom edges (see
  :mod:`captum_ext._utils.boxes`); :func:`masks_to_boxes` and :func:`boxes_to_masks` are re-exported here.
* Saliency metrics are computed in float64 and return float64 per-image tensors on the input's device; boxes come
  back as float32 (:func:`box_iou`: the promoted input dtype, at least float32).
* Bad input raises ``TypeError`` (wrong type / dtype) or ``ValueError`` (wrong shape, NaN/inf, out of range), and
  the message names the offending argument.

Example::

    >>> import torch
    >>> from captum_ext import metrics
    >>> saliency = torch.zeros(1, 8, 8); saliency[0, 2, 3] = 1.0
    >>> mask = torch.zeros(1, 8, 8, dtype=torch.bool); mask[0, 1:4, 2:5] = True
    >>> metrics.pointing_game(saliency, mask)
    1.0
    >>> metrics.energy_pointing_game(saliency, mask)
    1.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

from captum_ext._utils.boxes import boxes_to_masks, masks_to_boxes
from captum_ext._utils.validation import check_scalar as _check_scalar
from captum_ext._utils.validation import as_tensor, check_boxes, check_same_length, check_tensor

__all__ = [
    "PAPER_ROI_BINS",
    "BinnedAccuracy",
    "FMeasure",
    "binned_accuracy",
    "box_iou",
    "boxes_from_saliency",
    "boxes_to_masks",
    "corloc",
    "energy_pointing_game",
    "mae",
    "mask_iou",
    "masks_to_boxes",
    "pointing_game",
    "saliency_fmeasure",
]

TensorLike = Union[Tensor, np.ndarray, Sequence]

#: Upper/lower ROI-size bin edges (pixels) of Eppel's Tables 1-4: ``[0, 1000), [1000, 2000), ... [500k, 1M)``.
PAPER_ROI_BINS = (0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 500000, 1000000)

# Largest number of float64 pixel values materialised at once by the chunked metrics (32 MiB).
_CHUNK_ELEMENTS = 1 << 22
# Images per block when matching predicted and ground-truth boxes in :func:`corloc` (each block computes a
# block × (its gt boxes) IoU matrix, so the wasted work grows with the block; the Python overhead shrinks with it).
_BOX_CHUNK = 32


# --------------------------------------------------------------------------------------------------------------------
# Input checks (private)
# --------------------------------------------------------------------------------------------------------------------


def _check_maps(value: TensorLike, name: str) -> Tensor:
    """Check an ``N×H×W`` / ``N×1×H×W`` real map batch and return it as ``N×H×W`` (dtype unchanged)."""
    maps = check_tensor(value, name, ndim=(3, 4), kind="real")
    if maps.dim() == 4:
        if maps.shape[1] != 1:
            raise ValueError(f"`{name}` must be N×H×W or N×1×H×W, got shape {tuple(maps.shape)}")
        maps = maps[:, 0]
    if maps.numel() == 0:
        raise ValueError(f"`{name}` must hold at least one non-empty image, got shape {tuple(maps.shape)}")
    return maps


def _check_masks(value: TensorLike, name: str) -> Tensor:
    """Check an ``N×H×W`` / ``N×1×H×W`` mask batch (bool, or only 0/1) and return it as ``N×H×W`` bool."""
    masks = _check_maps(value, name)
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError(f"`{name}` must be boolean or contain only 0 and 1")
        masks = masks != 0
    return masks


def _check_pair(saliency: Tensor, name_s: str, masks: Tensor, name_m: str) -> None:
    """Raise unless the two ``N×H×W`` batches have the same ``N`` and ``H×W``."""
    check_same_length(name_s, saliency, name_m, masks)
    if saliency.shape[1:] != masks.shape[1:]:
        raise ValueError(
            f"`{name_s}` and `{name_m}` must have the same H×W, got {tuple(saliency.shape[1:])} "
            f"and {tuple(masks.shape[1:])}"
        )


def _check_labels(value: TensorLike, name: str, n: int) -> Tensor:
    """Check a 1-D integer label vector of length ``n``."""
    labels = check_tensor(value, name, ndim=1, kind="int")
    if labels.shape[0] != n:
        raise ValueError(f"`{name}` must have one entry per image ({n}), got {labels.shape[0]}")
    return labels


def _chunks(n: int, pixels: int) -> Iterator[slice]:
    """Slices over ``n`` images holding at most ``_CHUNK_ELEMENTS`` pixels each (at least one image)."""
    step = max(1, _CHUNK_ELEMENTS // max(pixels, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _per_image(saliency: TensorLike, masks: TensorLike, score: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Check a (saliency, masks) pair and apply ``score`` to flattened ``N×HW`` chunks; float64 ``N`` result."""
    sal = _check_maps(saliency, "saliency")
    gt = _check_masks(masks, "masks")
    _check_pair(sal, "saliency", gt, "masks")
    sal, gt = sal.flatten(1), gt.flatten(1)
    out = torch.empty(sal.shape[0], dtype=torch.float64, device=sal.device)
    for part in _chunks(sal.shape[0], sal.shape[1]):
        out[part] = score(sal[part], gt[part])
    return out


def _normalise(maps: Tensor) -> Tensor:
    """Min-max normalise each ``N×P`` row to ``[0, 1]`` in float64; a constant row becomes all zeros."""
    maps = maps.to(torch.float64)
    low = maps.amin(dim=1, keepdim=True)
    span = maps.amax(dim=1, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 wherever ``den == 0``."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _reduce_mean(values: Tensor, reduce: bool) -> Union[float, Tensor]:
    return float(values.mean()) if reduce else values


# --------------------------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------------------------


def _iou_unchecked(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """torchvision's IoU matrix with the 0/0 of two zero-area boxes set to 0."""
    return torch.nan_to_num(_tv_box_iou(boxes1, boxes2), nan=0.0)


def box_iou(boxes1: TensorLike, boxes2: TensorLike) -> Tensor:
    r"""Pairwise intersection-over-union of two sets of boxes.

    A thin, validating wrapper of :func:`torchvision.ops.box_iou`. The only difference: the IoU of two zero-area
    boxes that do not overlap in area (torchvision's ``0 / 0 = nan``) is reported as ``0``, so a degenerate
    box never counts as a localisation hit.

    Args:
        boxes1 (Tensor): ``M×4`` boxes ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``.
        boxes2 (Tensor): ``K×4`` boxes in the same format.

    Returns:
        Tensor: ``M×K`` IoU matrix in ``[0, 1]`` (floating dtype of the promoted inputs, at least float32).

    Example::

        >>> import torch
        >>> box_iou(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[5., 0., 15., 10.], [0., 0., 10., 10.]]))
        tensor([[0.3333, 1.0000]])
    """
    b1 = check_boxes(boxes1, "boxes1")
    b2 = check_boxes(boxes2, "boxes2")
    dtype = torch.promote_types(torch.promote_types(b1.dtype, b2.dtype), torch.float32)
    return _iou_unchecked(b1.to(dtype), b2.to(dtype))


def _check_gt_boxes(gt_boxes: Union[TensorLike, Sequence[TensorLike]], n: int) -> Tuple[Tensor, np.ndarray]:
    """Flatten ``gt_boxes`` (``N×4``, ``N×M×4`` or a sequence of ``M_i×4``) to ``K×4`` float64 and ``N`` counts."""
    if isinstance(gt_boxes, (Tensor, np.ndarray)):
        tensor = check_tensor(gt_boxes, "gt_boxes", ndim=(2, 3), kind="real", last_dim=4)
        if tensor.shape[0] != n:
            raise ValueError(f"`pred_boxes` and `gt_boxes` must have the same length, got {n} and {tensor.shape[0]}")
        flat = check_boxes(tensor.reshape(-1, 4), "gt_boxes").to(torch.float64)
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
        if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.is_complex():
            check_boxes(boxes, f"gt_boxes[{i}]")  # raises the named shape / dtype error
        items.append(boxes.to(torch.float64))
    flat = torch.cat(items)
    counts = np.array([b.shape[0] for b in items], dtype=np.int64)
    # Finiteness and corner order checked once for all boxes; the first offending image is named.
    bad = ~torch.isfinite(flat).all(dim=1) | (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])
    if bool(bad.any()):
        first = int(np.searchsorted(np.cumsum(counts), int(bad.nonzero()[0, 0]), side="right"))
        check_boxes(items[first], f"gt_boxes[{first}]")
    return flat, counts


def corloc(
    pred_boxes: TensorLike,
    gt_boxes: Union[TensorLike, Sequence[TensorLike]],
    iou_threshold: float = 0.5,
    reduce: bool = True,
) -> Union[float, Tensor]:
    r"""CorLoc: share of images whose predicted box overlaps a ground-truth box with IoU >= ``iou_threshold``.

    Each row is one (image, class) pair: one predicted box for the target class, and the ground-truth boxes of that
    class in that image. The pair is a hit when the IoU with *any* of its ground-truth boxes reaches the threshold.
    A pair with no ground-truth box (``0×4``) is a miss.

    Args:
        pred_boxes (Tensor): ``N×4`` predicted boxes ``(x1, y1, x2, y2)``.
        gt_boxes (Tensor or sequence of Tensor): ``N×4`` (one ground-truth box per pair), ``N×M×4``, or a sequence
            of ``N`` tensors shaped ``M_i×4`` (a single box may be given as a length-4 vector).
        iou_threshold (float, optional): minimum IoU for a hit, in ``[0, 1]``. Default: 0.5.
        reduce (bool, optional): return the fraction of hits (``True``) or the per-pair hits. Default: True.

    Returns:
        float or Tensor: the CorLoc fraction in ``[0, 1]``, or a bool tensor of ``N`` hits.

    Example::

        >>> import torch
        >>> pred = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
        >>> gt = [torch.tensor([[20., 20., 30., 30.], [1., 1., 10., 10.]]), torch.tensor([[5., 0., 15., 10.]])]
        >>> corloc(pred, gt)
        0.5
        >>> corloc(pred, gt, reduce=False)
        tensor([ True, False])
    """
    pred = check_boxes(pred_boxes, "pred_boxes").to(torch.float64)
    n = pred.shape[0]
    if n == 0:
        raise ValueError("`pred_boxes` must hold at least one box")
    flat, counts = _check_gt_boxes(gt_boxes, n)
    flat = flat.to(pred.device)
    threshold = _check_scalar(iou_threshold, "iou_threshold", low=0.0, high=1.0)

    owner = torch.from_numpy(np.repeat(np.arange(n), counts)).to(pred.device)  # image index of each gt box
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    hits = torch.zeros(n, dtype=torch.bool, device=pred.device)
    # Blocks of images: each block's IoU matrix is (images in block) × (their gt boxes); keep each gt box's own row.
    for start in range(0, n, _BOX_CHUNK):
        stop = min(start + _BOX_CHUNK, n)
        gt_block = flat[offsets[start] : offsets[stop]]
        if gt_block.shape[0] == 0:
            continue
        rows = owner[offsets[start] : offsets[stop]] - start
        iou = _iou_unchecked(pred[start:stop], gt_block)
        own = iou[rows, torch.arange(gt_block.shape[0], device=pred.device)]
        block_hits = torch.zeros(stop - start, dtype=torch.bool, device=pred.device)
        block_hits[rows[own >= threshold]] = True
        hits[start:stop] = block_hits
    return float(hits.double().mean()) if reduce else hits


# --------------------------------------------------------------------------------------------------------------------
# Pointing games
# --------------------------------------------------------------------------------------------------------------------


def pointing_game(
    saliency: TensorLike,
    masks: TensorLike,
    tolerance: float = 15.0,
    labels: Optional[TensorLike] = None,
    reduce: bool = True,
) -> Union[float, Tensor]:
    r"""Pointing game (Zhang et al. 2016): does the saliency maximum fall on (or near) the object?

    For each image the maximum of the saliency map is located; ties are broken by taking the *first* maximum in
    row-major order (``torch.argmax`` of the flattened map), so a constant map points at pixel ``(0, 0)``. The image is
    a hit when the Euclidean distance between that pixel's centre and the nearest mask pixel's centre is
    ``<= tolerance`` (computed with :func:`scipy.ndimage.distance_transform_edt` of the mask's complement).

    Accuracy follows TorchRay: with ``labels``, the mean over classes of ``hits / (hits + misses)`` (every class
    weighted equally); without, the mean over images.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1); each must contain at least one pixel.
            A box can be turned into a mask with :func:`boxes_to_masks`.
        tolerance (float, optional): hit radius in pixels, ``>= 0``. Default: 15.
        labels (Tensor, optional): ``N`` integer class ids, for the class-mean accuracy. Default: None.
        reduce (bool, optional): return the accuracy (``True``) or the per-image hits. Default: True.

    Returns:
        float or Tensor: the accuracy in ``[0, 1]``, or a bool tensor of ``N`` hits.

    Example::

        >>> import torch
        >>> saliency = torch.zeros(2, 32, 32)
        >>> saliency[0, 5, 20] = 1.0   # 14 px right of the mask's last column (x = 6)
        >>> saliency[1, 5, 22] = 1.0   # 16 px away
        >>> masks = torch.zeros(2, 32, 32, dtype=torch.bool); masks[:, :, :7] = True
        >>> pointing_game(saliency, masks, reduce=False)
        tensor([ True, False])
        >>> pointing_game(saliency, masks, labels=torch.tensor([0, 1]))
        0.5
    """
    sal = _check_maps(saliency, "saliency")
    gt = _check_masks(masks, "masks")
    _check_pair(sal, "saliency", gt, "masks")
    tol = _check_scalar(tolerance, "tolerance", low=0.0)
    n, height, width = sal.shape
    label_t = _check_labels(labels, "labels", n) if labels is not None else None
    empty = ~gt.flatten(1).any(dim=1)
    if bool(empty.any()):
        raise ValueError(f"`masks` must not be empty; empty masks at indices {empty.nonzero().flatten().tolist()}")

    flat_sal = sal.flatten(1)
    if flat_sal.dtype == torch.bool:
        flat_sal = flat_sal.to(torch.uint8)
    peak = flat_sal.argmax(dim=1).cpu()  # first maximum in row-major order
    ys, xs = (peak // width).tolist(), (peak % width).tolist()
    gt_np = gt.cpu().numpy()
    hits = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        if gt_np[i, ys[i], xs[i]]:
            hits[i] = True
        else:
            distance = ndimage.distance_transform_edt(~gt_np[i])
            hits[i] = bool(distance[ys[i], xs[i]] <= tol)
    hits = hits.to(sal.device)
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
    r"""Energy-based pointing game (Score-CAM): share of the saliency mass that lies inside the ground truth.

    The saliency is clamped at 0 first (negative evidence is not "energy"), then per image
    ``sum(S · G) / sum(S)``; an all-zero (or all-negative) map scores 0.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1), e.g. from :func:`boxes_to_masks`.
        reduce (bool, optional): return the mean over images (``True``) or the per-image values. Default: True.

    Returns:
        float or Tensor: the mean energy fraction, or an ``N`` float64 tensor of fractions in ``[0, 1]``.

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[3., 1.], [0., -5.]]])
        >>> mask = torch.tensor([[[True, False], [False, True]]])
        >>> energy_pointing_game(saliency, mask)
        0.75
    """
    def energy(sal: Tensor, gt: Tensor) -> Tensor:
        positive = sal.to(torch.float64).clamp(min=0)
        return _safe_div((positive * gt).sum(dim=1), positive.sum(dim=1))

    return _reduce_mean(_per_image(saliency, masks, energy), reduce)


# --------------------------------------------------------------------------------------------------------------------
# Salient-object metrics
# --------------------------------------------------------------------------------------------------------------------


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
    return _safe_div((1.0 + beta2) * precision * recall, beta2 * precision + recall)


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
    * **adaptive F**: per image, threshold ``min(2 · mean(map), 1)``; ``F`` per image, averaged over images.

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
    sal = _check_maps(saliency, "saliency")
    gt = _check_masks(masks, "masks")
    _check_pair(sal, "saliency", gt, "masks")
    b2 = _check_scalar(beta2, "beta2", low=0.0)
    steps = int(_check_scalar(n_thresholds, "n_thresholds", low=2, integer=True))
    empty = ~gt.flatten(1).any(dim=1)
    if bool(empty.any()):
        raise ValueError(f"`masks` must not be empty; empty masks at indices {empty.nonzero().flatten().tolist()}")

    sal, gt = sal.flatten(1), gt.flatten(1)
    n, pixels = sal.shape
    device = sal.device
    thresholds = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=device)
    precision_sum = torch.zeros(steps, dtype=torch.float64, device=device)
    recall_sum = torch.zeros(steps, dtype=torch.float64, device=device)
    adaptive = torch.empty(n, dtype=torch.float64, device=device)
    for part in _chunks(n, pixels):
        values, truth = _normalise(sal[part]), gt[part]
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
        precision_sum += _safe_div(true_pos, predicted).sum(dim=0)
        recall_sum += (true_pos / positives).sum(dim=0)

        level = (2.0 * values.mean(dim=1, keepdim=True)).clamp(max=1.0)
        pred = values >= level
        tp = (pred & truth).sum(dim=1).double()
        p_img = _safe_div(tp, pred.sum(dim=1).double())
        r_img = tp / positives[:, 0]
        adaptive[part] = _f_beta(p_img, r_img, b2)

    precision = precision_sum / n
    recall = recall_sum / n
    max_f = float(_f_beta(precision, recall, b2).max())
    return FMeasure(max_f, float(adaptive.mean()), precision, recall, thresholds)


def mae(saliency: TensorLike, masks: TensorLike, reduce: bool = True) -> Union[float, Tensor]:
    r"""Mean absolute error between the min-max normalised saliency map and the binary ground truth.

    Each map is normalised to ``[0, 1]`` per image (a constant map becomes all zeros, so it scores the foreground
    fraction of its mask -- also for an all-foreground mask), then ``mean |S - G|``.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1).
        reduce (bool, optional): return the mean over images (``True``) or the per-image values. Default: True.

    Returns:
        float or Tensor: the mean MAE, or an ``N`` float64 tensor of values in ``[0, 1]``.

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[4.0, 2.0], [0.0, 0.0]]])   # normalised: [[1, 0.5], [0, 0]]
        >>> mask = torch.tensor([[[True, True], [False, False]]])
        >>> mae(saliency, mask)
        0.125
    """
    def absolute_error(sal: Tensor, gt: Tensor) -> Tensor:
        return (_normalise(sal) - gt.double()).abs().mean(dim=1)

    return _reduce_mean(_per_image(saliency, masks, absolute_error), reduce)


def mask_iou(pred_masks: TensorLike, gt_masks: TensorLike, reduce: bool = False) -> Union[float, Tensor]:
    r"""Per-image intersection-over-union of boolean masks.

    Two empty masks agree perfectly and score 1.

    Args:
        pred_masks (Tensor): ``N×H×W`` or ``N×1×H×W`` predicted masks (bool or 0/1).
        gt_masks (Tensor): ground-truth masks of the same shape.
        reduce (bool, optional): return the mean IoU (``True``) or the per-image values. Default: False.

    Returns:
        float or Tensor: the mean IoU, or an ``N`` float64 tensor of IoUs in ``[0, 1]``.

    Example::

        >>> import torch
        >>> pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
        >>> gt = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
        >>> mask_iou(pred, gt)
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    pred = _check_masks(pred_masks, "pred_masks")
    gt = _check_masks(gt_masks, "gt_masks")
    _check_pair(pred, "pred_masks", gt, "gt_masks")
    pred, gt = pred.flatten(1), gt.flatten(1)
    inter = (pred & gt).sum(dim=1).double()
    union = (pred | gt).sum(dim=1).double()
    iou = torch.where(union > 0, _safe_div(inter, union), torch.ones_like(union))
    return _reduce_mean(iou, reduce)


# --------------------------------------------------------------------------------------------------------------------
# CAM box heuristic
# --------------------------------------------------------------------------------------------------------------------


def boxes_from_saliency(saliency: TensorLike, threshold: float = 0.2) -> Tensor:
    r"""Boxes from saliency maps with the CAM heuristic (Zhou et al. 2016).

    Per image: keep the pixels with ``S >= threshold · max(S)``, label their connected components with
    :func:`scipy.ndimage.label` using **8-connectivity** (diagonal neighbours connect), keep the component with the
    most pixels (ties: the one whose first pixel comes first in row-major order) and return its tight box. The
    largest component need not contain the global maximum. A map whose maximum is ``<= 0`` has no salient region
    and yields the full-image box ``(0, 0, W, H)``.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        threshold (float, optional): fraction of each map's maximum, in ``[0, 1]``. Default: 0.2.

    Returns:
        Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)`` with exclusive right/bottom edges, on the saliency's
        device.

    Example::

        >>> import torch
        >>> saliency = torch.zeros(1, 6, 8)
        >>> saliency[0, 0, 0] = 1.0            # the maximum, a single pixel
        >>> saliency[0, 2:5, 3:7] = 0.5        # a larger blob above 0.2 · max
        >>> boxes_from_saliency(saliency)
        tensor([[3., 2., 7., 5.]])
    """
    sal = _check_maps(saliency, "saliency")
    frac = _check_scalar(threshold, "threshold", low=0.0, high=1.0)
    n, height, width = sal.shape
    values = sal.to(torch.float64).cpu()
    peak = values.flatten(1).amax(dim=1)
    keep = (values >= (frac * peak)[:, None, None]).numpy()
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity
    component = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        if peak[i] <= 0:
            component[i] = True
            continue
        labelled, count = ndimage.label(keep[i], structure=structure)
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        sizes[0] = 0
        component[i] = labelled == int(np.argmax(sizes))
    return masks_to_boxes(torch.from_numpy(component)).to(sal.device)


# --------------------------------------------------------------------------------------------------------------------
# Accuracy binned by ROI size (Eppel, Tables 1-4)
# --------------------------------------------------------------------------------------------------------------------


def _format_edge(edge: float) -> str:
    return str(int(edge)) if float(edge).is_integer() else f"{edge:g}"


@dataclass
class BinnedAccuracy:
    """Classification accuracy binned by ROI size; returned by :func:`binned_accuracy`.

    Attributes:
        edges (numpy.ndarray): ``B+1`` bin edges; bin ``b`` is ``[edges[b], edges[b+1])``.
        counts (numpy.ndarray): ``B`` number of images per bin.
        per_image (numpy.ndarray): ``B`` accuracy over the bin's images (NaN for an empty bin).
        class_mean (numpy.ndarray): ``B`` mean over the classes present in the bin of each class's accuracy
            (every class weighted equally; NaN for an empty bin).
        overall_per_image (float): accuracy over all images.
        overall_class_mean (float): mean over all classes of each class's accuracy over all images.
    """

    edges: np.ndarray
    counts: np.ndarray
    per_image: np.ndarray
    class_mean: np.ndarray
    overall_per_image: float
    overall_class_mean: float

    def to_markdown(self, digits: int = 1, skip_empty: bool = False) -> str:
        """Markdown table in the layout of the paper's Tables 1-4 (accuracies in percent).

        Rows are the size ranges (``"0-1000"``, ...), then an ``all sizes`` row with the overall values; columns are
        the image count, the class-mean accuracy and the per-image accuracy. Empty bins show ``-``.

        Args:
            digits (int, optional): decimals of the percentages. Default: 1.
            skip_empty (bool, optional): leave out bins without images. Default: False.

        Returns:
            str: the table, one row per line.
        """

        def pct(value: float) -> str:
            return "-" if math.isnan(value) else f"{100.0 * value:.{digits}f}%"

        lines = [
            "| ROI size (px) | count | class-mean acc | per-image acc |",
            "|---|---:|---:|---:|",
        ]
        for b in range(len(self.counts)):
            if skip_empty and self.counts[b] == 0:
                continue
            size = f"{_format_edge(self.edges[b])}-{_format_edge(self.edges[b + 1])}"
            lines.append(
                f"| {size} | {int(self.counts[b])} | {pct(self.class_mean[b])} | {pct(self.per_image[b])} |"
            )
        lines.append(
            f"| all sizes | {int(self.counts.sum())} | {pct(self.overall_class_mean)} | "
            f"{pct(self.overall_per_image)} |"
        )
        return "\n".join(lines)


def binned_accuracy(
    predictions: TensorLike,
    labels: TensorLike,
    roi_sizes: TensorLike,
    bin_edges: Sequence[float] = PAPER_ROI_BINS,
    num_classes: Optional[int] = None,
) -> BinnedAccuracy:
    r"""Classification accuracy binned by ROI size, class-mean and per-image (Eppel, Tables 1-4).

    Each image falls into the bin ``[lo, hi)`` containing its ROI size. Per bin, the per-image accuracy is the share
    of correct predictions; the class-mean accuracy is the mean, over the classes present in the bin, of each
    class's accuracy within the bin (every class weighted equally, as in the paper's Tables 1-2).

    Args:
        predictions (Tensor): ``N`` predicted class ids, or ``N×C`` scores/logits (their argmax is used).
        labels (Tensor): ``N`` true class ids (``>= 0``).
        roi_sizes (Tensor): ``N`` ROI sizes (pixel counts, ``>= 0``), each inside ``[bin_edges[0], bin_edges[-1])``.
        bin_edges (sequence of float, optional): strictly increasing edges. Default: :data:`PAPER_ROI_BINS`.
        num_classes (int, optional): if given, ``labels`` and ``predictions`` must lie in ``[0, num_classes)``.

    Returns:
        BinnedAccuracy: per-bin counts and accuracies, overall accuracies, and ``to_markdown()``.

    Example::

        >>> result = binned_accuracy(predictions=[0, 1, 1, 0, 1], labels=[0, 1, 0, 0, 1],
        ...                          roi_sizes=[10, 500, 1500, 1200, 1800], bin_edges=(0, 1000, 2000))
        >>> result.counts
        array([2, 3])
        >>> print(result.to_markdown())
        | ROI size (px) | count | class-mean acc | per-image acc |
        |---|---:|---:|---:|
        | 0-1000 | 2 | 100.0% | 100.0% |
        | 1000-2000 | 3 | 75.0% | 66.7% |
        | all sizes | 5 | 83.3% | 80.0% |
    """
    preds = check_tensor(predictions, "predictions", ndim=(1, 2))
    label_t = check_tensor(labels, "labels", ndim=1)
    sizes_t = check_tensor(roi_sizes, "roi_sizes", ndim=1)
    check_same_length("predictions", preds, "labels", label_t)
    check_same_length("labels", label_t, "roi_sizes", sizes_t)
    if label_t.shape[0] == 0:
        raise ValueError("`labels` must hold at least one image")
    check_tensor(preds, "predictions", kind="real")
    if preds.dim() == 2:
        preds = preds.argmax(dim=1)
    elif preds.is_floating_point() or preds.dtype == torch.bool:
        raise TypeError(f"`predictions` must be integer class ids (or N×C scores), got {preds.dtype}")
    check_tensor(label_t, "labels", kind="int")
    check_tensor(sizes_t, "roi_sizes", kind="real")
    if sizes_t.dtype == torch.bool:
        raise TypeError("`roi_sizes` must have a numeric dtype, got torch.bool")
    if bool((label_t < 0).any()):
        raise ValueError("`labels` must be >= 0")
    if num_classes is not None:
        classes = int(_check_scalar(num_classes, "num_classes", low=1, integer=True))
        if bool((label_t >= classes).any()):
            raise ValueError(f"`labels` must be < num_classes ({classes})")
        if bool(((preds < 0) | (preds >= classes)).any()):
            raise ValueError(f"`predictions` must lie in [0, num_classes) = [0, {classes})")

    try:
        edges_np = np.asarray(bin_edges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`bin_edges` must be a sequence of numbers: {err}") from None
    edges = check_tensor(edges_np, "bin_edges", ndim=1).numpy()
    if edges.shape[0] < 2 or not bool(np.all(np.diff(edges) > 0)):
        raise ValueError("`bin_edges` must hold at least two strictly increasing values")
    sizes = sizes_t.cpu().to(torch.float64).numpy()
    outside = (sizes < edges[0]) | (sizes >= edges[-1])
    if outside.any():
        raise ValueError(
            f"`roi_sizes` must lie in [{_format_edge(edges[0])}, {_format_edge(edges[-1])}); "
            f"{int(outside.sum())} value(s) outside, e.g. {sizes[outside][0]:g}"
        )

    correct = (preds.cpu().long() == label_t.cpu().long()).numpy().astype(np.float64)
    _, cls = np.unique(label_t.cpu().numpy(), return_inverse=True)
    cls = cls.ravel()
    n_bins, n_cls = edges.shape[0] - 1, int(cls.max()) + 1
    which = np.searchsorted(edges, sizes, side="right") - 1
    grid_n = np.zeros((n_bins, n_cls))
    grid_c = np.zeros((n_bins, n_cls))
    np.add.at(grid_n, (which, cls), 1.0)
    np.add.at(grid_c, (which, cls), correct)
    counts = grid_n.sum(axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(counts > 0, grid_c.sum(axis=1) / np.maximum(counts, 1), np.nan)
        class_acc = np.where(grid_n > 0, grid_c / np.maximum(grid_n, 1), np.nan)
        present = (grid_n > 0).sum(axis=1)
        class_mean = np.where(present > 0, np.nansum(class_acc, axis=1) / np.maximum(present, 1), np.nan)
    totals = grid_n.sum(axis=0)
    overall_class_mean = float(np.mean(grid_c.sum(axis=0)[totals > 0] / totals[totals > 0]))
    return BinnedAccuracy(
        edges=edges,
        counts=counts,
        per_image=per_image,
        class_mean=class_mean,
        overall_per_image=float(correct.mean()),
        overall_class_mean=overall_class_mean,
    )
