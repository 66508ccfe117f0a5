"""The ellipse regressors of the zoo: :class:`~captum_ext.SelfSupervisedAttentionRegressor` configured for the
three ellipse datasets of Li & Shimada (one channel in, two parameters out).

The shipped weights ``ellipses_ds{1,2,3}.pt`` are loaded through :func:`captum_ext.zoo.load`; their training
records (``.json``) hold the model settings they were trained with, so :func:`shipped_kwargs` rebuilds exactly
that architecture. Training and scoring live in :mod:`captum_ext.training.ellipse_regression`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

from captum_ext.datasets.ellipses import OBJECT_FRACTION, PAPER_SPLITS
from captum_ext.models.self_supervised_attention import SelfSupervisedAttentionRegressor

#: The ellipse datasets: 1 (inclination of one ellipse among circles), 2 and 3 (intersection of two major axes).
DATASETS: Tuple[int, ...] = tuple(sorted(PAPER_SPLITS))

#: Model settings for the ellipse sets beyond the class defaults: a narrower regressor (faster on CPU). The loss
#: (loss weights, noise) is the class's own default, so a user's model trains like the shipped ones.
ELLIPSE_MODEL_DEFAULTS: Dict[str, Any] = {"width": 16}


def check_dataset(dataset: Any) -> int:
    """``dataset`` as an int after checking it names an ellipse dataset.

    Args:
        dataset (int): the ellipse dataset, one of :data:`DATASETS` (1, 2 or 3).

    Returns:
        int: ``dataset``.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    if isinstance(dataset, bool) or dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {dataset!r}")
    return int(dataset)


def zoo_name(dataset: int) -> str:
    """The zoo name of the shipped regressor for an ellipse dataset.

    Args:
        dataset (int): 1, 2 or 3.

    Returns:
        str: ``"ellipses_ds{dataset}"``.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    return f"ellipses_ds{check_dataset(dataset)}"


def ellipse_regressor(dataset: int, **kwargs: Any) -> SelfSupervisedAttentionRegressor:
    """A fresh regressor for an ellipse dataset: two outputs, one channel, ``S_R = 1 − object fraction`` (0.95 or
    0.90), and :data:`ELLIPSE_MODEL_DEFAULTS` unless overridden.

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3; sets the default ``area_target`` ``S_R`` to
            ``1 − OBJECT_FRACTION[dataset]``.
        **kwargs: further keyword arguments of :class:`~captum_ext.SelfSupervisedAttentionRegressor` (e.g.
            ``area_target``, ``width``, ``loss_weights``, ``noise``); they override the defaults above.
            ``out_features`` (2) and ``in_channels`` (1) are fixed and must not be passed.

    Returns:
        SelfSupervisedAttentionRegressor: a randomly initialised model in train mode, with identity target
        normalisation.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3, or a model argument is out of range.
        TypeError: if a model argument has the wrong type or is not a keyword of the model.

    Example::

        >>> from captum_ext.zoo.ellipses import ellipse_regressor
        >>> model = ellipse_regressor(2)
        >>> model.area_target
        0.9
    """
    dataset = check_dataset(dataset)
    kwargs.setdefault("area_target", 1.0 - OBJECT_FRACTION[dataset])
    for key, value in ELLIPSE_MODEL_DEFAULTS.items():
        kwargs.setdefault(key, value)
    return SelfSupervisedAttentionRegressor(out_features=2, in_channels=1, **kwargs)


def shipped_kwargs(dataset: int, weights_dir: Path) -> Dict[str, Any]:
    """The model settings recorded with the shipped weights (``"model_kwargs"`` of ``ellipses_ds{dataset}.json``).

    Args:
        dataset (int): 1, 2 or 3.
        weights_dir (Path): the folder holding the weights and their records (``captum_ext/zoo/weights``).

    Returns:
        dict: keyword arguments for :func:`ellipse_regressor`; empty if there is no record.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    record = Path(weights_dir) / f"{zoo_name(dataset)}.json"
    return json.loads(record.read_text()).get("model_kwargs", {}) if record.exists() else {}


__all__ = ["DATASETS", "ELLIPSE_MODEL_DEFAULTS", "check_dataset", "ellipse_regressor", "shipped_kwargs", "zoo_name"]
