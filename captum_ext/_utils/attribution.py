"""Shared plumbing of the attribution methods: Captum-style input/target formatting and model-state guards.

Captum's own helpers for this live in private modules whose signatures change between releases, so the few we need
are written once here against the public conventions (``TargetType``, tuple-in/tuple-out,
``additional_forward_args``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from captum_ext._utils.validation import check_finite, check_scalar

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


def format_inputs(inputs: TensorOrTuple, name: str = "inputs", ndim: int = 4) -> Tuple[Tuple[Tensor, ...], bool]:
    """Return ``(tuple_of_tensors, was_tuple)`` after checking each tensor.

    Every tensor must be a finite floating-point tensor with ``ndim`` dimensions (``N×C×H×W`` by default), with
    values (not a ``meta`` tensor), and all must share the batch size. This is the one entry check of every
    attribution method, so each of them reports these problems alike.

    Raises:
        TypeError: ``inputs`` is not a tensor or a tuple of tensors, or a tensor is not floating point.
        ValueError: wrong rank, empty batch, a meta tensor, NaN/inf, or mismatched batch sizes.
    """
    was_tuple = isinstance(inputs, tuple)
    items = inputs if was_tuple else (inputs,)
    if len(items) == 0:
        raise ValueError(f"`{name}` must hold at least one tensor")
    for i, item in enumerate(items):
        label = f"{name}[{i}]" if was_tuple else name
        if not isinstance(item, Tensor):
            raise TypeError(f"`{label}` must be a torch.Tensor, got {type(item).__name__}")
        if not item.is_floating_point():
            raise TypeError(f"`{label}` must be a floating-point tensor, got {item.dtype}")
        if item.dim() != ndim:
            expected = "N×C×H×W" if ndim == 4 else f"{ndim}-D"
            raise ValueError(f"`{label}` must be {expected}, got shape {tuple(item.shape)}")
        if item.shape[0] == 0:
            raise ValueError(f"`{label}` must hold at least one example")
        check_finite(item, label)
        if item.shape[0] != items[0].shape[0]:
            raise ValueError(f"all `{name}` tensors must share the batch size, got {[t.shape[0] for t in items]}")
    return tuple(items), was_tuple


def format_output(values: Tuple[Tensor, ...], was_tuple: bool) -> TensorOrTuple:
    """Undo :func:`format_inputs`: a tuple back to a tuple, a single tensor back to a tensor."""
    return values if was_tuple else values[0]


def format_additional_args(additional_forward_args: Any) -> Tuple[Any, ...]:
    """Captum's convention: ``None`` → no extra arguments, a tuple → several, anything else → one."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def _target_list(target: Any, n: int) -> List[Any]:
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"`target` must hold integer class indices, got dtype {target.dtype}")
        if target.numel() == 1:  # Captum's rule: a one-element tensor applies to every example
            return [int(target.reshape(()))] * n
        if target.dim() == 1 and target.shape[0] == n:
            return [int(t) for t in target.tolist()]
        raise ValueError(f"`target` tensor must hold one element or one index per example ({n}), got shape "
                         f"{tuple(target.shape)}")
    if isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"`target` list must hold one entry per example ({n}), got {len(target)}")
        return list(target)
    return [target] * n


def _class_indices(target: Any, n: int, classes: int, device: torch.device) -> Optional[Tensor]:
    """Fast path for ``N×K`` outputs: an int, integer tensor or list of ints as ``N`` indices, range-checked at
    once; ``None`` for anything else (tuples, mixed lists), which the general path handles and reports."""
    if isinstance(target, int) and not isinstance(target, bool):
        index = torch.full((n,), target, dtype=torch.long)
    elif isinstance(target, Tensor) and not target.is_floating_point() and target.dtype != torch.bool and (
            target.numel() == 1 or target.shape == (n,)):
        index = target.reshape(-1).expand(n).to(torch.long)
    elif isinstance(target, list) and len(target) == n and all(
            isinstance(t, int) and not isinstance(t, bool) for t in target):
        index = torch.tensor(target, dtype=torch.long)
    else:
        return None
    if bool(((index < 0) | (index >= classes)).any()):
        return None  # the general path names the offending entry
    return index.to(device)


def select_targets(output: Tensor, target: Any) -> Tuple[Tensor, Tensor]:
    """Pick each example's target score from a model output, following Captum's ``TargetType``.

    ``None`` means the predicted class (argmax) for ``N×K`` outputs, and the output itself for ``N``-vector (or
    ``N×1``) outputs. An ``int`` (or a tuple for outputs with more than two dimensions) or a one-element tensor
    applies to every example; a tensor or list gives one per example.

    Returns:
        ``(scores, flat_index)``: the ``N`` selected scores (differentiable) and their ``N`` indices into the
        flattened per-example output.

    Raises:
        TypeError / ValueError: a target that is not an index, or lies outside the output.
    """
    if not isinstance(output, Tensor) or output.dim() == 0:
        raise TypeError("the model must return a tensor with a batch dimension")
    n = output.shape[0]
    flat = output.reshape(n, -1)
    per_example = output.shape[1:]
    if target is None:
        if flat.shape[1] == 1:
            index = torch.zeros(n, dtype=torch.long, device=output.device)
        elif output.dim() == 2:
            index = flat.detach().argmax(dim=1)
        else:
            raise ValueError(f"`target` is required for outputs shaped {tuple(output.shape)}")
        return flat.gather(1, index[:, None])[:, 0], index
    if output.dim() == 2:
        index = _class_indices(target, n, output.shape[1], output.device)
        if index is not None:
            return flat.gather(1, index[:, None])[:, 0], index
    flat_index = []
    for i, item in enumerate(_target_list(target, n)):
        where = "`target`" if not isinstance(target, (list, Tensor)) else f"`target[{i}]`"
        coords = item if isinstance(item, tuple) else (item,)
        if isinstance(item, bool) or not all(isinstance(c, int) and not isinstance(c, bool) for c in coords):
            raise TypeError(f"{where} must be an int (or a tuple of ints), got {item!r}")
        if len(coords) != len(per_example):
            raise ValueError(f"{where} = {item!r} needs {len(per_example)} index(es) for per-example output shape "
                             f"{tuple(per_example)}")
        for c, size in zip(coords, per_example):
            if not 0 <= c < size:
                raise ValueError(f"{where} = {item!r} is out of range for per-example output shape "
                                 f"{tuple(per_example)}")
        offset = 0
        for c, size in zip(coords, per_example):
            offset = offset * size + c
        flat_index.append(offset)
    index = torch.tensor(flat_index, dtype=torch.long, device=output.device)
    return flat.gather(1, index[:, None])[:, 0], index


@contextmanager
def preserved_module_state(module: Any) -> Iterator[None]:
    """Restore every submodule's train/eval flag and every parameter's ``requires_grad`` on exit.

    A no-op for plain callables. The restore runs in ``finally``, so an exception inside the block leaves the model
    exactly as it was found.
    """
    if not isinstance(module, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)


@contextmanager
def hook_handles() -> Iterator[List[RemovableHandle]]:
    """Yield a list to collect hook handles in; every handle is removed on exit, also after an exception."""
    handles: List[RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def capture_output(handles: List[RemovableHandle], layer: nn.Module) -> List[Tensor]:
    """Register a forward hook on ``layer`` that appends its output to the returned list."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"`layer` must be an nn.Module, got {type(layer).__name__}")
    store: List[Tensor] = []

    def hook(_module: nn.Module, _inputs: Tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {type(layer).__name__} must output a single tensor, got {type(output).__name__}")
        store.append(output)

    handles.append(layer.register_forward_hook(hook))
    return store


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """A positive int, or raise ``TypeError`` / ``ValueError`` naming ``name``."""
    return check_scalar(batch_size, name, low=1, integer=True)


def run_forward(forward_func: Callable[..., Any], inputs: Sequence[Tensor], extra_args: Tuple[Any, ...]) -> Tensor:
    """Call ``forward_func(*inputs, *extra_args)`` and check that it returned a tensor."""
    output = forward_func(*inputs, *extra_args)
    if not isinstance(output, Tensor):
        raise TypeError(f"the model must return a tensor, got {type(output).__name__}")
    return output


def model_module(forward_func: Any) -> Optional[nn.Module]:
    """The ``nn.Module`` behind ``forward_func``: the module itself, or the owner of a bound method such as
    ``regressor.regress``; ``None`` for plain functions."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on for the block, also when the caller runs under ``torch.inference_mode()``, where
    ``torch.enable_grad()`` alone records nothing."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def gradient_leaf(value: Tensor) -> Tensor:
    """A leaf holding ``value`` that requires grad; an inference tensor (made under ``torch.inference_mode()``,
    which autograd cannot record) is copied first."""
    return (value.clone() if value.is_inference() else value.detach()).requires_grad_(True)


@contextmanager
def eval_mode(forward_func: Any) -> Iterator[None]:
    """Run the block with the model behind ``forward_func`` in eval mode (BatchNorm on its running statistics,
    which then stay untouched; dropout off), restoring every flag afterwards, also after an exception."""
    module = model_module(forward_func)
    with preserved_module_state(module):
        if module is not None:
            module.eval()
        yield


def batch_mixing_layers(forward_func: Any) -> List[str]:
    """The names of the model's BatchNorm layers built without running statistics: they normalise with each batch's
    own even in eval mode, so an example's output depends on the other examples of its batch.

    Args:
        forward_func (callable): the model (or a bound method of it); other callables have none.

    Returns:
        list of str: the layers' names (the model's class name for a model that is one).
    """
    module = model_module(forward_func)
    if module is None:
        return []
    return [name or type(module).__name__ for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None and m.running_var is None]


def check_examples_independent(forward_func: Any, n: int, what: str = "maps",
                               remedy: str = "explain one image at a time") -> None:
    """Refuse to explain ``n > 1`` examples together through a model that mixes them: a BatchNorm built without
    running statistics normalises with each batch's own even in eval mode, so each map would depend on the other
    images of the batch.

    Args:
        forward_func (callable): the explained model (or a bound method of it).
        n (int): examples in the batch.
        what (str, optional): what would depend on the other images, for the message. Default: ``"maps"``.
        remedy (str, optional): what the caller can do instead, for the message.

    Returns:
        None
    """
    mixing = batch_mixing_layers(forward_func) if n > 1 else []
    if mixing:
        names = ", ".join(f"`{name}`" for name in mixing[:3]) + (" …" if len(mixing) > 3 else "")
        raise ValueError(f"the model's BatchNorm {names} normalises with each batch's statistics (it has no running "
                         f"statistics), so each of the {n} {what} would depend on the other images of the batch: "
                         f"{remedy}, or use a model whose BatchNorm tracks running statistics")


def cast_like(value: Tensor, like: Tensor) -> Tensor:
    """``value`` (attributions computed in the model's dtype) in ``like``'s dtype, refusing a narrowing cast that
    overflows: a float16 input's map would otherwise hold ``inf`` where the model's float32 values exceed 65504.

    Args:
        value (Tensor): the attributions.
        like (Tensor): the input they explain.

    Returns:
        Tensor: ``value`` in ``like``'s dtype.
    """
    cast = value.to(like.dtype)
    # Checked for 16-bit float inputs only: float32 and float64 inputs, the common path, cost nothing.
    narrowed = cast.is_floating_point() and cast.element_size() < min(4, value.element_size())
    if narrowed and not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(value).all()):
        raise ValueError(f"the attributions reach {float(value.abs().max()):.4g}, beyond the range of the inputs' "
                         f"{like.dtype} (computed in the model's {value.dtype}): pass the inputs in {value.dtype}")
    return cast


def parameter_dtype(forward_func: Any) -> Optional[torch.dtype]:
    """The floating dtype of the model's first floating parameter or buffer (``None`` if it has none)."""
    module = model_module(forward_func)
    if module is None:
        return None
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def to_model_dtype(inputs: Tuple[Tensor, ...], forward_func: Any) -> Tuple[Tensor, ...]:
    """Cast floating inputs to the model's parameter dtype (a float64 or float16 batch for a float32 model);
    callers return their results in the inputs' own dtype, as Captum does."""
    dtype = parameter_dtype(forward_func)
    if dtype is None:
        return inputs
    return tuple(x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x for x in inputs)


class ModelInputError(ValueError, RuntimeError):
    """The model could not run on the given inputs (shape, channels, size or dtype). A ``ValueError`` naming the
    argument, and still a ``RuntimeError`` for code that caught torch's original error."""


# Messages of torch errors caused by the inputs' shape, channel count, size or dtype.
_INPUT_ERROR_PATTERNS = re.compile(r"size|shape|channels|mat1 and mat2|too small|dtype|scalar type|Expected",
                                   re.IGNORECASE)


@contextmanager
def explained_model_errors(inputs: Sequence[Tensor], name: str = "inputs") -> Iterator[None]:
    """Re-raise a ``RuntimeError`` from deep inside the model's forward pass that the inputs caused (a wrong
    channel count, an image smaller than the network accepts, …) as a :class:`ModelInputError` naming the argument
    and its shapes. Other errors pass through unchanged."""
    try:
        yield
    except RuntimeError as err:
        if isinstance(err, ModelInputError) or "out of memory" in str(err).lower() or \
                not _INPUT_ERROR_PATTERNS.search(str(err)):
            raise
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ModelInputError(f"the model could not run on `{name}` shaped {shapes}: {err}. Check the number of "
                              f"channels and the dtype (the model's), and that the images are at least as large as "
                              f"the network accepts (and of the size its fixed-size layers expect).") from err


def expand_per_example(values: Any, n: int, name: str) -> Any:
    """A list holding one entry per example of a batch that Captum expanded by repetition (``NoiseTunnel``,
    ``captum.metrics``: each example repeated ``k`` times in place) is repeated the same way; anything else is
    returned unchanged for the caller to check."""
    if isinstance(values, (list, tuple)) and 0 < len(values) < n and n % len(values) == 0:
        repeats = n // len(values)
        return [entry for entry in values for _ in range(repeats)]
    return values
