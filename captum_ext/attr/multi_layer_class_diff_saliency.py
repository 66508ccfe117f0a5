"""MultiLayerClassDiffSaliency: multi-layer, class-subtracted, multi-scale saliency (Shimoda & Yanai)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.attribution import (
    TensorOrTuple,
    check_examples_independent,
    eval_mode,
    expand_per_example,
    explained_model_errors,
    gradient_leaf,
    gradients_enabled,
    format_additional_args,
    format_inputs,
    format_output,
    select_targets,
    to_model_dtype,
)
from captum_ext._utils.guided import with_guided_relus
from captum_ext._utils.validation import check_scalar


class _LayerCapture(fx.Interpreter):
    """Run a GraphModule (with autograd) and keep the values of chosen nodes."""

    def __init__(self, module: fx.GraphModule, nodes: Sequence[str]) -> None:
        super().__init__(module)
        self.wanted: Dict[str, List[int]] = {}
        for k, name in enumerate(nodes):
            self.wanted.setdefault(name, []).append(k)
        self.captured: Dict[int, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        for k in self.wanted.get(n.name, ()):
            self.captured[k] = result
        return result


def _check_scales(scales: Any) -> Tuple[float, ...]:
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = (scales,)
    if not isinstance(scales, (tuple, list)) or len(scales) == 0:
        raise ValueError(f"`scales` must be a non-empty sequence of positive numbers, got {scales!r}")
    values = []
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 or math.isinf(s):
            raise ValueError(f"`scales` must hold positive finite numbers, got {scales!r}")
        values.append(float(s))
    return tuple(values)


class MultiLayerClassDiffSaliency(GradientAttribution):
    r"""Distinct class saliency maps for multi-object images (Shimoda & Yanai).

    For the target class ``c`` and every listed layer ``i``: the gradient of the class score with respect to the
    layer's output (or input, ``attribute_to_layer_input=True``, as the authors' code), with guided backpropagation
    through every ReLU; ``M_i^c = max_k |∂y_c/∂A_i|`` over channels, bilinearly up-sampled to the input size. Then
    eq. 2 subtracts the maps of the other candidate classes,
    ``M̃_i^c = Σ_{c' ≠ c} max(M_i^c − M_i^{c'}, 0)``, and eq. 3 averages ``tanh(α · M̃ / max M̃)`` over layers and
    scales. The result lies in ``[0, 1)`` per pixel.

    All layers come from one backward pass, and all candidate classes of a scale from one *batched* backward
    (``is_grads_batched``), not one pass per class.

    Guided backpropagation is a rewrite of the traced graph: module, functional (``F.relu``, ``torch.relu``,
    ``torch.relu_``), reused and in-place ReLUs are all guided (Captum's ``GuidedBackprop`` misses the functional
    ones). The model must be ``torch.fx``-traceable (``torch.compile`` and ``DataParallel`` wrappers are unwrapped);
    it is never modified and no hooks are registered. A model whose BatchNorm has no running statistics mixes the
    images of a batch, and is refused for more than one image. Replacing a submodule after construction is noticed:
    the model is traced again on the next call.
    Inputs in another floating dtype than the model's (float64, float16) are cast to it; the maps come back in
    the inputs' dtype. A model returning a tuple is explained through its first element.

    Scores: a model returning ``N×C`` scores is used as is; a fully convolutional one returning ``N×C×h×w`` score
    maps is globally max-pooled, as in the authors' code. Candidate classes are chosen per image by
    ``score_threshold`` on the probabilities (sigmoid when ``multi_label``, softmax otherwise) at any scale, topped up
    with the highest-scoring classes to ``min_candidates`` (the authors' code: 0.5 and 4), or given explicitly.

    Args:
        model (nn.Module): the classifier, in eval mode.
        layers (sequence of nn.Module): submodules of ``model``, each called once per forward pass: single layers
            or containers (a ResNet stage or block, as passed to Captum's ``LayerGradCam``) with one tensor in and
            one out.
        multi_label (bool, optional): sigmoid (True) or softmax (False) probabilities for candidate selection.
            Default: True.

    Example::

        >>> import torch
        >>> from captum_ext import MultiLayerClassDiffSaliency, zoo
        >>> from captum_ext.datasets import scenes
        >>> model = zoo.load("scenes_vgg_multilabel")
        >>> layers = [model.features[5], model.features[7], model.features[10]]
        >>> batch = scenes.make_scenes(2, mode="multi", split="test", seed=1)
        >>> ms = MultiLayerClassDiffSaliency(model, layers)
        >>> maps = ms.attribute(scenes.normalize(batch.images), target=batch.object_labels[:, 0].tolist())
        >>> maps.shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module], multi_label: bool = True) -> None:
        if isinstance(layers, nn.Module) or not isinstance(layers, (list, tuple)) or len(layers) == 0:
            raise ValueError("`layers` must be a non-empty list of submodules of `model`")
        for index, layer in enumerate(layers):
            if not isinstance(layer, nn.Module):
                raise TypeError(f"`layers[{index}]` must be an nn.Module, got {type(layer).__name__}")
        super().__init__(model)
        self.layers = list(layers)
        self.multi_label = bool(multi_label)
        self._trace()

    def _trace(self) -> None:
        """(Re-)trace the model, build its guided twin and find every layer's input and output in both graphs."""
        self._model = G.unwrap_model(self.forward_func)
        self._plain = G.trace(self._model)
        self._guided, self.guided_relu_count = with_guided_relus(self._plain)
        self._fingerprint = G.module_fingerprint(self._model)
        paths = [self._path_of(layer, index) for index, layer in enumerate(self.layers)]
        self._layer_nodes = {graph: [self._call_of(graph, path, index) for index, path in enumerate(paths)]
                             for graph in ("plain", "guided")}

    def _refresh(self) -> None:
        """Re-trace when a submodule or tensor of the model was replaced since the last trace, so the current model
        is explained."""
        if G.module_fingerprint(self._model) != self._fingerprint:
            self._trace()

    def _path_of(self, layer: nn.Module, index: int) -> str:
        names = [name for name, module in self._model.named_modules() if module is layer and name]
        if not names:
            raise ValueError(f"`layers[{index}]` ({type(layer).__name__}) is not a submodule of the model")
        return names[0]

    def _call_of(self, graph: str, path: str, index: int) -> Tuple[str, str]:
        """Names of the ``(input, output)`` nodes of the layer's single call in the plain or guided graph."""
        module = self._plain if graph == "plain" else self._guided
        try:
            calls = G.module_calls(module, path)
        except ValueError as err:
            raise ValueError(f"`layers[{index}]` (`{path}`): {err}") from None
        if len(calls) != 1:
            why = "is never called in the traced forward pass" if not calls else f"is called {len(calls)} times"
            raise ValueError(f"`layers[{index}]` (`{path}`) {why}; each layer must be called exactly once")
        return calls[0][0].name, calls[0][1].name

    # ----------------------------------------------------------------------------------------------------------------

    def _run(self, guided: bool, inputs: Tuple[Tensor, ...], extra: Tuple[Any, ...], to_input: bool
             ) -> Tuple[Tensor, List[Tensor]]:
        graph = "guided" if guided else "plain"
        nodes = [pair[0] if to_input else pair[1] for pair in self._layer_nodes[graph]]
        capture = _LayerCapture(self._guided if guided else self._plain, nodes)
        # every downstream value is in the autograd graph
        leaves = tuple(gradient_leaf(x) if x.is_floating_point() else x for x in inputs)
        with explained_model_errors(inputs):
            output = capture.run(*leaves, *extra)
        if isinstance(output, (tuple, list)) and output:
            output = output[0]  # a model returning (prediction, extras…) is explained through its first element
        if not isinstance(output, Tensor):
            raise TypeError(f"the model must return a tensor, got {type(output).__name__}")
        if output.dim() == 4:  # fully convolutional: class score maps → global max pooling
            output = output.amax(dim=(2, 3))
        if output.dim() != 2:
            raise ValueError(f"the model must return N×C scores or N×C×h×w score maps, got {tuple(output.shape)}")
        layers = [capture.captured[k] for k in range(len(nodes))]
        return output, layers

    def _candidates(self, scores: List[Tensor], target: Tensor, candidates: Any, threshold: float,
                    minimum: int) -> List[List[int]]:
        n, classes = scores[0].shape
        if candidates is not None:
            if isinstance(candidates, Tensor):
                candidates = candidates.tolist()
            if not isinstance(candidates, (list, tuple)):
                raise TypeError("`candidates` must be a list of class lists (one per image) or one list for all")
            per_image = list(candidates) if candidates and isinstance(candidates[0], (list, tuple)) else \
                [list(candidates)] * n
            # NoiseTunnel and captum.metrics repeat every image in place; their lists follow the same way.
            per_image = expand_per_example(per_image, n, "candidates")
            if len(per_image) != n:
                raise ValueError(f"`candidates` must hold one list per image ({n}), got {len(per_image)}")
            result = []
            for i, chosen in enumerate(per_image):
                chosen = [int(c) for c in chosen]
                if any(not 0 <= c < classes for c in chosen):
                    raise ValueError(f"`candidates[{i}]` = {chosen} has classes outside [0, {classes})")
                if int(target[i]) not in chosen:
                    raise ValueError(f"target {int(target[i])} of image {i} is not among its candidates {chosen}")
                result.append([int(target[i])] + sorted(set(chosen) - {int(target[i])}))
            return result
        probabilities = torch.stack([torch.sigmoid(s) if self.multi_label else torch.softmax(s, dim=1)
                                     for s in scores]).amax(dim=0).detach()
        result = []
        for i in range(n):  # a few classes per image; the gradients themselves are batched
            above = (probabilities[i] >= threshold).nonzero()[:, 0].tolist()
            chosen = [int(target[i])] + [c for c in above if c != int(target[i])]
            for c in probabilities[i].argsort(descending=True).tolist():
                if len(chosen) >= min(minimum, classes):
                    break
                if c not in chosen:
                    chosen.append(c)
            result.append([chosen[0]] + sorted(chosen[1:]))
        return result

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        *,
        candidates: Any = None,
        scales: Sequence[float] = (1.0,),
        alpha: float = 3.0,
        guided: bool = True,
        subtract: bool = True,
        score_threshold: float = 0.5,
        min_candidates: int = 4,
        return_details: bool = False,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Dict[str, Any]]]:
        r"""Class saliency maps.

        The first four arguments are Captum's, in Captum's order (as :class:`~captum.attr.LayerGradCam`); the
        method's own options are keyword-only.

        Args:
            inputs (Tensor or tuple of Tensor): ``N×C×H×W`` images, preprocessed as the model expects (a tuple for
                multi-input models; every 4-D input is rescaled with ``scales``).
            target (int, Tensor or list, optional): the class to explain per image (Captum ``TargetType``).
                Default: ``None``, the top-scoring class.
            additional_forward_args (Any, optional): extra model arguments, after the inputs; they must match
                the model's remaining ``forward`` parameters (surplus or missing ones raise a ``TypeError``).
            attribute_to_layer_input (bool, optional): differentiate with respect to each layer's input (the
                authors' code) instead of its output. Default: False.
            candidates (list, optional): per image, the candidate classes (must include the target), or one list
                for all images. A per-image list for a batch that Captum's ``NoiseTunnel`` or ``captum.metrics``
                expanded (each image repeated in place) is repeated the same way. Default: chosen by
                ``score_threshold`` / ``min_candidates``.
            scales (sequence of float, optional): input scale ratios (paper: ``(1, 1.2, 1.4, 1.6)``); scales other
                than 1 need a model that accepts other input sizes. Default: ``(1.0,)``.
            alpha (float, optional): ``α`` of eq. 3. Default: 3.
            guided (bool, optional): guided backpropagation through ReLUs. Default: True.
            subtract (bool, optional): eq. 2 subtraction of the other candidates' maps. Default: True.
            score_threshold (float, optional): probability above which a class is a candidate. Default: 0.5.
            min_candidates (int, optional): top up candidates to this many classes (target included). Default: 4.
            return_details (bool, optional): also return a dict with ``"layer_maps"`` (``S×L×N×1×H×W``, each
                ``tanh(α·M̃/max M̃)``), ``"class_maps"`` (``S×L×K×N×1×H×W``: the up-sampled ``M`` of every
                candidate slot ``k``, the target first; unused slots are zero), ``"subtracted_maps"``
                (``S×L×N×1×H×W``: eq. 2's ``M̃`` before normalisation, ``M`` of the target when nothing is
                subtracted) and ``"candidates"``. Default: False.

        Subtraction never adds evidence: every term ``max(M^c − M^{c'}, 0)`` is at most ``M^c``, so ``M̃`` is at
        most ``(K−1)·M^c`` at every pixel and zero wherever ``M^c`` is. The *normalised* map can still rise at a
        pixel, because eq. 3 divides by the new, smaller peak.

        Returns:
            Tensor or tuple of Tensor: ``N×1×H×W`` maps in ``[0, 1]``; for a tuple of inputs, a tuple with the map
            resized to each input's ``H×W`` (tuple in, tuple out, as Captum). With ``return_details``:
            ``(maps, details)``, the details at the first input's size.

        Example::

            >>> import torch
            >>> from torch import nn
            >>> from captum_ext import MultiLayerClassDiffSaliency
            >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1),
            ...                       nn.AdaptiveMaxPool2d(1), nn.Flatten()).eval()
            >>> ms = MultiLayerClassDiffSaliency(model, [model[0], model[2]])
            >>> maps, details = ms.attribute(torch.rand(2, 3, 8, 8), target=[0, 3], candidates=[[0, 1], [3, 4]],
            ...                              scales=(1.0, 1.5), return_details=True)
            >>> maps.shape, details["layer_maps"].shape
            (torch.Size([2, 1, 8, 8]), torch.Size([2, 2, 2, 1, 8, 8]))
        """
        formatted, was_tuple = format_inputs(inputs)
        scale_values = _check_scales(scales)
        alpha = check_scalar(alpha, "alpha", low=0.0, low_open=True)
        score_threshold = check_scalar(score_threshold, "score_threshold", low=0.0, high=1.0)
        min_candidates = check_scalar(min_candidates, "min_candidates", low=1, integer=True)
        extra = format_additional_args(additional_forward_args)
        self._refresh()
        # The fx interpreter would silently drop arguments the model does not take: refuse them, as NodeBacktrack.
        G.check_forward_arguments(self._plain, len(formatted), len(extra))
        model_inputs = to_model_dtype(formatted, self._model)
        n, _, height, width = formatted[0].shape
        check_examples_independent(self._model, n)  # each image's class difference must be its own
        with gradients_enabled(), eval_mode(self._plain):
            runs = []
            for scale in scale_values:
                scaled = model_inputs if scale == 1.0 else tuple(F.interpolate(
                    x, size=(max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale))),
                    mode="bilinear", align_corners=False) for x in model_inputs)
                try:
                    runs.append(self._run(guided, scaled, extra, attribute_to_layer_input))
                except (RuntimeError, ValueError) as err:
                    if scale == 1.0 or isinstance(err, torch.cuda.OutOfMemoryError):
                        raise
                    # Most often a head that needs one input size; the model's own words say whether it is
                    # (their first line: torch.fx appends the graph node and advice of its own).
                    reason = str(err).split("\n")[0].rstrip(". ")
                    height, width = scaled[0].shape[-2:]
                    raise ValueError(f"the model failed on the inputs scaled by {scale} ({height}×{width}): "
                                     f"{reason}. If it needs one input size, "
                                     f"multi-scale maps need a model with adaptive pooling or a fully convolutional "
                                     f"head; use scales=(1.0,)") from err
            _, target_index = select_targets(runs[0][0], target)
            chosen = self._candidates([scores for scores, _ in runs], target_index, candidates,
                                      float(score_threshold), min_candidates)
            slots = max(len(c) for c in chosen)
            slot_classes = torch.tensor([c + [-1] * (slots - len(c)) for c in chosen], device=formatted[0].device).T
            valid = slot_classes >= 0  # K×N: which candidate slots are used
            one_hot = F.one_hot(slot_classes.clamp_min(0), runs[0][0].shape[1]).to(runs[0][0].dtype)
            one_hot = one_hot * valid[..., None]  # K×N×C, one backward direction per slot
            layer_maps, class_maps, subtracted_maps = [], [], []
            for scores, layer_values in runs:
                grads = torch.autograd.grad(scores, layer_values, grad_outputs=one_hot, is_grads_batched=True,
                                            allow_unused=True)
                per_layer, raw_layers, subtracted_layers = [], [], []
                for index, (grad, value) in enumerate(zip(grads, layer_values)):
                    if grad is None:
                        raise ValueError(f"`layers[{index}]` does not influence the class scores")
                    if value.dim() != 4:
                        raise ValueError(f"`layers[{index}]` must output N×C×H×W feature maps, got "
                                         f"{tuple(value.shape)}")
                    saliency = grad.abs().amax(dim=2)  # K×N×h×w
                    up = F.interpolate(saliency.flatten(0, 1)[:, None], size=(height, width), mode="bilinear",
                                       align_corners=False).view(slots, n, 1, height, width)
                    subtracted, normalised = self._combine(up.detach(), valid, subtract, float(alpha))
                    per_layer.append(normalised)
                    if return_details:
                        raw_layers.append(up.detach())
                        subtracted_layers.append(subtracted)
                layer_maps.append(torch.stack(per_layer))
                if return_details:
                    class_maps.append(torch.stack(raw_layers))
                    subtracted_maps.append(torch.stack(subtracted_layers))
        stacked = torch.stack(layer_maps)  # S×L×N×1×H×W
        maps = stacked.mean(dim=(0, 1))
        per_input = tuple((maps if x.shape[-2:] == maps.shape[-2:] or x.dim() != 4 else F.interpolate(
            maps, size=x.shape[-2:], mode="bilinear", align_corners=False)).to(x.dtype) for x in formatted)
        result = format_output(per_input, was_tuple)
        if return_details:
            return result, {"layer_maps": stacked, "class_maps": torch.stack(class_maps),
                            "subtracted_maps": torch.stack(subtracted_maps), "candidates": chosen}
        return result

    @staticmethod
    def _combine(maps: Tensor, valid: Tensor, subtract: bool, alpha: float) -> Tuple[Tensor, Tensor]:
        """Eq. 2 (subtraction over valid slots 1…K−1) and the tanh normalisation; ``maps`` is K×N×1×H×W.

        Returns ``M̃`` (``M`` itself without subtraction) and ``tanh(α·M̃/max M̃)``, both N×1×H×W.
        """
        target = maps[0]
        if subtract and maps.shape[0] > 1:
            others = valid[1:, :, None, None, None]
            differences = (target[None] - maps[1:]).clamp_min(0) * others
            has_other = valid[1:].any(dim=0)[:, None, None, None]
            target = torch.where(has_other, differences.sum(dim=0), target)
        peak = target.flatten(1).amax(dim=1)[:, None, None, None]
        normalised = torch.where(peak > 0, torch.tanh(alpha * target / peak.clamp_min(1e-30)), torch.zeros_like(target))
        return target, normalised
