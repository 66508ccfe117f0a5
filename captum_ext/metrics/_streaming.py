"""Machinery shared by the streaming metrics (their checked pairs are in :mod:`~captum_ext.metrics._pairs`): the
``torchmetrics`` base class whose states are all sums, so that a batch's contribution can be stored and replayed
exactly and processes combine exactly, and the fixed-point sums behind the float-valued states."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchmetrics import Metric

from captum_ext.metrics.ground_truth import GroundTruth

#: ``(state deltas keyed by state name, per-pair values keyed by value name)``, as returned by ``statistics``.
Statistics = Tuple[Dict[str, Tensor], Dict[str, Tensor]]


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


def per_pair_values(values: Any, name: str, high: float) -> Tensor:
    """``values`` as ``N`` float64 CPU values, checked for a fixed-point sum: one value per pair, each finite and
    in ``[0, high]`` (a NaN would turn into a huge integer, a row of values would be summed as one pair).

    Args:
        values (Tensor): the per-pair values.
        name (str): what they are, for the error.
        high (float): the largest value allowed.

    Returns:
        Tensor: ``N`` float64 values on the CPU.

    Raises:
        TypeError: ``values`` is not a tensor.
        ValueError: not one value per pair (1-D), or a value that is not finite or outside ``[0, high]``.
    """
    if not isinstance(values, Tensor):
        raise TypeError(f"`{name}` must be a tensor of per-pair values, got {type(values).__name__}")
    if values.dim() != 1:
        raise ValueError(f"`{name}` must hold one value per pair (a 1-D tensor), got shape {tuple(values.shape)}")
    values = values.detach().to(device="cpu", dtype=torch.float64)
    bad = ~(torch.isfinite(values) & (values >= 0) & (values <= high))
    if bool(bad.any()):
        raise ValueError(f"`{name}` must be finite values in [0, {high:g}], got {values[bad][:3].tolist()} at "
                         f"index(es) {bad.nonzero()[:3, 0].tolist()}")
    return values


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
