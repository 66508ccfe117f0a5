"""Fold eval-mode BatchNorm into the preceding convolution (an exact rewrite in eval mode)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    ``bn(y) = γ (y − μ) / sqrt(σ² + ε) + β`` is a per-channel affine map, so it scales each output filter by
    ``γ / sqrt(σ² + ε)`` and shifts the bias.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("`bn` must track running statistics to be folded")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"`bn` has {bn.num_features} features but `conv` has {conv.out_channels} output channels")
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded.bias.copy_((bias - bn.running_mean) * scale + shift)
    return folded
