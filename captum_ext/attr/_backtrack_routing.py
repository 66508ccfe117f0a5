"""NodeBacktrack's routing rules: operations that keep, split or move kept nodes without weighing contributions
(element-wise ops and reshapes, residual adds, products with constants, channel concatenation, zero padding)."""
from __future__ import annotations

import operator
from typing import Callable, List, Optional, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor, nn

from captum_ext.attr._backtrack_core import Selection, Values, Walk, arg, at_nodes
from captum_ext.attr._backtrack_gates import gate, gate_operand, gate_refusal

# ---------------------------------------------------------------------------------------------------------------------
# Shape-preserving operations
# ---------------------------------------------------------------------------------------------------------------------

def identity(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """ReLU-family, dropout, BatchNorm, flatten/view/reshape: the same node of the input."""
    parent = walk.first_input(node)
    out, inp = values[node], values[parent]
    if out.shape[0] != inp.shape[0] or out.shape[1:].numel() != inp.shape[1:].numel():
        raise NotImplementedError(f"{walk.describe(node)} changes the batch dimension or the number of elements "
                                  f"({tuple(inp.shape)} → {tuple(out.shape)})")
    return [(parent, sel)]


def _operands(walk: Walk, node: fx.Node, values: Values) -> Tuple[List[fx.Node], List[fx.Node]]:
    """The tensor operands of a binary operation, split into input-dependent ones and constants."""
    tensors = [a for a in node.args[:2] if isinstance(a, fx.Node) and isinstance(values[a], Tensor)]
    return [a for a in tensors if a in walk.dependent], [a for a in tensors if a not in walk.dependent]


def _through(walk: Walk, node: fx.Node, parent: fx.Node, sel: Selection, values: Values
             ) -> List[Tuple[fx.Node, Selection]]:
    if values[parent].shape != values[node].shape:
        raise NotImplementedError(f"{walk.describe(node)}: broadcasting the attributed operand "
                                  f"{tuple(values[parent].shape)} to {tuple(values[node].shape)} is not supported")
    return [(parent, sel)]


def add(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Residual add: the operand with the larger value at the node. A constant operand (a bias, a branch fed only
    by ``additional_forward_args``) is never followed: the node's path continues through the other one."""
    if node.kwargs.get("alpha", 1) != 1:
        raise NotImplementedError(f"{walk.describe(node)}: add with alpha is not supported")
    dependent, _ = _operands(walk, node, values)
    if len(dependent) == 1:
        return _through(walk, node, dependent[0], sel, values)
    if len(dependent) != 2:
        raise NotImplementedError(f"{walk.describe(node)}: only a + b of two tensors is supported")
    a, b = dependent
    va, vb, out = values[a], values[b], values[node]
    if va.shape != out.shape or vb.shape != out.shape:
        raise NotImplementedError(f"{walk.describe(node)}: broadcasting add {tuple(va.shape)} + {tuple(vb.shape)} "
                                  f"is not supported")
    at_a, at_b = at_nodes([va, vb], sel.batch, sel.flat)
    left = at_a >= at_b
    return [(a, sel.masked(left)), (b, sel.masked(~left))]


def scale_problem(node: fx.Node, dependent: Set[fx.Node], describe: Callable[[fx.Node], str]) -> Optional[str]:
    """Why :func:`scale` cannot handle a node (an attributed divisor, two attributed operands neither of which is a
    gate), or ``None``."""
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in dependent]
    divides = node.target in (operator.truediv, torch.div, "div")
    if len(operands) == 1 and not (divides and node.args[0] is not operands[0]):
        return None
    graph_module = node.graph.owning_module
    if len(operands) == 2 and graph_module is not None and gate_operand(node, dependent, graph_module) is not None:
        return None  # a squeeze-and-excitation gate: see _backtrack_gates
    return gate_refusal(describe(node))


def scale(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Multiplication or division by a constant (a mask given through ``additional_forward_args``, a target
    scale), or subtraction of one: the same node of the attributed operand. A product of two attributed operands,
    one of them a gate (:func:`~captum_ext.attr._backtrack_gates.gate`): the same node of the other one."""
    dependent, _ = _operands(walk, node, values)
    if len(dependent) == 2 and dependent[0] is not dependent[1]:
        return gate(walk, node, sel, values)  # refuses what is not a gated product
    problem = scale_problem(node, walk.dependent, walk.describe)
    if problem is not None:
        raise NotImplementedError(problem)
    return _through(walk, node, dependent[0], sel, values)


def cat(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Channel concatenation: the input each channel came from (constant parts end the path)."""
    parts = node.args[0]
    dim = arg(node, 1, "dim", 0)
    out = values[node]
    if not isinstance(parts, (list, tuple)) or dim % out.dim() != 1:
        raise NotImplementedError(f"{walk.describe(node)}: only concatenation along the channel dimension (1) is "
                                  f"supported, got dim={dim}")
    inner = out[0, 0].numel()
    channel = sel.flat // inner
    result = []
    offset = 0
    for part in parts:
        size = values[part].shape[1]
        if part in walk.dependent:
            keep = (channel >= offset) & (channel < offset + size)
            local = (sel.flat - offset * inner).clamp_(0, size * inner - 1)  # valid also where the node is dead
            result.append((part, sel.masked(keep, local)))
        offset += size
    return result


def pad(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Zero padding: positions inside the image (padding ends the path)."""
    parent = walk.first_input(node)
    if node.op == "call_module":
        module = walk.module(node)
        left, _, top, _ = module.padding
        if isinstance(module, nn.ConstantPad2d) and module.value != 0:
            raise NotImplementedError(f"{walk.describe(node)}: only zero padding is supported")
    else:
        widths = list(arg(node, 1, "pad", ()))
        mode = arg(node, 2, "mode", "constant")
        value = arg(node, 3, "value", None)
        if mode != "constant" or (value not in (None, 0, 0.0)) or len(widths) not in (2, 4):
            raise NotImplementedError(f"{walk.describe(node)}: only zero padding of the last two dimensions is "
                                      f"supported")
        left = widths[0]
        top = widths[2] if len(widths) == 4 else 0
    inp, out = values[parent], values[node]
    height, width = inp.shape[-2:]
    h_out, w_out = out.shape[-2:]
    plane = sel.flat // (h_out * w_out)
    y = (sel.flat // w_out) % h_out - top
    x = sel.flat % w_out - left
    keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    inside = (plane * height + y.clamp(0, height - 1)) * width + x.clamp(0, width - 1)
    return [(parent, sel.masked(keep, inside))]


