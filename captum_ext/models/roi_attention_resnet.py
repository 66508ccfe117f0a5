"""ROIAttentionResNet: a ResNet that takes an ROI mask through a side branch merged as an attention map (Eppel,
*Classifying a specific image region using CNNs with an ROI mask as input*)."""
from __future__ import annotations

import json
import numbers
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from captum_ext._utils.validation import check_in_choices, check_scalar, is_tracing

MERGE_POINTS = ("first", "layer1", "layer2", "layer3", "layer4", "all")
MODES = ("add", "mul")
HARD = (None, "image", "first")
DEPTHS = (18, 34, 50, 101, 152)
_STAGES = ("layer1", "layer2", "layer3", "layer4")
_EXTRA_STATE = "_extra_state"  # torch's key for get_extra_state (torch.nn.modules.module._EXTRA_STATE_KEY_SUFFIX)


def _stage_channels(backbone: torchvision.models.ResNet) -> Dict[str, int]:
    channels = {"first": backbone.conv1.out_channels}
    for name in _STAGES:
        last_block = getattr(backbone, name)[-1]
        conv = getattr(last_block, "conv3", None)  # Bottleneck blocks end in conv3, BasicBlocks in conv2
        channels[name] = (last_block.conv2 if conv is None else conv).out_channels
    return channels


class ROIAttentionResNet(nn.Module):
    r"""A torchvision ResNet classifying the region selected by a mask (Eppel).

    The mask enters through one ``Conv2d(1 → C, 3, padding=1)`` per merge point, applied to the mask resized
    (bilinear) to that point's feature map and merged into the features by addition or multiplication:

    * ``merge="first"``: after ``conv1``, before ``bn1`` (the paper's best variant); ``"layer1"`` … ``"layer4"``:
      the output of that stage (the paper's "third block" is ``"layer3"``); ``"all"``: every one of these.
    * ``mode="add"``: ``x + conv(mask)`` with weight = bias = 0 at initialisation; ``mode="mul"``:
      ``x · conv(mask)`` with weight 0 and bias 1. Either way the untrained branch is an exact identity, so a
      pretrained backbone starts unchanged.
    * ``hard="image"`` / ``hard="first"``: the paper's baselines without a branch — the normalised image, or the
      ``conv1`` output, multiplied by the mask (background blacked out).

    The backbone is any torchvision ResNet: built from ``depth`` (random weights; loading weights is the caller's,
    as in torchvision) or passed in, e.g. with your own pretrained weights.

    The ``state_dict`` records ``merge``, ``mode`` and ``hard`` (entry ``_extra_state``, see
    :meth:`get_extra_state`), and ``load_state_dict`` refuses weights saved with other settings: the same tensors
    mean something else under another mode. State dicts saved before this record existed still load.

    Args:
        num_classes (int, optional): output classes (ignored when ``backbone`` is given). Default: 1000.
        depth (int, optional): 18, 34, 50, 101 or 152. Default: 50.
        merge (str, optional): ``"first"``, ``"layer1"`` … ``"layer4"`` or ``"all"``. Default: ``"first"``.
        mode (str, optional): ``"add"`` or ``"mul"``. Default: ``"add"``.
        hard (str, optional): ``None`` (attention branch), ``"image"`` or ``"first"`` (hard baselines). Default: None.
        backbone (torchvision.models.ResNet, optional): use this ResNet instead of building one.

    Example::

        >>> import torch
        >>> from captum_ext import ROIAttentionResNet
        >>> net = ROIAttentionResNet(num_classes=10, depth=18, merge="first", mode="add").eval()
        >>> images, masks = torch.randn(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
        >>> masks[:, :, 20:40, 20:40] = 1
        >>> net(images, masks).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        depth: int = 50,
        merge: str = "first",
        mode: str = "add",
        hard: Optional[str] = None,
        backbone: Optional[torchvision.models.ResNet] = None,
    ) -> None:
        super().__init__()
        check_in_choices(merge, "merge", MERGE_POINTS)
        check_in_choices(mode, "mode", MODES)
        check_in_choices(hard, "hard", HARD)
        if backbone is None:
            # An int is required, not just a value equal to one: 18.0 == 18 would pass `in DEPTHS` and then name
            # torchvision's nonexistent "resnet18.0".
            if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral):
                raise TypeError(f"`depth` must be an int, one of {list(DEPTHS)}, got {type(depth).__name__} "
                                f"{depth!r}")
            depth = int(depth)
            check_in_choices(depth, "depth", DEPTHS)
            num_classes = int(check_scalar(num_classes, "num_classes", low=1, integer=True))  # numpy ints too
            backbone = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        elif not isinstance(backbone, torchvision.models.ResNet):
            raise TypeError(f"`backbone` must be a torchvision.models.ResNet, got {type(backbone).__name__}")
        self.backbone = backbone
        self.merge, self.mode, self.hard = merge, mode, hard
        points: List[str] = [] if hard is not None else (["first", *_STAGES] if merge == "all" else [merge])
        channels = _stage_channels(backbone)
        self.branches = nn.ModuleDict({point: self._branch(channels[point]) for point in points})

    def _branch(self, channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(1, channels, 3, padding=1)
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, 1.0 if self.mode == "mul" else 0.0)  # identity at initialisation
        return conv

    def _check(self, images: Any, masks: Any) -> None:
        # Shape checks only: they cost nothing, while a NaN scan would synchronise the device on every forward
        # pass. Skipped while a graph is traced (torch.fx, TorchScript), which has no concrete shapes.
        if is_tracing():
            return
        for name, value in (("images", images), ("masks", masks)):
            if not isinstance(value, Tensor):
                raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() != 4:
                raise ValueError(f"`{name}` must be N×C×H×W, got shape {tuple(value.shape)}")
        if images.shape[1] != 3:
            raise ValueError(f"`images` must have 3 channels, got {images.shape[1]}")
        if not images.is_floating_point():  # the convolutions' weights are floating: torch fails on the dtype
            raise TypeError(f"`images` must be a floating-point tensor (normalised images), got {images.dtype}")
        weights = self.backbone.conv1.weight.dtype
        if images.dtype != weights:  # torch would name the convolution's bias, not the argument
            raise TypeError(f"`images` must have the model's dtype {weights}, got {images.dtype}: convert the images "
                            f"(images.to({weights})) or the model")
        if masks.shape[1] != 1 or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"`masks` must be N×1×H×W matching `images` {tuple(images.shape)}, got "
                             f"{tuple(masks.shape)}")
        if masks.device != images.device:  # torch would name neither argument
            raise ValueError(f"`masks` must be on the images' device {images.device}, got {masks.device}")

    def _settings(self) -> Dict[str, Optional[str]]:
        return {"merge": self.merge, "mode": self.mode, "hard": self.hard}

    def get_extra_state(self) -> Tensor:
        """The settings the weights belong to, saved in the ``state_dict`` under ``_extra_state``.

        A ``uint8`` tensor holding the UTF-8 bytes of a JSON object ``{"hard": …, "merge": …, "mode": …}``: a
        tensor, unlike a dict, passes through the usual state-dict handling (``v.clone()``, ``v.to(device)``,
        casting the floating entries to float16) and loads with ``torch.load(..., weights_only=True)``.

        Returns:
            Tensor: 1-D ``uint8`` tensor of the encoded settings.

        Example::

            >>> from captum_ext import ROIAttentionResNet
            >>> net = ROIAttentionResNet(num_classes=2, depth=18, merge="layer3", mode="mul")
            >>> bytes(net.state_dict()["_extra_state"].tolist()).decode()
            '{"hard": null, "merge": "layer3", "mode": "mul"}'
        """
        text = json.dumps(self._settings(), sort_keys=True)
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        """Check the settings saved by :meth:`get_extra_state` against this model's (called by ``load_state_dict``).

        ``hard`` must match; ``merge`` and ``mode`` must match too unless both models are hard baselines, which
        have no branch for them to act on.

        Args:
            state (Tensor): the ``_extra_state`` entry of a state dict.

        Raises:
            ValueError: the state is not a settings record, or the weights were saved with other settings. It is
                raised before any weight is copied, so the model is left unchanged.
        """
        try:
            values = state.reshape(-1).tolist() if isinstance(state, Tensor) else None
            # round(): a record cast to float along with the weights still holds the exact byte values.
            saved = json.loads(bytes(round(v) for v in values).decode("utf-8")) if values is not None else None
        except (TypeError, ValueError, UnicodeDecodeError, OverflowError):
            saved = None
        if not isinstance(saved, dict) or not {"merge", "mode", "hard"} <= set(saved):
            raise ValueError(f"`state_dict` entry {_EXTRA_STATE!r} is not an ROIAttentionResNet settings record "
                             "(merge, mode, hard)")
        names = ["hard"] if self.hard is not None and saved["hard"] == self.hard else ["hard", "merge", "mode"]
        differing = [name for name in names if saved[name] != getattr(self, name)]
        if differing:
            theirs = ", ".join(f"{name}={saved[name]!r}" for name in differing)
            ours = ", ".join(f"{name}={getattr(self, name)!r}" for name in differing)
            raise ValueError(f"`state_dict` holds weights of an ROIAttentionResNet with {theirs}, but this model has "
                             f"{ours}: build the model with the saved settings (or drop the {_EXTRA_STATE!r} entry "
                             "to load the tensors anyway)")

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any],
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + _EXTRA_STATE
        # State dicts saved before the settings were recorded (the zoo's weights, users' checkpoints) have no
        # record: nothing to check, and strict loading must not fail on the missing key.
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)

    def _merge_at(self, point: str, features: Tensor, mask: Tensor) -> Tensor:
        if point not in self.branches:
            return features
        resized = F.interpolate(mask, size=features.shape[-2:], mode="bilinear", align_corners=False)
        attention = self.branches[point](resized)
        return features + attention if self.mode == "add" else features * attention

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """Logits for images and their ROI masks.

        Args:
            images (Tensor): ``N×3×H×W`` normalised images.
            masks (Tensor): ``N×1×H×W`` ROI masks in ``{0, 1}`` or ``[0, 1]``. Attribution methods take them
                through ``additional_forward_args`` (a constant for the attribution) or as a second input.

        Returns:
            Tensor: ``N×num_classes`` logits.

        Raises:
            TypeError / ValueError: non-tensors, wrong ranks or channel counts, masks not matching the images (in
                shape or device).

        Example::

            >>> import torch
            >>> from captum.attr import IntegratedGradients
            >>> from captum_ext import ROIAttentionResNet
            >>> net = ROIAttentionResNet(num_classes=3, depth=18, merge="layer3", mode="mul").eval()
            >>> images, masks = torch.randn(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
            >>> IntegratedGradients(net).attribute(images, additional_forward_args=(masks,), target=0,
            ...                                    n_steps=4).shape
            torch.Size([1, 3, 32, 32])
        """
        self._check(images, masks)
        mask = masks.to(images.dtype)
        net = self.backbone
        if self.hard == "image":
            images = images * mask
        x = net.conv1(images)
        if self.hard == "first":
            x = x * F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = self._merge_at("first", x, mask)
        x = net.maxpool(net.relu(net.bn1(x)))
        for stage in _STAGES:
            x = self._merge_at(stage, getattr(net, stage)(x), mask)
        return net.fc(torch.flatten(net.avgpool(x), 1))
