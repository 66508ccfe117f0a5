"""NodeBacktrack: trace the most-contributing nodes from the output back to the input pixels (Gandikota & Mishra,
*How you see me*), generalised to any ``torch.fx``-traceable CNN. The layer rules live in a table
(:mod:`captum_ext.attr._backtrack_rules`); this module formats inputs, runs the walk and formats the output."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.fx as fx
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.attribution import (
    TensorOrTuple,
    cast_like,
    check_examples_independent,
    explained_model_errors,
    format_additional_args,
    format_inputs,
    format_output,
    select_targets,
    to_model_dtype,
)
from captum_ext._utils.chunking import launch_bound
from captum_ext._utils.maps import max_normalise
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext._utils.validation import check_in_choices, check_scalar
from captum_ext.attr._backtrack_compaction import layers_next_to_inputs
from captum_ext.attr._backtrack_core import Selection, Walk
from captum_ext.attr._backtrack_reach import walked_nodes
from captum_ext.attr._backtrack_rules import READS_ACTIVATIONS, identity, rule_for
from captum_ext.attr._backtrack_walk import walk_back

FC_RULES = ("positive", "top_n")
SPATIAL_FC_RULES = ("argmax", "positive", "top_n")
CONV_RULES = ("max", "top_n", "positive")


def _check_hits(hits: Any) -> None:
    if not isinstance(hits, Tensor) or hits.dim() != 4:
        raise ValueError(f"`hits` must be an N×C×H×W tensor, got {getattr(hits, 'shape', type(hits).__name__)}")


class NodeBacktrack(Attribution):
    r"""Node backtracking (Gandikota & Mishra, *How you see me*): from the target output node, follow the
    most-contributing nodes back through every layer to the input pixels.

    Rules, layer by layer (``A`` the layer's input activation, ``W`` its weights):

    * **Fully connected**, fed by a vector: keep every input ``j`` with a positive contribution ``A_j W_ij`` to a
      kept node ``i`` (paper Alg. 1, ``fc_rule="positive"``), or only its ``fc_top_n`` largest positive ones
      (``fc_rule="top_n"``, the text's "top n"). Fed by a spatial map through a flatten (VGG's first FC layer), the
      ``spatial_fc_rule``: the single argmax over ``C×H×W`` (``"argmax"``, the default), the ``spatial_fc_top_n``
      largest positive contributions (``"top_n"``, the text's "top n") or every positive one (``"positive"``,
      Alg. 1 as written).
    * **Convolution** (any stride, padding, dilation, groups — depthwise too): in the kept node's receptive
      field, the contribution map ``W ⊙ A_rf``; the channel with the largest spatial sum (``conv_rule="max"``, the
      text's "maximum-activating feature"), the ``conv_top_n`` largest positive sums (``conv_rule="top_n"``) or
      every channel with a positive sum (``conv_rule="positive"``, Alg. 2 line 8); then the position of the largest
      contribution inside that channel's window. A BatchNorm right after a convolution is folded into it (its
      per-channel scale can flip signs). A ``Linear`` on the channel axis of a channels-last map (ConvNeXt) is a
      ``1×1`` convolution.
    * **Max-pooling**: the argmax inside the window. **Average / adaptive pooling** (and ``mean`` over ``H, W``):
      the argmax of the contribution in the window (equal weights: the largest activation).
    * **Residual add**: the branch with the larger value at the node. **Channel cat**: the input the channel came
      from. **Zero padding**: positions inside the image. **Resizing** (``F.interpolate``, nearest or bilinear):
      the source pixel with the largest weighted contribution. ReLU-family, SiLU, Hardswish, Hardsigmoid, GELU,
      Mish, sigmoid, tanh, dropout, stochastic depth, BatchNorm, LayerNorm over the last dimension,
      flatten/view/reshape: the same node. **Moves** (transpose, permute, movedim, slicing, the parts of
      ``chunk``/``split``/``unbind``; ShuffleNet's channel shuffle): the node the element came from.
    * **Gates**: a product ``x * g`` of two attributed values where ``g`` reaches the inputs only through a global
      pooling (squeeze-and-excitation: EfficientNet, MobileNetV3, RegNetY) scales whole channels of ``x``: the
      same node of ``x``; no path goes into the gate branch.
    * **Constants**: values that do not depend on the attributed ``inputs`` — parameters, buffers, coordinate grids
      (``torch.linspace``), and everything computed from ``additional_forward_args`` alone (an ROI mask) — end a
      path. Adding, multiplying by, dividing by or subtracting a constant keeps the node of the other operand; a
      product of two attributed values other than a gate raises ``NotImplementedError``.

    A kept node with no positive contribution under the positive rules has no predecessor: its path ends there, and
    an image whose every path ends early gets all-zero hits. The argmax and ``"max"`` rules always keep one
    predecessor, the largest contribution even when none is positive (then possibly a zero one).

    Kept nodes are united and de-duplicated per value (``deduplicate=True``, the paper's memory vectors); the
    result counts, for every input element, how many kept first-layer nodes backtracked to it. With
    ``deduplicate=False`` every path is counted separately.

    **Choosing the rules** (500 validation scenes, zoo VGG; max-F, β² = 0.3, of the density against the object
    mask). At VGG's spatial FC layer the argmax keeps about 9 pixels per image (max-F 0.554), the top 10 about 20
    (0.577) at 1.35–1.5 × Captum ``Saliency``'s cost on VGG16, so the default is the argmax (0.73–0.78 ×). These
    sparse walks trail Saliency's max-F (0.609). :attr:`TWO_CHANNEL_RULES` — the two best channels per convolution
    node — reach 0.624 (VGG and ResNet, Saliency 0.609 and 0.597) with twice Saliency's energy inside the object, at
    0.76–0.86 × (VGG16) and 1.01–1.06 × (ResNet-50, whose residual blocks multiply the kept nodes) its cost on the
    CPU at 224², batch 8 with Numba installed: not below a gradient on both nets, so not the default (0.67–0.71 ×
    and 0.49–0.55 ×). :attr:`DENSE_RULES` — the five best channels, every path counted — reach 0.656 (VGG) and 0.645
    (ResNet) at 3.2 × and 5.9 ×. The API page and ``benchmarks/bench_node_backtrack.py`` give the full tables.

    The model is traced with ``torch.fx`` (never modified, no hooks; ``torch.compile`` and ``DataParallel``
    wrappers are unwrapped); any operation on a path outside the list above raises ``NotImplementedError`` naming
    it, so a map is never silently wrong. Replacing a submodule, parameter or buffer after construction (``model.to``
    and ``load_state_dict(..., assign=True)`` do) is noticed: the model is traced again on the next call. A
    BatchNorm without running statistics mixes the images of a batch, so such a model explains one image at a time.
    Everything is vectorised over the kept nodes and the batch: each layer's rule is a short, fixed sequence of
    tensor operations whatever the batch (the index tables of a layer's window geometry are built once per layer and
    input size), and the walk waits for the device only to de-duplicate kept nodes, where paths meet and every two
    layers. On a GPU, where every operation is a kernel launch, that is what the cost is made of: ResNet-50
    dispatches about 2,400 operations per call with the default rules and 3,200 with the two-channel rules at 112²,
    the same at batch 1 and 8, and synchronises 38 times. GPUs gather whole receptive fields in one operation; the
    CPU sums them tap by tap in cache-sized chunks (faster there; identical hits) or, with Numba installed, walks
    each convolution, windowed pooling and de-duplication in one compiled launch, and runs the forward pass on
    channels-last copies of 4-D inputs (unless the model reads memory layout, e.g. with ``view``; 10–20 % faster on
    ResNet-50). That layout's convolutions round in another order, which can break exact ties of a uniform image
    region (all of a max-pooling window equal): the position kept among tied values may then differ from a forward
    in the model's own layout, or on a GPU (whose convolutions round their own way), by one pixel of the window.
    Inputs in another floating dtype than the model's are cast to it, and the hits come back in the inputs' dtype.

    Args:
        model (nn.Module): the network, returning ``N×K`` scores (or a tuple whose first element holds them);
            it runs in eval mode, restored afterwards.
        fc_rule (str, optional): ``"positive"`` or ``"top_n"``. Default: ``"positive"``.
        fc_top_n (int, optional): ``n`` for ``fc_rule="top_n"``. Default: 5.
        conv_rule (str, optional): ``"max"``, ``"top_n"`` or ``"positive"``. Default: ``"max"``.
        include_bias (bool, optional): add the bias to each contribution, as the paper's ``W * A + b`` (changes the
            positive rules only). Default: False.
        deduplicate (bool, optional): collapse repeated nodes per layer. Default: True.
        spatial_fc_rule (str, optional): ``"argmax"``, ``"top_n"`` or ``"positive"`` for a linear layer fed by a
            flattened spatial map. Default: ``"argmax"``.
        spatial_fc_top_n (int, optional): ``n`` for ``spatial_fc_rule="top_n"``. Default: 10.
        conv_top_n (int, optional): ``n`` for ``conv_rule="top_n"``. Default: 5.

    Example::

        >>> import torch
        >>> from captum_ext import NodeBacktrack, zoo
        >>> from captum_ext.datasets import scenes
        >>> model = zoo.load("scenes_vgg")
        >>> batch = scenes.make_scenes(2, split="test", seed=1)
        >>> nb = NodeBacktrack(model)
        >>> hits = nb.attribute(scenes.normalize(batch.images), target=batch.labels)
        >>> hits.shape, bool((hits >= 0).all())
        (torch.Size([2, 3, 64, 64]), True)
        >>> nb.saliency(scenes.normalize(batch.images), target=batch.labels, sigma=3.0).shape
        torch.Size([2, 1, 64, 64])
        >>> dense = NodeBacktrack(model, **NodeBacktrack.DENSE_RULES)  # denser, costlier
        >>> dense.saliency(scenes.normalize(batch.images), target=batch.labels).shape
        torch.Size([2, 1, 64, 64])
    """

    #: The quality/cost middle ground: the two best channels of every convolution node.
    TWO_CHANNEL_RULES: Dict[str, Any] = {"conv_rule": "top_n", "conv_top_n": 2}
    #: Rules for dense, precise density maps: the five best channels of every convolution node, each path counted.
    DENSE_RULES: Dict[str, Any] = {"conv_rule": "top_n", "conv_top_n": 5, "deduplicate": False}

    def __init__(
        self,
        model: nn.Module,
        fc_rule: str = "positive",
        fc_top_n: int = 5,
        conv_rule: str = "max",
        include_bias: bool = False,
        deduplicate: bool = True,
        spatial_fc_rule: str = "argmax",
        spatial_fc_top_n: int = 10,
        conv_top_n: int = 5,
    ) -> None:
        check_in_choices(fc_rule, "fc_rule", FC_RULES)
        check_in_choices(spatial_fc_rule, "spatial_fc_rule", SPATIAL_FC_RULES)
        check_scalar(spatial_fc_top_n, "spatial_fc_top_n", low=1, integer=True)
        check_scalar(conv_top_n, "conv_top_n", low=1, integer=True)
        check_in_choices(conv_rule, "conv_rule", CONV_RULES)
        check_scalar(fc_top_n, "fc_top_n", low=1, integer=True)
        super().__init__(model)
        self.fc_rule = fc_rule
        self.fc_top_n = fc_top_n
        self.spatial_fc_rule = spatial_fc_rule
        self.spatial_fc_top_n = spatial_fc_top_n
        self.conv_rule = conv_rule
        self.conv_top_n = conv_top_n
        self.include_bias = bool(include_bias)
        self.deduplicate = bool(deduplicate)
        self._trace()

    # ----------------------------------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------------------------------

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        return_points: bool = False,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, List[Tensor]]]:
        r"""Backtrack from the target output node to the inputs.

        Args:
            inputs (Tensor or tuple of Tensor): ``N×C×H×W`` batch (a tuple for multi-input models).
            target (int, tuple, Tensor or list, optional): Captum's ``TargetType``; ``None`` (default) follows the
                predicted class.
            additional_forward_args (Any, optional): extra model arguments, after the inputs.
            return_points (bool, optional): also return, per image, the backtracked pixel coordinates of the
                first input (see :meth:`points_from_hits`). Default: False.

        Returns:
            Tensor or tuple of Tensor: shaped like ``inputs``, float, integer-valued and ``>= 0``: the number of
            backtracked paths ending at each input element. With ``return_points``: ``(hits, points)``.

        Example::

            >>> import torch
            >>> from torch import nn
            >>> from captum_ext import NodeBacktrack
            >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            ...                       nn.Linear(8, 3)).eval()
            >>> hits, points = NodeBacktrack(model).attribute(torch.rand(2, 1, 4, 4), target=0, return_points=True)
            >>> hits.shape, len(points), points[0].shape[1]
            (torch.Size([2, 1, 4, 4]), 2, 3)
        """
        formatted, was_tuple = format_inputs(inputs)
        hits = self._backtrack(formatted, target, format_additional_args(additional_forward_args))
        result = format_output(hits, was_tuple)
        if return_points:
            return result, self.points_from_hits(hits[0])
        return result

    def saliency(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        sigma: Optional[float] = None,
    ) -> Tensor:
        r"""The paper's density saliency: a Gaussian around every backtracked pixel, scaled to ``[0, 1]``.

        Args:
            inputs, target, additional_forward_args: as in :meth:`attribute` (the first input is used).
            sigma (float, optional): standard deviation of the Gaussian in pixels. Default: ``max(H, W) / 16`` for
                the sparse walks of ``conv_rule="max"``; for the other conv rules ``max(H, W) / 32`` with
                de-duplicated nodes (hundreds of pixels) and ``max(H, W) / 128`` with every path counted (the counts
                already form a density). On 64-px validation scenes with the zoo VGG: 4 px gives max-F 0.548 with
                42 % of the density inside the object, within 0.01 of the best (0.554 at 7–8 px, 26–29 %); the
                two-channel rules peak at 3 px (VGG) and 2 px (ResNet), the dense rules at 0.5 px (0.656, 66 %).

        Returns:
            Tensor: ``N×1×H×W`` densities, each image's maximum scaled to 1 (an image without backtracked pixels
            gives zeros).

        Example::

            >>> import torch
            >>> from torch import nn
            >>> from captum_ext import NodeBacktrack
            >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            ...                       nn.Flatten(), nn.Linear(4, 2)).eval()
            >>> density = NodeBacktrack(model).saliency(torch.rand(2, 3, 16, 16), target=1, sigma=2.0)
            >>> density.shape, bool(density.max() <= 1)
            (torch.Size([2, 1, 16, 16]), True)
        """
        formatted, _ = format_inputs(inputs)
        hits = self._backtrack(formatted, target, format_additional_args(additional_forward_args))[0]
        if sigma is None:
            side = max(hits.shape[-2:])
            sigma = side / (16.0 if self.conv_rule == "max" else 32.0 if self.deduplicate else 128.0)
        return self.density_from_hits(hits, sigma)

    def saliency_mask(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        sigma: Optional[float] = None,
        threshold: float = 0.5,
    ) -> Tensor:
        """Binary saliency: the paper's thresholded density.

        Args:
            inputs, target, additional_forward_args, sigma: as in :meth:`saliency`.
            threshold (float, optional): density level in ``[0, 1]`` at and above which a pixel is salient.
                Default: 0.5.

        Returns:
            Tensor: ``N×1×H×W`` bool, :meth:`saliency` ``>= threshold``.
        """
        check_scalar(threshold, "threshold", low=0.0, high=1.0)
        return self.saliency(inputs, target, additional_forward_args, sigma) >= threshold

    @staticmethod
    def density_from_hits(hits: Tensor, sigma: Optional[float] = None) -> Tensor:
        """Turn hits into the paper's density map.

        Args:
            hits (Tensor): ``N×C×H×W`` hits from :meth:`attribute`.
            sigma (float, optional): standard deviation of the Gaussian in pixels; default ``max(H, W) / 16``, the
                default rules' bandwidth (for other rules pass it, or use :meth:`saliency`, which picks it from the
                rules).

        Returns:
            Tensor: ``N×1×H×W`` float32, the channel-summed hits Gaussian-blurred and scaled so each image's
            maximum is 1 (all zeros for an image without hits).
        """
        _check_hits(hits)
        height, width = hits.shape[-2:]
        blur = max(height, width) / 16.0 if sigma is None else check_scalar(sigma, "sigma", low=0.0)
        return max_normalise(gaussian_blur(hits.sum(dim=1, keepdim=True).to(torch.float32), blur))

    @staticmethod
    def points_from_hits(hits: Tensor) -> List[Tensor]:
        """The backtracked pixels of each image as coordinates.

        Args:
            hits (Tensor): ``N×C×H×W`` hits from :meth:`attribute`.

        Returns:
            list of Tensor: per image, a ``K×3`` tensor of ``(y, x, count)`` for every pixel reached (channels
            summed), in row-major order.
        """
        _check_hits(hits)
        per_pixel = hits.sum(dim=1)
        points = []
        for image in per_pixel:  # one entry per image in the output list; the work inside is vectorised
            ys, xs = torch.nonzero(image, as_tuple=True)
            points.append(torch.stack([ys.to(image.dtype), xs.to(image.dtype), image[ys, xs]], dim=1))
        return points

    # ----------------------------------------------------------------------------------------------------------------
    # The walk
    # ----------------------------------------------------------------------------------------------------------------

    def _trace(self) -> None:
        """(Re-)trace the model and precompute what the walk needs; called again when a submodule was replaced."""
        self._model = G.unwrap_model(self.forward_func)
        self.graph_module = G.trace(self._model)
        self._fingerprint = G.module_fingerprint(self._model)
        self._placeholders = [n for n in self.graph_module.graph.nodes if n.op == "placeholder"]
        self._checked: Dict[int, Set[fx.Node]] = {}
        # Every call attributes at least the first input: check its operations now, so that a model with an
        # operation no rule handles fails at construction.
        self._dependent_on(1)
        # Only the inputs of rules that read activations are stored during the forward pass; everything else is
        # kept as a shape-only meta tensor.
        self._needed_values = {parent for node in self.graph_module.graph.nodes
                               if node.op not in ("placeholder", "output", "get_attr")
                               and rule_for(node, self.graph_module) in READS_ACTIVATIONS
                               for parent in node.all_input_nodes}
        self._pass_through = {node for node in self.graph_module.graph.nodes
                              if node.op in ("call_module", "call_function", "call_method")
                              and rule_for(node, self.graph_module) is identity}
        self._last_layers = layers_next_to_inputs(self.graph_module, self._pass_through)
        # On the CPU the forward pass runs on channels-last copies of 4-D inputs (faster convolutions, whose outputs
        # are then the rows the convolution rule reads; values differ in float rounding only), unless the model
        # reads strides.
        self._records_channels_last = G.layout_free(self.graph_module)
        self._walk_cache: Dict[object, object] = {}

    def _refresh(self) -> None:
        """Re-trace when a submodule or tensor of the model was replaced since the last trace, so the current model
        is explained."""
        if G.module_fingerprint(self._model) != self._fingerprint:
            self._trace()

    def _explained_output(self) -> Any:
        """The graph value NodeBacktrack starts from: the output, or the first element of a tuple output."""
        output_node = next(node for node in self.graph_module.graph.nodes if node.op == "output")
        source = output_node.args[0]
        return source[0] if isinstance(source, (tuple, list)) and source else source

    def _dependent_on(self, n_inputs: int) -> Set[fx.Node]:
        """Nodes on a path from the first ``n_inputs`` arguments to the explained output; each must have a rule
        (checked once per count)."""
        if n_inputs not in self._checked:
            self._checked[n_inputs] = walked_nodes(self.graph_module, self._placeholders[:n_inputs],
                                                   self._explained_output())
        return self._checked[n_inputs]

    @torch.no_grad()
    def _backtrack(self, inputs: Tuple[Tensor, ...], target: Any, extra: Tuple[Any, ...]) -> Tuple[Tensor, ...]:
        self._refresh()
        check_examples_independent(self._model, inputs[0].shape[0])  # each image's walk must be its own
        args = (*to_model_dtype(inputs, self._model), *extra)
        G.check_forward_arguments(self.graph_module, len(inputs), len(extra))
        walk = Walk(self.graph_module, fc_rule=self.fc_rule, fc_top_n=self.fc_top_n,
                    spatial_fc_rule=self.spatial_fc_rule, spatial_fc_top_n=self.spatial_fc_top_n,
                    conv_rule=self.conv_rule, conv_top_n=self.conv_top_n, include_bias=self.include_bias,
                    dependent=self._dependent_on(len(inputs)), cache=self._walk_cache,
                    pass_through=self._pass_through)
        recorded = tuple(a.contiguous(memory_format=torch.channels_last)
                         if self._records_channels_last and isinstance(a, Tensor) and a.dim() == 4
                         and not launch_bound(a.device) else a for a in args)
        with explained_model_errors(inputs):
            output, values = G.record(self.graph_module, recorded, keep=self._needed_values)
        source = self._explained_output()
        if isinstance(output, (tuple, list)) and output:
            output = output[0]  # a model returning (prediction, extras…) is explained through its first element
        if not isinstance(output, Tensor) or not isinstance(source, fx.Node):
            raise NotImplementedError(f"NodeBacktrack needs a model returning a tensor (or a tuple whose first "
                                      f"element is one), got {type(output).__name__}")
        n = inputs[0].shape[0]
        if output.shape[0] != n:
            raise NotImplementedError(f"the model returns {output.shape[0]} rows for {n} examples: NodeBacktrack "
                                      f"follows elements within each example, not across examples")
        _, flat_target = select_targets(output, target)
        device = output.device
        hits = {} if source not in walk.dependent else walk_back(
            walk, values, source, Selection(torch.arange(n, device=device), flat_target.to(device),
                                            torch.ones(n, dtype=torch.float64, device=device), 0, n),
            self.deduplicate, self._last_layers)
        result = []
        for index, tensor in enumerate(inputs):
            found = hits.get(self._placeholders[index])
            result.append(torch.zeros_like(tensor) if found is None else cast_like(found, tensor))
        return tuple(result)
