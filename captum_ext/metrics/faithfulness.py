"""Deletion and insertion (Petsiuk et al., *RISE: Randomized Input Sampling for Explanation of Black-box Models*,
BMVC 2018): does a map rank the pixels the model actually uses?

Deletion starts from the image and replaces its pixels by a baseline in the order of the map (highest first), in
``steps`` equal steps; the probability of the explained class after each step draws a curve from the untouched
image (x = 0) to the fully replaced one (x = 1), and the score is its area (trapezoidal rule). A faithful map makes
the probability fall at once: **lower is better**. Insertion starts from the baseline (RISE: a blurred copy) and
puts the pixels back in the same order: **higher is better**. All ``steps + 1`` images of every pair go through
the model in batched forwards on the images' device. Ties in the map are broken by pixel position (a stable sort),
so the order, and the result, are the same on every device and in every process.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_ext._utils.attribution import eval_mode
from captum_ext._utils.validation import check_in_choices, check_scalar
from captum_ext.metrics._checks import (TensorLike, check_image_maps, check_images, check_scores_independent,
                                        check_target_range, check_targets, ranking_values)
from captum_ext.metrics._streaming import (FIXED_POINT_UNIT, SumMetric, fixed_point_mean, per_pair_values,
                                           to_fixed_point)

__all__ = ["BASELINES", "MODES", "FaithfulnessAUCMetric", "deletion_insertion_curves", "curve_auc"]

MODES = ("deletion", "insertion")
BASELINES = ("zero", "blur", "mean")
#: RISE's baselines: deletion replaces pixels by zeros, insertion starts from a blurred copy.
DEFAULT_BASELINE = {"deletion": "zero", "insertion": "blur"}
#: RISE's blur: an 11×11 Gaussian kernel of standard deviation 5.
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
#: The fixed-point unit of :class:`FaithfulnessAUCMetric`'s summed state (shared with the energy metric).
AUC_UNIT = FIXED_POINT_UNIT


def baseline_images(images: Tensor, kind: str) -> Tensor:
    """The images every pixel is moved towards (deletion) or from (insertion).

    Args:
        images (Tensor): ``N×C×H×W`` images.
        kind (str): ``"zero"``, ``"blur"`` (RISE's 11×11 Gaussian, σ = 5, reflected at the border) or ``"mean"``
            (each image's per-channel mean).

    Returns:
        Tensor: ``N×C×H×W`` baseline images.

    Raises:
        ValueError: an unknown ``kind``, or ``"blur"`` of images with a side of 5 pixels or fewer.
    """
    check_in_choices(kind, "baseline", BASELINES)
    if kind == "zero":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    from torchvision.transforms.functional import gaussian_blur

    if min(images.shape[-2:]) <= BLUR_KERNEL // 2:  # reflection padding needs more pixels than the kernel's radius
        raise ValueError(f"`images` of {images.shape[-2]}×{images.shape[-1]} pixels are too small for the blurred "
                         f"baseline (RISE's {BLUR_KERNEL}×{BLUR_KERNEL} kernel needs more than {BLUR_KERNEL // 2} "
                         f"pixels per side): choose baseline='zero' or 'mean'")
    return gaussian_blur(images, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])


def deletion_insertion_curves(
    model: nn.Module,
    images: Tensor,
    maps: TensorLike,
    targets: TensorLike,
    mode: str = "deletion",
    steps: int = 32,
    baseline: Optional[str] = None,
    multi_label: bool = False,
    batch_size: int = 64,
) -> Tensor:
    r"""The probability of each pair's class along its deletion or insertion curve.

    Args:
        model (nn.Module): the classifier, taking ``images`` as they are and returning ``B×K`` scores. It runs in
            eval mode (BatchNorm on its running statistics, which stay untouched; dropout off), and every module's
            train/eval flag and every parameter's ``requires_grad`` are restored afterwards, also after an error.
        images (Tensor): ``N×C×H×W`` finite images, one per pair.
        maps (Tensor): ``N×H×W`` (or ``N×1×H×W``) finite maps ranking the pixels, highest first, with the images'
            ``H×W``.
        targets (Tensor or sequence of int): ``N`` integer class indices in ``[0, K)``.
        mode (str): ``"deletion"`` or ``"insertion"``. Default: deletion.
        steps (int): how many equal steps take the curve from the image to the baseline (after step k,
            ``floor(k·H·W / steps)`` pixels are replaced: steps of equal size to one pixel). Default: 32.
        baseline (str, optional): one of :data:`BASELINES`. Default: RISE's, ``"zero"`` for deletion and
            ``"blur"`` for insertion.
        multi_label (bool): the class probability is a sigmoid of the score (else a softmax over classes).
        batch_size (int): images per forward pass. Default: 64.

    Returns:
        Tensor: ``N×(steps+1)`` float32 probabilities on the images' device, from x = 0 to x = 1.

    Raises:
        TypeError: non-integer ``targets``, or arguments of the wrong type.
        ValueError: ``images`` or ``maps`` of the wrong shape (maps must have the images' H×W, not just as many
            pixels), on different devices or holding NaN / inf, ``targets`` of the wrong length or outside
            ``[0, K)``, a model that does not return ``B×K`` scores, or a bad ``mode``, ``steps``, ``baseline`` or
            ``batch_size``.

    Example::

        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([[4.0, 0, 0, 0], [0, 0, 0, 0]]))
        >>> images, maps = torch.ones(1, 1, 2, 2), torch.tensor([[[1.0, 0], [0, 0]]])
        >>> deletion_insertion_curves(model, images, maps, torch.tensor([0]), steps=4)[0]  # the evidence goes first
        tensor([0.9820, 0.5000, 0.5000, 0.5000, 0.5000])
    """
    check_in_choices(mode, "mode", MODES)
    steps = int(check_scalar(steps, "steps", low=1, integer=True))
    batch_size = int(check_scalar(batch_size, "batch_size", low=1, integer=True))
    images = check_images(images, "images")
    n, _, height, width = images.shape
    maps = check_image_maps(maps, "maps", images).reshape(n, -1)
    # gather needs int64 indices on the scores' device (a no-op for a long tensor already there).
    targets = check_targets(targets, "targets", n).to(device=images.device, dtype=torch.long)
    pixels = height * width
    base = baseline_images(images, baseline or DEFAULT_BASELINE[mode])
    start, finish = (images, base) if mode == "deletion" else (base, images)
    # Rank of every pixel in the map's order (stable: ties by position, the same on every device).
    order = ranking_values(maps).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(n, -1))
    rank = rank.view(n, 1, height, width)
    # Step k has replaced floor(k·H·W / steps) pixels: equal steps (to one pixel) that end exactly at x = 1. With
    # ceil(H·W / steps) per step, a small image or many steps replaced everything early and the curve stayed flat.
    changed = [k * pixels // steps for k in range(steps + 1)]
    curves = torch.empty(n, steps + 1, dtype=torch.float32, device=images.device)
    jobs = [(i, k) for i in range(n) for k in range(steps + 1)]
    check_scores_independent(model, min(batch_size, len(jobs)))
    # eval_mode: a model left in train mode would score with batch statistics and update its BatchNorm buffers.
    with torch.no_grad(), eval_mode(model):
        for first in range(0, len(jobs), batch_size):
            part = jobs[first:first + batch_size]
            rows = torch.tensor([i for i, _ in part], device=images.device)
            limits = torch.tensor([changed[k] for _, k in part], device=images.device).view(-1, 1, 1, 1)
            moved = rank[rows] < limits
            scores = model(torch.where(moved, finish[rows], start[rows]))
            if first == 0:  # K is known from the first forward; every later one has the same
                check_target_range(targets, scores)
            probability = torch.sigmoid(scores) if multi_label else torch.softmax(scores, dim=1)
            values = probability.gather(1, targets[rows].view(-1, 1))[:, 0].float()
            curves[rows, torch.tensor([k for _, k in part], device=images.device)] = values
    return curves


def curve_auc(curves: Tensor) -> Tensor:
    """Area under ``N×(S+1)`` curves sampled at x = 0, 1/S, …, 1 (trapezoidal rule), in float64.

    Args:
        curves (Tensor): ``N×(S+1)`` values, ``S >= 1``.

    Returns:
        Tensor: ``N`` float64 areas.

    Raises:
        TypeError / ValueError: ``curves`` is not an ``N×(S+1)`` tensor with ``S >= 1``.

    Example::

        >>> curve_auc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    if not isinstance(curves, Tensor):
        raise TypeError(f"`curves` must be a tensor, got {type(curves).__name__}")
    if curves.dim() != 2 or curves.shape[1] < 2:
        raise ValueError(f"`curves` must be N×(S+1) with S >= 1 (two samples or more per curve), got shape "
                         f"{tuple(curves.shape)}")
    values = curves.to(torch.float64)
    steps = values.shape[1] - 1
    return (values.sum(dim=1) - (values[:, 0] + values[:, -1]) / 2) / steps


class FaithfulnessAUCMetric(SumMetric):
    """The mean deletion or insertion AUC over (image, class) pairs, summed in fixed point (units of
    :data:`AUC_UNIT`) so that any number of processes gives bit-identical results.

    States: ``auc_sum`` (int64) and ``pairs`` (int64). Per-pair value: ``<mode>_auc`` (float64).

    Args:
        mode (str): ``"deletion"`` or ``"insertion"`` (names the per-pair column).
        **kwargs: ``torchmetrics.Metric`` options.

    Example::

        >>> metric = FaithfulnessAUCMetric("deletion")
        >>> metric.update_from_statistics(metric.statistics(torch.tensor([0.25, 0.75], dtype=torch.float64))[0])
        >>> float(metric.compute())
        0.5
    """

    # Deletion: lower is better; insertion: higher (torchmetrics keeps this a class constant, so neither is claimed).
    higher_is_better = None

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_in_choices(mode, "mode", MODES)
        self.mode = mode
        self._sum_state("auc_sum", torch.zeros((), dtype=torch.int64))
        self._sum_state("pairs", torch.zeros((), dtype=torch.int64))

    def update(self, aucs: Tensor) -> None:  # type: ignore[override]
        """Add a batch of pairs' AUCs.

        Args:
            aucs (Tensor): ``N`` AUCs (:func:`curve_auc`).
        """
        self._add(self.statistics(aucs)[0])

    def statistics(self, aucs: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:  # type: ignore[override]
        """One batch's contribution from its pairs' AUCs (:func:`curve_auc`).

        Args:
            aucs (Tensor): ``N`` AUCs in ``[0, 1]``.

        Returns:
            tuple of dict: ``({"auc_sum", "pairs"}, {"<mode>_auc": N float64})``.

        Raises:
            ValueError: ``aucs`` is not 1-D, or holds a value that is not finite or outside ``[0, 1]``.
        """
        values = per_pair_values(aucs, "aucs", 1.0)
        return ({"auc_sum": to_fixed_point(values).sum(), "pairs": torch.tensor(len(values), dtype=torch.int64)},
                {f"{self.mode}_auc": values})

    def compute(self) -> Tensor:
        """The mean AUC (NaN before any pair).

        Returns:
            Tensor: float64 scalar.
        """
        return fixed_point_mean(self.auc_sum, self.pairs)
