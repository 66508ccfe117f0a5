"""The two networks of :class:`~captum_ext.SelfSupervisedAttentionRegressor`: the supervised regressor ``F``
(:func:`regressor_cnn`, with :class:`CoordinateChannels`) and the attention network (:class:`AttentionNet`)."""
from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn


def coordinate_grid(n: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Each pixel's normalised ``x`` and ``y`` in ``[-1, 1]``.

    Args:
        n (int): batch size.
        height (int): image height.
        width (int): image width.
        dtype (torch.dtype): the images' dtype.
        device (torch.device): the images' device.

    Returns:
        Tensor: ``n×2×height×width``, channel 0 ``x`` and channel 1 ``y``.
    """
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(n, 2, height, width)


# A leaf for torch.fx: traced as one call on the images' sizes (a constant for attribution), which older torch.fx
# versions also need because they cannot pass symbolic sizes to torch.linspace.
torch.fx.wrap("coordinate_grid")


class CoordinateChannels(nn.Module):
    """Append two channels holding each pixel's normalised ``x`` and ``y`` in ``[-1, 1]`` (CoordConv, Liu et al.
    2018): a position target (the axes' intersection) is then a simple function of the features."""

    def forward(self, images: Tensor) -> Tensor:
        """Append the coordinate channels.

        Args:
            images (Tensor): ``N×C×H×W`` images.

        Returns:
            Tensor: ``N×(C+2)×H×W``: the images, then ``x`` and ``y`` in ``[-1, 1]``.
        """
        coordinates = coordinate_grid(images.shape[0], images.shape[2], images.shape[3], images.dtype,
                                      images.device)
        return torch.cat([images, coordinates], dim=1)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
    )


def regressor_cnn(in_channels: int, out_features: int, width: int = 32, coordinates: bool = True) -> nn.Sequential:
    """The supervised part F: conv blocks (width, 2·width, 4·width) with max-pooling, adaptive average pooling to
    4×4 (any input size), and a two-layer head.

    Each block is two 3×3 conv → BatchNorm → ReLU layers; the first two blocks are followed by 2×2 max-pooling, so
    inputs need ``H, W >= 4``. The head is ``Linear(64·width, 8·width)``, ReLU, ``Linear(8·width, out_features)``.

    Args:
        in_channels (int): image channels ``C``.
        out_features (int): number of regressed parameters.
        width (int, optional): channels of the first block (the others use 2·width and 4·width). Default: 32.
        coordinates (bool, optional): prepend :class:`CoordinateChannels`, two extra input channels holding each
            pixel's normalised ``x`` and ``y`` in ``[-1, 1]`` (CoordConv). Default: True.

    Returns:
        nn.Sequential: a freshly initialised network mapping ``N×C×H×W`` images to ``N×out_features`` outputs.
    """
    extra = 2 if coordinates else 0
    return nn.Sequential(
        *([CoordinateChannels()] if coordinates else []),
        _conv_block(in_channels + extra, width), nn.MaxPool2d(2),
        _conv_block(width, 2 * width), nn.MaxPool2d(2),
        _conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(16 * 4 * width, 8 * width), nn.ReLU(), nn.Linear(8 * width, out_features),
    )


class AttentionNet(nn.Module):
    """The unsupervised part: a small encoder–decoder (two down-samplings, skip connections) giving one logit per
    pixel. Its receptive field (about 40 px) covers a whole ellipse, so it can tell ellipses from circles by shape.
    Works for any input size."""

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.enc1 = _conv_block(in_channels, width)
        self.enc2 = _conv_block(width, 2 * width)
        self.bottom = _conv_block(2 * width, 4 * width)
        self.dec2 = _conv_block(6 * width, 2 * width)
        self.dec1 = _conv_block(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        """Attention logits.

        Args:
            images (Tensor): ``N×C×H×W`` images.

        Returns:
            Tensor: ``N×1×H×W`` logits (before the sigmoid).
        """
        e1 = self.enc1(images)
        e2 = self.enc2(F.max_pool2d(e1, 2, ceil_mode=True))
        b = self.bottom(F.max_pool2d(e2, 2, ceil_mode=True))
        d2 = self.dec2(torch.cat([F.interpolate(b, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return self.head(d1)
