"""Training and ROI-size-binned evaluation of :class:`ROIAttentionResNet` on the ``"roi"`` digit scenes.

The ROI scenes (:func:`captum_ext.datasets.scenes.make_scenes` with ``mode="roi"``) give a normalisable image, the
ROI mask selecting one digit, its class, and the ROI pixel count; :func:`evaluate` bins accuracy by that count with
:func:`captum_ext.metrics.binned_accuracy` (the paper's Tables 1–4 layout, bins :data:`ROI_BINS_64` for 64×64).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext import metrics
from captum_ext._utils.training import train_epochs
from captum_ext.datasets.scenes import ROI_BINS_64, SceneBatch, normalize
from captum_ext.models.roi_attention_resnet import ROIAttentionResNet


def _check_roi(batch: SceneBatch) -> None:
    if batch.mode != "roi":
        raise ValueError(f"`batch` must come from make_scenes(mode='roi'), got mode {batch.mode!r}")


def fit(
    model: ROIAttentionResNet,
    batch: SceneBatch,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    show_progress: bool = True,
    checkpoint: Optional[Union[str, Path]] = None,
) -> List[Dict[str, float]]:
    """Train with cross-entropy on ROI scenes (AdamW, one-cycle schedule, seeded); returns per-epoch mean loss.

    Args:
        model (ROIAttentionResNet): the network (any merge/mode/hard variant); it is left in eval mode.
        batch (SceneBatch): ROI scenes; images are normalised with :func:`captum_ext.datasets.scenes.normalize`.
        epochs (int): passes over ``batch``.
        batch_size (int, optional): scenes per optimisation step. Default: 64.
        lr (float, optional): peak learning rate of the one-cycle schedule. Default: 2e-3.
        seed (int, optional): seeds Python, numpy and torch, and the shuffling. Default: 0.
        show_progress (bool, optional): show a progress bar. Default: True.
        checkpoint (str or Path, optional): if given, the ``state_dict`` is saved there after every epoch.
            Default: None.

    Returns:
        list of dict: one dict per epoch, ``{"total": mean cross-entropy over the epoch's scenes}``.

    Raises:
        ValueError: if ``batch`` does not come from ``make_scenes(mode="roi")``, or ``epochs`` or ``batch_size``
            is below 1.
    """
    _check_roi(batch)
    images = normalize(batch.images)
    masks = batch.masks.float()

    def batch_loss(index: Tensor) -> Dict[str, Tensor]:
        loss = F.cross_entropy(model(images[index], masks[index]), batch.labels[index])
        return {"total": loss}

    return train_epochs(model, len(batch), batch_loss, epochs, batch_size=batch_size, lr=lr, seed=seed,
                        show_progress=show_progress, desc=f"ROI {model.merge}/{model.mode}/{model.hard}",
                        checkpoint=checkpoint)


@torch.no_grad()
def predict(model: ROIAttentionResNet, batch: SceneBatch, batch_size: int = 256) -> Tensor:
    """Logits ``N×C`` in eval mode, in batches.

    Gradients are not tracked; the images are normalised with :func:`captum_ext.datasets.scenes.normalize` and
    the ROI masks passed as float.

    Args:
        model (ROIAttentionResNet): the network; it is switched to (and left in) eval mode, and must be on the CPU,
            where the batch's tensors are.
        batch (SceneBatch): ROI scenes from ``make_scenes(mode="roi")``, images in ``[0, 1]`` (not normalised).
        batch_size (int, optional): scenes per forward pass. Default: 256.

    Returns:
        Tensor: ``N×C`` logits, ``C = num_classes`` of ``model``.

    Raises:
        ValueError: if ``batch`` does not come from ``make_scenes(mode="roi")``.
    """
    _check_roi(batch)
    model.eval()
    images, masks = normalize(batch.images), batch.masks.float()
    return torch.cat([model(images[i : i + batch_size], masks[i : i + batch_size])
                      for i in range(0, len(batch), batch_size)])


def evaluate(model: ROIAttentionResNet, batch: SceneBatch, bin_edges=ROI_BINS_64) -> metrics.BinnedAccuracy:
    """Accuracy binned by ROI size (class-mean and per-image), :func:`captum_ext.metrics.binned_accuracy`.

    Args:
        model (ROIAttentionResNet): the network (put in eval mode).
        batch (SceneBatch): ROI scenes from ``make_scenes(mode="roi")``.
        bin_edges (sequence of int, optional): ROI pixel-count bin edges. Default: :data:`ROI_BINS_64`.

    Returns:
        BinnedAccuracy: per-bin counts, class-mean and per-image accuracy, and the overall values.

    Example::

        >>> import torch
        >>> from captum_ext import ROIAttentionResNet
        >>> from captum_ext.datasets import scenes
        >>> from captum_ext.models import roi_training
        >>> batch = scenes.make_scenes(16, mode="roi", seed=0)
        >>> net = ROIAttentionResNet(num_classes=10, depth=18)
        >>> history = roi_training.fit(net, batch, epochs=1, batch_size=8, show_progress=False)
        >>> int(roi_training.evaluate(net, batch).counts.sum())
        16
    """
    logits = predict(model, batch)
    return metrics.binned_accuracy(logits, batch.labels, batch.roi_sizes, bin_edges=bin_edges)
