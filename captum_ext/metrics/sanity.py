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
from contextlib import contextmanager
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from captum_ext._utils.maps import minmax_normalise
from captum_ext.metrics._checks import check_images, check_targets

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
    return [name for name, module in model.named_modules() if name and _owns_parameters(module)]


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


@contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Put the model's buffers back on exit: re-initialising keeps BatchNorm's running statistics, and an
    explanation of a model in train mode would update them."""
    saved = [(value, value.detach().clone()) for value in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for value, before in saved:
                value.copy_(before)


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Draw the parameters of the module and of every module inside it afresh with their initialisers (buffers,
    e.g. BatchNorm's running statistics, are kept: only the learned weights are destroyed)."""
    with _buffers_restored(module), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for owner in (m for m in module.modules() if _owns_parameters(m)):
            if hasattr(owner, "reset_parameters"):
                owner.reset_parameters()
            else:  # a module without an initialiser: Gaussian weights of the same scale
                for parameter in owner.parameters(recurse=False):
                    with torch.no_grad():
                        parameter.normal_(0.0, float(parameter.detach().std()) if parameter.numel() > 1 else 1.0)


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
        model (nn.Module): the trained model (left as found, buffers too; copies are randomised), in the mode it
            is explained in.
        explain (callable): ``explain(model, images, targets) -> maps`` (``N×H×W`` or ``N×C×H×W``, signed), e.g.
            ``lambda m, x, t: Saliency(m).attribute(x, target=t, abs=False)``.
        images (Tensor): ``N×C×H×W`` inputs.
        targets (Tensor): ``N`` class indices (the same for every step: the trained model's question).
        layers (sequence of str, optional): module names to randomise, input side first; they are randomised in
            reverse order, cumulatively. A container (``nn.Sequential``, a block) is randomised whole: every
            parameter inside it. Default: :func:`randomizable_layers`.
        seed (int): seed of the re-initialisation (step ``k`` uses ``seed + k``).

    Returns:
        SanityResult: per step and image, Spearman (absolute and signed) and SSIM against the trained maps.

    Raises:
        ValueError: an unknown layer name or one without learnable parameters, images that are not finite ``N×C×H×W``
            tensors, targets of the wrong length, or maps of the wrong shape or smaller than 3×3.

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
    empty = [name for name in names if not any(True for _ in modules[name].parameters())]
    if empty:  # nothing would change, and every step would report the trained maps as the randomised model's
        raise ValueError(f"`layers` names modules without learnable parameters, which randomisation cannot change: "
                         f"{empty}")
    images = check_images(images, "images")
    n = images.shape[0]
    targets = check_targets(targets, "targets", n)
    randomised = copy.deepcopy(model)  # before any explanation: the copies start from the model as found
    copies = dict(randomised.named_modules())
    with _buffers_restored(model):
        reference = _as_maps(explain(model, images, targets), n)
    if min(reference.shape[-2:]) < 3:  # SSIM's smallest window
        raise ValueError(f"`explain` returned maps of {tuple(reference.shape[-2:])} pixels; SSIM needs at least 3×3")
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
