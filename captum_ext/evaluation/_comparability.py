"""When two evaluation runs' scores may be tabled side by side: the settings and inputs they must share."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

if TYPE_CHECKING:  # named in annotations only (compare imports this module)
    from captum_ext.evaluation.compare import Run


#: Settings that make two runs' scores incomparable when they differ: run.json key (``.`` goes one level down) →
#: (what it is, the metrics it changes; ``None``: every metric). A setting counts only among the runs that report
#: one of its metrics.
SCORED_ON: Dict[str, Tuple[str, Optional[Tuple[str, ...]]]] = {
    "data": ("datasets", None),
    "inputs.model_weights": ("models' weights", None),
    "inputs.class_map": ("category → class maps", None),
    "resize": ("image sizes", None),
    "tolerance": ("pointing tolerances", ("pointing_game",)),
    "faithfulness": ("deletion and insertion settings (steps, baseline)", ("deletion_auc", "insertion_auc")),
    "perturbation": ("perturbations (number, noise, radius)", ("infidelity", "sensitivity_max")),
    # The perturbations of a pair are drawn from a generator seeded by its batch's number.
    "batch_size": ("batch sizes, which choose the perturbations", ("infidelity", "sensitivity_max")),
    "road": ("ROAD settings", ("road_morf", "road_lerf")),
}


def _setting(run: Run, key: str) -> Any:
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
