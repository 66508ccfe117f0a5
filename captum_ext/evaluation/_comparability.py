"""When two evaluation runs' scores may be tabled side by side: the settings and inputs they must share."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

from captum_ext.metrics.faithfulness import DEFAULT_BASELINE

if TYPE_CHECKING:  # named in annotations only (compare imports this module)
    from captum_ext.evaluation.compare import Run


#: Settings that make two runs' scores incomparable when they differ: run.json key (``.`` goes one level down) or a
#: name of :data:`EFFECTIVE` → (what it is, the metrics it changes; ``None``: every metric). A setting counts only
#: among the runs that report one of its metrics.
SCORED_ON: Dict[str, Tuple[str, Optional[Tuple[str, ...]]]] = {
    "data": ("datasets", None),
    "inputs.model_weights": ("models' weights", None),
    "inputs.class_map": ("category → class maps", None),
    "resize": ("image sizes", None),
    # Maps are scored as stored: float16 rounding moves every metric read from them a little.
    "map_dtype": ("stored map precisions", ("pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap",
                                            "deletion_auc", "insertion_auc", "infidelity", "road_morf", "road_lerf")),
    "tolerance": ("pointing tolerances", ("pointing_game",)),
    "deletion": ("deletion settings (steps, baseline)", ("deletion_auc",)),
    "insertion": ("insertion settings (steps, baseline)", ("insertion_auc",)),
    "infidelity": ("infidelity perturbations (number, noise)", ("infidelity",)),
    "sensitivity_max": ("max-sensitivity perturbations (number, radius)", ("sensitivity_max",)),
    # The perturbations of a pair, and ROAD's imputation noise, are drawn from generators seeded by its batch's number.
    "batch_size": ("batch sizes, which seed the perturbations and ROAD's imputation noise",
                   ("infidelity", "sensitivity_max", "road_morf", "road_lerf")),
    "road": ("ROAD settings", ("road_morf", "road_lerf")),
}


def _faithfulness(mode: str) -> Callable[["Run"], Any]:
    def effective(run: "Run") -> Any:  # a run that left the baseline to the default used the mode's own
        stored = _setting(run, "faithfulness")
        stored = stored if isinstance(stored, dict) else {}
        return {"steps": stored.get("steps"), "baseline": stored.get("baseline") or DEFAULT_BASELINE[mode]}
    return effective


def _perturbation(*keys: str) -> Callable[["Run"], Any]:
    def effective(run: "Run") -> Any:  # only the settings the metric uses
        stored = _setting(run, "perturbation")
        return {key: stored.get(key) for key in keys} if isinstance(stored, dict) else stored
    return effective


#: Settings compared by what a metric actually used rather than by what run.json holds.
EFFECTIVE: Dict[str, Callable[["Run"], Any]] = {
    "deletion": _faithfulness("deletion"),
    "insertion": _faithfulness("insertion"),
    "infidelity": _perturbation("samples", "noise"),
    "sensitivity_max": _perturbation("samples", "radius"),
}


def _setting(run: Run, key: str) -> Any:
    if key in EFFECTIVE:
        return EFFECTIVE[key](run)
    value: Any = run.summary.get("settings", {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def incomparable(runs: Sequence[Run]) -> str:
    """A warning when the runs differ in what their scores are measured on.

    Args:
        runs (sequence of Run): the compared runs.

    Returns:
        str: the warning, or an empty string when the runs are comparable.
    """
    differ = []
    for key, (what, metrics) in SCORED_ON.items():
        reporting = [r for r in runs if metrics is None or any(isinstance(r.summary.get(m), (int, float))
                                                                   for m in metrics)]
        if len({json.dumps(_setting(r, key), sort_keys=True) for r in reporting}) > 1:
            differ.append(what)
    if "datasets" in differ:  # other datasets have other categories: their class maps differ as a matter of course
        differ = [what for what in differ if what != SCORED_ON["inputs.class_map"][0]]
    warning = f"The runs differ in their {'; '.join(differ)}: their scores are not comparable." if differ else ""
    return " ".join(part for part in (warning, _versions_note(runs)) if part)


def _versions_note(runs: Sequence[Run]) -> str:
    """A note when the runs were made under other library versions (a method's maps may change between releases,
    so the difference is named, without calling the scores incomparable)."""
    recorded = [versions for versions in (_setting(r, "versions") for r in runs) if isinstance(versions, dict)]
    seen = {name: sorted({str(v.get(name)) for v in recorded}) for name in {n for v in recorded for n in v}}
    differ = [f"{name} {' / '.join(values)}" for name, values in sorted(seen.items()) if len(values) > 1]
    return f"The runs were made under other library versions ({'; '.join(differ)})." if differ else ""
