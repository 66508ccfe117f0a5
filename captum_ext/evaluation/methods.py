"""The attribution methods dataset-scale evaluation can run: this library's and Captum's, each turned into one
non-negative ``N×1×H×W`` map per (image, class) pair (and, for SensitivityBBox with a fitted box map, a box)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.evaluation.models import Normalized

#: What ``--method`` accepts.
METHODS: Tuple[str, ...] = ("node_backtrack", "class_diff", "sensitivity", "saliency", "integrated_gradients",
                            "guided_backprop", "grad_cam")

#: ``(maps N×1×H×W, boxes N×4 or None)`` for images ``N×3×H×W`` and target classes ``N``.
MapFunction = Callable[[Tensor, Tensor], Tuple[Tensor, Optional[Tensor]]]


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model`` in module order (Grad-CAM's usual layer).

    Args:
        model (nn.Module): the classifier.

    Returns:
        nn.Module: that convolution.

    Raises:
        ValueError: the model has no ``nn.Conv2d``.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d for grad_cam; name one with `layer`")
    return convs[-1]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` at dotted path ``name``; in a model the run wraps to take images in ``[0, 1]``
    (:class:`~captum_ext.evaluation.models.Normalized`), names inside the classifier work as well.

    Args:
        model (nn.Module): the classifier.
        name (str): e.g. ``"features.10"`` (or ``"model.features.10"`` in the wrapper).

    Returns:
        nn.Module: the submodule.

    Raises:
        ValueError: no such submodule (the message lists a few valid names).
    """
    modules = dict(model.named_modules())
    if name not in modules and isinstance(model, Normalized) and f"model.{name}" in modules:
        return modules[f"model.{name}"]  # the name the user knows from their own classifier
    if name not in modules:
        sample = [n for n in modules if n][:8]
        raise ValueError(f"`layer` {name!r} is not a submodule of the model; e.g. {sample}")
    return modules[name]


def _channel_max(attributions: Tensor) -> Tensor:
    return attributions.abs().amax(dim=1, keepdim=True)


def _quiet(function: MapFunction) -> MapFunction:
    """Captum warns on every call that the inputs did not require gradients (it sets that itself) and that it
    hooks ReLUs; over a dataset that is thousands of identical lines, so those two notices are silenced."""

    def call(images: Tensor, targets: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations.*")
            return function(images, targets)

    return call


def build_method(
    name: str,
    model: nn.Module,
    layers: Optional[List[nn.Module]] = None,
    layer: Optional[str] = None,
    box_map: Optional[Union[str, Path]] = None,
    multi_label: bool = False,
    ig_steps: int = 32,
) -> MapFunction:
    """A function computing one map per (image, class) pair with the named method.

    Args:
        name (str): one of :data:`METHODS`. ``node_backtrack``: NodeBacktrack's density; ``class_diff``:
            MultiLayerClassDiffSaliency; ``sensitivity``: SensitivityBBox's map (channel max of ``|∂y/∂x|``) and,
            with ``box_map``, its learned boxes; ``saliency``: Captum's ``|gradient|``, max over channels;
            ``integrated_gradients`` (``|IG|``, max over channels, zero baseline); ``guided_backprop``;
            ``grad_cam`` (the last convolution unless ``layer``, ReLU, up-sampled bilinearly).
        model (nn.Module): takes images in ``[0, 1]``, returns ``N×K`` scores.
        layers (list of nn.Module, optional): ``class_diff``'s layers.
        layer (str, optional): dotted name of ``grad_cam``'s layer.
        box_map (str or Path, optional): a file saved from ``SensitivityBBox.state_dict()`` (``sensitivity``
            only).
        multi_label (bool, optional): ``class_diff``'s candidate selection. Default: False.
        ig_steps (int, optional): Integrated Gradients steps. Default: 32.

    Returns:
        callable: ``f(images, targets) -> (maps N×1×H×W, boxes N×4 or None)``.

    Raises:
        ValueError: an unknown method, options for another method, a missing or unreadable box map.
    """
    from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox

    if name not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {name!r}")
    if box_map is not None and name != "sensitivity":
        raise ValueError("`box_map` is for the sensitivity method only")
    if layer is not None and name != "grad_cam":
        raise ValueError("`layer` is for the grad_cam method only")
    if name == "node_backtrack":
        backtrack = NodeBacktrack(model)
        return lambda images, targets: (backtrack.saliency(images, target=targets), None)
    if name == "class_diff":
        if not layers:
            raise ValueError("class_diff needs layers: the model has no default ones")
        class_diff = MultiLayerClassDiffSaliency(model, layers, multi_label=multi_label)
        return lambda images, targets: (class_diff.attribute(images, target=targets), None)
    if name == "sensitivity":
        sensitivity = SensitivityBBox(model)
        if box_map is not None:
            path = Path(box_map)
            if not path.is_file():
                raise FileNotFoundError(f"box map file {str(path)!r} does not exist")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for files that are not its archives
                raise ValueError(f"could not read the box map {str(path)!r}: {type(err).__name__}: {err}") from None
            if not isinstance(state, dict) or "stats.count" not in state:
                raise ValueError(f"{str(path)!r} is not a box map (a SensitivityBBox state saved by captum-ext "
                                 f"fit-boxes): it lacks the fitted statistics")
            try:
                sensitivity = SensitivityBBox(model, **{k: state[k] for k in ("grid_size", "channel_reduction",
                                                                              "sigma", "power") if k in state})
                sensitivity.load_state_dict(state)
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"the box map {str(path)!r} does not load: {type(err).__name__}: {err}") from None

        def sensitivity_maps(images: Tensor, targets: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
            raw = sensitivity.attribute(images, target=targets)
            boxes = sensitivity.boxes_from_attributions(raw, targets) if box_map is not None else None
            return _channel_max(raw), boxes

        return sensitivity_maps
    if name == "saliency":
        saliency = Saliency(model)
        return _quiet(lambda images, targets: (_channel_max(saliency.attribute(images, target=targets)), None))
    if name == "integrated_gradients":
        integrated = IntegratedGradients(model)
        return _quiet(lambda images, targets: (_channel_max(integrated.attribute(images, target=targets,
                                                                                 n_steps=ig_steps)), None))
    if name == "guided_backprop":
        guided = GuidedBackprop(model)
        return _quiet(lambda images, targets: (_channel_max(guided.attribute(images, target=targets)), None))
    cam_layer = find_layer(model, layer) if layer is not None else last_conv_layer(model)
    grad_cam = LayerGradCam(model, cam_layer)

    def grad_cam_maps(images: Tensor, targets: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        cams = grad_cam.attribute(images, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(cams, tuple(images.shape[-2:]), interpolate_mode="bilinear"), None

    return _quiet(grad_cam_maps)


def method_settings(name: str, **options: object) -> Dict[str, object]:
    """The settings of a method as recorded in ``metrics.json`` (options left at ``None`` are dropped).

    Args:
        name (str): the method.
        **options: its options.

    Returns:
        dict: ``{"method": name, **options}`` without ``None`` values.
    """
    return {"method": name, **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()
                               if v is not None}}


def scale_to_unit(maps: Tensor) -> Tensor:
    """Each map scaled so its maximum is 1 (all-zero maps stay zero): the form maps are stored and scored in.

    Args:
        maps (Tensor): ``N×1×H×W`` non-negative maps.

    Returns:
        Tensor: float32, same shape.
    """
    from captum_ext._utils.maps import max_normalise

    return max_normalise(F.relu(maps.detach().to(torch.float32)))
