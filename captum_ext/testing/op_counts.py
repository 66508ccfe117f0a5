"""Count the ATen operations a piece of code dispatches, and those that make the host wait for the device.

On a GPU every dispatched operation is a kernel launch paid on the CPU, and every operation whose output size or
value the host needs (``nonzero``, ``unique``, ``.item()``, boolean-mask indexing, …) drains the device's queue.
Both counts are the same on the CPU as on CUDA for the same code path, so a test on the CPU can guard how code will
behave on a GPU: its op count should not grow with the batch, and its synchronisations should stay few.

Example::

    >>> import torch
    >>> from captum_ext.testing import count_ops
    >>> x = torch.arange(6.0)
    >>> with count_ops() as counts:
    ...     y = (x * 2).sum()
    ...     kept = x[x > 2]
    >>> counts.total, counts.syncs
    (4, 1)
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operations whose result size or value must be known on the host: on CUDA each waits for the device.
SYNCHRONISING_OPS: Tuple[str, ...] = (
    "nonzero", "argwhere", "_unique", "_unique2", "unique_dim", "unique_consecutive", "_local_scalar_dense",
    "masked_select", "equal", "is_nonzero", "item", "bincount", "histc", "allclose",
)


def _has_bool_index(args: Tuple[Any, ...]) -> bool:
    """Whether an ``index``/``index_put`` call takes a boolean mask (its size is found on the host)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))


class OpCounts(TorchDispatchMode):
    """A dispatch mode counting every ATen call (``total``, ``by_name``) and host synchronisations (``syncs``,
    ``syncs_by_name``). Use it as a context manager, through :func:`count_ops`."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter = Counter()
        self.syncs_by_name: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    @property
    def syncs(self) -> int:
        return sum(self.syncs_by_name.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...] = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        name = func.overloadpacket.__name__
        self.by_name[name] += 1
        repeat_without_size = name == "repeat_interleave" and (kwargs or {}).get("output_size") is None
        if (name in SYNCHRONISING_OPS or repeat_without_size
                or (name in ("index", "index_put", "index_put_") and _has_bool_index(args))):
            self.syncs_by_name[name] += 1
        return func(*args, **(kwargs or {}))


def count_ops() -> OpCounts:
    """A context manager counting the ATen operations run inside it.

    Returns:
        OpCounts: the counter; enter it with ``with``, read ``total``, ``by_name``, ``syncs`` and
        ``syncs_by_name`` after the block.

    Examples::

        >>> import torch
        >>> from captum_ext.testing import count_ops
        >>> with count_ops() as counts:
        ...     _ = torch.ones(3).add(1).sum()
        >>> counts.total
        3
    """
    return OpCounts()


def ops_of(function: Callable[[], Any]) -> OpCounts:
    """Run ``function()`` once and count the ATen operations it dispatched.

    Args:
        function (callable): called once without arguments; its result is discarded.

    Returns:
        OpCounts: the operations and host synchronisations counted during the call.

    Examples::

        >>> import torch
        >>> from captum_ext.testing import ops_of
        >>> ops_of(lambda: torch.arange(4).nonzero()).syncs
        1
    """
    with count_ops() as counts:
        function()
    return counts
