"""Models for dataset-scale evaluation: images reach them as float in ``[0, 1]``, so each model carries its own
normalisation as its first operation (a constant affine map that every attribution method passes through)."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from captum_ext._utils.checkpoints import read_state_dict

MODEL_FORMS = ("zoo:NAME", "efficientnet_lite0", "torchvision:NAME (with weights)", "PATH.py:FUNCTION")


class ModelFactoryError(RuntimeError):
    """Your model file (``"PATH.py:FUNCTION"``) failed: importing it, or calling the function, raised.

    The original exception is its ``__cause__``, with the traceback into your code; the command line prints that
    traceback (where other errors get one line) and exits with status 1.
    """


class Normalized(nn.Module):
    """``model((x − mean) / std)`` per channel: a model that takes images in ``[0, 1]``.

    Args:
        model (nn.Module): the classifier, expecting normalised images.
        mean (sequence of float): per-channel mean.
        std (sequence of float): per-channel standard deviation (positive).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """Scores for images in ``[0, 1]``.

        Args:
            images (Tensor): ``N×C×H×W`` images in ``[0, 1]``.

        Returns:
            Tensor: the wrapped model's output.
        """
        return self.model((images - self.mean) / self.std)


@dataclass
class EvaluationModel:
    """A classifier ready for :func:`captum_ext.evaluation.evaluate`.

    Attributes:
        model (nn.Module): takes ``N×3×H×W`` images in ``[0, 1]``, returns ``N×K`` scores; eval mode.
        class_names (list of str): ``K`` names (indices as strings when unknown).
        layers (list of nn.Module): the layers ``class_diff`` reads (submodules of ``model``).
        multi_label (bool): sigmoid (True) or softmax scores.
        spec (str): how it was named.
    """

    model: nn.Module
    class_names: List[str]
    layers: List[nn.Module] = field(default_factory=list)
    multi_label: bool = False
    spec: str = "model"


def _from_factory(spec: str) -> nn.Module:
    path_text, _, function = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path_text!r} in `model` does not exist")
    module_spec = importlib.util.spec_from_file_location(f"captum_ext_user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {path_text!r} (in `model`) as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    # The file's folder goes first on sys.path while the file runs and while its function builds the model, so
    # that `import my_layers` beside it works as it does for `python net.py`; it is taken off again afterwards.
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # the user's file: any error it raises is theirs, traceback included
            message = f"importing {path_text!r} (in `model`) failed: {type(err).__name__}: {err}"
            raise ModelFactoryError(message) from err
        factory = getattr(module, function, None)
        if not callable(factory):
            raise ValueError(f"{path_text!r} has no function {function!r} (in `model`)")
        try:
            model = factory()
        except Exception as err:
            message = f"{path_text}:{function}() (in `model`) raised {type(err).__name__}: {err}"
            raise ModelFactoryError(message) from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)  # the first occurrence: the one put there above
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path_text}:{function}() must return an nn.Module, got {type(model).__name__}")
    return model


def load_evaluation_model(spec: str, weights: Optional[Union[str, Path]] = None) -> EvaluationModel:
    """Build the model named by ``spec`` for evaluation on images in ``[0, 1]``.

    Args:
        spec (str): ``"zoo:NAME"`` (a zoo scene classifier, with its standardisation), ``"efficientnet_lite0"``
            (ImageNet-pretrained, ImageNet normalisation), ``"torchvision:NAME"`` (with ``weights``, ImageNet
            normalisation) or ``"PATH.py:FUNCTION"`` (your file and a function returning your ``nn.Module``, which
            then receives images in ``[0, 1]`` as they are).
        weights (str or Path, optional): a ``state_dict`` file: required for torchvision models; for a factory
            model, loaded into what the function returns.

    Returns:
        EvaluationModel: the model in eval mode, with class names and default ``class_diff`` layers.

    Raises:
        ValueError / FileNotFoundError / TypeError: an unknown spec (the accepted forms are listed), a missing
            file, a factory that does not return an ``nn.Module``, weights that do not fit.
        ModelFactoryError: importing your file or calling its function raised (chained to that exception).

    Example::

        >>> from captum_ext.evaluation.models import load_evaluation_model
        >>> loaded = load_evaluation_model("zoo:scenes_vgg")
        >>> loaded.model(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """
    from captum_ext import explain

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`model` must be one of {list(MODEL_FORMS)}, got {spec!r}")
    if spec.startswith("zoo:"):
        from captum_ext.datasets.scenes import SCENE_MEAN, SCENE_STD

        loaded = explain.load_model(spec[len("zoo:"):], weights)
        model = Normalized(loaded.model, SCENE_MEAN, SCENE_STD).eval()
        return EvaluationModel(model, loaded.class_names, loaded.layers, loaded.multi_label, spec)
    if spec == "efficientnet_lite0" or spec.startswith("torchvision:"):
        from captum_ext.zoo.efficientnet import EFFICIENTNET_MEAN, EFFICIENTNET_STD

        loaded = explain.load_model(spec, weights)
        mean, std = (EFFICIENTNET_MEAN, EFFICIENTNET_STD) if spec == "efficientnet_lite0" else \
            (explain.IMAGENET_MEAN, explain.IMAGENET_STD)
        model = Normalized(loaded.model, mean, std).eval()
        return EvaluationModel(model, loaded.class_names, loaded.layers, loaded.multi_label, spec)
    if ".py:" in spec:
        model = _from_factory(spec)
        if weights is not None:
            state = read_state_dict(Path(weights), f"the model from {spec!r}")
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"`weights` does not fit the model from {spec!r}: {err}") from err
        model.eval()
        try:
            layers = explain.default_layers(model)
        except ValueError:
            layers = []
        classes = _output_classes(model)
        return EvaluationModel(model, [str(c) for c in range(classes)], layers, False, spec)
    raise ValueError(f"unknown `model` {spec!r}: use one of {list(MODEL_FORMS)}")


def _output_classes(model: nn.Module) -> int:
    """The number of classes, read from the last linear layer (or the last convolution of a fully convolutional
    head); 0 when the model has neither (the class names are then indices)."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last:
        return 0
    layer = last[-1]
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)
