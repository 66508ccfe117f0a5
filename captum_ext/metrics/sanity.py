"""The model-randomisation sanity check of Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018.

A map that explains the model must change when the model's learned weights are destroyed. Cascading
randomisation re-initialises the layers one after another from the output towards the input, and after each step
compares the method's maps on the randomised model with its maps on the trained one: Spearman rank correlation of
the absolute maps and of the signed maps, and SSIM of the absolute maps scaled to ``[0, 1]``. A method whose maps
stay similar (high values) all the way down is insensitive to the model, whatever it looks like; gradients
decorrelate quickly, Guided Backprop famously does not.

The user's model is never touched: every step works on a copy.
"""
from __future__ import annotations

import copy
from typing import Callable, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from captum_ext._utils.maps import minmax_normalise

__all__ = ["SanityResult", "cascading_randomization", "randomizable_layers"]

Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]


class SanityResult(NamedTuple):
    """What :func:`cascading_randomization` measured.

    Attributes:
        layers (list of str): the randomised layer added at each step, from the output down.
        spearman_abs (Tensor): ``S×N`` float64 rank correlation of ``|map|`` with the trained model's, per step and
            image.
        spearman_signed (Tensor): ``S×N`` float64, the same for the signed maps.
        ssim (Tensor): ``S×N`` float64 SSIM of the min-max scaled ``|map|``.
    """

    layers: List[str]
    spearman_abs: Tensor
    spearman_signed: Tensor
    ssim: Tensor

    def to_markdown(self) -> str:
        """A table of the per-step means.

        Returns:
            str: Markdown, one row per step.
        """
        lines = ["| randomised down to | Spearman abs | Spearman signed | SSIM |", "|---|---|---|---|"]
        for k, name in enumerate(self.layers):
            lines.append(f"| `{name}` | {float(self.spearman_abs[k].mean()):.3f} | "
                         f"{float(self.spearman_signed[k].mean()):.3f} | {float(self.ssim[k].mean()):.3f} |")
        return "\n".join(lines)


def randomizable_layers(model: nn.Module) -> List[str]:
    """The names of the modules that own learnable parameters directly, in registration order (the forward order
    of sequential networks and torchvision's models).

    Args:
        model (nn.Module): the model.

    Returns:
        list of str: module names, input side first.
    """
    return [name for name, module in model.named_modules()
            if name and any(True for _ in module.parameters(recurse=False))]


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Draw the module's own parameters afresh with its initialiser (its buffers, e.g. BatchNorm's running
    statistics, are kept: only the learned weights are destroyed)."""
    buffers = {name: value.clone() for name, value in module.named_buffers(recurse=False)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:  # a module without an initialiser: Gaussian weights of the same scale
            for parameter in module.parameters(recurse=False):
                with torch.no_grad():
                    parameter.normal_(0.0, float(parameter.detach().std()) if parameter.numel() > 1 else 1.0)
    for name, value in buffers.items():
        getattr(module, name).copy_(value)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant map has no ranking: no correlation to speak of
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, win_size=max(window, 3)))


def _as_maps(maps: Tensor, n: int) -> Tensor:
    maps = maps.detach().to("cpu", torch.float64)
    if maps.dim() == 4:  # channels: the largest magnitude, keeping its sign
        index = maps.abs().argmax(dim=1, keepdim=True)
        maps = maps.gather(1, index)[:, 0]
    if maps.dim() != 3 or maps.shape[0] != n:
        raise ValueError(f"`explain` must return N×H×W or N×C×H×W maps for the {n} images, got "
                         f"{tuple(maps.shape)}")
    return maps


def cascading_randomization(
    model: nn.Module,
    explain: Explain,
    images: Tensor,
    targets: Tensor,
    layers: Optional[Sequence[str]] = None,
    seed: int = 0,
) -> SanityResult:
    """Cascading model randomisation (Adebayo et al., 2018): the maps of a method as the model's layers are
    re-initialised from the output towards the input, compared with the trained model's maps.

    Args:
        model (nn.Module): the trained model (left untouched; copies are randomised), in the mode it is explained
            in.
        explain (callable): ``explain(model, images, targets) -> maps`` (``N×H×W`` or ``N×C×H×W``, signed), e.g.
            ``lambda m, x, t: Saliency(m).attribute(x, target=t, abs=False)``.
        images (Tensor): ``N×C×H×W`` inputs.
        targets (Tensor): ``N`` class indices (the same for every step: the trained model's question).
        layers (sequence of str, optional): module names to randomise, input side first; they are randomised in
            reverse order, cumulatively. Default: :func:`randomizable_layers`.
        seed (int): seed of the re-initialisation (step ``k`` uses ``seed + k``).

    Returns:
        SanityResult: per step and image, Spearman (absolute and signed) and SSIM against the trained maps.

    Raises:
        ValueError: an unknown layer name, or maps of the wrong shape.

    Example::

        >>> from captum.attr import Saliency
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
        >>> result = cascading_randomization(net, lambda m, x, t: Saliency(m).attribute(x, target=t, abs=False),
        ...                                  torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
        >>> result.layers, tuple(result.ssim.shape)
        (['3', '0'], (2, 2))
    """
    names = list(layers) if layers is not None else randomizable_layers(model)
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise ValueError(f"`layers` names modules the model does not have: {unknown}")
    n = images.shape[0]
    reference = _as_maps(explain(model, images, targets), n)
    randomised = copy.deepcopy(model)
    copies = dict(randomised.named_modules())
    rows_abs, rows_signed, rows_ssim, order = [], [], [], []
    for step, name in enumerate(reversed(names)):
        _reinitialise(copies[name], seed + step)
        maps = _as_maps(explain(randomised, images, targets), n)
        scaled_ref, scaled = minmax_normalise(reference.abs()).numpy(), minmax_normalise(maps.abs()).numpy()
        rows_abs.append([_spearman(reference[i].abs().numpy(), maps[i].abs().numpy()) for i in range(n)])
        rows_signed.append([_spearman(reference[i].numpy(), maps[i].numpy()) for i in range(n)])
        rows_ssim.append([_ssim(scaled_ref[i], scaled[i]) for i in range(n)])
        order.append(name)
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float64).reshape(len(order), n)  # noqa: E731
    return SanityResult(order, as_tensor(rows_abs), as_tensor(rows_signed), as_tensor(rows_ssim))
