"""Trainable models of the five papers (``torch.nn.Module`` subclasses).

Their training and evaluation harnesses live in :mod:`captum_ext.training`, their shipped weights in
:mod:`captum_ext.zoo`. The old harness modules ``captum_ext.models.ellipse_regression`` and
``captum_ext.models.roi_training`` remain as deprecated aliases for one release.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from captum_ext.models.roi_attention_resnet import ROIAttentionResNet
from captum_ext.models.self_supervised_attention import LossParts, SelfSupervisedAttentionRegressor

__all__ = ["LossParts", "ROIAttentionResNet", "SelfSupervisedAttentionRegressor"]

# Deprecated module → its new home.
_MOVED: Dict[str, str] = {
    "ellipse_regression": "captum_ext.training.ellipse_regression",
    "roi_training": "captum_ext.training.roi",
}


def _warn_moved(old: str, new: str) -> None:
    # stacklevel 3: past this helper and the module __getattr__, to the line that used the old name.
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new} instead",
                  DeprecationWarning, stacklevel=3)


def _forward_to(old: str, new: str, aliases: Optional[Dict[str, str]] = None
                ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """Module ``__getattr__`` and ``__dir__`` forwarding every attribute of ``old`` to module ``new`` with a
    DeprecationWarning; ``aliases`` maps names that moved elsewhere to ``"module.attribute"``."""
    moved_elsewhere = aliases or {}

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # dunder lookups (doctest, pickle, inspect) are not uses of the old API
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = moved_elsewhere.get(name, f"{new}.{name}")
        module, _, attribute = target.rpartition(".")
        value = getattr(importlib.import_module(module), attribute)  # AttributeError for names that never existed
        _warn_moved(f"{old}.{name}", target)
        return value

    def __dir__() -> List[str]:
        return sorted(set(dir(importlib.import_module(new))) | set(moved_elsewhere))

    return __getattr__, __dir__


def __getattr__(name: str) -> Any:
    # `captum_ext.models.ellipse_regression` as an attribute keeps working for one release, with a warning.
    if name in _MOVED:
        _warn_moved(f"captum_ext.models.{name}", _MOVED[name])
        return importlib.import_module(f"captum_ext.models.{name}")
    raise AttributeError(f"module 'captum_ext.models' has no attribute {name!r}")
