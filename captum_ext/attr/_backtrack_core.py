"""The data a NodeBacktrack walk passes between layer rules: selections of kept nodes and the walk's context."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor, nn

from captum_ext._utils import graph as G

Values = Dict[fx.Node, Any]


@dataclass
class Selection:
    """Kept nodes of one graph value: example index, index into the flattened per-example value, path count.

    An entry with count 0 is dead: rules mark the nodes a path does not continue from (the other branch of a
    residual add, a window wholly in the padding) by zeroing their count instead of removing them, so that the
    walk needs no host synchronisation to learn how many remain; :func:`compact` drops them. ``since`` counts the
    rules applied since the last compaction and ``base`` is the length the selection had then: they tell the walk
    when duplicates may have piled up enough to be worth removing.
    """

    batch: Tensor
    flat: Tensor
    count: Tensor
    since: int = 0
    base: int = 0

    def __len__(self) -> int:
        return int(self.batch.numel())

    def masked(self, keep: Tensor, flat: Optional[Tensor] = None) -> "Selection":
        """The same entries with the ones outside ``keep`` dead (``flat`` replaces the indices when given; it
        must be a valid index wherever ``keep`` is false too)."""
        return Selection(self.batch, self.flat if flat is None else flat, self.count * keep, self.since, self.base)


@dataclass
class Walk:
    """What every rule reads: the traced graph, the options, and which values depend on the attributed inputs
    (the others are constants: parameters, coordinate grids, ``additional_forward_args``)."""

    graph_module: fx.GraphModule
    fc_rule: str = "positive"
    fc_top_n: int = 5
    spatial_fc_rule: str = "argmax"
    spatial_fc_top_n: int = 20
    conv_rule: str = "max"
    conv_top_n: int = 2
    include_bias: bool = False
    dependent: Set[fx.Node] = field(default_factory=set)
    #: What rules prepare once and reuse across calls (folded weights, index tables of a layer's geometry).
    cache: Dict[Any, Any] = field(default_factory=dict)
    #: Nodes whose rule passes kept nodes through unchanged (element-wise activations, reshapes).
    pass_through: Set[fx.Node] = field(default_factory=set)

    def module(self, node: fx.Node) -> nn.Module:
        return self.graph_module.get_submodule(str(node.target))

    def describe(self, node: fx.Node) -> str:
        return G.describe(node, self.graph_module)

    def passes_through(self, node: fx.Node) -> bool:
        return node in self.pass_through

    def first_input(self, node: fx.Node) -> fx.Node:
        """The first argument that depends on the attributed inputs (the first tensor argument otherwise)."""
        parents = G.tensor_args(node)
        if not parents:
            raise NotImplementedError(f"{self.describe(node)} has no tensor input")
        return next((p for p in parents if p in self.dependent), parents[0])


Rule = Callable[[Walk, fx.Node, Selection, Values], List[Tuple[fx.Node, Selection]]]


def versions(*tensors: Optional[Tensor]) -> Tuple[Tuple[int, int, int], ...]:
    """Identity, in-place version and storage address of tensors: changes when a parameter is replaced, updated in
    place or given new data (``param.data = …`` keeps the first two), so a rule knows when what it prepared from
    them is stale. A rule that caches by this key holds the tensors' storages (:func:`held`), so an address in a
    cached key cannot be reused by other data."""
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors if t is not None)


def held(*tensors: Optional[Tensor]) -> Tuple[Tensor, ...]:
    """Detached views that keep the tensors' current storages alive (see :func:`versions`)."""
    return tuple(t.detach() for t in tensors if t is not None)


def _channels_last(value: Tensor) -> bool:
    return value.dim() == 4 and not value.is_contiguous() and value.is_contiguous(memory_format=torch.channels_last)


def _channels_last_offsets(shape: torch.Size, batch: Tensor, flat: Tensor) -> Tensor:
    """Storage offsets of elements (example ``batch``, index ``flat`` into the flattened ``C×H×W`` example) of a
    channels-last ``N×C×H×W`` map."""
    channels, area = shape[1], shape[2] * shape[3]
    channel = flat.div(area, rounding_mode="floor")
    return (flat - channel * area).mul_(channels).add_(channel).add_(batch * (channels * area))


def at_nodes(values: Sequence[Tensor], batch: Tensor, flat: Tensor) -> List[Tensor]:
    """Each value's elements at kept nodes (example ``batch``, index ``flat`` into the flattened example; the two
    broadcast together), read in place also from channels-last maps, which a flattening reshape would copy whole."""
    if all(_channels_last(value) for value in values):
        offsets = _channels_last_offsets(values[0].shape, batch, flat)
        return [value.permute(0, 2, 3, 1).reshape(-1).index_select(0, offsets.reshape(-1)).view(offsets.shape)
                for value in values]
    return [value.reshape(value.shape[0], -1)[batch, flat] for value in values]


def take(value: Tensor, index: Tensor) -> Tensor:
    """``value.reshape(-1)[index]`` (``index`` into the whole value, flattened in its logical order), read in place
    also from a channels-last map, which the reshape would copy whole."""
    if not _channels_last(value):
        return value.reshape(-1)[index]
    per_example = value[0].numel()
    batch = index.div(per_example, rounding_mode="floor")
    offsets = _channels_last_offsets(value.shape, batch, index - batch * per_example)
    return value.permute(0, 2, 3, 1).reshape(-1)[offsets]


def pair(value: Any) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1])) if len(value) == 2 else (int(value[0]), int(value[0]))
    return int(value), int(value)


def windows(y: Tensor, x: Tensor, kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
            dilation: Tuple[int, int], size: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor]:
    """The input window of output positions ``(y, x)`` of a convolution or pooling: its rows ``P×kh``, columns
    ``P×kw`` (possibly outside the ``size = (H, W)`` input) and which of its ``P×kh×kw`` positions lie inside."""
    rows = (y * stride[0] - padding[0])[:, None] + torch.arange(kernel[0], device=y.device) * dilation[0]
    cols = (x * stride[1] - padding[1])[:, None] + torch.arange(kernel[1], device=x.device) * dilation[1]
    inside = ((rows >= 0) & (rows < size[0]))[:, :, None] & ((cols >= 0) & (cols < size[1]))[:, None, :]
    return rows, cols, inside


@dataclass
class WindowTable:
    """Index tables of a sliding window's geometry (a convolution or pooling on one input size), one row per
    output position ``y·Wo + x``; built once per layer and input size, so that a rule decodes its kept nodes'
    windows with a fixed number of tensor operations."""

    #: ``Ho·Wo``: the window's top-left corner in the zero-padded ``Hp×Wp`` input, as a flat index.
    origin: Tensor
    #: ``T = kh·kw``: each tap's flat offset from the corner in the padded input.
    taps: Tensor
    #: ``Ho·Wo×T``: whether the tap lies inside the (unpadded) input.
    inside: Tensor
    #: ``Ho·Wo×T``: the tap's flat ``H×W`` position in the unpadded input (clamped to it where outside).
    source: Tensor
    #: ``Ho·Wo``: whether the window has a tap inside the input (a path from a window wholly in the padding ends).
    reaches: Tensor
    #: ``Hp·Wp``: the padded input's area.
    padded_area: int
    #: Whether some tap of some window lies outside the input (else ``inside`` is all true).
    leaves_input: bool
    #: Whether some window lies wholly outside the input (else ``reaches`` is all true).
    can_miss: bool


def window_table(kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                 dilation: Tuple[int, int], size: Tuple[int, int], out_size: Tuple[int, int],
                 device: torch.device) -> WindowTable:
    """The :class:`WindowTable` of a window geometry for an ``size = (H, W)`` input and ``(Ho, Wo)`` output."""
    (height, width), (h_out, w_out) = size, out_size
    padded_width = width + 2 * padding[1]
    y = torch.arange(h_out, device=device).repeat_interleave(w_out, output_size=h_out * w_out)
    x = torch.arange(w_out, device=device).repeat(h_out)
    rows, cols, inside = windows(y, x, kernel, stride, padding, dilation, size)
    source = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
    taps = (torch.arange(kernel[0], device=device)[:, None] * dilation[0] * padded_width
            + torch.arange(kernel[1], device=device) * dilation[1])
    inside = inside.flatten(1)
    reaches = inside.any(dim=1)
    return WindowTable(origin=y * stride[0] * padded_width + x * stride[1], taps=taps.reshape(-1), inside=inside,
                       source=source.flatten(1), reaches=reaches,
                       padded_area=(height + 2 * padding[0]) * padded_width,
                       leaves_input=not bool(inside.all()), can_miss=not bool(reaches.all()))


def arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


_REVERSED_INDEX: Dict[Tuple[int, torch.device], Tensor] = {}


def strongest_first(values: Tensor, k: int) -> Tensor:
    """The indices of each row's ``k`` largest positive values (``P×C`` → ``P×k``), largest first, equal values by
    the lower index, as the reference loop chooses, and the same on every device (``topk`` leaves the choice among
    equal values unspecified, and it differed between the CPU's and the accelerators' code paths). A row with fewer
    than ``k`` positive values is filled with non-positive ones: the rules that call this end a path there, so which
    ones does not matter.

    Args:
        values (Tensor): ``P×C`` real values.
        k (int): how many per row (at most ``C``).

    Returns:
        Tensor: ``P×k`` int64 indices.
    """
    width = values.shape[1]
    if values.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return values.sort(dim=1, descending=True, stable=True).indices[:, :k]
    # A positive float32's bits, read as an int32, order as the float does, above every non-positive value's (zero,
    # or negative with the sign bit set: their order among themselves does not matter here); below them the reversed
    # index breaks ties, so every key is distinct and topk has no choice to make. Three operations: the int32 bits are
    # promoted to int64 inside the addition.
    bits = values.float().view(torch.int32)
    reversed_index = _REVERSED_INDEX.get((width, values.device))
    if reversed_index is None:
        reversed_index = _REVERSED_INDEX[(width, values.device)] = torch.arange(width - 1, -1, -1,
                                                                                 device=values.device)
    return torch.add(reversed_index, bits, alpha=width).topk(k, dim=1).indices
