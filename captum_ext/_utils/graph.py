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


def unwrap_model(model: Any, name: str = "model") -> Any:
    """The plain ``nn.Module`` behind ``torch.compile``, ``nn.DataParallel`` and ``DistributedDataParallel``
    wrappers (their forward is the wrapped module's, split over devices); TorchScript modules are refused with
    advice.

    Raises:
        TypeError: ``model`` is a TorchScript module (``torch.jit.script`` / ``torch.jit.trace``), which
            ``torch.fx`` cannot read.
    """
    original = getattr(model, "_orig_mod", None)
    if isinstance(model, nn.Module) and isinstance(original, nn.Module):  # torch.compile's OptimizedModule
        return unwrap_model(original, name)
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return unwrap_model(model.module, name)
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"`{name}` is a TorchScript module ({type(model).__name__}), which graph-walking methods "
                        "cannot read: pass the original nn.Module that was given to torch.jit.script / "
                        "torch.jit.trace")
    return model


def module_fingerprint(model: nn.Module) -> Tuple[Tuple[str, int], ...]:
    """Names and identities of every submodule and of every tensor a module holds (parameters, buffers, plain
    tensor attributes).

    It changes when a submodule or tensor is replaced, added or removed, which makes a trace taken earlier stale: the
    traced graph keeps its own references to the tensors it reads directly (a root-level normalisation buffer, say),
    and ``model.to(...)``, ``model.double()`` or ``load_state_dict(..., assign=True)`` put new buffers in their
    place. Updates in place (``load_state_dict``, an optimiser step) keep the identities and reach the graph anyway.
    """
    found = []
    for name, module in model.named_modules():
        found.append((name, id(module)))
        tensors = {**module._parameters, **module._buffers,
                   **{key: value for key, value in vars(module).items() if isinstance(value, Tensor)}}
        found.extend((f"{name}.{key}", id(value)) for key, value in tensors.items())
    return tuple(found)


def trace(model: Callable[..., Any], name: str = "model") -> fx.GraphModule:
    """Symbolically trace ``model`` (an ``nn.Module``; an existing ``GraphModule`` is used as is; a
    ``torch.compile`` wrapper is unwrapped).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or is a TorchScript module.
        ValueError: ``torch.fx`` cannot trace it (data-dependent control flow, …), with fx's reason.
    """
    model = unwrap_model(model, name)
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
                         "Graph-walking methods need a model without data-dependent Python control flow (input "
                         "checks in forward can be skipped while tracing with "
                         "`torch.fx._symbolic_trace.is_fx_tracing()`).") from err
    return without_inplace_ops(traced)


class ForwardArgumentsError(TypeError, ValueError):
    """The inputs plus ``additional_forward_args`` do not match the traced model's ``forward`` parameters. A
    ``TypeError``, like Python's own wrong-argument-count error when the model is called directly, and still a
    ``ValueError`` for code that caught the earlier error type."""


def check_forward_arguments(graph_module: fx.GraphModule, n_inputs: int, n_extra: int) -> None:
    """Check that the traced model takes ``n_inputs`` inputs followed by ``n_extra`` additional arguments.

    A traced graph is run by an :class:`torch.fx.Interpreter`, which silently drops surplus positional arguments
    (an ``additional_forward_args`` the model does not take would be ignored) and reports a missing one as an
    unrelated "Expected positional argument" ``RuntimeError``; this turns both into an error naming
    ``additional_forward_args``. A ``*args`` parameter takes any number; parameters with defaults may be left out.

    Args:
        graph_module: the traced model.
        n_inputs: number of input tensors (the attributed ones).
        n_extra: number of additional arguments, as formatted by
            :func:`~captum_ext._utils.attribution.format_additional_args`.

    Raises:
        ForwardArgumentsError: too many or too few arguments (a ``TypeError`` and a ``ValueError``).

    Example::

        >>> import torch.fx as fx
        >>> from torch import nn
        >>> class Masked(nn.Module):
        ...     def forward(self, x, mask):
        ...         return x * mask
        >>> traced = fx.symbolic_trace(Masked())
        >>> check_forward_arguments(traced, 1, 1)
        >>> check_forward_arguments(traced, 1, 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        captum_ext._utils.graph.ForwardArgumentsError: the model takes 2 positional argument(s) (x, mask), got 3: ...
    """
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if any(str(n.target).startswith("*") for n in placeholders):  # *args / **kwargs: fx hands them the rest
        return
    names = ", ".join(str(n.target) for n in placeholders)
    given = n_inputs + n_extra
    if given > len(placeholders):
        raise ForwardArgumentsError(
            f"the model takes {len(placeholders)} positional argument(s) ({names}), got {given}: {n_inputs} "
            f"input(s) plus {n_extra} in `additional_forward_args`; pass only the arguments its forward accepts")
    # A placeholder's args hold its parameter's default value, if it has one.
    missing = [str(n.target) for n in placeholders[given:] if not n.args]
    if missing:
        raise ForwardArgumentsError(
            f"the model needs argument(s) {', '.join(f'`{m}`' for m in missing)} after the {n_inputs} input(s) "
            f"and {n_extra} `additional_forward_args` given; pass them through `additional_forward_args`")


def replace_node(graph_module: fx.GraphModule, node: fx.Node, function: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Optional[Dict[str, Any]] = None) -> fx.Node:
    """Replace ``node`` by a ``call_function`` node; the new node keeps the old one's metadata, and a replaced
    module call stays recorded as that module (so layer look-ups still find it)."""
    with graph_module.graph.inserting_after(node):
        replacement = graph_module.graph.call_function(function, args, kwargs or {})
    replacement.meta = dict(node.meta)  # a module call's own entry is already on its module stack
    node.replace_all_uses_with(replacement)
    graph_module.graph.erase_node(node)
    return replacement


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
    # torchvision's Conv2dNormActivation builds these in place (EfficientNet's SiLU, MobileNetV3's Hardswish).
    for kind, function in ((nn.SiLU, F.silu), (nn.Hardswish, F.hardswish), (nn.Hardsigmoid, F.hardsigmoid),
                           (nn.Mish, F.mish)):
        if isinstance(module, kind):
            return function, {}
    return None


#: In-place functions and their out-of-place twins (``torch.relu_`` would otherwise escape the rules for ReLU, and
#: the guided rewrite of ReLUs).
_OUT_OF_PLACE = {operator.iadd: operator.add, torch.relu_: torch.relu, F.relu_: torch.relu}


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
                replace_node(graph_module, node, function, (node.args[0],), kwargs)
                changed = True
        elif node.op == "call_function" and node.target in _OUT_OF_PLACE:
            node.target = _OUT_OF_PLACE[node.target]
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

def _stochastic_depth() -> Tuple[Callable[..., Any], ...]:
    """torchvision's ``stochastic_depth`` (a leaf of fx traces, the identity in eval mode), when importable."""
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # pragma: no cover - torchvision is a dependency, but graph walks do not need it
        return ()
    return (stochastic_depth,)


# Element-wise activations (smooth ones too: a node's value depends on the same node of the input only).
ELEMENTWISE_MODULES: Tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d, nn.BatchNorm1d,
    nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Mish,
)
ELEMENTWISE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.dropout, F.dropout2d, F.hardtanh, torch.clamp, torch.sigmoid,
    torch.tanh, F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.mish, F.sigmoid, F.tanh,
) + _stochastic_depth()  # stochastic depth is traced in eval mode: training=False is baked into the graph
ELEMENTWISE_METHODS = ("relu", "relu_", "contiguous", "clone", "clamp", "clamp_", "to", "float", "type_as",
                       "sigmoid", "tanh")
RESHAPE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.flatten, torch.reshape)
RESHAPE_METHODS = ("view", "reshape", "flatten")
ADD_FUNCTIONS: Tuple[Callable[..., Any], ...] = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ("add", "add_")
# Products, quotients and differences, supported when one operand is a constant for the attribution.
SCALE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (operator.mul, torch.mul, operator.truediv, torch.div, operator.sub,
                                                   torch.sub)
SCALE_METHODS = ("mul", "div", "sub")
CAT_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.cat, torch.concat) if hasattr(torch, "concat") else (torch.cat,)
MAX_POOL_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.max_pool2d,)
AVG_POOL_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.avg_pool2d,)
ADAPTIVE_FUNCTIONS: Tuple[Callable[..., Any], ...] = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d)


#: Tensor methods and functions whose result depends on a tensor's memory layout (strides), not only on its values.
LAYOUT_METHODS = ("view", "view_as", "as_strided", "stride", "is_contiguous", "data_ptr", "storage",
                  "untyped_storage", "numpy")
LAYOUT_FUNCTIONS: Tuple[Callable[..., Any], ...] = (torch.as_strided,)


def layout_free(graph_module: fx.GraphModule) -> bool:
    """Whether no operation of the graph reads its tensors' memory layout, so that it computes the same on a
    channels-last copy of its inputs.

    Args:
        graph_module (fx.GraphModule): a traced model.

    Returns:
        bool: ``False`` if some node calls a layout-reading method (``view``, ``stride``, …) or function.
    """
    return not any((node.op == "call_method" and node.target in LAYOUT_METHODS)
                   or (node.op == "call_function" and node.target in LAYOUT_FUNCTIONS)
                   for node in graph_module.graph.nodes)


def tensor_args(node: fx.Node) -> List[fx.Node]:
    """The node's arguments that are other nodes (positional, then keyword)."""
    found = [a for a in node.args if isinstance(a, fx.Node)]
    found += [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
    return found



def is_metadata(node: fx.Node) -> bool:
    """Nodes computing sizes, shapes, dtypes or devices (``x.size(0)``, ``x.shape[1]``, ``x.dtype``), which carry no
    activations."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    if node.op == "call_function" and node.target is getattr:
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        source = node.args[0]
        return isinstance(source, fx.Node) and is_metadata(source)
    return False


def dependent_nodes(graph_module: fx.GraphModule, sources: Sequence[fx.Node]) -> Set[fx.Node]:
    """The nodes whose values depend on ``sources`` (placeholders) through data, not only through shapes.

    Everything else is a constant for an attribution to ``sources``: parameters, buffers, coordinate grids
    (``torch.linspace``), and whatever is computed from ``additional_forward_args`` alone.
    """
    dependent: Set[fx.Node] = set(sources)
    for node in graph_module.graph.nodes:
        if node in dependent or node.op in ("placeholder", "get_attr", "output") or is_metadata(node):
            continue
        if any(parent in dependent for parent in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _stack_calls(node: fx.Node) -> Dict[str, str]:
    """``{call key: module path}`` of the modules a node was traced inside (a module called twice has two keys)."""
    stack = node.meta.get("nn_module_stack") or {}
    return {str(key): str(value[0]) if isinstance(value, tuple) else str(key) for key, value in stack.items()}


def module_calls(graph_module: fx.GraphModule, path: str) -> List[Tuple[fx.Node, fx.Node]]:
    """``(input, output)`` nodes of every call of the submodule at ``path`` in a traced graph.

    Works for leaf modules (a ``Conv2d``) and for containers that tracing inlined (a ResNet stage, a
    ``BasicBlock``), through the module stack fx records on every node; in-place activations rewritten as
    functions keep their module's record.

    Raises:
        ValueError: a call of the module does not take exactly one tensor in or give exactly one tensor out.
    """
    calls: Dict[str, List[fx.Node]] = {}
    for node in graph_module.graph.nodes:
        for key, module_path in _stack_calls(node).items():
            if module_path == path:
                calls.setdefault(key, []).append(node)
    found = []
    for key, inside in calls.items():
        members = set(inside)
        tensors = [n for n in inside if not is_metadata(n)]
        outputs = [n for n in tensors if any(user not in members for user in n.users)]
        inputs = {parent for n in tensors for parent in n.all_input_nodes
                  if parent not in members and parent.op != "get_attr" and not is_metadata(parent)}
        if not outputs and len(inputs) == 1:
            raise ValueError(f"module `{path}`'s output is used by nothing in the traced graph, so it cannot "
                             f"influence the model's output")
        if len(outputs) != 1 or len(inputs) != 1:
            raise ValueError(f"module `{path}` must take one tensor and return one tensor in the traced graph; "
                             f"found {len(inputs)} input(s) and {len(outputs)} output(s)")
        found.append((next(iter(inputs)), outputs[0]))
    return found
