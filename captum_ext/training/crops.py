"""Digit-crop pretraining: the first stage of every scene network trained from scratch.

Trained on whole 64×64 scenes from scratch, every architecture tried (plain VGG, VGG with BatchNorm, ResNet) sat at
chance for the first ≈ 30,000 samples: the net must find the digit among photo structure and digit-like clutter
before any gradient tells it what a digit is. Trained first on 32×32 crops centred (± a few pixels) on the digits
(:func:`captum_ext.datasets.scenes.digit_crops`), it reads digits, and scene training takes off at once. The zoo
scene classifiers (:mod:`captum_ext.training.scene_classifiers`) and the pretrained ROI backbone of the ROI
benchmark both start this way.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext._utils.training import optimisation_steps, train_epochs
from captum_ext._utils.validation import check_scalar
from captum_ext.datasets.scenes import NUM_CLASSES, SceneBatch, digit_crops


def _positive_int(value: Optional[int], name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def with_crop_head(trunk: nn.Module, sample: Tensor, num_classes: int = NUM_CLASSES) -> nn.Module:
    """``trunk`` followed by a temporary head for crop pretraining: global average pooling and a linear layer.

    The head's width is read from one forward pass of ``trunk`` on ``sample`` (in the trunk's current mode, so a
    trunk in train mode updates its BatchNorm statistics once, as the zoo recipe always did). The linear layer is
    initialised from torch's global random generator.

    Args:
        trunk (nn.Module): convolutional layers mapping crops to ``N×C×h×w`` features; its parameters are shared
            with the returned network, so training that network trains the trunk.
        sample (Tensor): a few crops (``k×3×side×side``) to read ``C`` from.
        num_classes (int, optional): outputs of the head. Default: :data:`~captum_ext.datasets.scenes.NUM_CLASSES`.

    Returns:
        nn.Module: ``nn.Sequential(trunk, AdaptiveAvgPool2d(1), Flatten(), Linear(C, num_classes))``.
    """
    with torch.no_grad():
        channels = trunk(sample).shape[1]
    return nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def pretrain_on_digit_crops(
    model: nn.Module,
    batch: SceneBatch,
    *,
    epochs: Optional[int] = None,
    steps: Optional[int] = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    jitter: float = 4.0,
    temporary_head: bool = False,
    show_progress: bool = True,
    desc: str = "digit-crop pretraining",
) -> List[Dict[str, float]]:
    """Train ``model`` with cross-entropy to classify the digit crops of ``batch``; returns the loss history.

    Crops are 32×32, centred on each scene's object with a uniform jitter of up to ``jitter`` pixels drawn from a
    generator seeded with ``seed``. Two schedules, chosen by which of ``epochs`` and ``steps`` is given:

    * ``epochs``: shuffled passes over the crops with a one-cycle learning rate
      (:func:`captum_ext._utils.training.train_epochs`, which seeds Python, numpy and torch with ``seed``);
    * ``steps``: ``steps`` mini-batches drawn with replacement (from the crop generator, after the crops) at a
      constant learning rate — the zoo recipe; the global random state is left to the caller.

    Both use AdamW with weight decay 1e-4, and ``model`` is left in train mode (``steps``) or eval mode
    (``epochs``), as the later stage expects.

    Args:
        model (nn.Module): a classifier of ``N×3×32×32`` crops into
            :data:`~captum_ext.datasets.scenes.NUM_CLASSES` logits (e.g. a torchvision ResNet), or, with
            ``temporary_head``, a convolutional trunk.
        batch (SceneBatch): training scenes (``"single"`` mode, train split, in practice).
        epochs (int, optional): passes over the crops; exactly one of ``epochs`` and ``steps`` must be given.
        steps (int, optional): mini-batches drawn with replacement.
        batch_size (int, optional): crops per step. Default: 64.
        lr (float, optional): the (peak) learning rate. Default: 2e-3.
        seed (int, optional): seed of the crop jitter (and of the shuffling, or the draws). Default: 0.
        jitter (float, optional): largest offset of a crop's centre from the object's, per axis, in pixels.
            Default: 4.0.
        temporary_head (bool, optional): ``model`` is a trunk; train it through :func:`with_crop_head` and drop
            the head afterwards. The head's initial weights come from torch's global generator, as any new
            module's do: call ``torch.manual_seed`` first for a reproducible run. Default: False.
        show_progress (bool, optional): show a progress bar. Default: True.
        desc (str, optional): progress bar label. Default: ``"digit-crop pretraining"``.

    Returns:
        list of dict: ``{"total": mean loss}`` per epoch (``epochs``), or ``{"total": loss}`` per step (``steps``).

    Raises:
        ValueError: if not exactly one of ``epochs`` and ``steps`` is given, or it or ``batch_size`` is not a
            positive int, ``lr`` is not a finite number > 0, ``jitter`` not a finite number >= 0, ``seed`` not an
            integer >= 0, or ``batch`` holds no scene.
        TypeError: if ``batch`` is not a :class:`~captum_ext.datasets.scenes.SceneBatch`.

    Example::

        >>> import torch, torchvision
        >>> from captum_ext.datasets import scenes
        >>> from captum_ext.training import pretrain_on_digit_crops
        >>> net = torchvision.models.resnet18(weights=None, num_classes=scenes.NUM_CLASSES)
        >>> data = scenes.make_scenes(32, mode="single", split="train", seed=0)
        >>> history = pretrain_on_digit_crops(net, data, steps=2, batch_size=8, show_progress=False)
        >>> len(history), sorted(history[0])
        (2, ['total'])
    """
    if (epochs is None) == (steps is None):
        raise ValueError(f"give exactly one of `epochs` and `steps`, got epochs={epochs!r}, steps={steps!r}")
    _positive_int(epochs, "epochs")
    _positive_int(steps, "steps")
    _positive_int(batch_size, "batch_size")
    if not isinstance(batch, SceneBatch):
        raise TypeError(f"`batch` must be a SceneBatch, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("`batch` holds no scene to crop")
    # Before any work: an infinite rate trained to NaN weights while the reported loss stayed finite.
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    jitter = check_scalar(jitter, "jitter", low=0.0)
    seed = int(check_scalar(seed, "seed", low=0, integer=True))
    generator = torch.Generator().manual_seed(seed)
    crops, labels = digit_crops(batch, jitter=jitter, generator=generator), batch.labels
    net = with_crop_head(model, crops[:2]) if temporary_head else model

    def crop_loss(index: Tensor) -> Dict[str, Tensor]:
        return {"total": F.cross_entropy(net(crops[index]), labels[index])}

    if epochs is not None:
        return train_epochs(net, len(batch), crop_loss, epochs, batch_size=batch_size, lr=lr, seed=seed,
                            show_progress=show_progress, desc=desc)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    draws = (torch.randint(0, len(batch), (batch_size,), generator=generator) for _ in range(steps))
    history: List[Dict[str, float]] = []
    with tqdm(total=steps, disable=not show_progress, desc=desc, leave=False) as bar:
        for _, parts in optimisation_steps(draws, crop_loss, optimiser):
            history.append(parts)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['total']:.3f}")
    return history


def smoothed_loss(history: List[Dict[str, float]], new_weight: float = 0.05) -> float:
    """Exponential moving average of the ``"total"`` losses of a history, starting from the first.

    Args:
        history (list of dict): per-step losses, e.g. from :func:`pretrain_on_digit_crops` with ``steps``.
        new_weight (float, optional): weight of each new loss; the running value keeps ``1 − new_weight``.
            Default: 0.05.

    Returns:
        float: the final smoothed loss (NaN for an empty history).
    """
    smoothed = float("nan")
    for i, parts in enumerate(history):
        smoothed = parts["total"] if i == 0 else (1 - new_weight) * smoothed + new_weight * parts["total"]
    return smoothed
