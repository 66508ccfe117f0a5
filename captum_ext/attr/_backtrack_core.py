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
    """Kept nodes of one graph value: example index, index into the flattened per-example value, path count."""

    batch: Tensor
    flat: Tensor
    count: Tensor

    def __len__(self) -> int:
        return int(self.batch.numel())

    def take(self, keep: Tensor, flat: Optional[Tensor] = None) -> "Selection":
        return Selection(self.batch[keep], (self.flat if flat is None else flat)[keep], self.count[keep])


def merge(parts: Sequence[Selection], numel: int, deduplicate: bool) -> Selection:
    """Union of selections of the same value; counts add up (or collapse to 1 with ``deduplicate``)."""
    batch = torch.cat([p.batch for p in parts])
    flat = torch.cat([p.flat for p in parts])
    count = torch.cat([p.count for p in parts])
    if batch.numel() == 0:
        return Selection(batch, flat, count)
    key = batch * numel + flat
    unique, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(unique.numel(), dtype=count.dtype, device=count.device).index_add_(0, inverse, count)
    if deduplicate:
        summed = torch.ones_like(summed)
    return Selection(unique // numel, unique % numel, summed)


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

    def module(self, node: fx.Node) -> nn.Module:
        return self.graph_module.get_submodule(str(node.target))

    def describe(self, node: fx.Node) -> str:
        return G.describe(node, self.graph_module)

    def first_input(self, node: fx.Node) -> fx.Node:
        """The first argument that depends on the attributed inputs (the first tensor argument otherwise)."""
        parents = G.tensor_args(node)
        if not parents:
            raise NotImplementedError(f"{self.describe(node)} has no tensor input")
        return next((p for p in parents if p in self.dependent), parents[0])


Rule = Callable[[Walk, fx.Node, Selection, Values], List[Tuple[fx.Node, Selection]]]


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


def arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)
