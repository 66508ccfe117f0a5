"""Scoring of the ellipse regressors: regression targets, decoding, errors, attention IoU and the background
shift of the predictions.

The targets follow Li & Shimada: dataset 1 regresses the ellipse's inclination — as ``(cos 2θ, sin 2θ)``, because
an axis angle is 180°-periodic — and datasets 2 and 3 the ``(x, y)`` intersection of the two major axes in pixels.
Everything here is re-exported by :mod:`captum_ext.training.ellipse_regression`, the module to import.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from captum_ext._utils.validation import check_scalar
from captum_ext.datasets.ellipses import EllipseBatch, angle_to_cos_sin, angular_error, cos_sin_to_angle
from captum_ext.models.self_supervised_attention import SelfSupervisedAttentionRegressor
from captum_ext.zoo.ellipses import check_dataset


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
    return cos_sin_to_angle(params) if check_dataset(dataset) == 1 else params


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
            dtype, NaN or inf), an empty ``images``, or a ``batch_size`` that is not an integer >= 1.
    """
    batch_size = int(check_scalar(batch_size, "batch_size", low=1, integer=True))
    if isinstance(images, Tensor) and images.shape[0] == 0:
        raise ValueError("`images` holds no image to predict")
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

    Raises:
        TypeError / ValueError: ``noise_scale`` not a finite number >= 0, or ``seed`` not an integer >= 0.
    """
    # NaN noise gave a NaN shift, a negative scale the same noise with its sign flipped.
    noise_scale = check_scalar(noise_scale, "noise_scale", low=0.0)
    seed = int(check_scalar(seed, "seed", low=0, integer=True))
    generator = torch.Generator().manual_seed(seed)
    noise = noise_scale * torch.randn(batch.images.shape, generator=generator)
    disturbed = batch.images + (~batch.masks.bool()).float() * noise
    clean = decode(predict(model, batch.images)["params"], batch.dataset)
    moved = decode(predict(model, disturbed)["params"], batch.dataset)
    if batch.dataset == 1:
        return float(angular_error(moved, clean).mean())
    return float((moved - clean).norm(dim=1).mean())
