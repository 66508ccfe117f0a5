"""Fold eval-mode BatchNorm into the preceding convolution (an exact rewrite in eval mode)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn


@torch.no_grad()
def fold_bn(weight: Tensor, bias: Optional[Tensor], bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Conv ``(weight, bias)`` such that ``conv(x; weight, bias) = bn(conv(x; original))`` with ``bn`` in eval mode.

    ``bn(y) = γ (y − μ) / sqrt(σ² + ε) + β`` is a per-channel affine map: it scales each output filter by
    ``γ / sqrt(σ² + ε)`` (possibly negative) and shifts the bias.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("`bn` must track running statistics to be folded")
    if weight.shape[0] != bn.num_features:
        raise ValueError(f"`bn` has {bn.num_features} features but the convolution has {weight.shape[0]} outputs")
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    base = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.view(-1, 1, 1, 1), (base - bn.running_mean) * scale + shift


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics); see
    :func:`fold_bn`."""
    weight, bias = fold_bn(conv.weight, conv.bias, bn)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    folded.weight.copy_(weight)
    folded.bias.copy_(bias)
    return folded
