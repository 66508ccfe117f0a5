"""Streaming MaxBoxAccV2 and PxAP (Choe et al., CVPR 2020), the dataset-level localisation metrics: one threshold
sweep shared by every pair and pooled counts, so their states are count tables rather than per-pair sums. Kept apart
from :mod:`captum_ext.metrics.streaming`, which re-exports them and documents the shared conventions."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from captum_ext.metrics import wsol
from captum_ext.metrics._pairs import check_pairs, require_boxes, unfilled
from captum_ext.metrics._streaming import Statistics, SumMetric
from captum_ext.metrics.ground_truth import GroundTruth

__all__ = ["MaxBoxAccV2Metric", "PxAPMetric"]


class MaxBoxAccV2Metric(SumMetric):
    """Streaming :func:`~captum_ext.metrics.maxboxacc_v2` (Choe et al., CVPR 2020; see there for the definition).

    States: ``correct`` (``D×T`` int64: pairs correct at each IoU threshold δ and map threshold τ) and ``total``
    (int64). Per-pair value: ``best_iou`` (float64), the best IoU a component box of the pair reaches with a
    ground-truth box over the whole sweep -- the pair is correct at *some* τ for δ iff ``best_iou >= δ``. It is a
    per-pair diagnostic (an oracle threshold per image); MaxBoxAccV2 shares one τ across the dataset, so it comes
    from the states, not from these values. Only ``GroundTruth.boxes`` are used.

    Args:
        thresholds (Tensor, optional): ``T`` map thresholds, strictly increasing in ``[0, 1]``. Default: ``None``,
            ``0.00, 0.01, ..., 0.99``.
        iou_thresholds (sequence of float, optional): IoU thresholds δ in ``(0, 1]``. Default: ``(0.3, 0.5, 0.7)``.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    def __init__(
        self,
        thresholds: Optional[Tensor] = None,
        iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = wsol._check_thresholds(thresholds)
        self.iou_thresholds = wsol._check_iou_thresholds(iou_thresholds)
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self._sum_state("correct", torch.zeros(shape, dtype=torch.int64))
        self._sum_state("total", torch.zeros((), dtype=torch.int64))

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """One batch's contribution, without updating the states.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ground truths; only the boxes are used.
            predicted_boxes (Tensor, optional): ignored. Default: None.

        Returns:
            tuple of dict: ``({"correct": D×T int64, "total": int64}, {"best_iou": N float64})``.

        Raises:
            ValueError: if a pair has no ground-truth box of positive area (the message names ``truths`` and the
                indices), or the inputs are malformed.
        """
        pairs = check_pairs(maps, truths, predicted_boxes)
        require_boxes(pairs)
        curves = torch.zeros(pairs.count, len(self.thresholds), dtype=torch.float64)
        for group in pairs.groups:
            gt = [pairs.boxes[i] for i in group.index]
            curves[group.index] = wsol._iou_curves(group.maps, gt, self.thresholds)
        deltas = {
            "correct": wsol._correct_counts(curves, self.iou_thresholds),
            "total": torch.tensor(pairs.count, dtype=torch.int64),
        }
        return deltas, {"best_iou": curves.amax(dim=1) if len(curves) else curves.new_zeros(0)}

    def compute(self) -> Tensor:
        """MaxBoxAccV2, the mean over δ of the best-threshold BoxAcc(δ).

        Returns:
            Tensor: float64 scalar in ``[0, 1]``; NaN before any pair.
        """
        return torch.tensor(self._result().value, dtype=torch.float64, device=self.total.device)

    def compute_result(self) -> wsol.MaxBoxAccResult:
        """The full result (per-δ BoxAcc, best τ, accuracy curves), synced across processes like ``compute()``.

        Returns:
            MaxBoxAccResult: as returned by :func:`~captum_ext.metrics.maxboxacc_v2` with ``reduce=False``.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self._result()

    def _result(self) -> wsol.MaxBoxAccResult:
        return wsol._boxacc_result(self.correct, int(self.total), self.thresholds, self.iou_thresholds)


class PxAPMetric(SumMetric):
    """Streaming :func:`~captum_ext.metrics.pxap` (Choe et al., CVPR 2020; see there for the definition).

    PxAP needs masks: pairs whose ``GroundTruth.mask`` is ``None`` are skipped and counted in the state
    ``skipped``; a pair with an empty mask raises (the package's empty-ground-truth rule). States: ``fg_hist`` and
    ``bg_hist`` (``C+1`` int64 pooled pixel histograms over the curve thresholds, see :class:`PxAPResult`) and
    ``skipped`` (int64). No per-pair values (PxAP pools pixels, it has no per-pair term). ``compute()`` returns NaN
    when no pair had a mask (e.g. a boxes-only dataset), so a report over several metrics still completes.

    Args:
        thresholds (Tensor, optional): ``T`` map thresholds, strictly increasing in ``[0, 1]``. Default: ``None``,
            ``0.00, 0.01, ..., 0.99``.
        **kwargs: ``torchmetrics.Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    def __init__(self, thresholds: Optional[Tensor] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresholds = wsol._curve_thresholds(wsol._check_thresholds(thresholds))
        self._sum_state("fg_hist", torch.zeros(len(self.thresholds) + 1, dtype=torch.int64))
        self._sum_state("bg_hist", torch.zeros(len(self.thresholds) + 1, dtype=torch.int64))
        self._sum_state("skipped", torch.zeros((), dtype=torch.int64))

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """One batch's contribution, without updating the states.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ground truths; only the masks are used.
            predicted_boxes (Tensor, optional): ignored. Default: None.

        Returns:
            tuple of dict: ``({"fg_hist": C+1 int64, "bg_hist": C+1 int64, "skipped": int64}, {})``.

        Raises:
            ValueError: if a mask is empty (the message names ``truths`` and the indices), or the inputs are
                malformed.
        """
        pairs = check_pairs(maps, truths, predicted_boxes)
        scored, empty = [], []
        for group in pairs.groups:
            if group.masks is None:
                continue
            maps_, masks = group.maps, group.masks
            if not all(group.has_mask):  # the pairs without a mask are skipped
                rows = torch.tensor([j for j, has in enumerate(group.has_mask) if has], device=maps_.device)
                maps_, masks = maps_.index_select(0, rows), masks.index_select(0, rows)
            empty += unfilled(masks, [i for i, has in zip(group.index, group.has_mask) if has])
            scored.append((maps_, masks))
        if empty:
            raise ValueError(
                f"`truths` masks must hold at least one foreground pixel; empty at index(es) {sorted(empty)}")
        size = len(self.thresholds) + 1
        with_mask = sum(sum(group.has_mask) for group in pairs.groups)
        deltas = {
            "fg_hist": torch.zeros(size, dtype=torch.int64),
            "bg_hist": torch.zeros(size, dtype=torch.int64),
            "skipped": torch.tensor(pairs.count - with_mask, dtype=torch.int64),
        }
        for maps_, masks in scored:
            fg, bg = wsol._pxap_histograms(maps_, masks, self.thresholds)
            deltas["fg_hist"] += fg
            deltas["bg_hist"] += bg
        return deltas, {}

    def compute(self) -> Tensor:
        """PxAP over the pooled pixels.

        Returns:
            Tensor: float64 scalar in ``[0, 1]``; NaN when no pair with a mask was seen.
        """
        return torch.tensor(self._result().value, dtype=torch.float64, device=self.skipped.device)

    def compute_result(self) -> wsol.PxAPResult:
        """The full result (precision / recall curve), synced across processes like ``compute()``.

        Returns:
            PxAPResult: as returned by :func:`~captum_ext.metrics.pxap` with ``reduce=False``; NaN fields when no
            pair with a mask was seen.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self._result()

    def _result(self) -> wsol.PxAPResult:
        return wsol._pxap_result(self.fg_hist, self.bg_hist, self.thresholds)
