"""Captum's infidelity (Yeh et al., *On the (In)fidelity and Sensitivity of Explanations*, NeurIPS 2019) and
max-sensitivity per (image, class) pair, computed through :mod:`captum.metrics` with reproducible perturbations.

- **Infidelity**: the expected squared difference between the change of the class probability under a random
  perturbation ``I`` of the image and the map's prediction of it, ``Σ map · I``; with ``normalize=True`` the map is
  first given its best scale, so only its shape is judged. Lower is better. The map is scored as stored (one value
  per pixel, the same for every colour channel), and the perturbation is Gaussian noise of standard deviation
  ``noise`` subtracted from the image, Captum's documented example.
- **Max-sensitivity**: the largest relative change ``‖map(x + δ) − map(x)‖ / ‖map(x)‖`` of the stored map (each
  scaled so its maximum is 1) over perturbations ``δ`` uniform in ``[−radius, radius]`` per pixel (Captum's
  default). Lower is better. It costs ``samples + 1`` runs of the method per pair.

Captum draws its perturbations from the global random state; here they come from a ``torch.Generator`` the caller
seeds (the evaluation driver: by the global batch number), drawn on the CPU and moved to the images' device, so a
pair gets the same perturbations in any process, after a resume and on any device.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple, Union

import torch
from torch import Tensor, nn

from captum_ext._utils.attribution import eval_mode
from captum_ext._utils.validation import check_scalar
from captum_ext.metrics._checks import (TensorLike, check_image_maps, check_images, check_scores_independent,
                                        check_target_range, check_targets)
from captum_ext.metrics._streaming import SumMetric, fixed_point_mean, per_pair_values, to_fixed_point
from captum_ext.metrics.road import METRICS as ROAD_METRICS

__all__ = ["PerturbationMetric", "infidelity_per_pair", "sensitivity_max_per_pair", "METRICS"]

#: The metrics of this module, by their keys in ``metrics.json`` and ``pairs.csv``.
METRICS = ("infidelity", "sensitivity_max")

Explanation = Callable[[Tensor, Tensor], Tensor]


def _noise(like: Tensor, generator: torch.Generator, uniform: bool) -> Tensor:
    """Standard normal (or uniform in ``[−1, 1]``) noise of ``like``'s shape, drawn in float32 on the CPU from
    ``generator`` (the same numbers on every device), then given ``like``'s dtype and device."""
    shape = tuple(like.shape)
    noise = torch.rand(shape, generator=generator) * 2 - 1 if uniform else torch.randn(shape, generator=generator)
    return noise.to(device=like.device, dtype=like.dtype)


def infidelity_per_pair(model: nn.Module, images: Tensor, maps: TensorLike, targets: TensorLike, multi_label: bool,
                        generator: torch.Generator, samples: int = 10, noise: float = 0.1,
                        batch_size: int = 64) -> Tensor:
    """Each pair's infidelity (Captum's ``infidelity`` with ``normalize=True``) on the class probability.

    Args:
        model (nn.Module): returns ``N×K`` scores. It runs in eval mode (BatchNorm on its running statistics, which
            stay untouched; dropout off), and every module's train/eval flag and every parameter's
            ``requires_grad`` are restored afterwards, also after an error.
        images (Tensor): ``N×C×H×W`` finite images, one per pair.
        maps (Tensor): ``N×H×W`` (or ``N×1×H×W``) finite maps with the images' ``H×W``, spread over the ``C``
            channels.
        targets (Tensor or sequence of int): ``N`` integer class indices in ``[0, K)``.
        multi_label (bool): sigmoid (``True``) or softmax probabilities.
        generator (torch.Generator): the source of the perturbations.
        samples (int, optional): perturbations per pair. Default: 10 (Captum's).
        noise (float, optional): their standard deviation, in the images' units. Default: 0.1.
        batch_size (int, optional): perturbed images per forward pass. The noise is drawn batch by batch from
            ``generator``, so ``batch_size`` and the pairs explained together are part of the seed: keep both to
            reproduce a value. Default: 64.

    Returns:
        Tensor: ``N`` float64 infidelities (non-negative).

    Raises:
        TypeError: non-integer ``targets``, or arguments of the wrong type.
        ValueError: ``images`` or ``maps`` of the wrong shape (maps must have the images' H×W, not just as many
            pixels), on different devices or holding NaN / inf, ``targets`` of the wrong length or outside
            ``[0, K)``, a model that does not return ``B×K`` scores, a model whose BatchNorm keeps no running
            statistics with more than one image per forward pass, or ``samples`` / ``batch_size`` below 1 or a
            ``noise`` that is not a finite number > 0.

    Example::

        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> images, maps = torch.rand(2, 3, 2, 2), torch.rand(2, 2, 2)
        >>> infidelity_per_pair(model, images, maps, torch.tensor([0, 2]), False,
        ...                     torch.Generator().manual_seed(0)).shape
        torch.Size([2])
    """
    from captum.metrics import infidelity

    samples, batch_size = _check_counts(samples, batch_size)
    # NaN or inf would give NaN infidelities, a negative one a sign flip, zero a perfect 0 for every map.
    noise = check_scalar(noise, "noise", low=0.0, low_open=True)
    images = check_images(images, "images")
    maps = check_image_maps(maps, "maps", images)
    # Captum gathers with the targets on the scores' device; int64, as gather needs (a no-op for such a tensor).
    targets = check_targets(targets, "targets", len(images)).to(device=images.device, dtype=torch.long)
    attributions = maps.reshape(maps.shape[0], 1, *images.shape[-2:]).to(images).expand_as(images).contiguous()
    per_forward = _per_forward(batch_size, len(images), samples)
    check_scores_independent(model, per_forward)

    def perturb(inputs: Tensor) -> Tuple[Tensor, Tensor]:
        perturbation = _noise(inputs, generator, uniform=False) * noise
        return perturbation, inputs - perturbation

    # eval_mode: a model left in train mode would score with batch statistics and update its BatchNorm buffers.
    with torch.no_grad(), eval_mode(model):
        values = infidelity(_probabilities(model, multi_label, targets), perturb, images, attributions, target=targets,
                            n_perturb_samples=samples, max_examples_per_batch=per_forward, normalize=True)
    return values.detach().to(device="cpu", dtype=torch.float64)


def sensitivity_max_per_pair(explain: Explanation, images: Tensor, targets: Tensor, generator: torch.Generator,
                             samples: int = 10, radius: float = 0.02, batch_size: int = 64) -> Tensor:
    """Each pair's max-sensitivity (Captum's ``sensitivity_max``, Frobenius norm) of the maps ``explain`` gives.

    This function sees no model, only ``explain``, so it cannot put a model in eval mode by itself the way the other
    faithfulness metrics do; the caller must. Where ``explain`` is an ``nn.Module`` or a bound method of one, that
    module runs in eval mode (BatchNorm on its running statistics, which stay untouched; dropout off) and every
    module's train/eval flag and every parameter's ``requires_grad`` are restored afterwards, also after an error.
    Any other callable (a function, a closure, a Captum method's ``attribute``) runs the model as it finds it: put
    the model in eval mode (``model.eval()``) before the call and restore its flags afterwards, or a model left in
    train mode explains every perturbed copy with batch statistics and updates its BatchNorm buffers.

    Args:
        explain (callable): ``explain(images, targets) -> N×1×H×W maps`` (the maps as stored).
        images (Tensor): ``N×C×H×W`` images, one per pair.
        targets (Tensor): ``N`` classes.
        generator (torch.Generator): the source of the perturbations.
        samples (int, optional): perturbations per pair. Default: 10 (Captum's).
        radius (float, optional): the perturbations' bound per pixel, in the images' units. Default: 0.02
            (Captum's).
        batch_size (int, optional): perturbed images per call of ``explain``. The noise is drawn batch by batch
            from ``generator``, so ``batch_size`` and the pairs explained together are part of the seed: keep both
            to reproduce a value. Default: 64.

    Returns:
        Tensor: ``N`` float64 sensitivities (non-negative; 0 for a map that does not move). A perturbation whose
        map is all zero moves it by exactly its own norm, so a pair scores exactly 1 where that is the largest
        change: Grad-CAM (rectified) under a radius large enough that the class is no longer seen, for example.

    Raises:
        TypeError / ValueError: ``samples`` or ``batch_size`` not an integer >= 1, ``radius`` not a finite
            number >= 0, ``images`` not finite ``N×C×H×W``, ``targets`` not ``N`` integers, maps from ``explain``
            that are not one per image or not finite, or a model whose BatchNorm keeps no running statistics with
            more than one image per call of ``explain``.

    Example::

        >>> fixed = lambda images, targets: torch.ones(len(images), 1, *images.shape[-2:])
        >>> sensitivity_max_per_pair(fixed, torch.rand(2, 3, 4, 4), torch.tensor([0, 1]),
        ...                          torch.Generator().manual_seed(0)).tolist()
        [0.0, 0.0]
    """
    from captum.metrics import sensitivity_max

    samples, batch_size = _check_counts(samples, batch_size)
    radius = check_scalar(radius, "radius", low=0.0)
    images = check_images(images, "images")
    targets = check_targets(targets, "targets", len(images)).to(device=images.device, dtype=torch.long)
    per_forward = _per_forward(batch_size, len(images), samples)
    check_scores_independent(explain, per_forward)

    def explanation(inputs: Union[Tensor, Tuple[Tensor, ...]], target: Tensor) -> Tuple[Tensor]:
        # Captum passes and expects tuples, as its attribution methods do with tuple inputs, and calls this under
        # no_grad, which gradient methods must leave.
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad():
            maps = explain(inputs, target)
        if not isinstance(maps, Tensor) or maps.dim() < 1 or maps.shape[0] != inputs.shape[0]:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"`explain` must return one map per image ({inputs.shape[0]} here), got {shape}")
        if not bool(torch.isfinite(maps).all()):  # NaN would make every sensitivity NaN
            raise ValueError("`explain` returned maps holding NaN or inf")
        return (maps.detach(),)

    def perturb(inputs: Union[Tensor, Tuple[Tensor, ...]], perturb_radius: float) -> Tensor:
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        return inputs + _noise(inputs, generator, uniform=True) * perturb_radius

    # eval_mode finds a module only behind an nn.Module or its bound method (else a no-op, so a plain function's maps
    # are unchanged): the most this function can do, as it is handed no model.
    with eval_mode(explain):
        values = sensitivity_max(explanation, images, perturb_func=perturb, perturb_radius=radius,
                                 n_perturb_samples=samples,
                                 max_examples_per_batch=per_forward, target=targets)
    return values.detach().to(device="cpu", dtype=torch.float64)


def _check_counts(samples: Any, batch_size: Any) -> Tuple[int, int]:
    return (int(check_scalar(samples, "samples", low=1, integer=True)),
            int(check_scalar(batch_size, "batch_size", low=1, integer=True)))


def _per_forward(batch_size: int, pairs: int, samples: int) -> int:
    """Captum's ``max_examples_per_batch``: it must lie between the pairs and all their perturbed copies."""
    return min(max(batch_size, pairs), pairs * samples)


def _probabilities(model: nn.Module, multi_label: bool, targets: Tensor) -> Callable[[Tensor], Tensor]:
    """The model's class probabilities; the first call checks ``targets`` against the model's ``K`` classes (Captum
    gathers them only after the forward, where an index out of range is a bare torch error)."""
    checked = False

    def forward(inputs: Tensor) -> Tensor:
        nonlocal checked
        scores = model(inputs)
        if not checked:
            check_target_range(targets, scores)
            checked = True
        return torch.sigmoid(scores) if multi_label else torch.softmax(scores, dim=1)

    return forward


#: Every key :class:`PerturbationMetric` accepts: these and ROAD's (:mod:`captum_ext.metrics.road`).
METRIC_KEYS = METRICS + ROAD_METRICS


class PerturbationMetric(SumMetric):
    """The mean of a per-pair value (infidelity, max-sensitivity, ROAD's MoRF or LeRF score) over (image, class)
    pairs, summed in fixed point so that any number of processes gives bit-identical results. Lower is better for
    all but ROAD's LeRF.

    States: ``value_sum`` (int64) and ``pairs`` (int64). Per-pair value: the column ``key`` (float64).

    Args:
        key (str): one of :data:`METRIC_KEYS`.
        **kwargs: ``torchmetrics.Metric`` options.

    Example::

        >>> metric = PerturbationMetric("infidelity")
        >>> metric.update_from_statistics(metric.statistics(torch.tensor([0.5, 1.5], dtype=torch.float64))[0])
        >>> float(metric.compute())
        1.0
    """

    # Lower is better but for ROAD's LeRF (torchmetrics keeps this a class constant, so neither is claimed).
    higher_is_better = None

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if key not in METRIC_KEYS:
            raise ValueError(f"`key` must be one of {list(METRIC_KEYS)}, got {key!r}")
        self.key = key
        self._sum_state("value_sum", torch.zeros((), dtype=torch.int64))
        self._sum_state("pairs", torch.zeros((), dtype=torch.int64))

    def update(self, values: Tensor) -> None:  # type: ignore[override]
        """Add a batch of pairs' values.

        Args:
            values (Tensor): ``N`` non-negative values.
        """
        self._add(self.statistics(values)[0])

    def statistics(self, values: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:  # type: ignore[override]
        """One batch's contribution from its pairs' values.

        Args:
            values (Tensor): ``N`` values.

        Returns:
            tuple of dict: ``({"value_sum", "pairs"}, {key: N float64})``.

        Raises:
            ValueError: ``values`` is not 1-D, or holds a value that is NaN, infinite, negative or above 2**16
                (the exact fixed-point sum's range).
        """
        values = per_pair_values(values, "values", 2.0**16)
        return ({"value_sum": to_fixed_point(values).sum(), "pairs": torch.tensor(len(values), dtype=torch.int64)},
                {self.key: values})

    def compute(self) -> Tensor:
        """The mean value (NaN before any pair).

        Returns:
            Tensor: float64 scalar.
        """
        return fixed_point_mean(self.value_sum, self.pairs)
