"""The layer rules of :class:`captum_ext.NodeBacktrack`, as a table from operations to rules.

Each rule maps the kept nodes of one graph value (a :class:`Selection`) to kept nodes of the values it was computed
from. The tables at the end say which rule handles which module type, function or tensor method; an operation in
none of them has no rule, and NodeBacktrack refuses the model naming it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.chunking import budget_chunks, chunk_budget, launch_bound
from captum_ext._utils.folding import fold_bn
from captum_ext.attr import _backtrack_kernels as kernels
from captum_ext.attr._backtrack_core import (Rule, Selection, Values, Walk, WindowTable, arg, held, pair, take,
                                             strongest_first, versions, window_table)
from captum_ext.attr._backtrack_linear import linear
from captum_ext.attr._backtrack_permute import (LAYER_NORM_FUNCTIONS, LAYER_NORM_MODULES, MOVE_FUNCTIONS, MOVE_METHODS,
                                                SPLIT_FUNCTIONS, SPLIT_METHODS, any_linear, layer_norm, move,
                                                split_parts)
from captum_ext.attr._backtrack_pooling import interpolate, pool
from captum_ext.attr._backtrack_routing import add, cat, identity, pad, scale, scale_problem

__all__ = ["READS_ACTIVATIONS", "conv", "identity", "linear", "rule_for", "scale", "scale_problem"]

# ---------------------------------------------------------------------------------------------------------------------
# Weighted layers
# ---------------------------------------------------------------------------------------------------------------------

def _conv_parameters(walk: Walk, node: fx.Node, values: Values) -> Dict[str, Any]:
    """The convolution's settings and weights (a BatchNorm right after it folded in), in the layouts the rule
    reads; prepared once and reused while the parameters stay the same."""
    if node.op == "call_module":
        conv = walk.module(node)
        params = {"weight": conv.weight, "bias": conv.bias, "stride": conv.stride, "padding": conv.padding,
                  "dilation": conv.dilation, "groups": conv.groups, "mode": conv.padding_mode}
    else:
        bias = arg(node, 2, "bias", None)
        params = {"weight": values[node.args[1]], "bias": values[bias] if isinstance(bias, fx.Node) else bias,
                  "stride": arg(node, 3, "stride", 1), "padding": arg(node, 4, "padding", 0),
                  "dilation": arg(node, 5, "dilation", 1), "groups": arg(node, 6, "groups", 1), "mode": "zeros"}
    if isinstance(params["padding"], str):
        raise NotImplementedError(f"{walk.describe(node)}: string padding '{params['padding']}' is not supported; "
                                  f"use explicit padding")
    if params["mode"] != "zeros":
        raise NotImplementedError(f"{walk.describe(node)}: padding_mode '{params['mode']}' is not supported")
    users = list(node.users)
    bn = walk.module(users[0]) if len(users) == 1 and users[0].op == "call_module" else None
    bn = bn if isinstance(bn, nn.BatchNorm2d) else None
    sources = (params["weight"], params["bias"], *([] if bn is None else [*bn.parameters(), *bn.buffers()]))
    key = versions(*sources)
    cached = walk.cache.get(("conv", node))
    if cached is not None and cached[0] == key:
        return cached[1]
    weight, bias = params["weight"], params["bias"]
    if bn is not None:
        if bn.running_mean is None or bn.running_var is None:  # folding needs the statistics of eval mode
            raise ValueError(f"{walk.describe(users[0])} normalises with each batch's statistics (it has no running "
                             f"statistics), so it cannot be folded into {walk.describe(node)}: NodeBacktrack needs "
                             f"BatchNorm that tracks running statistics")
        weight, bias = fold_bn(weight, bias, bn)
    weight = weight.detach()
    c_out, c_group, kh, kw = weight.shape
    params.update(
        bias=None if bias is None else bias.detach(),
        stride=pair(params["stride"]), padding=pair(params["padding"]), dilation=pair(params["dilation"]),
        kernel=(kh, kw),
        # One copy in the layout the gathers read, Co×T×Cg (input channels contiguous, as in the channels-last
        # activations), and per-tap views Co×Cg of it.
        fields_weight=weight.permute(0, 2, 3, 1).reshape(c_out, kh * kw, c_group).contiguous())
    params["weight_taps"] = params["fields_weight"].unbind(1)
    walk.cache[("conv", node)] = (key, params, held(*sources))
    return params


# The channels-last copy of a convolution's input is made when the kept nodes' fields hold at least 1/8 of its
# elements (measured on VGG16 and ResNet-50 at 224²: below that, gathering from the input directly is faster).
FIELD_COPY_RATIO = 8


def _window_geometry(walk: Walk, node: fx.Node, p: Dict[str, Any], size: Tuple[int, int],
                     out_size: Tuple[int, int], device: torch.device) -> Tuple[WindowTable, Tensor]:
    """The convolution's :class:`WindowTable` for this input size, and its taps' row offsets in the channels-last
    matrix of :func:`_channels_last_rows` (one row per group); built once per layer, size and device."""
    key = ("window", node, size, out_size, device)
    cached = walk.cache.get(key)
    if cached is None:
        table = window_table(p["kernel"], p["stride"], p["padding"], p["dilation"], size, out_size, device)
        cached = (table, table.taps * p["groups"])
        walk.cache[key] = cached
    return cached


def _channels_last_rows(activations: Tensor, groups: int, padding: Tuple[int, int]) -> Tensor:
    """The zero-padded input as a matrix ``(N·Hp·Wp·G)×Cg``: one row per (image, position, group), its channels
    contiguous, so a kept node's input at one kernel tap is a single row (about five times faster to gather and
    multiply tap by tap than to copy whole receptive fields)."""
    ph, pw = padding
    padded = F.pad(activations, (pw, pw, ph, ph)) if ph or pw else activations
    return padded.permute(0, 2, 3, 1).contiguous().view(-1, activations.shape[1] // groups)


# Windows of up to this many values per node (taps × input channels of a group) are summed in one gather; larger
# ones tap by tap, holding one tap's values per node at a time. Accelerators take whole windows of up to 8192 values
# (fewer launches); the CPU only small ones (tap by tap, the values stay in its caches: about 6× faster on ResNet-50's
# 3×3 layers).
ALL_TAPS_AT_ONCE = {"host": 256, "accelerator": 1 << 13}


def _whole_windows(c_group: int, n_taps: int, device: torch.device) -> bool:
    """Whether :func:`_tap_sums` gathers whole windows at once on ``device``."""
    return n_taps * c_group <= ALL_TAPS_AT_ONCE["accelerator" if launch_bound(device) else "host"]


def _tap_sums(rows_matrix: Tensor, p: Dict[str, Any], row_base: Tensor, tap_rows: Tensor, out_channel: Tensor
              ) -> Tensor:
    """``P×Cg``: each kept node's contribution summed over its window, per input channel (``row_base + tap_rows``
    are the node's input rows in the channels-last matrix, one per kernel tap)."""
    _, n_taps, c_group = p["fields_weight"].shape
    if _whole_windows(c_group, n_taps, rows_matrix.device):
        index = (row_base[:, None] + tap_rows).view(-1)
        fields = rows_matrix.index_select(0, index).view(-1, n_taps, c_group)
        return fields.mul_(p["fields_weight"].index_select(0, out_channel)).sum(dim=1)
    rows = (tap_rows[:, None] + row_base).unbind(0)
    weights = p["weight_taps"]
    sums = rows_matrix.index_select(0, rows[0]).mul_(weights[0].index_select(0, out_channel))
    for tap in range(1, n_taps):
        sums.addcmul_(rows_matrix.index_select(0, rows[tap]), weights[tap].index_select(0, out_channel))
    return sums


def _gather_fields(activations: Tensor, batch: Tensor, first_channel: Optional[Tensor], c_group: int,
                   table: WindowTable, pixel: Tensor) -> Tensor:
    """The receptive fields ``P×T×Cg`` of the given nodes (output positions ``pixel``), read straight from the
    ``N×C×H×W`` input, zero outside it."""
    _, channels, height, width = activations.shape
    plane = batch * channels if first_channel is None else batch * channels + first_channel
    plane = plane[:, None] + torch.arange(c_group, device=batch.device)  # P×Cg
    index = plane[:, None, :] * (height * width) + table.source.index_select(0, pixel)[:, :, None]
    fields = take(activations, index)
    return fields.mul_(table.inside.index_select(0, pixel)[:, :, None]) if table.leaves_input else fields


def _chosen_channels(walk: Walk, sums: Tensor) -> Tuple[Optional[Tensor], Tensor, Optional[Tensor]]:
    """The channels each node continues through: ``(rows, channels, alive)``, one entry per (node, channel);
    ``rows`` is ``None`` when every node keeps exactly one channel (entry ``i`` is node ``i``), ``alive`` is
    ``None`` when every entry is alive. Only ``conv_rule="positive"`` keeps a data-dependent number of channels
    (one host synchronisation); the others keep a fixed number and mark non-positive sums dead."""
    if walk.conv_rule == "max":
        return None, sums.argmax(dim=1), None
    if walk.conv_rule == "positive":
        rows, cols = (sums > 0).nonzero(as_tuple=True)
        return rows, cols, None
    cols = strongest_first(sums, min(walk.conv_top_n, sums.shape[1]))  # P×top
    return _top_entries(cols, sums.gather(1, cols))


def _top_entries(cols: Tensor, chosen_sums: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(rows, channels, alive)`` of the ``top_n`` rule from each node's chosen channels and their sums
    (``P×top``): one entry per (node, channel), alive where the sum is positive."""
    rows = torch.arange(len(cols), device=cols.device)[:, None].expand(-1, cols.shape[1])
    return rows.reshape(-1), cols.reshape(-1), (chosen_sums > 0).reshape(-1)


def _strongest_taps(p: Dict[str, Any], table: WindowTable, rows_matrix: Optional[Tensor], fields: Optional[Tensor],
                    top_left: Optional[Tensor], tap_rows: Tensor, out_channel: Tensor, node_pixel: Tensor,
                    rows: Optional[Tensor], cols: Tensor) -> Tensor:
    """Each (node, chosen channel)'s input position (``node_pixel``: the node's output position, per entry): the
    tap of the largest contribution in the channel's window (never the padding), as a flat ``H×W`` index."""
    if table.taps.numel() == 1:  # a 1×1 window: its one position
        return table.source.index_select(0, node_pixel)[:, 0]
    if rows_matrix is not None:  # only the chosen channels' windows are read: T values per (node, channel)
        c_group = p["fields_weight"].shape[2]
        corner = top_left if rows is None else top_left.index_select(0, rows)
        taps = (corner[:, None] + tap_rows).mul_(c_group).add_(cols[:, None])
        node_channel = out_channel if rows is None else out_channel.index_select(0, rows)
        window = rows_matrix.view(-1)[taps].mul_(p["fields_weight"][node_channel, :, cols])
    else:
        window = fields[torch.arange(len(fields), device=cols.device) if rows is None else rows, :, cols]
    if table.leaves_input:  # never the padding
        window = window.masked_fill_(~table.inside.index_select(0, node_pixel), float("-inf"))
    return table.source.index_select(0, node_pixel).gather(1, window.argmax(dim=1, keepdim=True))[:, 0]


def conv(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Convolution: in the kept node's receptive field, the channel with the largest summed contribution
    ``W ⊙ A_rf`` (or the top n, or every positive one), then the position of the largest contribution inside that
    channel's window. A fixed sequence of tensor operations per chunk of kept nodes: the window's geometry comes
    from index tables built once per layer."""
    parent = walk.first_input(node)
    p = _conv_parameters(walk, node, values)
    bias, groups = p["bias"], p["groups"]
    activations = values[parent]
    _, channels, height, width = activations.shape
    c_out, n_taps, c_group = p["fields_weight"].shape
    out_size = tuple(values[node].shape[-2:])
    device = sel.flat.device
    table, tap_rows = _window_geometry(walk, node, p, (height, width), out_size, device)
    # A channels-last copy of the whole input pays off when the kept nodes gather more than a fraction of it;
    # a few nodes in a large early layer gather their fields straight from the input instead.
    by_rows = FIELD_COPY_RATIO * len(sel) * c_group * n_taps >= activations.numel()
    rows_matrix = _channels_last_rows(activations, groups, p["padding"]) if by_rows else None
    out_per_group, out_area = c_out // groups, out_size[0] * out_size[1]
    if by_rows and not launch_bound(device) and walk.conv_rule != "positive" and kernels.available() and \
            rows_matrix.dtype == p["fields_weight"].dtype == torch.float32:
        # The compiled CPU kernel walks all kept nodes in one launch, holding a few sums per node (no chunks).
        n = 1 if walk.conv_rule == "max" else min(walk.conv_top_n, c_group)
        entries = kernels.conv_entries(rows_matrix, p["fields_weight"], sel.batch, sel.flat, sel.count, table,
                                       tap_rows, groups, height * width, bias if walk.include_bias else None, n,
                                       positive_only=walk.conv_rule != "max")
        return [(parent, Selection(*entries))]
    # Per kept node, the channels-last way tap by tap holds Cg sums at a time; the others T·Cg products.
    per_node = c_group if by_rows and not _whole_windows(c_group, n_taps, device) else c_group * n_taps
    batches, flats, counts = [], [], []
    for part in budget_chunks(len(sel), per_node, chunk_budget(device)):
        whole = part.start == 0 and part.stop == len(sel)
        b, f, c = (sel.batch, sel.flat, sel.count) if whole else (sel.batch[part], sel.flat[part], sel.count[part])
        co = f.div(out_area, rounding_mode="floor")
        pixel = f - co * out_area
        group = co.div(out_per_group, rounding_mode="floor") if groups > 1 else None
        top_left = None
        if rows_matrix is not None:
            # The window's top-left row in the padded channels-last matrix.
            top_left = b * table.padded_area + table.origin.index_select(0, pixel)
            top_left = top_left * groups + group if group is not None else top_left
        fields = None
        if rows_matrix is not None:
            sums = _tap_sums(rows_matrix, p, top_left, tap_rows, co)  # P×Cg
        else:
            fields = _gather_fields(activations, b, None if group is None else group * c_group, c_group, table,
                                    pixel)
            fields.mul_(p["fields_weight"].index_select(0, co))
            sums = fields.sum(dim=1)  # P×Cg
        if walk.include_bias and bias is not None:
            sums = sums + bias[co][:, None] * n_taps  # the paper's W * A + b, summed over x and y
        rows, cols, alive = _chosen_channels(walk, sums)
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        node_pixel = pick(pixel)
        source = _strongest_taps(p, table, rows_matrix, fields, top_left, tap_rows, co, node_pixel, rows, cols)
        if table.can_miss:  # a window wholly in the padding has no input: its path ends
            reaches = table.reaches.index_select(0, node_pixel)
            alive = reaches if alive is None else alive & reaches
        channel = cols if group is None else pick(group) * c_group + cols
        batches.append(pick(b)), flats.append(channel * (height * width) + source)
        counts.append(pick(c) if alive is None else pick(c) * alive)
    if len(batches) == 1:
        return [(parent, Selection(batches[0], flats[0], counts[0]))]
    return [(parent, Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]


# ---------------------------------------------------------------------------------------------------------------------
# The table: which operation takes which rule
# ---------------------------------------------------------------------------------------------------------------------

MODULE_RULES: Tuple[Tuple[Tuple[type, ...], Rule], ...] = (
    (G.ELEMENTWISE_MODULES + (nn.Flatten,), identity),
    ((nn.Conv2d,), conv),
    ((nn.Linear,), any_linear),  # N×features: `linear`; the channel axis of a channels-last map: a 1×1 conv
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), pool),
    ((nn.ZeroPad2d, nn.ConstantPad2d), pad),
    (LAYER_NORM_MODULES, layer_norm),
)
FUNCTION_RULES: Dict[Callable[..., Any], Rule] = {
    **{f: identity for f in G.ELEMENTWISE_FUNCTIONS + G.RESHAPE_FUNCTIONS},
    F.conv2d: conv,
    F.linear: any_linear,
    **{f: pool for f in G.MAX_POOL_FUNCTIONS + G.AVG_POOL_FUNCTIONS + G.ADAPTIVE_FUNCTIONS + (torch.mean,)},
    **{f: add for f in G.ADD_FUNCTIONS},
    **{f: scale for f in G.SCALE_FUNCTIONS},  # products with a squeeze-and-excitation gate too
    **{f: cat for f in G.CAT_FUNCTIONS},
    F.pad: pad,
    F.interpolate: interpolate,
    **{f: move for f in MOVE_FUNCTIONS},  # transpose, permute, indexing (a part of a split too)
    **{f: split_parts for f in SPLIT_FUNCTIONS},
    **{f: layer_norm for f in LAYER_NORM_FUNCTIONS},
}
METHOD_RULES: Dict[str, Rule] = {
    **{m: identity for m in G.ELEMENTWISE_METHODS + G.RESHAPE_METHODS},
    **{m: add for m in G.ADD_METHODS},
    **{m: scale for m in G.SCALE_METHODS},
    "mean": pool,
    **{m: move for m in MOVE_METHODS},
    **{m: split_parts for m in SPLIT_METHODS},
}
READS_ACTIVATIONS: Tuple[Rule, ...] = (conv, linear, any_linear, pool, add, interpolate)


def rule_for(node: fx.Node, graph_module: fx.GraphModule) -> Optional[Rule]:
    """The rule for a node's operation, or ``None`` when there is none."""
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        return next((rule for types, rule in MODULE_RULES if isinstance(module, types)), None)
    if node.op == "call_function":
        try:
            return FUNCTION_RULES.get(node.target)  # type: ignore[arg-type]
        except TypeError:  # an unhashable callable
            return None
    if node.op == "call_method":
        return METHOD_RULES.get(str(node.target))
    return None
