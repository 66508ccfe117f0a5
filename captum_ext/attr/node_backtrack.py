"""NodeBacktrack: trace the most-contributing nodes from the output back to the input pixels (Gandikota & Mishra,
*How you see me*, seed 001), generalised to any ``torch.fx``-traceable CNN."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.attribution import (
    TensorOrTuple,
    format_additional_args,
    format_inputs,
    format_output,
    select_targets,
)
from captum_ext._utils.folding import fold_bn
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext._utils.validation import check_in_choices, check_scalar

FC_RULES = ("positive", "top_n")
CONV_RULES = ("max", "positive")
_CHUNK_ELEMENTS = 1 << 22  # gathered contributions per chunk: bounds the extra memory of a backtracking step


@dataclass
class _Selection:
    """Kept nodes of one graph value: example index, index into the flattened per-example value, path count."""

    batch: Tensor
    flat: Tensor
    count: Tensor

    def __len__(self) -> int:
        return int(self.batch.numel())

    def take(self, keep: Tensor, flat: Optional[Tensor] = None) -> "_Selection":
        return _Selection(self.batch[keep], (self.flat if flat is None else flat)[keep], self.count[keep])


def _merge(parts: Sequence[_Selection], numel: int, deduplicate: bool) -> _Selection:
    """Union of selections of the same value; counts add up (or collapse to 1 with ``deduplicate``)."""
    batch = torch.cat([p.batch for p in parts])
    flat = torch.cat([p.flat for p in parts])
    count = torch.cat([p.count for p in parts])
    if batch.numel() == 0:
        return _Selection(batch, flat, count)
    key = batch * numel + flat
    unique, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(unique.numel(), dtype=count.dtype, device=count.device).index_add_(0, inverse, count)
    if deduplicate:
        summed = torch.ones_like(summed)
    return _Selection(unique // numel, unique % numel, summed)


def _chunks(total: int, per_item: int) -> List[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(per_item, 1))
    return [slice(s, min(s + size, total)) for s in range(0, total, size)]


def _pair(value: Any) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1])) if len(value) == 2 else (int(value[0]), int(value[0]))
    return int(value), int(value)


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


class NodeBacktrack(Attribution):
    r"""Node backtracking (Gandikota & Mishra, *How you see me*): from the target output node, follow the
    most-contributing nodes back through every layer to the input pixels.

    Rules, layer by layer (``A`` the layer's input activation, ``W`` its weights):

    * **Fully connected**, fed by a vector: keep every input ``j`` with a positive contribution ``A_j W_ij`` to a
      kept node ``i`` (paper Alg. 1, ``fc_rule="positive"``), or only its ``fc_top_n`` largest positive ones
      (``fc_rule="top_n"``, the text's "top n"). Fed by a spatial map through a flatten: one node per kept node, the
      argmax over ``C×H×W`` of ``A ⊙ W_i``.
    * **Convolution** (any stride, padding, dilation, groups — depthwise too): in the kept node's receptive
      field, the contribution map ``W ⊙ A_rf``; the channel with the largest spatial sum (``conv_rule="max"``, the
      text's "maximum-activating feature") or every channel with a positive sum (``conv_rule="positive"``, Alg. 2
      line 8); then the position of the largest contribution inside that channel's window. A BatchNorm right after
      a convolution is folded into it (its per-channel scale can flip signs).
    * **Max-pooling**: the argmax inside the window. **Average / adaptive pooling** (and ``mean`` over ``H, W``):
      the argmax of the contribution in the window (equal weights: the largest activation).
    * **Residual add**: the branch with the larger value at the node. **Channel cat**: the input the channel came
      from. **Zero padding**: positions inside the image. ReLU-family, dropout, BatchNorm, flatten/view/reshape:
      the same node.

    A kept node with no positive contribution under the positive rules has no predecessor: its path ends there, and
    an image whose every path ends early gets all-zero hits.

    Kept nodes are united and de-duplicated per value (``deduplicate=True``, the paper's memory vectors); the
    result counts, for every input element, how many kept first-layer nodes backtracked to it. With
    ``deduplicate=False`` every path is counted separately.

    The model is traced once with ``torch.fx`` (never modified, no hooks); any operation outside the list above
    raises ``NotImplementedError`` naming it, so a map is never silently wrong. Everything is vectorised over the
    kept nodes and the batch.

    Args:
        model (nn.Module): the network, in eval mode, returning ``N×K`` scores.
        fc_rule (str, optional): ``"positive"`` or ``"top_n"``. Default: ``"positive"``.
        fc_top_n (int, optional): ``n`` for ``fc_rule="top_n"``. Default: 5.
        conv_rule (str, optional): ``"max"`` or ``"positive"``. Default: ``"max"``.
        include_bias (bool, optional): add the bias to each contribution, as the paper's ``W * A + b`` (changes the
            positive rules only). Default: False.
        deduplicate (bool, optional): collapse repeated nodes per layer. Default: True.

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
    """

    def __init__(
        self,
        model: nn.Module,
        fc_rule: str = "positive",
        fc_top_n: int = 5,
        conv_rule: str = "max",
        include_bias: bool = False,
        deduplicate: bool = True,
    ) -> None:
        check_in_choices(fc_rule, "fc_rule", FC_RULES)
        check_in_choices(conv_rule, "conv_rule", CONV_RULES)
        check_scalar(fc_top_n, "fc_top_n", low=1, integer=True)
        self.graph_module = G.trace(model)
        super().__init__(model)
        self.fc_rule = fc_rule
        self.fc_top_n = fc_top_n
        self.conv_rule = conv_rule
        self.include_bias = bool(include_bias)
        self.deduplicate = bool(deduplicate)
        self._check_supported()
        # Only the inputs of rules that read activations (conv, linear, pooling, add) are stored during the
        # forward pass; everything else is kept as shape-only meta tensors.
        self._needed_values = {parent for node in self.graph_module.graph.nodes
                               if node.op not in ("placeholder", "output", "get_attr")
                               and self._rule_for(node) in (self._conv, self._linear, self._pool, self._add)
                               for parent in G.tensor_args(node)}

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
            sigma (float, optional): standard deviation of the Gaussian in pixels; default ``max(H, W) / 32``.

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
        return self.density_from_hits(hits, sigma)

    def saliency_mask(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        sigma: Optional[float] = None,
        threshold: float = 0.5,
    ) -> Tensor:
        """Binary saliency: :meth:`saliency` ``>= threshold`` (``N×1×H×W`` bool)."""
        check_scalar(threshold, "threshold", low=0.0, high=1.0)
        return self.saliency(inputs, target, additional_forward_args, sigma) >= threshold

    @staticmethod
    def density_from_hits(hits: Tensor, sigma: Optional[float] = None) -> Tensor:
        """Channel-summed hits, Gaussian-blurred (``sigma`` px, default ``max(H, W) / 32``), scaled to ``[0, 1]``."""
        if not isinstance(hits, Tensor) or hits.dim() != 4:
            raise ValueError(f"`hits` must be an N×C×H×W tensor, got {getattr(hits, 'shape', type(hits))}")
        height, width = hits.shape[-2:]
        blur = max(height, width) / 32.0 if sigma is None else check_scalar(sigma, "sigma", low=0.0)
        density = gaussian_blur(hits.sum(dim=1, keepdim=True).to(torch.float32), blur)
        peak = density.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None, None]
        return density / peak

    @staticmethod
    def points_from_hits(hits: Tensor) -> List[Tensor]:
        """Per image, a ``K×3`` tensor of ``(y, x, count)`` for every pixel reached (channels summed)."""
        per_pixel = hits.sum(dim=1)
        points = []
        for image in per_pixel:  # one entry per image in the output list; the work inside is vectorised
            ys, xs = torch.nonzero(image, as_tuple=True)
            points.append(torch.stack([ys.to(image.dtype), xs.to(image.dtype), image[ys, xs]], dim=1))
        return points

    # ----------------------------------------------------------------------------------------------------------------
    # The walk
    # ----------------------------------------------------------------------------------------------------------------

    def _check_supported(self) -> None:
        """Fail at construction, naming the first operation no rule handles."""
        for node in self.graph_module.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if self._rule_for(node) is None and not self._is_metadata(node):
                raise NotImplementedError(f"NodeBacktrack has no rule for {G.describe(node, self.graph_module)}. "
                                          f"Supported: Conv2d, Linear, ReLU-family, max/avg/adaptive pooling, "
                                          f"BatchNorm, dropout, flatten/view/reshape, zero padding, residual add, "
                                          f"channel cat.")

    @staticmethod
    def _is_metadata(node: fx.Node) -> bool:
        """Nodes computing sizes and shapes (``x.size(0)``, ``x.shape[1]``), which carry no activations."""
        if node.op == "call_method":
            return node.target in ("size", "dim")
        if node.op == "call_function" and node.target is getattr:
            return True
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            return isinstance(source, fx.Node) and NodeBacktrack._is_metadata(source)
        return False

    def _module(self, node: fx.Node) -> nn.Module:
        return self.graph_module.get_submodule(str(node.target))

    def _rule_for(self, node: fx.Node) -> Optional[Callable[[fx.Node, _Selection, Dict[fx.Node, Any]],
                                                           List[Tuple[fx.Node, _Selection]]]]:
        if node.op == "call_module":
            module = self._module(node)
            if isinstance(module, G.ELEMENTWISE_MODULES) or isinstance(module, nn.Flatten):
                return self._identity
            if isinstance(module, nn.Conv2d):
                return self._conv
            if isinstance(module, nn.Linear):
                return self._linear
            if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                return self._pool
            if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d)):
                return self._pad
            return None
        if node.op == "call_function":
            target = node.target
            if target in G.ELEMENTWISE_FUNCTIONS or target in G.RESHAPE_FUNCTIONS:
                return self._identity
            if target is F.conv2d:
                return self._conv
            if target is F.linear:
                return self._linear
            if target in G.MAX_POOL_FUNCTIONS or target in G.AVG_POOL_FUNCTIONS or target in G.ADAPTIVE_FUNCTIONS:
                return self._pool
            if target in G.ADD_FUNCTIONS:
                return self._add
            if target in G.CAT_FUNCTIONS:
                return self._cat
            if target is F.pad:
                return self._pad
            if target is torch.mean:
                return self._pool
            return None
        if node.op == "call_method":
            if node.target in G.ELEMENTWISE_METHODS or node.target in G.RESHAPE_METHODS:
                return self._identity
            if node.target in G.ADD_METHODS:
                return self._add
            if node.target == "mean":
                return self._pool
            return None
        return None

    @torch.no_grad()
    def _backtrack(self, inputs: Tuple[Tensor, ...], target: Any, extra: Tuple[Any, ...]) -> Tuple[Tensor, ...]:
        placeholders = [n for n in self.graph_module.graph.nodes if n.op == "placeholder"]
        args = (*inputs, *extra)
        if len(args) > len(placeholders):
            raise ValueError(f"the model takes {len(placeholders)} argument(s), got {len(args)} (inputs plus "
                             f"additional_forward_args)")
        output, values = G.record(self.graph_module, args, keep=self._needed_values)
        if not isinstance(output, Tensor):
            raise NotImplementedError(f"NodeBacktrack needs a model returning one tensor, got {type(output).__name__}")
        _, flat_target = select_targets(output, target)
        n = inputs[0].shape[0]
        device = output.device
        pending: Dict[fx.Node, List[_Selection]] = {}
        output_node = next(node for node in self.graph_module.graph.nodes if node.op == "output")
        source = output_node.args[0]
        if not isinstance(source, fx.Node):
            raise NotImplementedError("NodeBacktrack needs a model returning one tensor")
        pending[source] = [_Selection(torch.arange(n, device=device), flat_target.to(device),
                                      torch.ones(n, dtype=torch.float64, device=device))]
        hits: Dict[fx.Node, Tensor] = {}
        for node in reversed(list(self.graph_module.graph.nodes)):
            parts = pending.pop(node, None)
            if not parts:
                continue
            value = values[node]
            numel = value[0].numel()
            if node.op == "placeholder":
                merged = _merge(parts, numel, deduplicate=False)  # count every kept first-layer node's arrival
                counts = torch.zeros(value.numel(), dtype=torch.float64, device=device)  # value may be meta
                counts.index_add_(0, merged.batch * numel + merged.flat, merged.count.to(device))
                hits[node] = counts.view(value.shape)
                continue
            rule = self._rule_for(node)
            if rule is None:  # pragma: no cover - _check_supported ran at construction
                raise NotImplementedError(f"NodeBacktrack has no rule for {G.describe(node, self.graph_module)}")
            # De-duplicate per layer; pass-through ops (ReLU, flatten, …) keep the counts so that the arrivals at
            # the input still count the kept nodes of the first layer.
            selection = _merge(parts, numel, self.deduplicate and rule != self._identity)
            for parent, parent_selection in rule(node, selection, values):
                if len(parent_selection) and parent.op != "get_attr":
                    pending.setdefault(parent, []).append(parent_selection)
        result = []
        for index, tensor in enumerate(inputs):
            found = hits.get(placeholders[index])
            result.append(torch.zeros_like(tensor) if found is None else found.to(tensor.dtype))
        return tuple(result)

    # ----------------------------------------------------------------------------------------------------------------
    # Rules: each maps the kept nodes of a node's output to kept nodes of its inputs
    # ----------------------------------------------------------------------------------------------------------------

    def _first_input(self, node: fx.Node) -> fx.Node:
        parents = G.tensor_args(node)
        if not parents:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)} has no tensor input")
        return parents[0]

    def _identity(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]
                  ) -> List[Tuple[fx.Node, _Selection]]:
        parent = self._first_input(node)
        out, inp = values[node], values[parent]
        if out.shape[0] != inp.shape[0] or out[0].numel() != inp[0].numel():
            raise NotImplementedError(f"{G.describe(node, self.graph_module)} changes the batch dimension or the "
                                      f"number of elements ({tuple(inp.shape)} → {tuple(out.shape)})")
        return [(parent, sel)]

    def _feeds_from_spatial(self, node: fx.Node, values: Dict[fx.Node, Any]) -> bool:
        """Whether a linear layer's input is a flattened spatial map (through reshapes/elementwise ops only); a
        globally pooled ``C×1×1`` map is a plain vector."""
        current = node
        while True:
            if values[current].dim() == 4:
                return values[current].shape[-2:].numel() > 1
            if current.op == "placeholder" or self._rule_for(current) != self._identity:
                return False
            current = self._first_input(current)

    def _linear(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]
                ) -> List[Tuple[fx.Node, _Selection]]:
        parent = self._first_input(node)
        if node.op == "call_module":
            module = self._module(node)
            weight, bias = module.weight, module.bias
        else:
            weight, bias = values[node.args[1]], _arg(node, 2, "bias", None)
            bias = values[bias] if isinstance(bias, fx.Node) else bias
        activations = values[parent]
        if activations.dim() != 2:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: linear layers on inputs shaped "
                                      f"{tuple(activations.shape)} are not supported (need N×features)")
        spatial = self._feeds_from_spatial(parent, values)
        use_bias = self.include_bias and bias is not None
        # Inputs that are zero in every image contribute exactly 0: leave them out of the products (post-ReLU
        # activations are mostly zero). Exact: a positive best beats every zero; other rows are redone in full.
        columns = None
        if not use_bias:
            active = (activations != 0).any(dim=0).nonzero()[:, 0]
            if active.numel() < activations.shape[1]:
                columns = active
                compact = activations.index_select(1, columns)
        batches, flats, counts = [], [], []
        # The positive rules can keep thousands of inputs per node: accumulate path counts densely per image
        # (images × inputs) instead of listing every (node, input) pair.
        width = activations.shape[1] if columns is None else columns.numel()
        dense = None if spatial else torch.zeros(activations.shape[0], width, dtype=torch.float64,
                                                 device=activations.device)
        for part in _chunks(len(sel), activations.shape[1]):  # full rows of the weight are gathered first
            b, i, c = sel.batch[part], sel.flat[part], sel.count[part]
            if columns is not None:
                contrib = compact.index_select(0, b).mul_(weight.index_select(0, i).index_select(1, columns))
            else:
                contrib = activations.index_select(0, b).mul_(weight.index_select(0, i))
                if use_bias:
                    contrib += bias[i][:, None]
            if spatial:
                if contrib.shape[1] == 0:
                    best_value = torch.zeros(len(b), dtype=contrib.dtype, device=contrib.device)
                    j = torch.zeros(len(b), dtype=torch.long, device=contrib.device)
                else:
                    best_value, j = contrib.max(dim=1)
                    if columns is not None:
                        j = columns[j]
                if columns is not None:
                    redo = (best_value <= 0).nonzero()[:, 0]
                    if redo.numel():
                        full = activations.index_select(0, b[redo]) * weight.index_select(0, i[redo])
                        j[redo] = full.argmax(dim=1)
                batches.append(b), flats.append(j), counts.append(c)
                continue
            positive = contrib > 0
            if self.fc_rule == "top_n" and contrib.shape[1]:
                top = contrib.topk(min(self.fc_top_n, contrib.shape[1]), dim=1).indices
                positive &= torch.zeros_like(positive).scatter_(1, top, True)
            assert dense is not None
            dense.index_add_(0, b, positive.to(torch.float64) * c[:, None])
        if dense is not None:
            rows, cols = dense.nonzero(as_tuple=True)
            batches, counts = [rows], [dense[rows, cols]]
            flats = [cols if columns is None else columns[cols]]
        return [(parent, _Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]

    def _conv_parameters(self, node: fx.Node, values: Dict[fx.Node, Any]) -> Dict[str, Any]:
        if node.op == "call_module":
            conv = self._module(node)
            params = {"weight": conv.weight, "bias": conv.bias, "stride": conv.stride, "padding": conv.padding,
                      "dilation": conv.dilation, "groups": conv.groups, "mode": conv.padding_mode}
        else:
            bias = _arg(node, 2, "bias", None)
            params = {"weight": values[node.args[1]], "bias": values[bias] if isinstance(bias, fx.Node) else bias,
                      "stride": _arg(node, 3, "stride", 1), "padding": _arg(node, 4, "padding", 0),
                      "dilation": _arg(node, 5, "dilation", 1), "groups": _arg(node, 6, "groups", 1),
                      "mode": "zeros"}
        if isinstance(params["padding"], str):
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: string padding "
                                      f"'{params['padding']}' is not supported; use explicit padding")
        if params["mode"] != "zeros":
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: padding_mode "
                                      f"'{params['mode']}' is not supported")
        weight, bias = params["weight"], params["bias"]
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(self._module(users[0]), nn.BatchNorm2d):
            weight, bias = fold_bn(weight, bias, self._module(users[0]))
        params["weight"], params["bias"] = weight.detach(), None if bias is None else bias.detach()
        return params

    def _conv(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]) -> List[Tuple[fx.Node, _Selection]]:
        parent = self._first_input(node)
        p = self._conv_parameters(node, values)
        weight, bias = p["weight"], p["bias"]
        activations = values[parent]
        n, c_in, height, width = activations.shape
        c_out, c_group, kh, kw = weight.shape
        _, _, h_out, w_out = values[node].shape
        sh, sw = _pair(p["stride"])
        ph, pw = _pair(p["padding"])
        dh, dw = _pair(p["dilation"])
        out_per_group = c_out // p["groups"]
        ky = torch.arange(kh, device=activations.device)
        kx = torch.arange(kw, device=activations.device)
        flat_in = activations.reshape(-1)
        batches, flats, counts = [], [], []
        for part in _chunks(len(sel), c_group * kh * kw):
            b, f, c = sel.batch[part], sel.flat[part], sel.count[part]
            co, y, x = f // (h_out * w_out), (f // w_out) % h_out, f % w_out
            channels = (co // out_per_group)[:, None] * c_group + torch.arange(c_group, device=f.device)  # P×Cg
            iy = (y * sh - ph)[:, None] + ky * dh  # P×kh
            ix = (x * sw - pw)[:, None] + kx * dw  # P×kw
            inside = ((iy >= 0) & (iy < height))[:, :, None] & ((ix >= 0) & (ix < width))[:, None, :]  # P×kh×kw
            index = ((b[:, None] * c_in + channels)[:, :, None, None] * height + iy.clamp(0, height - 1)[:, None, :,
                     None]) * width + ix.clamp(0, width - 1)[:, None, None, :]  # P×Cg×kh×kw
            contrib = flat_in[index] * weight[co] * inside[:, None].to(flat_in.dtype)
            sums = contrib.sum(dim=(2, 3))  # P×Cg
            if self.include_bias and bias is not None:
                sums = sums + bias[co][:, None] * (kh * kw)  # the paper's W * A + b, summed over x and y
            if self.conv_rule == "max":
                rows = torch.arange(len(b), device=f.device)
                cols = sums.argmax(dim=1)
            else:
                rows, cols = (sums > 0).nonzero(as_tuple=True)
            window = contrib[rows, cols].masked_fill(~inside[rows], float("-inf")).flatten(1)
            best = window.argmax(dim=1)
            by, bx = iy[rows, best // kw], ix[rows, best % kw]
            channel = channels[rows, cols]
            batches.append(b[rows]), flats.append((channel * height + by) * width + bx), counts.append(c[rows])
        return [(parent, _Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]

    def _pool_windows(self, node: fx.Node, values: Dict[fx.Node, Any]) -> Tensor:
        """For every output element of a pooling node, the flat (per-channel) input index it backtracks to."""
        parent = self._first_input(node)
        activations = values[parent]
        out = values[node]
        height, width = activations.shape[-2:]
        kind, settings = self._pool_kind(node)
        if kind == "window":
            _, index = F.max_pool2d(activations, settings["kernel_size"], settings["stride"], settings["padding"],
                                    settings["dilation"], settings["ceil_mode"], return_indices=True)
            return index
        if kind == "global":
            flat = activations.flatten(2).argmax(dim=2)
            return flat.view(*flat.shape, 1, 1)
        # adaptive: windows of floor(i·H/Ho) … ceil((i+1)·H/Ho)
        h_out, w_out = out.shape[-2:]
        if height % h_out == 0 and width % w_out == 0:
            kh, kw = height // h_out, width // w_out
            _, index = F.max_pool2d(activations, (kh, kw), (kh, kw), return_indices=True)
            return index
        rows, row_ok = self._adaptive_windows(height, h_out, activations.device)
        cols, col_ok = self._adaptive_windows(width, w_out, activations.device)
        gathered = activations[:, :, rows][:, :, :, :, cols]  # N×C×Ho×Lh×Wo×Lw
        valid = row_ok[:, :, None, None] & col_ok[None, None, :, :]
        gathered = gathered.masked_fill(~valid, float("-inf")).permute(0, 1, 2, 4, 3, 5).flatten(4)
        best = gathered.argmax(dim=4)  # N×C×Ho×Wo, over Lh·Lw
        n, c = best.shape[:2]
        lw = cols.shape[1]
        row_index = rows[None, None, :, None, :].expand(n, c, h_out, w_out, rows.shape[1])
        col_index = cols[None, None, None, :, :].expand(n, c, h_out, w_out, lw)
        by = torch.gather(row_index, 4, (best // lw)[..., None])[..., 0]
        bx = torch.gather(col_index, 4, (best % lw)[..., None])[..., 0]
        return by * width + bx

    @staticmethod
    def _adaptive_windows(size: int, out_size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        starts = [(i * size) // out_size for i in range(out_size)]
        ends = [-(-((i + 1) * size) // out_size) for i in range(out_size)]
        length = max(e - s for s, e in zip(starts, ends))
        offsets = torch.arange(length, device=device)
        start = torch.tensor(starts, device=device)[:, None]
        end = torch.tensor(ends, device=device)[:, None]
        index = start + offsets
        return index.clamp(max=size - 1), index < end

    def _pool_kind(self, node: fx.Node) -> Tuple[str, Dict[str, Any]]:
        if node.op == "call_module":
            module = self._module(node)
            if isinstance(module, nn.MaxPool2d):
                return "window", {"kernel_size": module.kernel_size, "stride": module.stride,
                                  "padding": module.padding, "dilation": module.dilation,
                                  "ceil_mode": module.ceil_mode}
            if isinstance(module, nn.AvgPool2d):
                return "window", {"kernel_size": module.kernel_size, "stride": module.stride or module.kernel_size,
                                  "padding": module.padding, "dilation": 1, "ceil_mode": module.ceil_mode}
            return "adaptive", {}
        if node.target in (F.max_pool2d, F.avg_pool2d):
            kernel = _arg(node, 1, "kernel_size", None)
            stride = _arg(node, 2, "stride", None) or kernel
            padding = _arg(node, 3, "padding", 0)
            if node.target is F.max_pool2d:
                dilation, ceil_mode = _arg(node, 4, "dilation", 1), _arg(node, 5, "ceil_mode", False)
            else:
                dilation, ceil_mode = 1, _arg(node, 4, "ceil_mode", False)
            return "window", {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation,
                              "ceil_mode": ceil_mode}
        if node.target in G.ADAPTIVE_FUNCTIONS:
            return "adaptive", {}
        # mean over the spatial dimensions
        dims = _arg(node, 1, "dim", None)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        if sorted(d % 4 for d in dims if isinstance(d, int)) != [2, 3]:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: only a mean over the spatial "
                                      f"dimensions (2, 3) of an N×C×H×W tensor is supported, got dim={dims}")
        return "global", {}

    def _pool(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]) -> List[Tuple[fx.Node, _Selection]]:
        parent = self._first_input(node)
        activations = values[parent]
        if activations.dim() != 4:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: pooling needs N×C×H×W input")
        index = self._pool_windows(node, values)  # N×C×Ho×Wo, flat index in H×W
        height, width = activations.shape[-2:]
        channels = index.shape[1]
        per_channel_out = index[0, 0].numel()
        channel = sel.flat // per_channel_out
        # the output may be N×C (mean without keepdim) or N×C×Ho×Wo; both flatten the same way
        chosen = index.reshape(index.shape[0], -1)[sel.batch, sel.flat]
        if int(channels) * per_channel_out != values[node][0].numel():
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: unexpected output shape "
                                      f"{tuple(values[node].shape)}")
        return [(parent, _Selection(sel.batch, channel * height * width + chosen, sel.count))]

    def _add(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]) -> List[Tuple[fx.Node, _Selection]]:
        operands = [a for a in node.args[:2]]
        tensors = [a for a in operands if isinstance(a, fx.Node) and isinstance(values[a], Tensor)]
        out = values[node]
        if len(tensors) == 1:
            return self._identity_to(node, tensors[0], sel, values)
        if len(tensors) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: only a + b of two tensors is supported")
        a, b = tensors
        va, vb = values[a], values[b]
        if va.shape != out.shape or vb.shape != out.shape:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: broadcasting add "
                                      f"{tuple(va.shape)} + {tuple(vb.shape)} is not supported")
        left = va.reshape(va.shape[0], -1)[sel.batch, sel.flat] >= vb.reshape(vb.shape[0], -1)[sel.batch, sel.flat]
        return [(a, sel.take(left)), (b, sel.take(~left))]

    def _identity_to(self, node: fx.Node, parent: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]
                     ) -> List[Tuple[fx.Node, _Selection]]:
        if values[parent].shape != values[node].shape:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: broadcasting is not supported")
        return [(parent, sel)]

    def _cat(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]) -> List[Tuple[fx.Node, _Selection]]:
        parts = node.args[0]
        dim = _arg(node, 1, "dim", 0)
        out = values[node]
        if not isinstance(parts, (list, tuple)) or dim % out.dim() != 1:
            raise NotImplementedError(f"{G.describe(node, self.graph_module)}: only concatenation along the "
                                      f"channel dimension (1) is supported, got dim={dim}")
        inner = out[0, 0].numel()
        channel = sel.flat // inner
        result = []
        offset = 0
        for part in parts:
            size = values[part].shape[1]
            keep = (channel >= offset) & (channel < offset + size)
            if bool(keep.any()):
                result.append((part, sel.take(keep, sel.flat - offset * inner)))
            offset += size
        return result

    def _pad(self, node: fx.Node, sel: _Selection, values: Dict[fx.Node, Any]) -> List[Tuple[fx.Node, _Selection]]:
        parent = self._first_input(node)
        if node.op == "call_module":
            module = self._module(node)
            left, _, top, _ = module.padding
            if isinstance(module, nn.ConstantPad2d) and module.value != 0:
                raise NotImplementedError(f"{G.describe(node, self.graph_module)}: only zero padding is supported")
        else:
            pad = list(_arg(node, 1, "pad", ()))
            mode = _arg(node, 2, "mode", "constant")
            value = _arg(node, 3, "value", None)
            if mode != "constant" or (value not in (None, 0, 0.0)) or len(pad) not in (2, 4):
                raise NotImplementedError(f"{G.describe(node, self.graph_module)}: only zero padding of the last "
                                          f"two dimensions is supported")
            left = pad[0]
            top = pad[2] if len(pad) == 4 else 0
        inp, out = values[parent], values[node]
        height, width = inp.shape[-2:]
        h_out, w_out = out.shape[-2:]
        plane = sel.flat // (h_out * w_out)
        y = (sel.flat // w_out) % h_out - top
        x = sel.flat % w_out - left
        keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        return [(parent, sel.take(keep, (plane * height + y) * width + x))]
