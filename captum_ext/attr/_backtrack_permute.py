"""NodeBacktrack's rules for operations that move elements without combining them (transpose, permute, indexing,
the parts of chunk/split: ShuffleNetV2's channel shuffle) and for layers on channels-last tensors (ConvNeXt's
LayerNorm over channels and Linear on the channel axis of ``N×H×W×C``).

A moving operation maps every output element to one input element. Rather than decoding each operation's
arguments, the rule runs the operation once on a tensor holding each element's own flat index (an ``arange`` of
the input's per-example shape): the result is the table ``output flat index → input flat index``, built once per
node and input shape, and a kept node moves with one ``index_select``.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, List, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils.chunking import budget_chunks, chunk_budget
from captum_ext.attr._backtrack_core import Selection, Values, Walk, arg, strongest_first
from captum_ext.attr._backtrack_linear import linear, linear_parameters
from captum_ext.attr._backtrack_routing import identity

#: Operations with one tensor output that only move, drop or repeat elements (traced as functions or methods).
MOVE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.transpose, torch.permute, torch.movedim, torch.swapaxes,
                                                  torch.swapdims, operator.getitem)
MOVE_METHODS = ("transpose", "permute", "movedim", "swapaxes", "swapdims")
#: Operations returning a tuple of parts (followed through ``getitem`` on their result).
SPLIT_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.chunk, torch.split, torch.tensor_split, torch.unbind)
SPLIT_METHODS = ("chunk", "split", "tensor_split", "unbind")


def _is_split(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in SPLIT_FUNCTIONS
    return node.op == "call_method" and node.target in SPLIT_METHODS


def _replay(walk: Walk, node: fx.Node, values: Values, origin: fx.Node, probe: Tensor) -> Any:
    """The node's operation with ``probe`` in place of its attributed argument ``origin`` (the other arguments
    must be Python values: dimensions, sizes, slices)."""

    def substitute(argument: fx.Node) -> Any:
        if argument is origin:
            return probe
        value = values[argument]
        if isinstance(value, Tensor):
            raise NotImplementedError(f"{walk.describe(node)}: indexing or moving by a tensor argument "
                                      f"(`{argument.name}`) is not supported")
        return value

    args = fx.node.map_arg(node.args, substitute)
    kwargs = fx.node.map_arg(node.kwargs, substitute)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    return node.target(*args, **kwargs)  # type: ignore[operator]


def _index_table(walk: Walk, node: fx.Node, values: Values, device: torch.device) -> Tuple[fx.Node, Tensor]:
    """The attributed input a moving node reads (for a part of a chunk/split: the input of the split) and the
    table of its input flat index for every output flat index, cached per node and input shape."""
    parent = walk.first_input(node)
    split = node.target is operator.getitem and _is_split(parent)
    origin = walk.first_input(parent) if split else parent
    shape = values[origin].shape[1:]
    key = ("index table", node, tuple(shape), device)
    table = walk.cache.get(key)
    if table is None:
        numel = shape.numel()
        # Two examples: the second must be the first shifted by one example, or the batch dimension moved.
        probe = torch.arange(2 * numel).view(2, *shape)
        result = _replay(walk, parent, values, origin, probe)[node.args[1]] if split else \
            _replay(walk, node, values, origin, probe)
        out_shape = values[node].shape[1:]
        if not isinstance(result, Tensor) or result.dim() == 0 or result.shape[0] != 2 \
                or result.shape[1:] != out_shape or not torch.equal(result[1], result[0] + numel):
            raise NotImplementedError(f"{walk.describe(node)}: only operations that move elements within each "
                                      f"example (transpose, permute, slicing, parts of chunk/split along a "
                                      f"non-batch dimension) are supported")
        table = walk.cache[key] = result[0].reshape(-1).to(device)
    return origin, table


def move(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Transpose, permute, slicing, a part of a chunk/split: the input element the kept node was moved from.

    Args:
        walk: the walk's context.
        node: the moving node (for a part of a split: its ``getitem``).
        sel: the kept nodes of the node's value.
        values: the recorded values (shapes, and the Python arguments of the operation).

    Returns:
        list: one ``(input, selection)`` pair; for a part of a split, the input of the split.
    """
    origin, table = _index_table(walk, node, values, sel.flat.device)
    return [(origin, Selection(sel.batch, table.index_select(0, sel.flat), sel.count))]


def split_parts(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Chunk/split/unbind: their parts are followed by :func:`move` on the ``getitem`` that takes each part, which
    goes straight to the split's input; a path never stops at the tuple itself."""
    raise NotImplementedError(f"{walk.describe(node)}: the parts of a split are supported only when taken by "
                              f"indexing (`a, b = x.chunk(2, dim=1)`)")


# ---------------------------------------------------------------------------------------------------------------------
# Channels-last layers
# ---------------------------------------------------------------------------------------------------------------------

def layer_norm(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """LayerNorm over the last dimension only (the channels of a channels-last map: a per-position
    normalisation, like BatchNorm per channel): the same node."""
    if node.op == "call_module":
        normalized_shape = walk.module(node).normalized_shape
    else:
        normalized_shape = arg(node, 1, "normalized_shape", ())
    if len(tuple(normalized_shape)) != 1:
        raise NotImplementedError(f"{walk.describe(node)}: only LayerNorm over the last dimension is supported, "
                                  f"got normalized_shape={tuple(normalized_shape)}")
    return identity(walk, node, sel, values)


def _chosen_inputs(walk: Walk, sums: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The walk's convolution rule on per-input-channel contributions ``sums`` (``P×C``), as for a ``1×1``
    convolution: ``(rows, channels, alive)``, one entry per (node, channel) kept."""
    rows = torch.arange(len(sums), device=sums.device)
    if walk.conv_rule == "max":
        return rows, sums.argmax(dim=1), torch.ones(len(sums), dtype=torch.bool, device=sums.device)
    if walk.conv_rule == "positive":
        rows, cols = (sums > 0).nonzero(as_tuple=True)  # a data-dependent count: one host synchronisation
        return rows, cols, torch.ones(len(rows), dtype=torch.bool, device=sums.device)
    top = min(walk.conv_top_n, sums.shape[1])
    cols = strongest_first(sums, top)
    alive = sums.gather(1, cols) > 0
    return rows[:, None].expand(-1, top).reshape(-1), cols.reshape(-1), alive.reshape(-1)


def _channels_last_linear(walk: Walk, node: fx.Node, parent: fx.Node, weight: Tensor, bias: Any, sel: Selection,
                          values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Linear on the last axis of an ``N×…×C`` map: a ``1×1`` convolution of the channels-last map, taking the
    walk's convolution rule (``conv_rule``) at the kept node's own position."""
    activations = values[parent]
    c_in, c_out = weight.shape[1], weight.shape[0]
    rows_of = activations.reshape(activations.shape[0], -1, c_in)  # N×positions×C
    use_bias = walk.include_bias and bias is not None
    batches, flats, counts = [], [], []
    # P×C products at a time, chunks sized for the device as the convolution rule's
    for part in budget_chunks(len(sel), c_in, chunk_budget(sel.flat.device)):
        b, f, c = sel.batch[part], sel.flat[part], sel.count[part]
        position = f.div(c_out, rounding_mode="floor")
        out_channel = f - position * c_out
        sums = rows_of[b, position] * weight.index_select(0, out_channel)  # P×C
        if use_bias:
            sums = sums + bias[out_channel][:, None]  # the paper's W * A + b
        rows, cols, alive = _chosen_inputs(walk, sums)
        batches.append(b[rows]), flats.append(position[rows] * c_in + cols), counts.append(c[rows] * alive)
    if len(batches) == 1:
        return [(parent, Selection(batches[0], flats[0], counts[0]))]
    return [(parent, Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]


def any_linear(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Linear layers: on ``N×features`` the fully connected rule (:func:`~captum_ext.attr._backtrack_linear.linear`),
    on the last axis of a higher-dimensional value (a channels-last map) a ``1×1`` convolution.

    Args:
        walk: the walk's context.
        node: the linear node (module or ``F.linear``).
        sel: the kept output nodes.
        values: the recorded values (the layer's input activations).

    Returns:
        list: ``(input, selection)`` pairs.
    """
    parent = walk.first_input(node)
    if values[parent].dim() <= 2:
        return linear(walk, node, sel, values)
    weight, bias = linear_parameters(walk, node, values)
    return _channels_last_linear(walk, node, parent, weight, bias, sel, values)


LAYER_NORM_MODULES: Tuple[type, ...] = (nn.LayerNorm,)
LAYER_NORM_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.layer_norm,)
