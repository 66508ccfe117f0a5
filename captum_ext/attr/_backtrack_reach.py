"""Which nodes of a traced model a NodeBacktrack walk can reach, checked once: every one needs a rule."""
from __future__ import annotations

from typing import Any, List, Set

import torch.fx as fx

from captum_ext._utils import graph as G
from captum_ext.attr._backtrack_gates import gate_operand
from captum_ext.attr._backtrack_rules import rule_for, scale, scale_problem

SUPPORTED_OPERATIONS = ("Conv2d, Linear (also on the channels of a channels-last map), ReLU-family, SiLU, "
                        "Hardswish, Hardsigmoid, GELU, Mish, max/avg/adaptive pooling, BatchNorm, LayerNorm over the "
                        "last dimension, dropout, flatten/view/reshape, transpose/permute/slicing and chunk/split "
                        "parts, zero padding, residual add, channel cat, squeeze-and-excitation gates, products and "
                        "sums with constants")


def walked_nodes(graph_module: fx.GraphModule, inputs: List[fx.Node], source: Any) -> Set[fx.Node]:
    """The nodes on a path from the attributed ``inputs`` (placeholders) to ``source`` (the explained output), and
    the gates of gated products met on the way.

    Args:
        graph_module (fx.GraphModule): the traced model.
        inputs (list of fx.Node): the placeholders of the attributed inputs.
        source: the explained output value (a node, or a constant).

    Returns:
        set of fx.Node: the nodes a walk may visit.

    Raises:
        NotImplementedError: a reached operation has no rule, or a product of two attributed values is not a
            gated product (naming the operation).
    """
    dependent = G.dependent_nodes(graph_module, inputs)
    reached: Set[fx.Node] = set()
    gates: Set[fx.Node] = set()
    stack = [source] if isinstance(source, fx.Node) else []
    while stack:
        node = stack.pop()
        if node in dependent and node not in reached:
            reached.add(node)
            # No path enters a gate's branch (pooling → … → sigmoid): its operations need no rule. The gate itself
            # stays attributed, so that the product is still told apart from one with a constant.
            gated = gate_operand(node, dependent, graph_module) if rule_for(node, graph_module) is scale else None
            if gated is not None:
                gates.add(gated)
            stack.extend(parent for parent in node.all_input_nodes if parent is not gated)
    for node in graph_module.graph.nodes:
        if node not in reached or node.op == "placeholder":
            continue
        rule = rule_for(node, graph_module)
        if rule is None:
            raise NotImplementedError(f"NodeBacktrack has no rule for {G.describe(node, graph_module)}. "
                                      f"Supported: {SUPPORTED_OPERATIONS}.")
        problem = scale_problem(node, dependent, lambda n: G.describe(n, graph_module)) if rule is scale else None
        if problem is not None:
            raise NotImplementedError(problem)
    return reached | gates
