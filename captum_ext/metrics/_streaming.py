"""Machinery shared by the streaming metrics: checks of (map, :class:`GroundTruth`) pairs, grouping by map size,
and the ``torchmetrics`` base class whose states are all sums, so that a batch's contribution can be stored and
replayed exactly and processes combine exactly."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchmetrics import Metric

from captum_ext._utils.boxes import box_areas, boxes_to_masks
from captum_ext._utils.validation import check_scalar, check_tensor
from captum_ext.metrics._checks import check_box_batch
from captum_ext.metrics.ground_truth import GroundTruth

#: ``(state deltas keyed by state name, per-pair values keyed by value name)``, as returned by ``statistics``.
Statistics = Tuple[Dict[str, Tensor], Dict[str, Tensor]]


class Pairs(NamedTuple):
    """Checked ``update`` arguments: ``H×W`` maps, truths with float boxes and bool masks (or ``None``) on their
    map's device, and ``N×4`` float64 predicted boxes (or ``None``)."""

    maps: List[Tensor]
    truths: List[GroundTruth]
    predicted: Optional[Tensor]


def _check_map(value: Any, name: str) -> Tensor:
    """An ``H×W`` (or ``1×H×W``) real, finite, non-empty map, returned ``H×W``."""
    sal = check_tensor(value, name, ndim=(2, 3), kind="real")
    if sal.dim() == 3:
        if sal.shape[0] != 1:
            raise ValueError(f"`{name}` must be H×W or 1×H×W, got shape {tuple(sal.shape)}")
        sal = sal[0]
    if sal.numel() == 0:
        raise ValueError(f"`{name}` must be a non-empty H×W map, got shape {tuple(sal.shape)}")
    return sal


def _check_truth(truth: Any, name: str, sal: Tensor) -> GroundTruth:
    """A :class:`GroundTruth` whose boxes are checked (``K×4``, ``K >= 0``) and whose mask, if any, is an ``H×W``
    bool tensor of the map's shape on the map's device."""
    if not isinstance(truth, GroundTruth):
        raise TypeError(f"`{name}` must be a captum_ext.metrics.ground_truth.GroundTruth, got {type(truth).__name__}")
    category = int(check_scalar(truth.category, f"{name}.category", integer=True))
    boxes = check_box_batch(truth.boxes, f"{name}.boxes")
    mask = truth.mask
    if mask is not None:
        mask = check_tensor(mask, f"{name}.mask", ndim=2, kind="real")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"`{name}.mask` must be boolean or contain only 0 and 1")
            mask = mask != 0
        if mask.shape != sal.shape:
            raise ValueError(
                f"`{name}.mask` must have its map's shape {tuple(sal.shape)}, got {tuple(mask.shape)}"
            )
        mask = mask.to(sal.device)
    return GroundTruth(category, boxes, mask)


def check_pairs(maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor]) -> Pairs:
    """Check the arguments of ``update`` / ``statistics`` (see :class:`Pairs`); ``N = 0`` is allowed."""
    if isinstance(maps, Tensor):
        maps = list(maps)  # an N×H×W batch is N maps of one size
    if not isinstance(maps, (list, tuple)):
        raise TypeError(f"`maps` must be a sequence of H×W tensors, got {type(maps).__name__}")
    if not isinstance(truths, (list, tuple)):
        raise TypeError(f"`truths` must be a sequence of GroundTruth, got {type(truths).__name__}")
    if len(maps) != len(truths):
        raise ValueError(f"`maps` and `truths` must have the same length, got {len(maps)} and {len(truths)}")
    checked = [_check_map(m, f"maps[{i}]") for i, m in enumerate(maps)]
    gts = [_check_truth(t, f"truths[{i}]", checked[i]) for i, t in enumerate(truths)]
    predicted = None
    if predicted_boxes is not None:
        predicted = check_box_batch(predicted_boxes, "predicted_boxes").to(device="cpu", dtype=torch.float64)
        if predicted.shape[0] != len(checked):
            raise ValueError(
                f"`predicted_boxes` must have one row per pair ({len(checked)}), got {predicted.shape[0]}"
            )
    return Pairs(checked, gts, predicted)


def size_groups(maps: Sequence[Tensor]) -> List[List[int]]:
    """Indices of the maps grouped by ``H×W`` (first-seen order), so each group is scored as one batch."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, sal in enumerate(maps):
        groups.setdefault(tuple(sal.shape), []).append(i)
    return list(groups.values())


def regions(pairs: Pairs) -> List[Tensor]:
    """Each pair's ground-truth region as an ``H×W`` bool mask: its mask, else the union of its boxes' pixels.

    Raises:
        ValueError: naming ``truths`` and listing the pairs whose region has no pixel (the package's
            empty-ground-truth rule).
    """
    out = []
    for sal, truth in zip(pairs.maps, pairs.truths):
        if truth.mask is not None:
            out.append(truth.mask.to(sal.device))
        else:
            height, width = sal.shape
            out.append(boxes_to_masks(truth.boxes.to(sal.device), height, width).any(dim=0))
    empty = [i for i, region in enumerate(out) if not bool(region.any())]
    if empty:
        raise ValueError(
            "`truths` must give every pair at least one foreground pixel (its mask, or its boxes when it has no "
            f"mask); empty at index(es) {empty}"
        )
    return out


def require_boxes(pairs: Pairs) -> None:
    """Raise ``ValueError`` naming ``truths`` and listing the pairs without a ground-truth box of positive area."""
    bare = [i for i, t in enumerate(pairs.truths) if not bool((box_areas(t.boxes) > 0).any())]
    if bare:
        raise ValueError(f"`truths` must give every pair a box of positive area; none at index(es) {bare}")


def exact_float64_sums(maps: Tensor) -> bool:
    """Whether float64 sums over any subset of each map's pixels are exact, so equal in any order and on any
    device: every value is a float16 value (a multiple of 2⁻²⁴, as ``evaluate`` stores maps) and a map's summed
    magnitude stays below 2²⁸ (the float64 mantissa then holds every partial sum).

    Args:
        maps (Tensor): ``N×H×W`` floating maps.

    Returns:
        bool: True when the sums are exact.
    """
    if not maps.is_floating_point() or maps.numel() == 0:
        return False
    representable = bool((maps.to(torch.float16).to(maps.dtype) == maps).all())
    pixels = maps[0].numel()
    return representable and float(maps.abs().amax()) * pixels < 2.0**28


#: The fixed-point unit of the summed float states (mean energy share, mean deletion / insertion AUC): integer sums
#: do not depend on their order, so any number of processes, in any grouping, gives bit-identical results.
FIXED_POINT_UNIT = 2.0**-32


def to_fixed_point(values: Tensor) -> Tensor:
    """``values`` rounded to int64 multiples of :data:`FIXED_POINT_UNIT`, the units the summed states hold.

    Args:
        values (Tensor): float64 values in ``[0, 1]``.

    Returns:
        Tensor: int64, the same shape.
    """
    return torch.round(values / FIXED_POINT_UNIT).to(torch.int64)


def fixed_point_mean(total: Tensor, count: Tensor) -> Tensor:
    """The mean of ``count`` values whose :func:`to_fixed_point` sum is ``total``.

    Args:
        total (Tensor): int64 scalar, the summed fixed-point values.
        count (Tensor): int64 scalar, how many values were summed.

    Returns:
        Tensor: float64 scalar; NaN when ``count`` is 0.
    """
    if int(count) == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=count.device)
    return total.to(torch.float64) * FIXED_POINT_UNIT / count.to(torch.float64)


def stack(tensors: Sequence[Tensor], index: Sequence[int]) -> Tensor:
    """``tensors[index]`` stacked into one batch."""
    return torch.stack([tensors[i] for i in index])


class SumMetric(Metric):
    """A ``torchmetrics.Metric`` whose states are all sums (``dist_reduce_fx="sum"``), updated from the deltas of
    ``statistics``: ``update(...)`` adds ``statistics(...)[0]``, and ``update_from_statistics`` adds stored deltas,
    so a resumed run replays its finished batches exactly. Subclasses define ``statistics`` and ``compute``."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False  # sums: a batch's value needs only the batch

    def _sum_state(self, name: str, default: Tensor) -> None:
        """Register a summed state (persistent: ``state_dict`` checkpoints it too)."""
        self.add_state(name, default=default, dist_reduce_fx="sum", persistent=True)

    def statistics(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> Statistics:
        """This batch's state deltas and per-pair values, without touching the states (see the subclasses).

        Args:
            maps (sequence of Tensor): ``N`` saliency maps ``H_i×W_i``.
            truths (sequence of GroundTruth): their ``N`` ground truths.
            predicted_boxes (Tensor, optional): ``N×4`` predicted boxes. Default: None.

        Returns:
            tuple of dict: ``(deltas, per_pair)``.
        """
        raise NotImplementedError

    def update(
        self, maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor] = None
    ) -> None:
        """Add one batch of (map, ground truth) pairs: the same as ``update_from_statistics(statistics(...)[0])``.

        Args:
            maps (sequence of Tensor): ``N`` saliency maps, each ``H_i×W_i`` (or ``1×H_i×W_i``); sizes may differ
                between pairs. An ``N×H×W`` tensor is read as ``N`` maps.
            truths (sequence of GroundTruth): the ``N`` ground truths, boxes and masks in their map's pixels.
            predicted_boxes (Tensor, optional): ``N×4`` predicted boxes; used by :class:`CorLocMetric` only,
                accepted (and ignored) by the others so every metric takes the same arguments. Default: None.
        """
        self._add(self.statistics(maps, truths, predicted_boxes)[0])

    def update_from_statistics(self, deltas: Mapping[str, Tensor]) -> None:
        """Add state deltas stored from an earlier ``statistics`` call (e.g. when resuming an interrupted run).

        Args:
            deltas (dict of str to Tensor): exactly this metric's state names, each with the state's shape and
                dtype (any device).

        Raises:
            TypeError: if ``deltas`` is no mapping, or a delta is no tensor or has the wrong dtype.
            ValueError: if the keys differ from the state names or a delta has the wrong shape.
        """
        checked = self._checked_deltas(deltas)
        # What torchmetrics' update wrapper (Metric._wrap_update) does around a plain update: drop the cached
        # compute() value and count the update, so compute() neither returns a stale value nor warns.
        self._computed = None
        self._update_count += 1
        self._add(checked)

    def _checked_deltas(self, deltas: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        if not isinstance(deltas, Mapping):
            raise TypeError(f"`deltas` must be a mapping of state name to tensor, got {type(deltas).__name__}")
        if set(deltas) != set(self._defaults):
            raise ValueError(f"`deltas` must have exactly the keys {sorted(self._defaults)}, got {sorted(deltas)}")
        for name, default in self._defaults.items():
            delta = deltas[name]
            if not isinstance(delta, Tensor) or delta.dtype != default.dtype:
                got = delta.dtype if isinstance(delta, Tensor) else type(delta).__name__
                raise TypeError(f"`deltas['{name}']` must be a {default.dtype} tensor, got {got}")
            if delta.shape != default.shape:
                raise ValueError(
                    f"`deltas['{name}']` must have shape {tuple(default.shape)}, got {tuple(delta.shape)}"
                )
        return dict(deltas)

    def _add(self, deltas: Mapping[str, Tensor]) -> None:
        for name, delta in deltas.items():
            state = getattr(self, name)
            setattr(self, name, state + delta.to(state.device))
