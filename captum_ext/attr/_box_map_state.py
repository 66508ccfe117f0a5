"""Saving and loading SensitivityBBox's fitted linear map: plain tensors, numbers and strings, safe for
``torch.load(..., weights_only=True)``, checked against the feature settings of the instance that loads them.

Format version 2 records the feature set (``features``, ``num_classes``); version 1 files predate feature sets and
load as the paper's features (``("grid",)``)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from captum_ext._utils.ridge import STATISTICS, RidgeRegression
from captum_ext._utils.validation import check_scalar
from captum_ext.attr._box_features import PAPER_FEATURES, check_features, feature_count

STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
FEATURE_SETTINGS = ("grid_size", "channel_reduction", "sigma", "power")


def box_map_state(settings: Dict[str, Any], regression: RidgeRegression) -> Dict[str, Any]:
    """The state of a solved regression with the feature ``settings`` (including ``features`` and
    ``num_classes``) it was fitted under."""
    if regression.weight is None or regression.bias is None or regression.penalty is None:
        raise RuntimeError("SensitivityBBox is not fitted: nothing to save")
    state: Dict[str, Any] = {"version": STATE_VERSION, **{k: settings[k] for k in FEATURE_SETTINGS},
                             "features": list(settings["features"]), "num_classes": int(settings["num_classes"] or 0),
                             "ridge": regression.penalty, "weight": regression.weight.clone(),
                             "bias": regression.bias.clone()}
    state.update({f"stats.{k}": v.clone() for k, v in regression.stats.items()})
    return state


def load_box_map_state(state: Any, settings: Dict[str, Any], out_features: int = 4
                       ) -> Tuple[RidgeRegression, Tuple[str, ...], Optional[int]]:
    """A solved regression from :func:`box_map_state`'s output, with the feature set it was fitted on.

    Returns:
        tuple: ``(regression, features, num_classes)``; a version 1 state gives ``("grid",)`` and ``None``.

    Raises:
        TypeError: ``state`` is not a dict.
        ValueError: a missing key, an unknown format version, feature settings that differ from ``settings``, an
            unknown feature set, or weights of the wrong shape.
    """
    if not isinstance(state, dict):
        raise TypeError(f"`state` must be a dict from state_dict(), got {type(state).__name__}")
    required = ["version", *FEATURE_SETTINGS, "ridge", "weight", "bias"]
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"`state` is missing keys {missing}")
    if state["version"] not in _READABLE_VERSIONS:
        raise ValueError(f"`state` has format version {state['version']}, expected one of {_READABLE_VERSIONS}")
    if state["version"] >= 2 and "features" not in state:
        raise ValueError("`state` is missing keys ['features']")
    for key in FEATURE_SETTINGS:
        if state[key] != settings[key]:
            raise ValueError(f"`state` was fitted with {key}={state[key]!r}, this instance has "
                             f"{key}={settings[key]!r}")
    # Files written before feature sets existed hold the paper's pooled grid.
    num_classes = int(state.get("num_classes", 0)) or None
    features = check_features(state.get("features", PAPER_FEATURES), num_classes)
    dim = feature_count(features, settings["grid_size"], num_classes)
    weight, bias = state["weight"], state["bias"]
    if not isinstance(weight, Tensor) or weight.shape != (dim, out_features) or not isinstance(bias, Tensor) or \
            bias.shape != (out_features,):
        raise ValueError(f"`state` weight/bias must be {dim}×{out_features} and {out_features} tensors")
    # A corrupt file would otherwise load and give NaN boxes, or a negative ridge that re-solves to nonsense.
    ridge = check_scalar(state["ridge"], "state['ridge']", low=0.0)
    for key in ("weight", "bias", *(k for k in state if str(k).startswith("stats."))):
        _check_values(state[key], key)
    regression = RidgeRegression(dim, out_features)
    stats = {k[len("stats."):]: v.to(torch.float64).cpu().clone() for k, v in state.items()
             if k.startswith("stats.")}
    if stats:
        # The targets' sum of squares (for generalised cross-validation) came later: older files lack it, and
        # the regression then has none rather than a made-up zero. Every other statistic must be there.
        missing = [f"stats.{k}" for k in STATISTICS if k not in stats and k != "y_sq_sum"]
        if missing:
            raise ValueError(f"`state` has partial fitting statistics: missing keys {missing}")
        regression.stats.update(stats)
        if "y_sq_sum" not in stats:
            del regression.stats["y_sq_sum"]
    regression.weight = weight.to(torch.float64).cpu().clone()
    regression.bias = bias.to(torch.float64).cpu().clone()
    regression.penalty = ridge
    return regression, features, num_classes if "class" in features else None


def _check_values(value: Any, key: str) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise ValueError(f"`state['{key}']` must be a floating-point tensor, got "
                         f"{value.dtype if isinstance(value, Tensor) else type(value).__name__}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"`state['{key}']` holds NaN or inf values, which no fit gives")
