"""Small ResNet-style networks (residual basic blocks + BatchNorm) built from torchvision's ``BasicBlock``."""
from __future__ import annotations

from typing import List, Sequence

import torch  # noqa: F401  (used in the docstring example)

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock


class SceneResNet(nn.Module):
    """ResNet-style classifier for small scenes: a 3×3 stem (no 7×7 conv / max-pool, which would discard most of a
    64-px image), stages of torchvision ``BasicBlock`` s (the first block of each stage strides by 2), global
    pooling and a linear ``fc`` — the layout of ``torchvision.models.resnet18`` in miniature.

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        widths: channels of each stage.
        blocks: basic blocks per stage.
        strides: stride of the first block of each stage (64 px in, 8×8 out with the defaults).
        global_pool: ``"avg"`` (classification) or ``"max"`` (multi-label, so each class can fire on one object).

    Example::

        >>> net = SceneResNet().eval()
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (2, 2, 2), strides: Sequence[int] = (2, 2, 2), global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", "max"):
            raise ValueError(f"`global_pool` must be 'avg' or 'max', got {global_pool!r}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages: List[nn.Module] = []
        channels = widths[0]
        for width, count, stride in zip(widths, blocks, strides):
            downsample = None
            if stride != 1 or channels != width:
                downsample = nn.Sequential(
                    nn.Conv2d(channels, width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(width)
                )
            layers = [BasicBlock(channels, width, stride=stride, downsample=downsample)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():
            if isinstance(block, BasicBlock):  # zero-init the last BN of each block: blocks start as identities
                nn.init.zeros_(block.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch of images.

        Args:
            x (Tensor): ``N×in_channels×H×W`` images of any size (global pooling), standardised like the training
                scenes (:func:`captum_ext.datasets.scenes.normalize`).

        Returns:
            Tensor: ``N×num_classes`` logits.
        """
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))
