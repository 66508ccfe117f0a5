"""ROAD: RemOve And Debias (Rong et al., *A Consistent and Efficient Evaluation Strategy for Attribution
Methods*, ICML 2022). Pixels are removed in the order of the map — most relevant first (MoRF: a faithful map makes
the class probability fall fast, **lower is better**) or least relevant first (LeRF: **higher is better**) — and
the removed pixels are not set to a constant, whose shape would tell the model where they were, but imputed.

The imputation is ROAD's *noisy linear imputation*: every removed pixel takes the weighted mean of its eight
neighbours (weight 1/6 for the four direct ones, 1/12 for the diagonals, over the neighbours inside the image),
removed neighbours included, which makes one sparse linear system per image and channel; then Gaussian noise of
standard deviation ``noise`` is added to the removed pixels. The systems are solved here for a whole batch at once by
conjugate gradients with a 3×3 convolution as the matrix (symmetric and diagonally dominant), to a relative residual
of ``tolerance``, on the images' device; ``captum_ext.testing.road_impute_sparse`` solves the same systems directly
with SciPy. The noise comes from a ``torch.Generator`` (drawn on the CPU), so a pair gets the same values in any
process and on any device.

Each curve point is the class probability after removing a fraction of the pixels (ties in the map broken by pixel
position); the per-pair score is the mean over the fractions (ROAD: 10 %, 20 %, …, 90 %).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils.attribution import eval_mode
from captum_ext._utils.validation import check_in_choices, check_scalar
from captum_ext.metrics._checks import (TensorLike, check_image_maps, check_images, check_scores_independent,
                                        check_target_range, check_targets, ranking_values)

__all__ = ["ORDERS", "METRICS", "ROAD_FRACTIONS", "road_impute", "road_curves", "neighbour_weights"]

#: MoRF (most relevant first) and LeRF (least relevant first).
ORDERS = ("morf", "lerf")
#: The scores' names in an evaluation run (``metrics.json`` keys and ``pairs.csv`` columns), one per order.
METRICS: Tuple[str, ...] = tuple(f"road_{order}" for order in ORDERS)
#: ROAD's removal fractions.
ROAD_FRACTIONS: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def neighbour_weights(dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> Tensor:
    """ROAD's 3×3 neighbour weights: 1/6 for the direct neighbours, 1/12 for the diagonals, 0 in the centre.

    Args:
        dtype (torch.dtype, optional): the weights' dtype. Default: float32.
        device (torch.device, optional): their device.

    Returns:
        Tensor: ``3×3`` weights.
    """
    weights = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    return weights.to(dtype=dtype, device=device)


def road_impute(images: Tensor, removed: Tensor, generator: Optional[torch.Generator] = None, noise: float = 0.01,
                tolerance: float = 1e-6, max_iterations: int = 2000) -> Tensor:
    """The images with their removed pixels replaced by ROAD's noisy linear imputation.

    Args:
        images (Tensor): ``N×C×H×W`` images.
        removed (Tensor): ``N×H×W`` (or ``N×1×H×W``) bools with the images' ``H×W``, the pixels to impute; each
            image keeps at least one pixel.
        generator (torch.Generator, optional): the noise's source (``noise > 0``). Default: torch's global one.
        noise (float, optional): standard deviation of the noise added to the imputed pixels, a finite number
            >= 0. Default: 0.01.
        tolerance (float, optional): the solver's relative residual. Default: 1e-6.
        max_iterations (int, optional): conjugate-gradient iterations at most. Default: 2000.

    Returns:
        Tensor: ``N×C×H×W`` images, equal to ``images`` outside ``removed``.

    Raises:
        TypeError: a ``noise`` that is not a real number.
        ValueError: shapes that do not match, an image with every pixel removed, or a ``noise`` that is negative,
            NaN or infinite.

    Example::

        >>> images = torch.tensor([[[[1.0, 1.0, 1.0], [1.0, 9.0, 1.0], [1.0, 1.0, 1.0]]]])
        >>> removed = torch.zeros(1, 3, 3, dtype=torch.bool)
        >>> removed[0, 1, 1] = True
        >>> road_impute(images, removed, noise=0.0)[0, 0, 1, 1]  # the mean of its neighbours
        tensor(1.)
    """
    # A finite standard deviation >= 0: NaN or a negative one would silently add no noise, inf would give inf pixels.
    noise = check_scalar(noise, "noise", low=0.0)
    if images.dim() != 4:
        raise ValueError(f"`images` must be N×C×H×W, got shape {tuple(images.shape)}")
    n, channels, height, width = images.shape
    # The shape is compared, not the element count: a mask with H and W swapped would impute the wrong pixels.
    if tuple(removed.shape) not in ((n, height, width), (n, 1, height, width)):
        raise ValueError(f"`removed` must hold one H×W mask per image, N×H×W = {n}×{height}×{width} (or N×1×H×W), "
                         f"got {'×'.join(map(str, removed.shape))}")
    removed = removed.reshape(n, 1, height, width)
    removed = removed.to(device=images.device, dtype=torch.bool)
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("`removed` takes every pixel of an image: ROAD's imputation needs at least one kept pixel")
    work = images.to(torch.float64)
    unknown = removed.to(torch.float64).expand(n, channels, height, width)
    weights = neighbour_weights(torch.float64, images.device).expand(channels, 1, 3, 3)

    def spread(values: Tensor) -> Tensor:  # Σ_q w_pq · values_q over each pixel's neighbours inside the image
        return F.conv2d(values, weights, padding=1, groups=channels)

    # Each removed pixel p: d_p v_p − Σ_{q removed} w_pq v_q = Σ_{q kept} w_pq x_q, with d_p the weight of p's
    # neighbours inside the image. Kept pixels are fixed, so the unknowns are the removed pixels only.
    degree = spread(torch.ones_like(work))
    right = spread(work * (1 - unknown)) * unknown

    def matrix(values: Tensor) -> Tensor:
        return (degree * values - spread(values * unknown)) * unknown

    solution = torch.where(removed, right / degree, work.new_zeros(())) * unknown
    residual = right - matrix(solution)
    direction = residual.clone()
    squared = (residual * residual).flatten(1).sum(dim=1)
    target = (tolerance ** 2) * (right * right).flatten(1).sum(dim=1).clamp_min(1e-300)
    for _ in range(max_iterations):
        if bool((squared <= target).all()):  # one host check per iteration: the loop's only sync
            break
        product = matrix(direction)
        step = squared / (direction * product).flatten(1).sum(dim=1).clamp_min(1e-300)
        solution = solution + step.view(-1, 1, 1, 1) * direction
        residual = residual - step.view(-1, 1, 1, 1) * product
        updated = (residual * residual).flatten(1).sum(dim=1)
        direction = residual + (updated / squared.clamp_min(1e-300)).view(-1, 1, 1, 1) * direction
        squared = updated
    if noise > 0:
        drawn = torch.randn(tuple(images.shape), generator=generator, dtype=torch.float32).to(work)
        solution = solution + noise * drawn * unknown
    return torch.where(removed, solution, work).to(images.dtype)


def road_curves(model: nn.Module, images: Tensor, maps: TensorLike, targets: TensorLike, order: str = "morf",
                fractions: Sequence[float] = ROAD_FRACTIONS, multi_label: bool = False,
                generator: Optional[torch.Generator] = None, noise: float = 0.01, batch_size: int = 64) -> Tensor:
    """The class probability of each pair after ROAD removes each fraction of its pixels in the map's order.

    Args:
        model (nn.Module): the classifier, taking ``images`` as they are and returning ``B×K`` scores. It runs in
            eval mode (BatchNorm on its running statistics, which stay untouched; dropout off), and every module's
            train/eval flag and every parameter's ``requires_grad`` are restored afterwards, also after an error.
        images (Tensor): ``N×C×H×W`` finite images, one per pair.
        maps (Tensor): ``N×H×W`` (or ``N×1×H×W``) finite maps ranking the pixels, with the images' ``H×W``.
        targets (Tensor or sequence of int): ``N`` integer class indices in ``[0, K)``.
        order (str, optional): ``"morf"`` (highest first) or ``"lerf"`` (lowest first). Default: morf.
        fractions (sequence of float, optional): the removed fractions, each in ``(0, 1)``. Default: ROAD's.
        multi_label (bool, optional): sigmoid (``True``) or softmax probabilities. Default: False.
        generator (torch.Generator, optional): the imputation noise's source.
        noise (float, optional): the imputation noise's standard deviation, a finite number >= 0. Default: 0.01.
        batch_size (int, optional): imputed images per forward pass. Default: 64.

    Returns:
        Tensor: ``N×F`` float32 probabilities on the images' device (their mean over ``F`` is the ROAD score).

    Raises:
        TypeError: non-integer ``targets``, or arguments of the wrong type (``noise`` not a real number included).
        ValueError: ``images`` or ``maps`` of the wrong shape (maps must have the images' H×W, not just as many
            pixels), on different devices or holding NaN / inf, ``targets`` of the wrong length or outside
            ``[0, K)``, a model that does not return ``B×K`` scores, or a bad ``order``, ``fractions``,
            ``batch_size`` or ``noise`` (negative, NaN or inf).

    Example::

        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> road_curves(model, torch.rand(3, 1, 2, 2), torch.rand(3, 2, 2), torch.tensor([0, 1, 0]),
        ...             fractions=(0.25, 0.5)).shape
        torch.Size([3, 2])
    """
    check_in_choices(order, "order", ORDERS)
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__") or not len(fractions):
        raise ValueError(f"`fractions` must be a non-empty sequence of fractions in (0, 1), got {fractions!r}")
    for fraction in fractions:
        check_scalar(fraction, "fractions", low=0.0, high=1.0, low_open=True, high_open=True)
    batch_size = int(check_scalar(batch_size, "batch_size", low=1, integer=True))
    noise = check_scalar(noise, "noise", low=0.0)  # up front, before any forward (road_impute checks it too)
    images = check_images(images, "images")
    n, _, height, width = images.shape
    pixels = height * width
    flat = ranking_values(check_image_maps(maps, "maps", images).reshape(n, -1))
    # gather needs int64 indices on the scores' device (a no-op for a long tensor already there).
    targets = check_targets(targets, "targets", n).to(device=images.device, dtype=torch.long)
    ranked = flat.argsort(dim=1, descending=order == "morf", stable=True)
    rank = torch.empty_like(ranked).scatter_(1, ranked, torch.arange(pixels, device=ranked.device).expand(n, -1))
    counts = [min(max(int(round(f * pixels)), 1), pixels - 1) for f in fractions]
    jobs = [(i, k) for i in range(n) for k in range(len(counts))]
    curves = torch.empty(n, len(counts), dtype=torch.float32, device=images.device)
    check_scores_independent(model, min(batch_size, len(jobs)))
    # eval_mode: a model left in train mode would score with batch statistics and update its BatchNorm buffers.
    with torch.no_grad(), eval_mode(model):
        for first in range(0, len(jobs), batch_size):
            part = jobs[first:first + batch_size]
            rows = torch.tensor([i for i, _ in part], device=images.device)
            limits = torch.tensor([counts[k] for _, k in part], device=images.device).view(-1, 1)
            removed = (rank[rows] < limits).view(-1, height, width)
            scores = model(road_impute(images[rows], removed, generator, noise))
            if first == 0:  # K is known from the first forward; every later one has the same
                check_target_range(targets, scores)
            probability = torch.sigmoid(scores) if multi_label else torch.softmax(scores, dim=1)
            values = probability.gather(1, targets[rows].view(-1, 1))[:, 0].float()
            curves[rows, torch.tensor([k for _, k in part], device=images.device)] = values
    return curves
