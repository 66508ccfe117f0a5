"""Guided backpropagation (Springenberg et al.) as a graph rewrite.

Captum's ``GuidedBackprop`` hooks ``nn.ReLU`` modules, so a functional ``F.relu`` / ``torch.relu`` silently keeps
its plain gradient. Here every ReLU of a traced graph — module, function or method, reused or in-place — becomes
:func:`guided_relu`. The rewrite works on a copy of the graph: the user's modules are shared, never modified, and no
hook is ever registered, so there is nothing to restore.
"""
from __future__ import annotations

import copy
from typing import Any, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils.graph import replace_node


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients through positive activations.

    Written with ``setup_context`` and ``generate_vmap_rule`` so that batched gradients
    (``torch.autograd.grad(..., is_grads_batched=True)``) work through it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        return grad.clamp_min(0) * (output > 0).to(grad.dtype)


def guided_relu(x: Tensor) -> Tensor:
    """``relu(x)`` with the guided-backpropagation gradient."""
    return GuidedReLU.apply(x)


_RELU_FUNCTIONS = (F.relu, torch.relu)
_RELU_METHODS = ("relu",)


def is_relu(node: fx.Node, graph_module: fx.GraphModule) -> bool:
    """Whether a node computes a plain ReLU (module, function or method)."""
    if node.op == "call_module":
        return isinstance(graph_module.get_submodule(str(node.target)), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in _RELU_METHODS


def with_guided_relus(graph_module: fx.GraphModule) -> Tuple[fx.GraphModule, int]:
    """A new GraphModule (sharing the modules) in which every ReLU is :func:`guided_relu`; also returns how many
    ReLUs were replaced. Expects in-place ops already rewritten (:func:`captum_ext._utils.graph.trace` does)."""
    graph = copy.deepcopy(graph_module.graph)
    guided = fx.GraphModule(graph_module, graph)
    count = 0
    for node in list(guided.graph.nodes):
        if is_relu(node, guided):
            replace_node(guided, node, guided_relu, (node.args[0],))
            count += 1
    guided.graph.lint()
    guided.recompile()
    return guided, count
