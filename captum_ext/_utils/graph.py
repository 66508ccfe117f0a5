"""torch.fx tracing and activation recording, shared by graph-walking attribution methods.

Tracing never touches the user's model: ``symbolic_trace`` builds a new ``GraphModule`` that *refers* to the same
submodules, and recording runs it through an :class:`torch.fx.Interpreter` — no hooks are registered anywhere.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn


def trace(model: Callable[..., Any], name: str = "model") -> fx.GraphModule:
    """Symbolically trace ``model`` (an ``nn.Module``; an existing ``GraphModule`` is used as is).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``torch.fx`` cannot trace it (data-dependent control flow, …), with fx's reason.
    """
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{name}` must be an nn.Module that torch.fx can trace, got {type(model).__name__}")
    from captum_ext._utils.attribution import preserved_module_state

    try:
        # Traced in eval mode: Python-level `self.training` checks are frozen into the graph at trace time.
        with preserved_module_state(model):
            model.eval()
            traced = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many exception types for untraceable code
        raise ValueError(f"torch.fx cannot trace `{name}` ({type(model).__name__}): {type(err).__name__}: {err}. "
                         "Graph-walking methods need a model without data-dependent Python control flow.") from err
    return without_inplace_ops(traced)


def _functional_twin(module: nn.Module) -> "Tuple[Callable[..., Any], Dict[str, Any]] | None":
    """An out-of-place functional call equivalent to an in-place activation/dropout module (eval mode)."""
    if isinstance(module, nn.ReLU):
        return F.relu, {}
    if isinstance(module, nn.ReLU6):
        return F.relu6, {}
    if isinstance(module, nn.LeakyReLU):
        return F.leaky_relu, {"negative_slope": module.negative_slope}
    if isinstance(module, nn.Hardtanh):
        return F.hardtanh, {"min_val": module.min_val, "max_val": module.max_val}
    if isinstance(module, (nn.Dropout, nn.Dropout2d)):
        return F.dropout, {"p": module.p, "training": False}
    return None


def without_inplace_ops(graph_module: fx.GraphModule) -> fx.GraphModule:
    """Rewrite in-place operations of a traced graph as out-of-place ones, so that every recorded value stays as
    it was computed (``out += identity`` followed by ``ReLU(inplace=True)`` would otherwise overwrite the values a
    graph walk compares). Only the graph changes: the modules are shared, not modified."""
    changed = False
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module":
            module = graph_module.get_submodule(str(node.target))
            twin = _functional_twin(module) if getattr(module, "inplace", False) else None
            if twin is not None:
                function, kwargs = twin
                with graph_module.graph.inserting_after(node):
                    replacement = graph_module.graph.call_function(function, (node.args[0],), kwargs)
                node.replace_all_uses_with(replacement)
                graph_module.graph.erase_node(node)
                changed = True
        elif node.op == "call_function" and node.target is operator.iadd:
            node.target = operator.add
            changed = True
        elif node.op == "call_method" and node.target in ("add_", "relu_", "clamp_"):
            node.target = str(node.target)[:-1]
            changed = True
        elif node.op == "call_function" and node.kwargs.get("inplace", False):
            node.kwargs = {**node.kwargs, "inplace": False}
            changed = True
    if changed:
        graph_module.graph.lint()
        graph_module.recompile()
    return graph_module


class _Recorder(fx.Interpreter):
    """Run a GraphModule and keep the outputs of the ``keep`` nodes; every other tensor output is kept as a
    storage-free ``meta`` tensor (shape and dtype only), and freed as soon as the graph no longer needs it."""

    def __init__(self, module: fx.GraphModule, keep: Optional[Set[fx.Node]]) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.keep = keep
        self.values: Dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, Tensor) and self.keep is not None and n not in self.keep:
            self.values[n] = torch.empty_like(result, device="meta")
        else:
            self.values[n] = result
        return result


def record(graph_module: fx.GraphModule, args: Sequence[Any], keep: Optional[Set[fx.Node]] = None
           ) -> Tuple[Any, Dict[fx.Node, Any]]:
    """Run ``graph_module(*args)`` in eval mode without gradients; return ``(output, {node: value})``.

    With ``keep``, only those nodes' values are stored (others as ``meta`` tensors: shape without data), which
    bounds the memory of a graph walk to the activations it reads. Eval mode (restored afterwards, also on error)
    keeps BatchNorm on its running statistics — which is what the BatchNorm fold assumes — and leaves those
    statistics untouched.
    """
    from captum_ext._utils.attribution import preserved_module_state

    recorder = _Recorder(graph_module, keep)
    with torch.no_grad(), preserved_module_state(graph_module):
        graph_module.eval()
        output = recorder.run(*args)
    return output, recorder.values


def describe(node: fx.Node, graph_module: fx.GraphModule) -> str:
    """A readable name for a node's operation, for error messages."""
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        return f"module `{node.target}` ({type(module).__name__})"
    if node.op == "call_function":
        target = node.target
        qualified = f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__name__', repr(target))}"
        return f"function `{qualified.lstrip('.')}` (node `{node.name}`)"
    if node.op == "call_method":
        return f"method `Tensor.{node.target}` (node `{node.name}`)"
    return f"`{node.op}` node `{node.name}`"


# Operation families, by what a graph walk must do with them. ------------------------------------------------------

ELEMENTWISE_MODULES: Tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d, nn.BatchNorm1d,
)
ELEMENTWISE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.dropout, F.dropout2d, F.hardtanh, torch.clamp,
)
ELEMENTWISE_METHODS = ("relu", "relu_", "contiguous", "clone", "clamp", "clamp_")
RESHAPE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.flatten, torch.reshape)
RESHAPE_METHODS = ("view", "reshape", "flatten")
ADD_FUNCTIONS: Tuple[Callable[..., Any], ...] = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ("add", "add_")
CAT_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.cat, torch.concat) if hasattr(torch, "concat") else (torch.cat,)
MAX_POOL_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.max_pool2d,)
AVG_POOL_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.avg_pool2d,)
ADAPTIVE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)


def tensor_args(node: fx.Node) -> List[fx.Node]:
    """The node's arguments that are other nodes (positional, then keyword)."""
    found = [a for a in node.args if isinstance(a, fx.Node)]
    found += [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
    return found

