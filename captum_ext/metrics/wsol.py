"""Weakly supervised object localisation metrics of Choe et al., *Evaluating Weakly Supervised Object Localization
Methods Right*, CVPR 2020: MaxBoxAccV2 (boxes, a threshold sweep over all components) and PxAP (masks, the
pixel-wise average precision).

Both are dataset-level quantities built from integer counts (correct pairs per (IoU, threshold), pixel histograms per
threshold), so the private helpers here return those counts: the streaming metrics of
:mod:`captum_ext.metrics.streaming` sum them over batches and processes and finish with the same code.
"""
from __future__ import annotations

import numbers
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from captum_ext._utils.boxes import box_iou_matrix
from captum_ext._utils.maps import minmax_normalise, safe_div
from captum_ext._utils.validation import check_scalar, check_tensor
from captum_ext.metrics import _component_tree
from captum_ext.metrics._batching import checked_saliency_and_masks, chunks
from captum_ext.metrics._checks import TensorLike, check_maps, device_path
from captum_ext.metrics.boxes import _check_gt_boxes, _check_nonempty_regions

__all__ = ["MaxBoxAccResult", "PxAPResult", "maxboxacc_v2", "pxap"]

# 8-connectivity, like boxes_from_saliency and the outer contours cv2.findContours traces in the reference code.
_EIGHT = np.ones((3, 3), dtype=bool)
# Up to this many components, ndimage.find_objects is the faster way to their boxes; beyond, a vectorised
# per-label min / max over the pixels is (it costs per pixel, find_objects per component). Both are exact.
_FEW_COMPONENTS = 64


class MaxBoxAccResult(NamedTuple):
    """Result of :func:`maxboxacc_v2` (``reduce=False``) and :meth:`MaxBoxAccV2Metric.compute_result`.

    Attributes:
        value (float): MaxBoxAccV2, the mean of ``box_acc`` over the IoU thresholds.
        box_acc (Tensor): ``D`` float64, BoxAcc(δ) = the best share of correct pairs over the threshold sweep.
        best_thresholds (Tensor): ``D`` float64, the (smallest) map threshold reaching ``box_acc`` for each δ.
        accuracy (Tensor): ``D×T`` float64, the share of correct pairs at each (δ, τ).
        thresholds (Tensor): ``T`` float64 map thresholds τ.
        iou_thresholds (Tensor): ``D`` float64 IoU thresholds δ.
    """

    value: float
    box_acc: Tensor
    best_thresholds: Tensor
    accuracy: Tensor
    thresholds: Tensor
    iou_thresholds: Tensor


class PxAPResult(NamedTuple):
    """Result of :func:`pxap` (``reduce=False``) and :meth:`PxAPMetric.compute_result`.

    Attributes:
        value (float): PxAP, ``Σ precision · Δrecall`` over the thresholds in descending order.
        precision (Tensor): ``C`` float64 pixel precision at each curve threshold (0 where nothing is predicted).
        recall (Tensor): ``C`` float64 pixel recall at each curve threshold.
        thresholds (Tensor): ``C`` float64 curve thresholds, ascending: the sweep, plus 1.0 when it lacks it.
    """

    value: float
    precision: Tensor
    recall: Tensor
    thresholds: Tensor


def _check_thresholds(value: Optional[TensorLike], name: str = "thresholds") -> Tensor:
    """The map-threshold sweep as a float64 CPU tensor: ``None`` gives ``k / 100`` for ``k = 0 .. 99`` (the
    reference's ``cam_curve_interval = 0.01``), anything else must be 1-D, non-empty, strictly increasing, in
    ``[0, 1]``."""
    if value is None:
        return torch.arange(100, dtype=torch.float64) / 100
    numbers_only = isinstance(value, (list, tuple)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value
    )
    if numbers_only:
        # Python floats are float64: torch.as_tensor would round them to float32 (0.2 -> 0.2000000030), and a
        # pixel at exactly 0.2 would then fall below the threshold.
        value = torch.tensor(value, dtype=torch.float64)
    sweep = check_tensor(value, name, ndim=1, kind="real")
    if sweep.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold numbers, got dtype torch.bool")
    if sweep.is_floating_point() and sweep.dtype != torch.float64:
        # torch.arange(100) / 100 is float32: its 0.2 is 0.2000000030, and a pixel at exactly 0.2 (51/255 of a
        # uint8 map) would fall below it.
        raise TypeError(f"`{name}` must be float64 (or a list of floats): {sweep.dtype} values are not the "
                        f"decimals they print as (0.2 is 0.2000000030), got dtype {sweep.dtype}")
    sweep = sweep.to(device="cpu", dtype=torch.float64)
    if sweep.numel() == 0:
        raise ValueError(f"`{name}` must hold at least one threshold")
    if bool((sweep < 0).any()) or bool((sweep > 1).any()):
        raise ValueError(f"`{name}` must lie in [0, 1] (maps are min-max normalised), got {sweep.tolist()}")
    if bool((sweep.diff() <= 0).any()):
        raise ValueError(f"`{name}` must be strictly increasing, got {sweep.tolist()}")
    return sweep


def _check_iou_thresholds(value: Sequence[float], name: str = "iou_thresholds") -> Tensor:
    """The IoU thresholds δ as a float64 CPU tensor; each in ``(0, 1]`` (at δ = 0 every pair would be correct)."""
    if isinstance(value, (Tensor, np.ndarray)):
        value = value.flatten().tolist()
    if not isinstance(value, (list, tuple)):  # a bare number is the most likely slip: (0.5,) was meant
        raise TypeError(f"`{name}` must be a sequence of numbers (e.g. (0.5,)), got {type(value).__name__} "
                        f"{value!r}")
    if len(value) == 0:
        raise ValueError(f"`{name}` must be a non-empty sequence of numbers, got {value!r}")
    return torch.tensor(
        [check_scalar(v, f"{name}[{i}]", low=0.0, low_open=True, high=1.0) for i, v in enumerate(value)],
        dtype=torch.float64,
    )


def _curve_thresholds(thresholds: Tensor) -> Tensor:
    """PxAP's curve thresholds: the sweep, plus 1.0 when it ends below (the reference's extra ``[1, 2)`` bin, which
    holds each map's maximum)."""
    if float(thresholds[-1]) < 1.0:
        return torch.cat([thresholds, thresholds.new_ones(1)])
    return thresholds


def _component_boxes(region: np.ndarray) -> np.ndarray:
    """``K×4`` float64 tight boxes (exclusive edges) of the 8-connected components of an ``H×W`` bool region."""
    labelled, count = ndimage.label(region, structure=_EIGHT)
    if count <= _FEW_COMPONENTS:
        rows = [[cols.start, rows_.start, cols.stop, rows_.stop] for rows_, cols in ndimage.find_objects(labelled)]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    # Many components (a noisy map, e.g. raw gradients, at a high threshold: thousands): per-label min / max of the
    # pixel coordinates, vectorised, instead of one Python slice object per component.
    height, width = labelled.shape
    flat = labelled.ravel()
    position = np.flatnonzero(flat)
    label = flat[position] - 1
    ys, xs = np.divmod(position, width)
    boxes = np.empty((count, 4), dtype=np.int64)
    boxes[:, :2] = (width, height)
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], label, xs)
    np.minimum.at(boxes[:, 1], label, ys)
    np.maximum.at(boxes[:, 2], label, xs)
    np.maximum.at(boxes[:, 3], label, ys)
    boxes[:, 2:] += 1  # exclusive right / bottom edges
    return boxes.astype(np.float64)


def iou_curve_by_regions(normalised: np.ndarray, gt: Tensor, thresholds: np.ndarray) -> Tensor:
    """For each τ, the best IoU between a component box of ``{map >= τ}`` and a ground-truth box (0: empty region),
    labelling each distinct region with SciPy: the reference for the component tree.

    Args:
        normalised (np.ndarray): ``H×W`` map in ``[0, 1]``.
        gt (Tensor): ``K×4`` float64 ground-truth boxes on the CPU.
        thresholds (np.ndarray): ``T`` float64 ascending thresholds.

    Returns:
        Tensor: ``T`` float64 IoUs.
    """
    ordered = np.sort(normalised, axis=None)
    sizes = ordered.size - np.searchsorted(ordered, thresholds, side="left")  # |{map >= τ}| per τ
    # The regions are nested (they shrink as τ grows), so two thresholds keeping as many pixels keep the same
    # pixels: label each distinct region once. Maps with few distinct values (CAMs upsampled from 7×7) gain most.
    region_of = np.empty(len(thresholds), dtype=np.int64)
    boxes: List[np.ndarray] = []
    owners: List[np.ndarray] = []
    distinct, last_size = -1, -1
    for t, size in enumerate(sizes.tolist()):
        if size != last_size:
            distinct, last_size = distinct + 1, size
            if size > 0:
                found = _component_boxes(normalised >= thresholds[t])
                boxes.append(found)
                owners.append(np.full(len(found), distinct))
        region_of[t] = distinct
    best = torch.zeros(distinct + 1, dtype=torch.float64)
    if boxes:
        iou = box_iou_matrix(torch.from_numpy(np.concatenate(boxes)), gt).amax(dim=1)
        best.scatter_reduce_(0, torch.from_numpy(np.concatenate(owners)), iou, reduce="amax")
    return best[torch.from_numpy(region_of)]


def _iou_curves(saliency: Tensor, gt_boxes: Sequence[Tensor], thresholds: Tensor) -> Tensor:
    """``N×T`` float64: per pair and map threshold, the best IoU of a component box with a ground-truth box.

    Args:
        saliency (Tensor): checked ``N×H×W`` maps (min-max normalised here, per map).
        gt_boxes (sequence of Tensor): ``N`` checked ``K_i×4`` ground-truth boxes, ``K_i >= 1``.
        thresholds (Tensor): checked ``T`` sweep (see :func:`_check_thresholds`).

    Returns:
        Tensor: ``N×T`` float64 IoUs in ``[0, 1]`` on the CPU.
    """
    if device_path(saliency):  # maps on an accelerator are scored there, with the same values
        from captum_ext.metrics._on_device import iou_curves

        return iou_curves(saliency, gt_boxes, thresholds).cpu()
    n, height, width = saliency.shape
    sweep = thresholds.numpy()
    out = torch.empty(n, len(sweep), dtype=torch.float64)
    for part in chunks(n, height * width):
        normalised = minmax_normalise(saliency[part]).cpu().numpy()
        gts = [gt_boxes[i].to(device="cpu", dtype=torch.float64) for i in range(n)[part]]
        if _component_tree.available():  # the maps' trees on the threads torch may use
            out[part] = _component_tree.iou_curves(normalised, gts, sweep, torch.get_num_threads())
            continue
        for row, gt in enumerate(gts):
            out[part.start + row] = iou_curve_by_regions(normalised[row], gt, sweep)
    return out


def _correct_counts(curves: Tensor, iou_thresholds: Tensor) -> Tensor:
    """``D×T`` int64: how many pairs (rows of the ``N×T`` ``curves``) are correct at each (δ, τ)."""
    return (curves.unsqueeze(0) >= iou_thresholds.view(-1, 1, 1)).sum(dim=1)


def _boxacc_result(correct: Tensor, total: int, thresholds: Tensor, iou_thresholds: Tensor) -> MaxBoxAccResult:
    """:class:`MaxBoxAccResult` from the ``D×T`` correct counts over ``total`` pairs (NaN everywhere if none)."""
    correct = correct.to(device="cpu", dtype=torch.float64)
    if total == 0:
        nan = torch.full((len(iou_thresholds),), float("nan"), dtype=torch.float64)
        return MaxBoxAccResult(float("nan"), nan, nan.clone(), correct * float("nan"), thresholds, iou_thresholds)
    accuracy = correct / total
    box_acc = accuracy.amax(dim=1)
    best = torch.from_numpy(np.argmax(accuracy.numpy(), axis=1))  # numpy's argmax: the first (smallest) best τ
    return MaxBoxAccResult(float(box_acc.mean()), box_acc, thresholds[best], accuracy, thresholds, iou_thresholds)


def _pxap_histograms(saliency: Tensor, masks: Tensor, curve: Tensor) -> Tuple[Tensor, Tensor]:
    """Foreground and background pixel histograms (``C+1`` int64 each, on the CPU) of the min-max normalised maps:
    bin ``b`` counts the pixels at or above exactly ``b`` of the ``C`` curve thresholds.

    Args:
        saliency (Tensor): checked ``N×H×W`` maps.
        masks (Tensor): checked ``N×H×W`` bool ground truth.
        curve (Tensor): ``C`` ascending curve thresholds (see :func:`_curve_thresholds`).

    Returns:
        tuple of Tensor: ``(foreground, background)`` counts.
    """
    n, height, width = saliency.shape
    size = len(curve) + 1
    edges = curve.to(saliency.device)
    foreground = torch.zeros(size, dtype=torch.int64)
    background = torch.zeros(size, dtype=torch.int64)
    for part in chunks(n, height * width):
        normalised = minmax_normalise(saliency[part]).flatten()
        truth = masks[part].flatten()
        if not device_path(normalised) and _component_tree.available():
            counts = _component_tree.joint_histogram(normalised.numpy(), truth.cpu().numpy(), curve.numpy(),
                                                     torch.get_num_threads())
            joint = torch.from_numpy(counts)
        else:  # one histogram of (bin, inside the mask) pairs: no boolean selection of the pixels
            bins = torch.bucketize(normalised, edges, right=True)
            joint = torch.bincount(bins * 2 + truth, minlength=2 * size).view(size, 2).cpu()
        foreground += joint[:, 1]
        background += joint[:, 0]
    return foreground, background


def _pxap_result(foreground: Tensor, background: Tensor, curve: Tensor) -> PxAPResult:
    """:class:`PxAPResult` from pooled histograms (see :func:`_pxap_histograms`); NaN if no foreground pixel."""
    # Predicted at curve threshold j <=> bin > j: reverse cumulative sums, dropping bin 0 (below every threshold).
    true_pos = foreground.cpu().flip(0).cumsum(0).flip(0)[1:].double()
    false_pos = background.cpu().flip(0).cumsum(0).flip(0)[1:].double()
    positives = float(foreground.sum())
    if positives == 0:
        nan = torch.full((len(curve),), float("nan"), dtype=torch.float64)
        return PxAPResult(float("nan"), nan, nan.clone(), curve)
    precision = safe_div(true_pos, true_pos + false_pos)
    recall = true_pos / positives
    # Walk the thresholds downwards from "nothing predicted" (recall 0): each step adds precision × recall gained.
    gained = torch.diff(recall.flip(0), prepend=recall.new_zeros(1))
    return PxAPResult(float((precision.flip(0) * gained).sum()), precision, recall, curve)


def maxboxacc_v2(
    saliency: TensorLike,
    gt_boxes: Union[TensorLike, Sequence[TensorLike]],
    thresholds: Optional[TensorLike] = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    reduce: bool = True,
) -> Union[float, MaxBoxAccResult]:
    r"""MaxBoxAccV2 (Choe et al., *Evaluating Weakly Supervised Object Localization Methods Right*, CVPR 2020).

    Each map is min-max normalised to ``[0, 1]`` (a constant map becomes zeros). For each map threshold τ of the
    sweep, the candidate boxes of a pair are the tight boxes of **all** 8-connected components of ``{map >= τ}``;
    the pair is correct at IoU threshold δ when any candidate has IoU ``>= δ`` with any of its ground-truth boxes
    (no candidate -- an empty region -- is never correct). ``BoxAcc(δ)`` is the best share of correct pairs over
    the sweep, the same τ for the whole dataset, and MaxBoxAccV2 is the mean of ``BoxAcc(δ)`` over δ.

    Differences from the reference code, all deliberate: fractions in ``[0, 1]`` rather than percent; the map is
    compared in float64 rather than quantised to ``uint8``; components, not ``cv2`` contours (a hole's inner
    contour adds no candidate box); boxes use this package's exclusive edges and IoU (:func:`box_iou`), not the
    ``+1`` inclusive-pixel convention.

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        gt_boxes (Tensor or sequence of Tensor): ``N×4``, ``N×M×4`` or ``N`` tensors ``K_i×4`` of ground-truth
            boxes ``(x1, y1, x2, y2)`` in map pixels, as in :func:`corloc`; every pair needs a box of positive area.
        thresholds (Tensor, optional): ``T`` map thresholds, strictly increasing in ``[0, 1]``. Default: ``None``,
            ``0.00, 0.01, ..., 0.99`` (``k / 100``).
        iou_thresholds (sequence of float, optional): IoU thresholds δ, each in ``(0, 1]``. Default:
            ``(0.3, 0.5, 0.7)``.
        reduce (bool, optional): return MaxBoxAccV2 (``True``) or the full :class:`MaxBoxAccResult`.
            Default: True.

    Returns:
        float or MaxBoxAccResult: MaxBoxAccV2 in ``[0, 1]``, or the per-δ BoxAcc, best τ and accuracy curves.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes or lengths disagree, a map holds NaN/inf, a threshold is out of range or the
            sweep is not increasing, or a pair has no ground-truth box of positive area, or none overlapping the
            map (its index is listed).

    Example::

        >>> import torch
        >>> saliency = torch.zeros(1, 4, 8)
        >>> saliency[0, 1:3, 1:3] = 1.0      # two blobs: two components, two candidate boxes
        >>> saliency[0, 1:3, 5:7] = 0.5
        >>> gt = torch.tensor([[5., 1., 7., 3.]])
        >>> result = maxboxacc_v2(saliency, gt, thresholds=[0.0, 0.5, 0.75], reduce=False)
        >>> result.accuracy   # τ = 0: one full-image box; 0.5: both blobs (one matches); 0.75: only the left one
        tensor([[0., 1., 0.],
                [0., 1., 0.],
                [0., 1., 0.]], dtype=torch.float64)
        >>> result.value, result.best_thresholds.tolist()
        (1.0, [0.5, 0.5, 0.5])
    """
    sal = check_maps(saliency, "saliency")
    n = sal.shape[0]
    sized = isinstance(gt_boxes, (list, tuple)) or (isinstance(gt_boxes, (Tensor, np.ndarray)) and gt_boxes.ndim > 0)
    if sized and len(gt_boxes) != n:  # checked here: corloc's own message would name `pred_boxes`
        raise ValueError(f"`saliency` and `gt_boxes` must have the same length, got {n} and {len(gt_boxes)}")
    flat, counts = _check_gt_boxes(gt_boxes, n)
    owner = torch.from_numpy(np.repeat(np.arange(n), counts)).to(flat.device)
    _check_nonempty_regions(flat, owner, n, tuple(sal.shape[-2:]))
    sweep = _check_thresholds(thresholds)
    ious = _check_iou_thresholds(iou_thresholds)
    curves = _iou_curves(sal, torch.split(flat, counts.tolist()), sweep)
    result = _boxacc_result(_correct_counts(curves, ious), n, sweep, ious)
    return result.value if reduce else result


def pxap(
    saliency: TensorLike, masks: TensorLike, thresholds: Optional[TensorLike] = None, reduce: bool = True
) -> Union[float, PxAPResult]:
    r"""PxAP, the pixel average precision (Choe et al., *Evaluating Weakly Supervised Object Localization Methods
    Right*, CVPR 2020).

    Each map is min-max normalised to ``[0, 1]`` (a constant map becomes zeros). The foreground and background
    pixels of the whole dataset are pooled; at each curve threshold τ (the sweep, plus 1.0 when it lacks it, like
    the reference's ``[1, 2)`` bin) the pixels with ``map >= τ`` are predicted foreground, giving the pixel precision
    ``TP / (TP + FP)`` (0 when nothing is predicted) and recall ``TP / (TP + FN)``. Walking the thresholds from the
    highest down, starting at recall 0, ``PxAP = Σ precision(τ) · (recall(τ) - recall(previous τ))``. A perfect map
    (1 on the object, 0 elsewhere) scores 1; the reversed map scores the foreground share of all pixels (everything
    is found only at τ = 0).

    Args:
        saliency (Tensor): ``N×H×W`` or ``N×1×H×W`` saliency maps.
        masks (Tensor): ground-truth masks of the same shape (bool or 0/1); each must contain at least one pixel
            (the package's empty-ground-truth rule).
        thresholds (Tensor, optional): ``T`` map thresholds, strictly increasing in ``[0, 1]``. Default: ``None``,
            ``0.00, 0.01, ..., 0.99`` (``k / 100``).
        reduce (bool, optional): return PxAP (``True``) or the full :class:`PxAPResult`. Default: True.

    Returns:
        float or PxAPResult: PxAP in ``[0, 1]``, or it with the precision / recall curve.

    Raises:
        TypeError: if an argument has the wrong type or dtype.
        ValueError: if the shapes disagree, a map holds NaN/inf, the sweep is out of ``[0, 1]`` or not increasing,
            or a mask is empty (the message lists the empty images' indices).

    Example::

        >>> import torch
        >>> saliency = torch.tensor([[[1.0, 0.5], [0.5, 0.0]]])
        >>> mask = torch.tensor([[[True, True], [False, False]]])
        >>> result = pxap(saliency, mask, thresholds=[0.0, 0.5], reduce=False)
        >>> result.precision                   # at τ = 0, 0.5, 1
        tensor([0.5000, 0.6667, 1.0000], dtype=torch.float64)
        >>> result.recall
        tensor([1.0000, 1.0000, 0.5000], dtype=torch.float64)
        >>> round(result.value, 4)             # 1 · 0.5 + (2/3) · 0.5 + 0.5 · 0
        0.8333
    """
    sal, gt = checked_saliency_and_masks(saliency, masks)
    curve = _curve_thresholds(_check_thresholds(thresholds))
    result = _pxap_result(*_pxap_histograms(sal, gt, curve), curve)
    return result.value if reduce else result
