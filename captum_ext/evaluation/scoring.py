"""The metrics of an evaluation run, chosen by what the dataset annotates, and the per-batch arithmetic on them."""
from __future__ import annotations

import math
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torchmetrics import Metric

from captum_ext.metrics.faithfulness import MODES as FAITHFULNESS_MODES
from captum_ext.metrics.ground_truth import GroundTruth
from captum_ext.metrics.perturbation import METRICS as PERTURBATION_METRICS
from captum_ext.metrics.road import METRICS as ROAD_METRICS


class PairAccuracy(Metric):
    """Share of (image, class) pairs the model recognises: its top class (single-label models) or a probability of
    at least 0.5 (multi-label models). Counts, so exact across processes.

    Example::

        >>> import torch
        >>> accuracy = PairAccuracy()
        >>> accuracy.update_from_statistics(accuracy.statistics(torch.tensor([True, False]))[0])
        >>> float(accuracy.compute())
        0.5
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    @staticmethod
    def statistics(recognised: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """State deltas and per-pair values.

        Args:
            recognised (Tensor): ``N`` bools, whether the model recognised each pair's class.

        Returns:
            tuple of dict: ``({"correct", "total"}, {"recognised": N bool})``.
        """
        hit = recognised.cpu().to(torch.bool)
        return ({"correct": hit.sum().to(torch.int64), "total": torch.tensor(hit.numel(), dtype=torch.int64)},
                {"recognised": hit})

    def update_from_statistics(self, deltas: Dict[str, Tensor]) -> None:
        """Add the deltas of :meth:`statistics` (as ``update`` does, also for a stored record).

        Args:
            deltas (dict): ``{"correct", "total"}`` int64 scalars.
        """
        self._computed = None  # what torchmetrics' update wrapper does: no stale compute() cache, no warning
        self._update_count += 1
        self.correct += deltas["correct"].to(self.correct.device)
        self.total += deltas["total"].to(self.total.device)

    def update(self, recognised: Tensor) -> None:  # type: ignore[override]
        """Count a batch of pairs.

        Args:
            recognised (Tensor): ``N`` bools.
        """
        self.update_from_statistics(self.statistics(recognised)[0])

    def scored(self) -> int:
        """How many pairs were counted, by every process together (a collective call under torch.distributed).

        Returns:
            int: the pairs scored.
        """
        with self.sync_context():
            return int(self.total)

    def compute(self) -> Tensor:
        """The share (nan without pairs).

        Returns:
            Tensor: float64 scalar.
        """
        return self.correct.to(torch.float64) / self.total.clamp_min(1) if int(self.total) else \
            torch.tensor(float("nan"), dtype=torch.float64)


#: The localisation metrics a run can compute, by their names in ``metrics.json``.
LOCALISATION_METRICS = ("pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap")
#: The faithfulness metrics a run can compute on request (``metrics.json``: ``deletion_auc``, ``insertion_auc``,
#: Captum's ``infidelity`` and ``sensitivity_max``, and ROAD's ``road_morf`` and ``road_lerf``).
FAITHFULNESS_METRICS = FAITHFULNESS_MODES + PERTURBATION_METRICS + ROAD_METRICS


def split_metric_names(names: Optional[Sequence[str]]) -> Tuple[Optional[List[str]], List[str]]:
    """Split a run's ``metrics`` into localisation and faithfulness names.

    Args:
        names (sequence of str, optional): names from :data:`LOCALISATION_METRICS` and :data:`FAITHFULNESS_METRICS`;
            ``None``: every localisation metric the data supports and no faithfulness metric (they cost a forward
            pass per step per pair, so they are asked for by name).

    Returns:
        tuple: (localisation names, or ``None`` for the default; faithfulness names).

    Raises:
        ValueError: an unknown or repeated name.
    """
    if names is None:
        return None, []
    unknown = [n for n in names if n not in LOCALISATION_METRICS + FAITHFULNESS_METRICS]
    if unknown:
        raise ValueError(f"`metrics` must name some of {list(LOCALISATION_METRICS + FAITHFULNESS_METRICS)}, got "
                         f"{unknown}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:  # a resume compares the list as given: a repeat would make the same run look like another
        raise ValueError(f"`metrics` names {', '.join(map(repr, repeated))} more than once")
    return [n for n in names if n in LOCALISATION_METRICS], [n for n in names if n in FAITHFULNESS_METRICS]


def faithfulness_metrics(names: Sequence[str]) -> Dict[str, Metric]:
    """The faithfulness metrics, by their ``metrics.json`` keys (``deletion_auc``, ``insertion_auc``,
    ``infidelity``, ``sensitivity_max``, ``road_morf``, ``road_lerf``).

    Args:
        names (sequence of str): from :data:`FAITHFULNESS_METRICS`.

    Returns:
        dict: key → :class:`~captum_ext.metrics.faithfulness.FaithfulnessAUCMetric` or
        :class:`~captum_ext.metrics.perturbation.PerturbationMetric`.
    """
    from captum_ext.metrics.faithfulness import FaithfulnessAUCMetric
    from captum_ext.metrics.perturbation import PerturbationMetric

    curves = {f"{name}_auc": FaithfulnessAUCMetric(name) for name in FAITHFULNESS_MODES if name in names}
    return {**curves, **{name: PerturbationMetric(name) for name in PERTURBATION_METRICS + ROAD_METRICS
                         if name in names}}


def localisation_metrics(num_classes: int, tolerance: Optional[float], has_boxes: bool, has_masks: bool,
                         names: Optional[Sequence[str]] = None) -> Dict[str, Metric]:
    """The localisation metrics a dataset supports, by the names ``metrics.json`` uses.

    Args:
        num_classes (int): the model's classes (the pointing game averages over them).
        tolerance (float or None): the pointing game's tolerance in pixels; ``None`` scales it with each map's
            size (:func:`captum_ext.metrics.pointing.default_tolerance`).
        has_boxes (bool): the dataset annotates boxes (or masks).
        has_masks (bool): the dataset annotates masks (PxAP needs them).
        names (sequence of str, optional): only these (from :data:`LOCALISATION_METRICS`); default: every one the
            dataset supports. MaxBoxAccV2 labels a map's components at 100 thresholds, the costliest to compute.

    Returns:
        dict: name → metric; empty for class-label-only datasets.

    Raises:
        ValueError: an unknown name, or a metric the dataset's annotations cannot support.
    """
    if names is not None:
        unknown = [n for n in names if n not in LOCALISATION_METRICS]
        if unknown:
            raise ValueError(f"`metrics` must name some of {list(LOCALISATION_METRICS)}, got {unknown}")
        if names and not (has_boxes or has_masks):
            raise ValueError(f"`metrics` {list(names)} need boxes or masks; the dataset has class labels only")
        if "pxap" in names and not has_masks:
            raise ValueError("`metrics` asks for pxap, which needs masks; not every object of the dataset has one")
    from captum_ext.metrics import (
        CorLocMetric,
        EnergyPointingGameMetric,
        MaxBoxAccV2Metric,
        PointingGameMetric,
        PxAPMetric,
    )

    if not (has_boxes or has_masks):
        return {}
    chosen: Dict[str, Metric] = {
        "pointing_game": PointingGameMetric(num_classes, tolerance=tolerance),
        "energy_pointing_game": EnergyPointingGameMetric(),
        "corloc": CorLocMetric(),
        "maxboxacc_v2": MaxBoxAccV2Metric(),
    }
    if has_masks:
        chosen["pxap"] = PxAPMetric()
    return {name: metric for name, metric in chosen.items() if names is None or name in names}


def batch_statistics(metrics: Dict[str, Metric], maps: Union[Tensor, Sequence[Tensor]], truths: Sequence[GroundTruth],
                     predicted_boxes: Optional[Tensor], seconds: Optional[Dict[str, float]] = None
                     ) -> Tuple[Dict[str, Dict[str, Tensor]], Dict[str, Tensor]]:
    """Every metric's state deltas and per-pair values for one group of pairs.

    Args:
        metrics (dict): name → metric (from :func:`localisation_metrics`).
        maps (Tensor or sequence of Tensor): an ``N×H×W`` batch, one map per pair (checked and scored as one
            batch, in a number of operations that does not grow with ``N``), or ``N`` maps ``H_i×W_i``.
        truths (sequence of GroundTruth): their ground truth; the categories are already the model's class indices.
        predicted_boxes (Tensor, optional): ``N×4`` learned boxes (CorLoc uses them instead of CAM boxes).
        seconds (dict, optional): each metric's time is added to ``seconds[name]``.

    Returns:
        tuple: (``{metric: {state: delta}}``, ``{column: N values}``).
    """
    deltas: Dict[str, Dict[str, Tensor]] = {}
    columns: Dict[str, Tensor] = {}
    for name, metric in metrics.items():
        started = time.perf_counter()
        delta, per_pair = metric.statistics(maps, truths, predicted_boxes) if name == "corloc" else \
            metric.statistics(maps, truths)
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        deltas[name] = delta
        columns.update(per_pair)
    return deltas, columns


def add_deltas(total: Dict[str, Dict[str, Tensor]], more: Dict[str, Dict[str, Tensor]]) -> None:
    """``total += more``, state by state (every state is a sum).

    Args:
        total (dict): ``{metric: {state: tensor}}``, updated in place.
        more (dict): the deltas to add.
    """
    for metric, states in more.items():
        into = total.setdefault(metric, {})
        for name, value in states.items():
            into[name] = into[name] + value if name in into else value.clone()


def compute_all(metrics: Dict[str, Metric]) -> Dict[str, Optional[float]]:
    """``compute()`` every metric (each call syncs its states across processes), as plain floats.

    Args:
        metrics (dict): name → metric.

    Returns:
        dict: name → value, ``None`` where undefined (no pair scored): JSON has no NaN.
    """
    results: Dict[str, Optional[float]] = {}
    for name, metric in metrics.items():
        with warnings.catch_warnings():
            # A process (or a whole run) may have scored no pair; its states still take part in the sum, and the
            # value is then undefined, reported as None, which torchmetrics would also warn about.
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            value = metric.compute()
        value = float(value) if not isinstance(value, (tuple, list)) else float(value[0])
        results[name] = None if math.isnan(value) else value
    return results


def constant_maps(method: str, metrics: Dict[str, Metric], scored: int, warn: bool) -> Dict[str, int]:
    """How many maps were constant, where the pointing game was scored (a collective call under torch.distributed):
    such a map has no maximum, and its first pixel ``(0, 0)`` counted, a hit for objects in that corner.

    Args:
        method (str): the method's name, for the warning.
        metrics (dict): the run's localisation metrics.
        scored (int): the pairs scored.
        warn (bool): warn when there were any (on the main process).

    Returns:
        dict: ``{"constant_maps": count}``, empty without the pointing game.
    """
    pointing = metrics.get("pointing_game")
    if pointing is None:
        return {}
    with pointing.sync_context():
        count = int(pointing.constant)
    if count and warn:
        warnings.warn(f"{method}: {count} of {scored} maps are constant (no maximum), so the pointing game took "
                      f"their first pixel (0, 0); pairs.csv marks them in `constant_map`", stacklevel=3)
    return {"constant_maps": count}
