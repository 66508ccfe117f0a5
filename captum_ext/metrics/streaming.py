"""Streaming, distributed localisation metrics: ``torchmetrics.Metric`` versions of the pointing games, CorLoc,
MaxBoxAccV2 and PxAP for scoring a whole annotated dataset batch by batch, in one process or several.

The unit is an (image, class) pair: one saliency map ``H×W`` (sizes may differ between pairs; pairs of one size
are scored as one batch by the functional metric) and its :class:`~captum_ext.metrics.ground_truth.GroundTruth`.
Every state is a sum registered with ``dist_reduce_fx="sum"`` -- int64 wherever it counts something, so that the
sum over batches and over processes (torchmetrics syncs at ``compute()``) is exact. Each metric also splits
``update`` in two, for resumable runs: ``statistics(maps, truths, predicted_boxes)`` returns a batch's state deltas
(keyed by state name) and per-pair values without touching the states, and ``update_from_statistics(deltas)``
adds stored deltas; ``update`` is the two in a row. ``compute()`` returns a float64 scalar tensor, NaN when no pair
was scored. Per-pair values are CPU tensors, one entry per pair in input order.

Example::

    >>> import torch
    >>> from captum_ext.metrics import PointingGameMetric
    >>> from captum_ext.metrics.ground_truth import GroundTruth
    >>> saliency = torch.zeros(8, 8); saliency[2, 3] = 1.0
    >>> truth = GroundTruth(category=1, boxes=torch.tensor([[2., 1., 5., 4.]]))
    >>> metric = PointingGameMetric(num_classes=3, tolerance=0)
    >>> deltas, per_pair = metric.statistics([saliency], [truth])
    >>> deltas["hits"], per_pair["pointing_hit"]
    (tensor([0, 1, 0]), tensor([1]))
    >>> metric.update_from_statistics(deltas)
    >>> metric.compute()
    tensor(1., dtype=torch.float64)
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from captum_ext._utils.boxes import paired_box_iou
from captum_ext._utils.validation import check_scalar
from captum_ext.metrics._checks import device_path
from captum_ext.metrics._components import padded_boxes
from captum_ext.metrics._pairs import check_pairs, regions, require_boxes
from captum_ext.metrics._streaming import (
    FIXED_POINT_UNIT,
    Statistics,
    SumMetric,
    exact_float64_sums,
    fixed_point_mean,
    to_fixed_point,
)
# MaxBoxAccV2 and PxAP live in their own module (dataset-level count tables); this module stays their public home.
from captum_ext.metrics._streaming_wsol import MaxBoxAccV2Metric, PxAPMetric
from captum_ext.metrics.cam import boxes_from_saliency
from captum_ext.metrics.ground_truth import GroundTruth
from captum_ext.metrics.pointing import _check_tolerance, energy_pointing_game, pointing_game

__all__ = ["CorLocMetric", "EnergyPointingGameMetric", "MaxBoxAccV2Metric", "PointingGameMetric", "PxAPMetric"]

_NAN = float("nan")


class PointingGameMetric(SumMetric):
    """Streaming :func:`~captum_ext.metrics.pointing_game` with TorchRay's class-mean accuracy.

    A pair is a hit when its map's maximum (first in row-major order) lies within ``tolerance`` px of the ground
    truth: its mask, or the pixels of its boxes when it has no mask. The accuracy is the mean, over the classes
    with at least one pair, of ``hits / pairs``. States: ``hits`` and ``totals``, ``num_classes`` int64 each, and
    ``constant``, the pairs whose map is constant (all zeros, say: a dead Grad-CAM): such a map has no maximum, and
    its first pixel ``(0, 0)`` is taken, a hit for objects in that corner, so a run can say how many there were.
    Per-pair values: ``pointing_hit`` and ``constant_map`` (int64 0/1).

    Args:
        num_classes (int): number of classes; ``GroundTruth.category`` must be a class index in
            ``[0, num_classes)`` (map dataset ids to indices first).
        tolerance (float, optional): hit radius in pixels, ``>= 0``. Default: ``None``, each map's own
            :func:`~captum_ext.metrics.default_tolerance` (15 px at 224 px, scaled with the map's larger side).
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    def __init__(self, num_classes: int, tolerance: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(check_scalar(num_classes, "num_classes", low=1, integer=True))
        self.tolerance = _check_tolerance(tolerance)
        self._sum_state("hits", torch.zeros(self.num_classes, dtype=torch.int64))
        self._sum_state("totals", torch.zeros(self.num_classes, dtype=torch.int64))
        self._sum_state("constant", torch.zeros((), dtype=torch.int64))

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """One batch's contribution, without updating the states.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ground truths.
            predicted_boxes (Tensor, optional): ignored. Default: None.

        Returns:
            tuple of dict: ``({"hits": C int64, "totals": C int64, "constant": int64}, {"pointing_hit": N int64,
            "constant_map": N int64})``.

        Raises:
            ValueError: if a category is outside ``[0, num_classes)`` or a pair's ground truth has no pixel
                (both messages name ``truths`` and the indices), or the inputs are malformed.
        """
        pairs = check_pairs(maps, truths, predicted_boxes)
        outside = [i for i, t in enumerate(pairs.truths) if not 0 <= t.category < self.num_classes]
        if outside:
            raise ValueError(
                f"`truths` categories must be class indices in [0, {self.num_classes}); outside at index(es) {outside}"
            )
        hits = torch.zeros(pairs.count, dtype=torch.int64)
        constant = torch.zeros(pairs.count, dtype=torch.int64)
        for group, region in zip(pairs.groups, regions(pairs)):  # the default tolerance is each map size's own
            flat = group.maps.flatten(1)
            both = torch.stack([pointing_game(group.maps, region, self.tolerance, reduce=False).long(),
                                (flat.amax(1) == flat.amin(1)).long()]).cpu()  # one copy to the host
            hits[group.index], constant[group.index] = both[0], both[1]
        categories = torch.tensor([t.category for t in pairs.truths], dtype=torch.int64)
        deltas = {
            "hits": torch.zeros(self.num_classes, dtype=torch.int64).index_add_(0, categories, hits),
            "totals": torch.bincount(categories, minlength=self.num_classes),
            "constant": constant.sum(),
        }
        return deltas, {"pointing_hit": hits, "constant_map": constant}

    def compute(self) -> Tensor:
        """The class-mean pointing accuracy.

        Returns:
            Tensor: float64 scalar in ``[0, 1]``; NaN before any pair.
        """
        present = self.totals > 0
        if not bool(present.any()):
            return torch.tensor(_NAN, dtype=torch.float64, device=self.totals.device)
        return (self.hits[present].double() / self.totals[present].double()).mean()


#: The fixed-point unit of :class:`EnergyPointingGameMetric`'s summed state.
ENERGY_UNIT = FIXED_POINT_UNIT


class EnergyPointingGameMetric(SumMetric):
    """Streaming :func:`~captum_ext.metrics.energy_pointing_game`: the mean over pairs of the share of the map's
    (clamped at 0) mass inside the ground truth -- its mask, or the pixels of its boxes when it has no mask. A map
    without positive mass (all zeros) scores 0, as in the functional metric. States: ``energy_sum`` and ``pairs``
    (int64). Per-pair value: ``energy`` (float64).

    The sum is kept in fixed point, in units of ``2⁻³²`` (:data:`ENERGY_UNIT`): integer sums do not depend on their
    order, so any number of processes, in any grouping, gives bit-identical results (a float sum would differ in
    the last digits). Each pair's share is rounded to the unit, so the mean is within ``2⁻³³`` of the exact one;
    int64 holds the sum of two billion pairs.

    Args:
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sum_state("energy_sum", torch.zeros((), dtype=torch.int64))
        self._sum_state("pairs", torch.zeros((), dtype=torch.int64))

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """One batch's contribution, without updating the states.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ground truths.
            predicted_boxes (Tensor, optional): ignored. Default: None.

        Returns:
            tuple of dict: ``({"energy_sum": int64 in units of ENERGY_UNIT, "pairs": int64},
            {"energy": N float64})``.

        Raises:
            ValueError: if a pair's ground truth has no pixel (the message names ``truths`` and the indices), or
                the inputs are malformed.
        """
        pairs = check_pairs(maps, truths, predicted_boxes)
        energy = torch.zeros(pairs.count, dtype=torch.float64)
        for group, inside in zip(pairs.groups, regions(pairs)):
            batch, index = group.maps, group.index
            # A float sum's rounding depends on its order, which differs between devices, and the fixed-point state
            # must not: on an accelerator only when every sum is exact in any order, else from a host copy.
            if device_path(batch) and exact_float64_sums(batch):
                energy[index] = energy_pointing_game(batch, inside, reduce=False).cpu()
            else:
                energy[index] = energy_pointing_game(batch.cpu(), inside.cpu(), reduce=False)
        pair_count = torch.tensor(pairs.count, dtype=torch.int64)
        deltas = {"energy_sum": to_fixed_point(energy).sum(), "pairs": pair_count}
        return deltas, {"energy": energy}

    def compute(self) -> Tensor:
        """The mean energy share.

        Returns:
            Tensor: float64 scalar in ``[0, 1]``; NaN before any pair.
        """
        return fixed_point_mean(self.energy_sum, self.pairs)


class CorLocMetric(SumMetric):
    """Streaming :func:`~captum_ext.metrics.corloc`: the share of pairs whose predicted box has IoU ``>= iou`` with
    one of their ground-truth boxes. The predicted box is ``predicted_boxes[i]`` when given, else the CAM box of
    :func:`~captum_ext.metrics.boxes_from_saliency` at ``cam_threshold`` of the map's maximum (largest
    8-connected component). States: ``hits`` and ``total`` (int64). Per-pair values: ``cam_box_iou`` (float64, the
    predicted box's best IoU with a ground-truth box) and ``corloc_hit`` (int64 0/1).

    Args:
        cam_threshold (float, optional): fraction of the maximum for the CAM box, in ``[0, 1]``. Default: 0.2.
        iou (float, optional): IoU needed for a hit, in ``[0, 1]``. Default: 0.5.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    def __init__(self, cam_threshold: float = 0.2, iou: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cam_threshold = check_scalar(cam_threshold, "cam_threshold", low=0.0, high=1.0)
        self.iou = check_scalar(iou, "iou", low=0.0, high=1.0)
        self._sum_state("hits", torch.zeros((), dtype=torch.int64))
        self._sum_state("total", torch.zeros((), dtype=torch.int64))

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """One batch's contribution, without updating the states.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ground truths; only the boxes are used.
            predicted_boxes (Tensor, optional): ``N×4`` boxes to score instead of the CAM boxes. Default: None.

        Returns:
            tuple of dict: ``({"hits": int64, "total": int64}, {"cam_box_iou": N float64, "corloc_hit": N int64})``.

        Raises:
            ValueError: if a pair has no ground-truth box of positive area (the message names ``truths`` and the
                indices), or the inputs are malformed.
        """
        pairs = check_pairs(maps, truths, predicted_boxes)
        require_boxes(pairs)
        n = pairs.count
        if n == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return self._deltas(empty), {"cam_box_iou": torch.zeros(0, dtype=torch.float64), "corloc_hit": empty}
        predicted = pairs.predicted
        if predicted is None:
            predicted = torch.zeros(n, 4, dtype=torch.float64)
            for group in pairs.groups:
                cam = boxes_from_saliency(group.maps, self.cam_threshold)
                predicted[group.index] = cam.to(device="cpu", dtype=torch.float64)
        # Every pair's predicted box against its own ground-truth boxes at once, with corloc's IoU arithmetic; the
        # padding boxes score 0, which never beats a real box, so a hit is exactly cam_box_iou >= iou.
        gt, _ = padded_boxes(pairs.boxes, predicted.device)
        best = paired_box_iou(predicted, gt).amax(dim=1)
        hits = (best >= self.iou).long()
        return self._deltas(hits), {"cam_box_iou": best, "corloc_hit": hits}

    @staticmethod
    def _deltas(hits: Tensor) -> dict:
        return {"hits": hits.sum(), "total": torch.tensor(len(hits), dtype=torch.int64)}

    def compute(self) -> Tensor:
        """The CorLoc fraction.

        Returns:
            Tensor: float64 scalar in ``[0, 1]``; NaN before any pair.
        """
        if int(self.total) == 0:
            return torch.tensor(_NAN, dtype=torch.float64, device=self.total.device)
        return self.hits.double() / self.total
