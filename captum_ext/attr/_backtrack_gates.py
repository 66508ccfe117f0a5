"""NodeBacktrack's gate rule: a product ``x * g`` of two attributed tensors where ``g`` is a gate, computed from the
input only through a global pooling (a squeeze-and-excitation branch: pool → conv → act → conv → sigmoid).

Such a gate scales whole channels of ``x``: a node of the product is the same node of ``x`` times a per-channel
factor, so its path continues through ``x`` alone and nothing goes to the gate branch (the gate's own value depends
on every position of its channels through the pooling, not on one node). Which factor is the gate is read from the
graph, so a model is accepted or refused when it is traced, and checked against the shapes on every call.
"""
from __future__ import annotations

import operator
from typing import Any, List, Optional, Set, Tuple

import torch
import torch.fx as fx
from torch import nn

from captum_ext._utils import graph as G
from captum_ext.attr._backtrack_core import Selection, Values, Walk, arg

#: The products a gate rule may apply to (division by a gate is not a gate).
PRODUCTS: Tuple[Any, ...] = (operator.mul, torch.mul, "mul")
_GLOBAL_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_MISSING = object()


def _is_one(size: Any) -> bool:
    """Whether an adaptive pooling's ``output_size`` is ``1`` or ``(1, 1)``."""
    sizes = size if isinstance(size, (tuple, list)) else (size,)
    return all(s == 1 for s in sizes)


def is_global_pool(node: fx.Node, graph_module: fx.GraphModule) -> bool:
    """Whether a node pools each channel to one value: adaptive pooling to ``1×1`` (module or function), or a
    ``mean`` over the last two dimensions (``dim=(2, 3)`` or ``(-2, -1)``)."""
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        return isinstance(module, _GLOBAL_POOL_MODULES) and _is_one(module.output_size)
    if node.op == "call_function" and node.target in G.ADAPTIVE_FUNCTIONS:
        return _is_one(arg(node, 1, "output_size", None))
    if (node.op == "call_function" and node.target is torch.mean) or (
            node.op == "call_method" and node.target == "mean"):
        dims = arg(node, 1, "dim", None)
        return isinstance(dims, (tuple, list)) and set(dims) in ({2, 3}, {-2, -1})
    return False


def _pooled_only(start: fx.Node, dependent: Set[fx.Node], graph_module: fx.GraphModule) -> bool:
    """Whether every path from the attributed inputs to ``start`` passes a global pooling (depth first: the first
    placeholder reached without one answers no, which for a feature map is after a few steps)."""
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if node in seen or node not in dependent:
            continue
        seen.add(node)
        if is_global_pool(node, graph_module):
            continue
        if node.op == "placeholder":
            return False
        stack.extend(node.all_input_nodes)
    return True


def gate_operand(node: fx.Node, dependent: Set[fx.Node], graph_module: fx.GraphModule) -> Optional[fx.Node]:
    """The gate factor of a product of two attributed tensors, or ``None`` when it is not a gated product.

    Args:
        node: a product node (``a * b``, ``torch.mul``, ``Tensor.mul``).
        dependent: the nodes that depend on the attributed inputs.
        graph_module: the traced model (for the module types of pooling nodes).

    Returns:
        fx.Node or None: the operand computed from the inputs only through a global pooling, when exactly one of
        two distinct attributed operands is; ``None`` otherwise (a product with a constant, ``x * x``,
        ``x * sigmoid(x)``, two gates).
    """
    if node.target not in PRODUCTS:
        return None
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in dependent]
    if len(operands) != 2 or operands[0] is operands[1]:
        return None
    gates = [a for a in operands if _pooled_only(a, dependent, graph_module)]
    return gates[0] if len(gates) == 1 else None


def gate(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """A gated product ``x * g``: the same node of the feature operand ``x`` (the gate ``g`` only scales its
    channel; no path goes into the gate branch).

    Args:
        walk: the walk's context.
        node: the product node.
        sel: the kept nodes of the product.
        values: the recorded values (shapes are enough here).

    Returns:
        list: one ``(x, sel)`` pair.

    Raises:
        NotImplementedError: no operand is a gate, or the shapes do not broadcast the gate over ``x``.
    """
    key = ("gate", node, id(walk.dependent))
    found = walk.cache.get(key, _MISSING)
    if found is _MISSING:  # a graph search per product node, done once
        found = walk.cache[key] = gate_operand(node, walk.dependent, walk.graph_module)
    if found is None:
        raise NotImplementedError(gate_refusal(walk.describe(node)))
    feature = next(a for a in node.args[:2] if isinstance(a, fx.Node) and a is not found)
    out, gate_value, feature_value = values[node], values[found], values[feature]
    broadcasts = gate_value.dim() == out.dim() and all(g in (1, o) for g, o in zip(gate_value.shape, out.shape))
    if feature_value.shape != out.shape or not broadcasts:
        raise NotImplementedError(f"{walk.describe(node)}: a gated product needs the feature map shaped like the "
                                  f"output and a gate broadcast over it, got {tuple(feature_value.shape)} × "
                                  f"{tuple(gate_value.shape)} → {tuple(out.shape)}")
    return [(feature, sel)]


def gate_refusal(description: str) -> str:
    """The error text for a product of two attributed tensors that is not a gated product."""
    return (f"{description}: only products, quotients and differences with one attributed operand are supported "
            f"(pass the other tensor, e.g. a mask, through `additional_forward_args`), or products with a gate "
            f"computed from the inputs only through a global pooling to 1×1 (squeeze-and-excitation)")
