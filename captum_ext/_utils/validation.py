"""Argument checks that raise clear ``TypeError`` / ``ValueError`` messages naming the argument."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

_KINDS = {
    "float": lambda t: t.is_floating_point(),
    "int": lambda t: not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool,
    "bool": lambda t: t.dtype == torch.bool,
    "real": lambda t: not t.is_complex(),
}


def as_tensor(value: Union[Tensor, np.ndarray, Sequence], name: str) -> Tensor:
    """Return ``value`` as a tensor (numpy arrays and nested sequences are converted without copying when possible).

    Raises:
        TypeError: if ``value`` is not a tensor, array or numeric sequence.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`{name}` must be a tensor or numeric array; could not convert: {err}") from None
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(value).__name__}")


def require_values(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``tensor`` is a ``meta`` tensor.

    A meta tensor (``torch.empty(..., device="meta")``) has a shape and a dtype but no storage, so nothing that
    reads values can run on it; caught here, before a check such as ``torch.isfinite(t).all()`` fails inside torch
    with "Tensor.item() cannot be called on meta tensors", which names neither the argument nor the cause.

    Args:
        tensor: the tensor to check.
        name: argument name used in the error message.

    Raises:
        ValueError: ``tensor`` is on the ``meta`` device.

    Example::

        >>> import torch
        >>> require_values(torch.zeros(2), "inputs")
        >>> require_values(torch.empty(2, device="meta"), "inputs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `inputs` is a meta tensor (device='meta'): it has a shape but no values; ...
    """
    if tensor.is_meta:
        raise ValueError(f"`{name}` is a meta tensor (device='meta'): it has a shape but no values; create it on a "
                         "real device (e.g. cpu or cuda)")


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``tensor`` has no values (meta) or holds NaN / inf.

    Only floating tensors can hold NaN / inf; others pass once they are known to have values.

    Args:
        tensor: the tensor to check.
        name: argument name used in the error messages.

    Raises:
        ValueError: ``tensor`` is a meta tensor, or contains NaN or inf.

    Example::

        >>> import torch
        >>> check_finite(torch.tensor([1.0, float("nan")]), "saliency")
        Traceback (most recent call last):
        ...
        ValueError: `saliency` contains NaN or inf values
    """
    require_values(tensor, name)
    # A sum is finite unless an element is NaN / inf (or the sum overflows): one cheap reduction settles the common
    # case, and only a non-finite sum pays for the element-wise check.
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"`{name}` contains NaN or inf values")


def check_tensor(
    value: Union[Tensor, np.ndarray, Sequence],
    name: str,
    *,
    ndim: Optional[Union[int, Sequence[int]]] = None,
    kind: Optional[str] = None,
    finite: bool = True,
    last_dim: Optional[int] = None,
) -> Tensor:
    """Convert ``value`` to a tensor and check its rank, dtype kind and finiteness.

    Args:
        value: tensor, numpy array or nested sequence.
        name: argument name used in error messages.
        ndim: allowed number(s) of dimensions.
        kind: ``"float"``, ``"int"``, ``"bool"`` or ``"real"`` (anything but complex).
        finite: reject NaN / inf for floating tensors. Meta tensors (no values) are always rejected.
        last_dim: required size of the last dimension (e.g. 4 for boxes).

    Returns:
        The checked tensor.
    """
    tensor = as_tensor(value, name)
    require_values(tensor, name)  # every later check (0/1 masks, box order, NaN) reads values
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if tensor.dim() not in allowed:
            shapes = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"`{name}` must be {shapes}, got shape {tuple(tensor.shape)}")
    if kind is not None and not _KINDS[kind](tensor):
        raise TypeError(f"`{name}` must have a {kind} dtype, got {tensor.dtype}")
    if last_dim is not None and (tensor.dim() == 0 or tensor.shape[-1] != last_dim):
        raise ValueError(f"`{name}` must have last dimension {last_dim}, got shape {tuple(tensor.shape)}")
    if finite:
        check_finite(tensor, name)
    return tensor


def check_same_length(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same first dimension."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same length, got {a.shape[0]} and {b.shape[0]}")


def check_boxes(value: Union[Tensor, np.ndarray, Sequence], name: str) -> Tensor:
    """Check an ``N×4`` box tensor in ``(x1, y1, x2, y2)`` format with ``x1 <= x2`` and ``y1 <= y2``."""
    boxes = check_tensor(value, name, ndim=2, kind="real", last_dim=4)
    if boxes.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold numeric box coordinates, got dtype {boxes.dtype}")
    boxes = boxes.to(torch.float32) if not boxes.is_floating_point() else boxes
    if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"`{name}` must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")
    return boxes


def check_in_choices(value: object, name: str, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")


def check_scalar(
    value: object,
    name: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float:
    """Return ``value`` as a finite float (or int, with ``integer``) inside ``[low, high]``; ``low_open`` /
    ``high_open`` exclude the bound. Raises ``TypeError`` for a non-number and ``ValueError`` naming ``name`` for a
    value out of range."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    if integer and not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be finite, got {number}")
    if low is not None and (number < low or (low_open and number == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"`{name}` must be {bound}, got {value}")
    if high is not None and (number > high or (high_open and number == high)):
        bound = f"< {high}" if high_open else f"<= {high}"
        raise ValueError(f"`{name}` must be {bound}, got {value}")
    return int(value) if integer else number


def is_tracing() -> bool:
    """Whether a ``torch.fx`` / TorchScript trace or a ``torch.compile`` capture is running: input checks in a
    ``forward`` must then stand aside, since they read concrete values the trace does not have."""
    from torch.fx import _symbolic_trace

    # Newer torch splits fx's own tracing from torch.export's; both hand forward symbolic values.
    fx_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None) or _symbolic_trace.is_fx_tracing
    compiling = getattr(torch, "compiler", None)
    dynamo = bool(compiling is not None and hasattr(compiling, "is_compiling") and compiling.is_compiling())
    return fx_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting() or dynamo
