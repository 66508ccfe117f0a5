"""NodeBacktrack's rules for operations that move elements without combining them (transpose, permute, indexing,
the parts of chunk/split: ShuffleNetV2's channel shuffle).

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
from torch import Tensor

from captum_ext.attr._backtrack_core import Selection, Values, Walk

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


