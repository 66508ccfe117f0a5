"""Plain VGG-style networks: the conv/ReLU/max-pool architecture node backtracking was designed for."""
from __future__ import annotations

import copy
from typing import List, Sequence

from torch import Tensor, nn

from captum_ext._utils.folding import fold_conv_bn


def _conv_stages(in_channels: int, widths: Sequence[int], convs_per_stage: int, batch_norm: bool) -> List[nn.Module]:
    layers: List[nn.Module] = []
    channels = in_channels
    for width in widths:
        for _ in range(convs_per_stage):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


def fold_batch_norm(features: nn.Sequential) -> nn.Sequential:
    """The same stack with every ``Conv2d → BatchNorm2d`` pair folded into one ``Conv2d`` (exact in eval mode).

    The zoo trains its VGGs with BatchNorm (a plain stack this deep barely leaves chance level on the scenes) and
    ships them folded: plain conv/ReLU/max-pool nets, the architecture node backtracking was designed for.

    Args:
        features (nn.Sequential): a layer stack (e.g. a zoo VGG's ``features``); BatchNorms must track running
            statistics, which the folded convolutions use (eval-mode semantics).

    Returns:
        nn.Sequential: a new stack with one ``Conv2d`` (with bias) per folded pair; the other layers are the same
        module objects as in ``features`` (not copies).

    Raises:
        ValueError: if a ``BatchNorm2d`` does not directly follow a ``Conv2d``, has no running statistics or does
            not match the convolution's output channels.
    """
    layers: List[nn.Module] = []
    for layer in features:
        if isinstance(layer, nn.BatchNorm2d):
            if not layers or not isinstance(layers[-1], nn.Conv2d):
                raise ValueError("every BatchNorm2d must directly follow a Conv2d to be folded")
            layers[-1] = fold_conv_bn(layers[-1], layer)
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def without_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of a zoo VGG trained with ``batch_norm=True`` whose ``features`` have the BatchNorms folded away.

    Its ``state_dict`` loads into the same class built with ``batch_norm=False`` (the layer indices match). The model
    must be in eval mode semantics: running statistics are used.

    Args:
        model (nn.Module): a model with a ``features`` ``nn.Sequential``, e.g. :class:`SceneVGG` or
            :class:`SceneVGGFCN`; it is not modified.

    Returns:
        nn.Module: a deep copy of ``model`` whose ``features`` is :func:`fold_batch_norm` of ``model.features``
        (so the layers it does not fold, e.g. ReLU and max-pool, are shared with ``model``).

    Raises:
        ValueError: from :func:`fold_batch_norm`, if ``features`` cannot be folded.
    """
    plain = copy.deepcopy(model)
    plain.features = fold_batch_norm(model.features)
    return plain


def _kaiming_init(module: nn.Module) -> None:
    # Kaiming-normal convs: with PyTorch's default init these plain stacks sit at chance on the scenes.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class SceneVGG(nn.Module):
    """VGG-style classifier for ``size×size`` scenes: ``features`` (conv3×3/ReLU ×2 then max-pool, per stage),
    flatten, and a two-layer FC ``classifier`` — torchvision's VGG layout in miniature.

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        widths: channels of each stage; each stage halves the resolution.
        fc_features: width of the hidden FC layer.
        input_size: input side the FC head is built for (the head fixes the input size, as in VGG).
        dropout: dropout before each FC layer (inactive in eval mode).
        batch_norm: put ``BatchNorm2d`` after every conv (for training; see :func:`fold_batch_norm`).

    Example::

        >>> import torch
        >>> net = SceneVGG().eval()
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64),
        fc_features: int = 256, input_size: int = 64, dropout: float = 0.3, batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv_stages(in_channels, widths, 2, batch_norm))
        side = input_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(widths[-1] * side * side, fc_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_features, num_classes),
        )
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch of images.

        Args:
            x (Tensor): ``N×in_channels×input_size×input_size`` images (the FC head fixes the size), standardised
                like the training scenes (:func:`captum_ext.datasets.scenes.normalize`).

        Returns:
            Tensor: ``N×num_classes`` logits.
        """
        return self.classifier(self.features(x))


class SceneVGGFCN(nn.Module):
    """Fully convolutional VGG-style multi-label net: ``features``, a 1×1-conv class ``head`` giving a class score
    map, and global max pooling (the setup of Shimoda & Yanai). Accepts any input size >= 8·2^stages.

    Args:
        num_classes: number of output logits (one per label, for ``BCEWithLogitsLoss``).
        in_channels: input channels.
        widths: channels of each stage.
        batch_norm: put ``BatchNorm2d`` after every conv (for training; see :func:`fold_batch_norm`).

    Example::

        >>> import torch
        >>> net = SceneVGGFCN().eval()
        >>> net(torch.zeros(2, 3, 64, 64)).shape, net(torch.zeros(1, 3, 90, 77)).shape
        (torch.Size([2, 10]), torch.Size([1, 10]))
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        stages = _conv_stages(in_channels, widths, 2, batch_norm)
        self.features = nn.Sequential(*stages[:-1])  # no pool after the last stage: keep an 8×8 score map at 64 px
        self.head = nn.Conv2d(widths[-1], num_classes, kernel_size=1)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        _kaiming_init(self)
        # A small head with a negative bias starts near the label prior; otherwise BCE training stalls there.
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.constant_(self.head.bias, -1.5)

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-class score maps before global max pooling.

        Args:
            x (Tensor): ``N×in_channels×H×W`` standardised images, ``H, W >= 8·2^stages``.

        Returns:
            Tensor: ``N×num_classes×h×w`` scores, ``h, w = H, W / 2^(stages − 1)`` (8×8 for 64×64 inputs).
        """
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        """Multi-label logits: the maximum of each class map (:meth:`class_maps`).

        Args:
            x (Tensor): ``N×in_channels×H×W`` standardised images, ``H, W >= 8·2^stages``.

        Returns:
            Tensor: ``N×num_classes`` logits, one sigmoid per class.
        """
        return self.pool(self.class_maps(x))
