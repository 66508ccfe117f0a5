"""Training, scoring and shipped weights of :class:`~captum_ext.SelfSupervisedAttentionRegressor` on the three
ellipse datasets of Li & Shimada.

The targets follow the paper: dataset 1 regresses the ellipse's inclination — as ``(cos 2θ, sin 2θ)``, because an
axis angle is 180°-periodic — and datasets 2 and 3 the ``(x, y)`` intersection of the two major axes in pixels.
The scoring functions (:func:`regression_targets`, :func:`decode`, :func:`errors`, :func:`attention_iou`,
:func:`predict`, :func:`evaluate`, :func:`background_shift`) live in
:mod:`captum_ext.training.ellipse_scoring` and are re-exported here. The shipped weights are the zoo entries
``ellipses_ds1`` … ``ellipses_ds3`` (:func:`captum_ext.zoo.load`); :func:`load_pretrained` is a shortcut.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from captum_ext import zoo
from captum_ext._utils.training import check_replaceable_run, record_json, train_epochs
from captum_ext._utils.validation import check_scalar
from captum_ext.datasets.ellipses import OBJECT_FRACTION, PAPER_SPLITS, EllipseBatch, make_ellipses
from captum_ext.models.self_supervised_attention import SelfSupervisedAttentionRegressor
from captum_ext.training.ellipse_scoring import (
    attention_iou,
    background_shift,
    decode,
    errors,
    evaluate,
    predict,
    regression_targets,
)
from captum_ext.zoo.ellipses import DATASETS, ELLIPSE_MODEL_DEFAULTS, check_dataset, ellipse_regressor, zoo_name

#: Training epochs of the shipped weights (``captum-ext train-regressor`` defaults).
DEFAULT_EPOCHS = {1: 8, 2: 30, 3: 12}


def new_model(dataset: int, **kwargs: Any) -> SelfSupervisedAttentionRegressor:
    """A fresh model for a dataset: two outputs, one channel, ``S_R = 1 − object fraction`` (0.95 or 0.90), and
    :data:`~captum_ext.zoo.ellipses.ELLIPSE_MODEL_DEFAULTS` unless overridden
    (:func:`captum_ext.zoo.ellipses.ellipse_regressor`).

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3; sets the default ``area_target`` ``S_R`` to
            ``1 − OBJECT_FRACTION[dataset]``.
        **kwargs: further keyword arguments of :class:`~captum_ext.SelfSupervisedAttentionRegressor` (e.g.
            ``area_target``, ``width``, ``loss_weights``, ``noise``); they override the defaults above.
            ``out_features`` (2) and ``in_channels`` (1) are fixed and must not be passed.

    Returns:
        SelfSupervisedAttentionRegressor: a randomly initialised model in train mode, with identity target
        normalisation (:func:`fit` sets it from the training targets).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3, or a model argument is out of range.
        TypeError: if a model argument has the wrong type or is not a keyword of the model.
    """
    return ellipse_regressor(dataset, **kwargs)


def fit(
    model: SelfSupervisedAttentionRegressor,
    batch: EllipseBatch,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    show_progress: bool = True,
    attention: bool = True,
    checkpoint: Optional[Union[str, Path]] = None,
) -> List[Dict[str, float]]:
    """Train ``model`` on an ellipse batch with eq. 1; returns the per-epoch mean loss parts.

    The model's target normalisation is set from the batch's targets first; training uses AdamW with a one-cycle
    schedule, seeded (:func:`captum_ext._utils.training.train_epochs`), and leaves the model in eval mode.

    Args:
        model (SelfSupervisedAttentionRegressor): a model with two outputs (e.g. from :func:`new_model`).
        batch (EllipseBatch): training data from :func:`captum_ext.datasets.ellipses.make_ellipses`.
        epochs (int): passes over ``batch``.
        batch_size (int, optional): images per optimisation step. Default: 64.
        lr (float, optional): peak learning rate. Default: 2e-3.
        seed (int, optional): seeds Python, numpy and torch, and the shuffling. Default: 0.
        show_progress (bool, optional): show a progress bar. Default: True.
        attention (bool, optional): ``False`` trains only the regressor on the supervised term (the ablation
            without the attention branch). Default: True.
        checkpoint (str or Path, optional): if given, the model's ``state_dict`` is saved there after every epoch.
            Default: None.

    Returns:
        list of dict: one dict per epoch with the mean of each loss part (``"total"``, ``"supervised"``, and with
        attention also ``"noisy"`` and ``"area"``).

    Raises:
        TypeError: ``epochs`` or ``batch_size`` is not an integer (bools included), or the images are not floats.
        ValueError: if ``epochs`` or ``batch_size`` is below 1, ``batch`` holds fewer than 2 images, or its images
            are malformed or hold NaN / inf (the model is then left as found).
    """
    # Checked before the model's target statistics are replaced, so a refused call leaves the model as found.
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_scalar(value, name, low=1, integer=True)
    if len(batch) < 2:
        raise ValueError(f"`batch` must hold at least 2 images (the targets' scale is their standard deviation), "
                         f"got {len(batch)}")
    model._check_images(batch.images, finite=True)  # the supervised-only path would otherwise train on NaN
    targets = regression_targets(batch)
    model.set_target_normalization(targets.mean(0), targets.std(0).clamp_min(1e-6))

    def batch_loss(index: Tensor) -> Dict[str, Tensor]:
        images, wanted = batch.images[index], targets[index]
        if not attention:
            standardised = (wanted - model.target_mean) / model.target_scale
            supervised = ((model._run_regressor(images) - standardised) ** 2).sum(1).mean()
            return {"total": supervised, "supervised": supervised}
        return model.loss(images, wanted, return_parts=True)._asdict()

    return train_epochs(model, len(batch), batch_loss, epochs, batch_size=batch_size, lr=lr, seed=seed,
                        show_progress=show_progress, desc=f"ellipses ds{batch.dataset}", checkpoint=checkpoint)


def weights_path(dataset: int) -> Path:
    """Where the shipped weights of a dataset live (:func:`captum_ext.zoo.weights_path` of its zoo entry).

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3.

    Returns:
        Path: ``captum_ext/zoo/weights/ellipses_ds{dataset}.pt`` (the file is not required to exist); its
        training record is the ``.json`` next to it (:func:`training_record`).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    return zoo.weights_path(zoo_name(dataset))


def load_pretrained(dataset: int, device: Union[str, torch.device] = "cpu") -> SelfSupervisedAttentionRegressor:
    """The shipped model for an ellipse dataset (eval mode): ``zoo.load("ellipses_ds{dataset}")``.

    Args:
        dataset (int): 1, 2 or 3.
        device (str or torch.device, optional): where to put the model. Default: ``"cpu"``.

    Returns:
        SelfSupervisedAttentionRegressor: the trained model in eval mode, built with the settings of its training
        record and loaded with ``weights_only=True``.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
        FileNotFoundError: if the weights file is missing.

    Example::

        >>> from captum_ext.datasets import ellipses
        >>> from captum_ext.training import ellipse_regression
        >>> model = ellipse_regression.load_pretrained(2)
        >>> result = ellipse_regression.evaluate(model, ellipses.make_ellipses(50, dataset=2, seed=9))
        >>> sorted(result)
        ['attention_iou', 'mean_error', 'median_error']
    """
    return zoo.load(zoo_name(dataset), device=device)


def loss_settings(model: SelfSupervisedAttentionRegressor) -> Dict[str, Any]:
    """The settings of eq. 1 a model trains with (after its constructor defaults), as JSON-ready values.

    Recorded next to the weights so that a record still names the loss it was trained with when a constructor
    default changes later.

    Args:
        model (SelfSupervisedAttentionRegressor): the model.

    Returns:
        dict: ``"area_target"``, ``"loss_weights"`` (a list), ``"noise"`` and ``"noise_scale"``.

    Example::

        >>> from captum_ext.training import ellipse_regression
        >>> ellipse_regression.loss_settings(ellipse_regression.new_model(1, width=8))
        {'area_target': 0.95, 'loss_weights': [1.0, 1.0, 10.0], 'noise': 'gaussian', 'noise_scale': 0.75}
    """
    return {"area_target": model.area_target, "loss_weights": list(model.loss_weights), "noise": model.noise,
            "noise_scale": model.noise_scale}


def _command(dataset: int, n_train: int, n_test: int, epochs: int, seed: int, attention: bool,
             model_kwargs: Dict[str, Any]) -> str:
    # The shell command that retrains this record from the caller's own model arguments (the defaults fill in the
    # rest); settings the CLI has no option for need the Python call.
    extra = {k: v for k, v in model_kwargs.items() if k != "width"}
    if extra:
        args = ", ".join(f"{k}={v!r}" for k, v in model_kwargs.items())
        return (f"python -c \"from captum_ext.training.ellipse_regression import train_and_record; "
                f"train_and_record({dataset}, OUT, n_train={n_train}, n_test={n_test}, epochs={epochs}, "
                f"seed={seed}, attention={attention}, {args})\"")
    width = f" --width {model_kwargs['width']}" if "width" in model_kwargs else ""
    return (f"captum-ext train-regressor --dataset {dataset} --n-train {n_train} --n-test {n_test} --epochs {epochs} "
            f"--seed {seed}{width}{'' if attention else ' --no-attention'}")


def training_record(dataset: int) -> Dict[str, Any]:
    """The JSON record written next to the shipped weights (settings and held-out results): ``zoo.info``.

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3.

    Returns:
        dict: the record written by :func:`train_and_record`: ``"dataset"``, ``"attention"``, ``"n_train"``,
        ``"n_test"``, ``"epochs"``, ``"seed"``, ``"model_kwargs"``, ``"loss_settings"``, ``"command"``,
        ``"train_seconds"``, ``"torch_threads"``, ``"load_average"``, ``"final_epoch_loss"``, ``"test"`` (the
        :func:`evaluate` dict), ``"background_shift"`` and ``"unit"`` (``"degrees"`` or ``"pixels"``). Records
        written before the loss settings were stored lack ``"loss_settings"``, ``"command"`` and
        ``"load_average"``.

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
        FileNotFoundError: if the record ``ellipses_ds{dataset}.json`` does not exist.
    """
    return dict(zoo.info(zoo_name(dataset)))


def train_and_record(
    dataset: int,
    out_dir: Union[str, Path],
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    epochs: Optional[int] = None,
    seed: int = 0,
    attention: bool = True,
    show_progress: bool = True,
    **model_kwargs: Any,
) -> Dict[str, Any]:
    """Generate the paper's training set, train, score on a fresh test set and save ``state_dict`` + JSON record.

    Files: ``ellipses_ds{dataset}.pt`` (or ``..._no_attention.pt``) and a ``.json`` with the settings, training
    time and held-out results — the layout of the zoo's shipped weights. Training data use ``seed``; the test set
    uses ``seed + 1``.

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3.
        out_dir (str or Path): output folder, created (with parents) if needed. The ``.pt`` file is rewritten
            after every epoch (:func:`fit`'s ``checkpoint``), so it holds the final weights at the end.
        n_train (int, optional): training images. Default: the paper's split,
            :data:`~captum_ext.datasets.ellipses.PAPER_SPLITS` (8000, 3000, 8000 for datasets 1, 2, 3).
        n_test (int, optional): held-out test images. Default: the paper's split (3000, 100, 3000).
        epochs (int, optional): training epochs. Default: :data:`DEFAULT_EPOCHS` (8, 30, 12).
        seed (int, optional): seed of the training data, the initialisation (``torch.manual_seed``) and the
            training loop; the test set uses ``seed + 1``. Default: 0.
        attention (bool, optional): ``False`` trains the ablation without the attention branch (see :func:`fit`)
            and adds ``_no_attention`` to the file names. Default: True.
        show_progress (bool, optional): show a progress bar. Default: True.
        **model_kwargs: keyword arguments of :class:`~captum_ext.SelfSupervisedAttentionRegressor`, overriding
            :data:`~captum_ext.zoo.ellipses.ELLIPSE_MODEL_DEFAULTS` and
            ``area_target = 1 − OBJECT_FRACTION[dataset]``; stored in the record so that the zoo rebuilds the same
            model.

    Returns:
        dict: the record also written to the ``.json`` file: settings (``"dataset"``, ``"attention"``,
        ``"n_train"``, ``"n_test"``, ``"epochs"``, ``"seed"``, ``"model_kwargs"``; ``"loss_settings"``, eq. 1 as
        trained, constructor defaults included, see :func:`loss_settings`; ``"command"``, the shell command that
        retrains it), ``"train_seconds"``, ``"torch_threads"``, ``"load_average"`` (the machine's 1-minute load
        average before and after training: other processes slow the timing), ``"final_epoch_loss"`` (last epoch's
        mean loss parts), ``"test"`` (:func:`evaluate` on the test set), ``"background_shift"``
        (:func:`background_shift` on the test set) and ``"unit"`` (``"degrees"`` for dataset 1, ``"pixels"``
        otherwise).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3, or ``n_train``, ``n_test``, ``epochs``, ``seed`` or a model
            argument is out of range.
        TypeError: if a size, ``seed`` or model argument has the wrong type, or is not a keyword of the model.
        ValueError: ``out_dir`` holds this dataset's run with other settings (its files would be replaced).
    """
    dataset = check_dataset(dataset)
    paper_train, paper_test = PAPER_SPLITS[dataset]
    n_train = paper_train if n_train is None else n_train
    n_test = paper_test if n_test is None else n_test
    epochs = DEFAULT_EPOCHS[dataset] if epochs is None else epochs
    # Named here: make_ellipses would say `n`, and one training image has no spread to normalise the targets by.
    check_scalar(n_train, "n_train", low=2, integer=True)
    check_scalar(n_test, "n_test", low=1, integer=True)
    check_scalar(epochs, "epochs", low=1, integer=True)  # before the data and the model are built
    if not isinstance(attention, (bool, np.bool_)):  # "no" is truthy: it trained with attention, recorded as "no"
        raise TypeError(f"`attention` must be a bool, got {type(attention).__name__}")
    attention = bool(attention)
    train = make_ellipses(n_train, dataset=dataset, seed=seed)
    test = make_ellipses(n_test, dataset=dataset, seed=seed + 1)
    torch.manual_seed(seed)
    command = _command(dataset, n_train, n_test, epochs, seed, attention, model_kwargs)
    model_kwargs = {**ELLIPSE_MODEL_DEFAULTS, "area_target": 1.0 - OBJECT_FRACTION[dataset], **model_kwargs}
    model = new_model(dataset, **model_kwargs)
    out = Path(out_dir)
    stem = zoo_name(dataset) + ("" if attention else "_no_attention")
    kwargs_json = {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()}
    check_replaceable_run(out / f"{stem}.json", {"n_train": n_train, "n_test": n_test, "epochs": epochs,
                                                  "seed": seed, "model_kwargs": kwargs_json})
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    history = fit(model, train, epochs=epochs, seed=seed, show_progress=show_progress, attention=attention,
                  checkpoint=out / f"{stem}.pt")
    seconds = time.perf_counter() - start
    record: Dict[str, Any] = {
        "dataset": dataset, "attention": attention, "n_train": n_train, "n_test": n_test, "epochs": epochs,
        "seed": seed, "model_kwargs": kwargs_json, "loss_settings": loss_settings(model),
        "command": command,
        "train_seconds": seconds, "torch_threads": torch.get_num_threads(),
        "load_average": [load_before, os.getloadavg()[0]], "final_epoch_loss": history[-1],
        "test": evaluate(model, test), "background_shift": background_shift(model, test),
        "unit": "degrees" if dataset == 1 else "pixels",
    }
    (out / f"{stem}.json").write_text(record_json(record))
    return record


__all__ = [
    "DATASETS", "DEFAULT_EPOCHS", "ELLIPSE_MODEL_DEFAULTS", "attention_iou", "background_shift", "decode", "errors",
    "evaluate", "fit", "load_pretrained", "loss_settings", "new_model", "predict", "regression_targets",
    "train_and_record", "training_record", "weights_path",
]
