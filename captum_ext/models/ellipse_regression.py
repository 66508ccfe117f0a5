"""Training, scoring and shipped weights of :class:`SelfSupervisedAttentionRegressor` on the three ellipse datasets.

The targets follow the paper: dataset 1 regresses the ellipse's inclination — as ``(cos 2θ, sin 2θ)``, because an
axis angle is 180°-periodic — and datasets 2 and 3 the ``(x, y)`` intersection of the two major axes in pixels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor

from captum_ext._utils.training import train_epochs
from captum_ext.datasets.ellipses import (
    OBJECT_FRACTION,
    EllipseBatch,
    angle_to_cos_sin,
    angular_error,
    cos_sin_to_angle,
)
from captum_ext.models.self_supervised_attention import SelfSupervisedAttentionRegressor

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Training settings of the shipped weights (``captum-ext train-regressor`` defaults).
DEFAULT_EPOCHS = {1: 8, 2: 30, 3: 12}

#: Model settings for the ellipse sets: a narrower regressor than the class default (faster on CPU) and a
#: stronger area term (c = 10): with c = 1 the attention kept covering ~25 % of a dataset-1 image (IoU 0.33).
ELLIPSE_MODEL_DEFAULTS: Dict[str, Any] = {"width": 16, "loss_weights": (1.0, 1.0, 10.0)}


def _check_dataset(dataset: Any) -> int:
    if dataset not in (1, 2, 3):
        raise ValueError(f"`dataset` must be 1, 2 or 3, got {dataset!r}")
    return int(dataset)


def regression_targets(batch: EllipseBatch) -> Tensor:
    """``N×2`` training targets: ``(cos 2θ, sin 2θ)`` for dataset 1, the ``(x, y)`` intersection otherwise.

    Args:
        batch (EllipseBatch): a batch from :func:`captum_ext.datasets.ellipses.make_ellipses`; its ``targets`` are
            ``N`` inclinations in degrees (dataset 1) or ``N×2`` ``(x, y)`` points in pixels (datasets 2 and 3).

    Returns:
        Tensor: ``N×2`` float32 regression targets, :func:`captum_ext.datasets.ellipses.angle_to_cos_sin` of the
        inclinations (dataset 1) or the intersection points in continuous pixel coordinates (datasets 2 and 3).
    """
    if batch.dataset == 1:
        return angle_to_cos_sin(batch.targets)
    return batch.targets.to(torch.float32)


def decode(params: Tensor, dataset: int) -> Tensor:
    """The model's ``N×2`` output in the dataset's units: degrees in ``[0, 180)`` (dataset 1) or ``(x, y)``.

    Args:
        params (Tensor): ``N×2`` model output (``params`` of :func:`predict`): ``(cos 2θ, sin 2θ)``, not
            necessarily unit length, for dataset 1; ``(x, y)`` in pixels for datasets 2 and 3.
        dataset (int): the ellipse dataset, 1, 2 or 3.

    Returns:
        Tensor: dataset 1: ``N`` inclinations in degrees in ``[0, 180)``
        (:func:`captum_ext.datasets.ellipses.cos_sin_to_angle`); datasets 2 and 3: ``params`` itself (``N×2``
        ``(x, y)`` points in continuous pixel coordinates).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    return cos_sin_to_angle(params) if _check_dataset(dataset) == 1 else params


def errors(params: Tensor, batch: EllipseBatch) -> Tensor:
    """Per-image error: angular error in degrees (dataset 1) or Euclidean distance in pixels (datasets 2, 3).

    Args:
        params (Tensor): ``N×2`` model output in the targets' units (``params`` of :func:`predict`, not decoded):
            ``(cos 2θ, sin 2θ)`` for dataset 1, ``(x, y)`` in pixels for datasets 2 and 3.
        batch (EllipseBatch): the batch the predictions were made on (its ``targets`` and ``dataset`` are used).

    Returns:
        Tensor: ``N`` errors: the 180°-periodic :func:`captum_ext.datasets.ellipses.angular_error` in degrees in
        ``[0, 90]`` (dataset 1) or the distance in pixels to the true intersection (datasets 2 and 3).
    """
    if batch.dataset == 1:
        return angular_error(decode(params, 1), batch.targets)
    return (params - batch.targets).norm(dim=1)


def attention_iou(attention: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-image IoU of ``attention >= threshold`` with the ellipse mask(s).

    Args:
        attention (Tensor): ``N×1×H×W`` attention maps ``W`` in ``[0, 1]`` (``attention`` of :func:`predict`).
        masks (Tensor): ``N×1×H×W`` ground-truth masks (``EllipseBatch.masks``; any dtype, non-zero = object).
        threshold (float, optional): attention values ``>= threshold`` count as predicted object. Default: 0.5.

    Returns:
        Tensor: ``N`` float64 IoUs in ``[0, 1]``; an image whose thresholded map and mask are both empty scores 1.
    """
    predicted = attention >= threshold
    truth = masks.bool()
    inter = (predicted & truth).flatten(1).sum(1).double()
    union = (predicted | truth).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def new_model(dataset: int, **kwargs: Any) -> SelfSupervisedAttentionRegressor:
    """A fresh model for a dataset: two outputs, one channel, ``S_R = 1 − object fraction`` (0.95 or 0.90), and
    :data:`ELLIPSE_MODEL_DEFAULTS` unless overridden.

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3; sets the default ``area_target`` ``S_R`` to
            ``1 − OBJECT_FRACTION[dataset]``.
        **kwargs: further keyword arguments of :class:`SelfSupervisedAttentionRegressor` (e.g. ``area_target``,
            ``width``, ``loss_weights``, ``noise``); they override the defaults above. ``out_features`` (2) and
            ``in_channels`` (1) are fixed and must not be passed.

    Returns:
        SelfSupervisedAttentionRegressor: a randomly initialised model in train mode, with identity target
        normalisation (:func:`fit` sets it from the training targets).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3, or a model argument is out of range.
        TypeError: if a model argument has the wrong type or is not a keyword of the model.
    """
    dataset = _check_dataset(dataset)
    kwargs.setdefault("area_target", 1.0 - OBJECT_FRACTION[dataset])
    for key, value in ELLIPSE_MODEL_DEFAULTS.items():
        kwargs.setdefault(key, value)
    return SelfSupervisedAttentionRegressor(out_features=2, in_channels=1, **kwargs)


@torch.no_grad()
def predict(model: SelfSupervisedAttentionRegressor, images: Tensor, batch_size: int = 500) -> Dict[str, Tensor]:
    """``params`` and ``attention`` for many images, in eval mode, in batches.

    Gradients are not tracked, and ``model`` is left in eval mode.

    Args:
        model (SelfSupervisedAttentionRegressor): the model; it is switched to eval mode.
        images (Tensor): ``N×C×H×W`` floating-point images (``N×1×H×W`` for the ellipse sets), on the model's
            device.
        batch_size (int, optional): number of images per forward pass. Default: 500.

    Returns:
        dict: ``"params"``: ``N×out_features`` predictions in the targets' units (``N×2``; see :func:`decode`),
        and ``"attention"``: ``N×1×H×W`` attention maps ``W`` in ``[0, 1]``.

    Raises:
        TypeError, ValueError: from the model's input checks (non-tensor, wrong shape or channel count, integer
            dtype, NaN or inf).
    """
    model.eval()
    params, attention = [], []
    for start in range(0, images.shape[0], batch_size):
        p, w = model(images[start : start + batch_size])
        params.append(p)
        attention.append(w)
    return {"params": torch.cat(params), "attention": torch.cat(attention)}


def evaluate(model: SelfSupervisedAttentionRegressor, batch: EllipseBatch) -> Dict[str, float]:
    """Mean error (degrees or pixels), median error and mean attention IoU on a batch.

    Args:
        model (SelfSupervisedAttentionRegressor): a model trained on ``batch.dataset``; it is run through
            :func:`predict` (and left in eval mode), so it must be on the CPU, where the batch's tensors are.
        batch (EllipseBatch): held-out data from :func:`captum_ext.datasets.ellipses.make_ellipses`.

    Returns:
        dict: float values ``"mean_error"`` and ``"median_error"`` (:func:`errors`: degrees for dataset 1, pixels
        for datasets 2 and 3; the median is torch's lower median for an even count) and ``"attention_iou"`` (the
        mean :func:`attention_iou` at threshold 0.5).
    """
    out = predict(model, batch.images)
    err = errors(out["params"], batch)
    return {"mean_error": float(err.mean()), "median_error": float(err.median()),
            "attention_iou": float(attention_iou(out["attention"], batch.masks).mean())}


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

    Args:
        model: a :class:`SelfSupervisedAttentionRegressor` with two outputs.
        batch: training data from :func:`captum_ext.datasets.ellipses.make_ellipses`.
        epochs, batch_size, lr, seed: training settings (AdamW with a one-cycle schedule, seeded).
        show_progress: show a progress bar.
        attention: ``False`` trains only the regressor on the supervised term (the ablation without the
            attention branch).
        checkpoint: if given, the model's ``state_dict`` is saved there after every epoch.

    Returns:
        list of dict: one dict per epoch with the mean of each loss part (``"total"``, ``"supervised"``, and with
        attention also the noisy-image and area terms).
    """
    targets = regression_targets(batch)
    model.set_target_normalization(targets.mean(0), targets.std(0).clamp_min(1e-6))

    def batch_loss(index: Tensor) -> Dict[str, Tensor]:
        images, wanted = batch.images[index], targets[index]
        if not attention:
            standardised = (wanted - model.target_mean) / model.target_scale
            supervised = ((model.regressor(images) - standardised) ** 2).sum(1).mean()
            return {"total": supervised, "supervised": supervised}
        return model.loss(images, wanted, return_parts=True)._asdict()

    return train_epochs(model, len(batch), batch_loss, epochs, batch_size=batch_size, lr=lr, seed=seed,
                        show_progress=show_progress, desc=f"ellipses ds{batch.dataset}", checkpoint=checkpoint)


def weights_path(dataset: int) -> Path:
    """Where the shipped weights of a dataset live.

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3.

    Returns:
        Path: ``captum_ext/models/weights/ellipses_ds{dataset}.pt`` (the file is not required to exist); its
        training record is the ``.json`` next to it (:func:`training_record`).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
    """
    return WEIGHTS_DIR / f"ellipses_ds{_check_dataset(dataset)}.pt"


def load_pretrained(dataset: int, device: Union[str, torch.device] = "cpu") -> SelfSupervisedAttentionRegressor:
    """The shipped model for an ellipse dataset (eval mode), loaded with ``weights_only=True``.

    Args:
        dataset (int): 1, 2 or 3.
        device (str or torch.device, optional): where to put the model. Default: ``"cpu"``.

    Returns:
        SelfSupervisedAttentionRegressor: the trained model in eval mode.

    Example::

        >>> from captum_ext.datasets import ellipses
        >>> from captum_ext.models import ellipse_regression
        >>> model = ellipse_regression.load_pretrained(2)
        >>> result = ellipse_regression.evaluate(model, ellipses.make_ellipses(50, dataset=2, seed=9))
        >>> sorted(result)
        ['attention_iou', 'mean_error', 'median_error']
    """
    path = weights_path(dataset)
    if not path.exists():
        raise FileNotFoundError(f"no shipped weights at {path}; train them with `captum-ext train-regressor`")
    record = path.with_suffix(".json")
    kwargs = json.loads(record.read_text()).get("model_kwargs", {}) if record.exists() else {}
    model = new_model(dataset, **kwargs)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def training_record(dataset: int) -> Dict[str, Any]:
    """The JSON record written next to the shipped weights (settings and held-out results).

    Args:
        dataset (int): the ellipse dataset, 1, 2 or 3.

    Returns:
        dict: the record written by :func:`train_and_record`: ``"dataset"``, ``"attention"``, ``"n_train"``,
        ``"n_test"``, ``"epochs"``, ``"seed"``, ``"model_kwargs"``, ``"train_seconds"``, ``"torch_threads"``,
        ``"final_epoch_loss"``, ``"test"`` (the :func:`evaluate` dict), ``"background_shift"`` and ``"unit"``
        (``"degrees"`` or ``"pixels"``).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3.
        FileNotFoundError: if the record ``ellipses_ds{dataset}.json`` does not exist.
    """
    return json.loads(weights_path(dataset).with_suffix(".json").read_text())


@torch.no_grad()
def background_shift(model: SelfSupervisedAttentionRegressor, batch: EllipseBatch, noise_scale: float = 0.5,
                     seed: int = 0) -> float:
    """How far the prediction moves when fresh Gaussian noise (std ``noise_scale``) is added to every pixel
    *outside* the true ellipse mask(s): mean angular difference in degrees (dataset 1) or distance in pixels.

    The paper's motivation: a regressor that depends only on the object should not move.

    Args:
        model (SelfSupervisedAttentionRegressor): a model trained on ``batch.dataset``; it is run through
            :func:`predict` (and left in eval mode), so it must be on the CPU, where the batch's tensors are.
        batch (EllipseBatch): the images and their true masks (``N×1×H×W``).
        noise_scale (float, optional): standard deviation of the added noise, in image intensity units.
            Default: 0.5.
        seed (int, optional): seed of the noise (a private ``torch.Generator``; the global RNG is untouched).
            Default: 0.

    Returns:
        float: the mean shift of the decoded prediction: :func:`captum_ext.datasets.ellipses.angular_error` in
        degrees (dataset 1) or Euclidean distance in pixels (datasets 2 and 3); 0 for a model that ignores the
        background.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = noise_scale * torch.randn(batch.images.shape, generator=generator)
    disturbed = batch.images + (~batch.masks.bool()).float() * noise
    clean = decode(predict(model, batch.images)["params"], batch.dataset)
    moved = decode(predict(model, disturbed)["params"], batch.dataset)
    if batch.dataset == 1:
        return float(angular_error(moved, clean).mean())
    return float((moved - clean).norm(dim=1).mean())


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
    time and held-out results. Training data use ``seed``; the test set uses ``seed + 1``.

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
        **model_kwargs: keyword arguments of :class:`SelfSupervisedAttentionRegressor`, overriding
            :data:`ELLIPSE_MODEL_DEFAULTS` and ``area_target = 1 − OBJECT_FRACTION[dataset]``; stored in the
            record so that :func:`load_pretrained` rebuilds the same model.

    Returns:
        dict: the record also written to the ``.json`` file: settings (``"dataset"``, ``"attention"``,
        ``"n_train"``, ``"n_test"``, ``"epochs"``, ``"seed"``, ``"model_kwargs"``), ``"train_seconds"``,
        ``"torch_threads"``, ``"final_epoch_loss"`` (last epoch's mean loss parts), ``"test"`` (:func:`evaluate` on
        the test set), ``"background_shift"`` (:func:`background_shift` on the test set) and ``"unit"``
        (``"degrees"`` for dataset 1, ``"pixels"`` otherwise).

    Raises:
        ValueError: if ``dataset`` is not 1, 2 or 3, or ``n_train``, ``n_test``, ``epochs``, ``seed`` or a model
            argument is out of range.
        TypeError: if a size, ``seed`` or model argument has the wrong type, or is not a keyword of the model.
    """
    import time

    from captum_ext.datasets.ellipses import PAPER_SPLITS, make_ellipses

    dataset = _check_dataset(dataset)
    paper_train, paper_test = PAPER_SPLITS[dataset]
    n_train = paper_train if n_train is None else n_train
    n_test = paper_test if n_test is None else n_test
    epochs = DEFAULT_EPOCHS[dataset] if epochs is None else epochs
    train = make_ellipses(n_train, dataset=dataset, seed=seed)
    test = make_ellipses(n_test, dataset=dataset, seed=seed + 1)
    torch.manual_seed(seed)
    model_kwargs = {**ELLIPSE_MODEL_DEFAULTS, "area_target": 1.0 - OBJECT_FRACTION[dataset], **model_kwargs}
    model = new_model(dataset, **model_kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ellipses_ds{dataset}" + ("" if attention else "_no_attention")
    start = time.perf_counter()
    history = fit(model, train, epochs=epochs, seed=seed, show_progress=show_progress, attention=attention,
                  checkpoint=out / f"{stem}.pt")
    seconds = time.perf_counter() - start
    record: Dict[str, Any] = {
        "dataset": dataset, "attention": attention, "n_train": n_train, "n_test": n_test, "epochs": epochs,
        "seed": seed, "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()},
        "train_seconds": seconds,
        "torch_threads": torch.get_num_threads(), "final_epoch_loss": history[-1],
        "test": evaluate(model, test), "background_shift": background_shift(model, test),
        "unit": "degrees" if dataset == 1 else "pixels",
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
