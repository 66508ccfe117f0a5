"""The layer rules of :class:`captum_ext.NodeBacktrack`, as a table from operations to rules.

Each rule maps the kept nodes of one graph value (a :class:`Selection`) to kept nodes of the values it was computed
from. The tables at the end say which rule handles which module type, function or tensor method; an operation in
none of them has no rule, and NodeBacktrack refuses the model naming it.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.chunking import budget_chunks
from captum_ext._utils.folding import fold_bn
from captum_ext.attr._backtrack_core import Rule, Selection, Values, Walk, arg, pair, windows
from captum_ext.attr._backtrack_pooling import interpolate, pool

# ---------------------------------------------------------------------------------------------------------------------
# Shape-preserving operations
# ---------------------------------------------------------------------------------------------------------------------

def identity(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """ReLU-family, dropout, BatchNorm, flatten/view/reshape: the same node of the input."""
    parent = walk.first_input(node)
    out, inp = values[node], values[parent]
    if out.shape[0] != inp.shape[0] or out[0].numel() != inp[0].numel():
        raise NotImplementedError(f"{walk.describe(node)} changes the batch dimension or the number of elements "
                                  f"({tuple(inp.shape)} → {tuple(out.shape)})")
    return [(parent, sel)]


def _operands(walk: Walk, node: fx.Node, values: Values) -> Tuple[List[fx.Node], List[fx.Node]]:
    """The tensor operands of a binary operation, split into input-dependent ones and constants."""
    tensors = [a for a in node.args[:2] if isinstance(a, fx.Node) and isinstance(values[a], Tensor)]
    return [a for a in tensors if a in walk.dependent], [a for a in tensors if a not in walk.dependent]


def _through(walk: Walk, node: fx.Node, parent: fx.Node, sel: Selection, values: Values
             ) -> List[Tuple[fx.Node, Selection]]:
    if values[parent].shape != values[node].shape:
        raise NotImplementedError(f"{walk.describe(node)}: broadcasting the attributed operand "
                                  f"{tuple(values[parent].shape)} to {tuple(values[node].shape)} is not supported")
    return [(parent, sel)]


def add(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Residual add: the operand with the larger value at the node. A constant operand (a bias, a branch fed only
    by ``additional_forward_args``) is never followed: the node's path continues through the other one."""
    if node.kwargs.get("alpha", 1) != 1:
        raise NotImplementedError(f"{walk.describe(node)}: add with alpha is not supported")
    dependent, _ = _operands(walk, node, values)
    if len(dependent) == 1:
        return _through(walk, node, dependent[0], sel, values)
    if len(dependent) != 2:
        raise NotImplementedError(f"{walk.describe(node)}: only a + b of two tensors is supported")
    a, b = dependent
    va, vb, out = values[a], values[b], values[node]
    if va.shape != out.shape or vb.shape != out.shape:
        raise NotImplementedError(f"{walk.describe(node)}: broadcasting add {tuple(va.shape)} + {tuple(vb.shape)} "
                                  f"is not supported")
    left = va.reshape(va.shape[0], -1)[sel.batch, sel.flat] >= vb.reshape(vb.shape[0], -1)[sel.batch, sel.flat]
    return [(a, sel.take(left)), (b, sel.take(~left))]


def scale_problem(node: fx.Node, dependent: Set[fx.Node], describe: Callable[[fx.Node], str]) -> Optional[str]:
    """Why :func:`scale` cannot handle a node (both operands attributed, or an attributed divisor), or ``None``."""
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node) and a in dependent]
    divides = node.target in (operator.truediv, torch.div, "div")
    if len(operands) == 1 and not (divides and node.args[0] is not operands[0]):
        return None
    return (f"{describe(node)}: only products, quotients and differences with one attributed operand are "
            f"supported (pass the other tensor, e.g. a mask, through `additional_forward_args`)")


def scale(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Multiplication or division by a constant (a mask given through ``additional_forward_args``, a target
    scale), or subtraction of one: the same node of the attributed operand."""
    problem = scale_problem(node, walk.dependent, walk.describe)
    if problem is not None:
        raise NotImplementedError(problem)
    dependent, _ = _operands(walk, node, values)
    return _through(walk, node, dependent[0], sel, values)


def cat(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Channel concatenation: the input each channel came from (constant parts end the path)."""
    parts = node.args[0]
    dim = arg(node, 1, "dim", 0)
    out = values[node]
    if not isinstance(parts, (list, tuple)) or dim % out.dim() != 1:
        raise NotImplementedError(f"{walk.describe(node)}: only concatenation along the channel dimension (1) is "
                                  f"supported, got dim={dim}")
    inner = out[0, 0].numel()
    channel = sel.flat // inner
    result = []
    offset = 0
    for part in parts:
        size = values[part].shape[1]
        keep = (channel >= offset) & (channel < offset + size)
        if bool(keep.any()) and part in walk.dependent:
            result.append((part, sel.take(keep, sel.flat - offset * inner)))
        offset += size
    return result


def pad(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Zero padding: positions inside the image (padding ends the path)."""
    parent = walk.first_input(node)
    if node.op == "call_module":
        module = walk.module(node)
        left, _, top, _ = module.padding
        if isinstance(module, nn.ConstantPad2d) and module.value != 0:
            raise NotImplementedError(f"{walk.describe(node)}: only zero padding is supported")
    else:
        widths = list(arg(node, 1, "pad", ()))
        mode = arg(node, 2, "mode", "constant")
        value = arg(node, 3, "value", None)
        if mode != "constant" or (value not in (None, 0, 0.0)) or len(widths) not in (2, 4):
            raise NotImplementedError(f"{walk.describe(node)}: only zero padding of the last two dimensions is "
                                      f"supported")
        left = widths[0]
        top = widths[2] if len(widths) == 4 else 0
    inp, out = values[parent], values[node]
    height, width = inp.shape[-2:]
    h_out, w_out = out.shape[-2:]
    plane = sel.flat // (h_out * w_out)
    y = (sel.flat // w_out) % h_out - top
    x = sel.flat % w_out - left
    keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    return [(parent, sel.take(keep, (plane * height + y) * width + x))]


# ---------------------------------------------------------------------------------------------------------------------
# Weighted layers
# ---------------------------------------------------------------------------------------------------------------------

def _feeds_from_spatial(walk: Walk, node: fx.Node, values: Values) -> bool:
    """Whether a linear layer's input is a flattened spatial map (through reshapes/elementwise ops only); a
    globally pooled ``C×1×1`` map is a plain vector."""
    current = node
    while True:
        if values[current].dim() == 4:
            return values[current].shape[-2:].numel() > 1
        if current.op == "placeholder" or rule_for(current, walk.graph_module) is not identity:
            return False
        current = walk.first_input(current)


def linear(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Fully connected: every input with a positive contribution ``A_j W_ij`` (or the top n of them). Fed by a
    flattened spatial map, the walk's spatial rule: the argmax over ``C×H×W``, every positive contribution or the
    top n."""
    parent = walk.first_input(node)
    if node.op == "call_module":
        module = walk.module(node)
        weight, bias = module.weight, module.bias
    else:
        weight, bias = values[node.args[1]], arg(node, 2, "bias", None)
        bias = values[bias] if isinstance(bias, fx.Node) else bias
    activations = values[parent]
    if activations.dim() != 2:
        raise NotImplementedError(f"{walk.describe(node)}: linear layers on inputs shaped "
                                  f"{tuple(activations.shape)} are not supported (need N×features)")
    spatial = _feeds_from_spatial(walk, parent, values)
    rule, top_n = (walk.spatial_fc_rule, walk.spatial_fc_top_n) if spatial else (walk.fc_rule, walk.fc_top_n)
    one_argmax = rule == "argmax"
    use_bias = walk.include_bias and bias is not None
    # Inputs that are zero in every image contribute exactly 0: leave them out of the products (post-ReLU
    # activations are mostly zero). Exact: a positive best beats every zero; other rows are redone in full.
    columns = None
    if not use_bias:
        active = (activations != 0).any(dim=0).nonzero()[:, 0]
        if active.numel() < activations.shape[1] // 2:  # compacting pays off only when most inputs are zero
            columns = active
            compact = activations.index_select(1, columns)
    batches, flats, counts = [], [], []
    # The positive rules can keep thousands of inputs per node: accumulate path counts densely per image
    # (images × inputs) instead of listing every (node, input) pair.
    width = activations.shape[1] if columns is None else columns.numel()
    dense = None if one_argmax else torch.zeros(activations.shape[0], width, dtype=torch.float64,
                                             device=activations.device)
    for part in budget_chunks(len(sel), activations.shape[1]):  # full rows of the weight are gathered first
        b, i, c = sel.batch[part], sel.flat[part], sel.count[part]
        if columns is not None:
            contrib = weight.index_select(0, i).index_select(1, columns).mul_(compact.index_select(0, b))
        else:
            contrib = activations.index_select(0, b).mul_(weight.index_select(0, i))
            if use_bias:
                contrib += bias[i][:, None]
        if one_argmax:
            if contrib.shape[1] == 0:
                best_value = torch.zeros(len(b), dtype=contrib.dtype, device=contrib.device)
                j = torch.zeros(len(b), dtype=torch.long, device=contrib.device)
            else:
                best_value, j = contrib.max(dim=1)
                if columns is not None:
                    j = columns[j]
            if columns is not None:
                redo = (best_value <= 0).nonzero()[:, 0]
                if redo.numel():
                    full = activations.index_select(0, b[redo]) * weight.index_select(0, i[redo])
                    j[redo] = full.argmax(dim=1)
            batches.append(b), flats.append(j), counts.append(c)
            continue
        positive = contrib > 0
        if rule == "top_n" and contrib.shape[1]:
            top = contrib.topk(min(top_n, contrib.shape[1]), dim=1).indices
            positive &= torch.zeros_like(positive).scatter_(1, top, True)
        assert dense is not None
        dense.index_add_(0, b, positive.to(torch.float64) * c[:, None])
    if dense is not None:
        rows, cols = dense.nonzero(as_tuple=True)
        batches, counts = [rows], [dense[rows, cols]]
        flats = [cols if columns is None else columns[cols]]
    return [(parent, Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]


def _conv_parameters(walk: Walk, node: fx.Node, values: Values) -> Dict[str, Any]:
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
    weight, bias = params["weight"], params["bias"]
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(walk.module(users[0]), nn.BatchNorm2d):
        weight, bias = fold_bn(weight, bias, walk.module(users[0]))
    params["weight"], params["bias"] = weight.detach(), None if bias is None else bias.detach()
    return params


# The channels-last copy of a convolution's input is made when the kept nodes' fields hold at least 1/8 of its
# elements (measured on VGG16 and ResNet-50 at 224²: below that, gathering from the input directly is faster).
FIELD_COPY_RATIO = 8


def _channels_last_rows(activations: Tensor, groups: int, padding: Tuple[int, int]) -> Tensor:
    """The zero-padded input as a matrix ``(N·Hp·Wp·G)×Cg``: one row per (image, position, group), its channels
    contiguous, so a kept node's input at one kernel tap is a single row (about five times faster to gather and
    multiply tap by tap than to copy whole receptive fields)."""
    ph, pw = padding
    padded = F.pad(activations, (pw, pw, ph, ph)) if ph or pw else activations
    return padded.permute(0, 2, 3, 1).contiguous().view(-1, activations.shape[1] // groups)


def _tap_sums(rows_matrix: Tensor, weight_taps: Tensor, row_base: Tensor, tap_offsets: Tensor, out_channel: Tensor
              ) -> Tensor:
    """``P×Cg``: each kept node's contribution summed over its window, per input channel, one kernel tap at a time
    (``row_base + tap_offsets[t]`` is the node's input row at tap ``t``; ``weight_taps`` is ``taps×Co×Cg``)."""
    sums = torch.zeros(len(row_base), rows_matrix.shape[1], dtype=rows_matrix.dtype, device=rows_matrix.device)
    for tap in range(len(tap_offsets)):
        sums.addcmul_(rows_matrix.index_select(0, row_base + tap_offsets[tap]),
                      weight_taps[tap].index_select(0, out_channel))
    return sums


def _gather_fields(activations: Tensor, batch: Tensor, first_channel: Tensor, c_group: int, rows: Tensor,
                   cols: Tensor, inside: Tensor) -> Tensor:
    """The receptive fields ``P×kh×kw×Cg`` of the given nodes, read straight from the ``N×C×H×W`` input (zero
    outside it), from their :func:`~captum_ext.attr._backtrack_core.windows`."""
    _, channels, height, width = activations.shape
    plane = batch[:, None] * channels + first_channel[:, None] + torch.arange(c_group, device=batch.device)  # P×Cg
    index = ((plane[:, None, None, :] * height + rows.clamp(0, height - 1)[:, :, None, None]) * width
             + cols.clamp(0, width - 1)[:, None, :, None])
    return activations.reshape(-1)[index].mul_(inside[..., None])


def conv(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Convolution: in the kept node's receptive field, the channel with the largest summed contribution
    ``W ⊙ A_rf`` (or the top n, or every positive one), then the position of the largest contribution inside that
    channel's window."""
    parent = walk.first_input(node)
    p = _conv_parameters(walk, node, values)
    bias = p["bias"]
    activations = values[parent]
    _, _, height, width = activations.shape
    c_out, c_group, kh, kw = p["weight"].shape
    _, _, h_out, w_out = values[node].shape
    stride, padding, dilation = pair(p["stride"]), pair(p["padding"]), pair(p["dilation"])
    # A channels-last copy of the whole input pays off when the kept nodes gather more than a fraction of it;
    # a few nodes in a large early layer gather their fields straight from the input instead.
    groups = p["groups"]
    by_rows = FIELD_COPY_RATIO * len(sel) * c_group * kh * kw >= activations.numel()
    if by_rows:
        rows_matrix = _channels_last_rows(activations, groups, padding)
        padded_width = width + 2 * padding[1]
        weight_taps = p["weight"].permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_group).contiguous()
        tap_offsets = ((torch.arange(kh, device=sel.flat.device)[:, None] * dilation[0] * padded_width
                        + torch.arange(kw, device=sel.flat.device) * dilation[1]) * groups).reshape(-1)
    weight = p["weight"].permute(0, 2, 3, 1).contiguous()  # Co×kh×kw×Cg, the fields' layout
    out_per_group = c_out // groups
    device = sel.flat.device
    batches, flats, counts = [], [], []
    for part in budget_chunks(len(sel), c_group * kh * kw):
        b, f, c = sel.batch[part], sel.flat[part], sel.count[part]
        co, y, x = f // (h_out * w_out), (f // w_out) % h_out, f % w_out
        group = co // out_per_group
        window_rows, window_cols, inside = windows(y, x, (kh, kw), stride, padding, dilation, (height, width))
        if by_rows:
            # The window's top-left input row in the padded matrix (window rows/columns start at -padding).
            top_left = ((b * (height + 2 * padding[0]) + window_rows[:, 0] + padding[0]) * padded_width
                        + window_cols[:, 0] + padding[1]) * groups + group
            sums = _tap_sums(rows_matrix, weight_taps, top_left, tap_offsets, co)  # P×Cg
        else:
            contrib = _gather_fields(activations, b, group * c_group, c_group, window_rows, window_cols, inside)
            contrib.mul_(weight.index_select(0, co))
            sums = contrib.sum(dim=(1, 2))  # P×Cg
        if walk.include_bias and bias is not None:
            sums = sums + bias[co][:, None] * (kh * kw)  # the paper's W * A + b, summed over x and y
        if walk.conv_rule == "max":
            rows = torch.arange(len(b), device=device)
            cols = sums.argmax(dim=1)
        else:
            keep = sums > 0
            if walk.conv_rule == "top_n" and walk.conv_top_n < sums.shape[1]:
                keep &= torch.zeros_like(keep).scatter_(1, sums.topk(walk.conv_top_n, dim=1).indices, True)
            rows, cols = keep.nonzero(as_tuple=True)
        iy, ix = window_rows[rows], window_cols[rows]
        if by_rows:
            # Only the chosen channels' windows are needed: kh·kw values per (node, channel).
            taps = top_left[rows][:, None] + tap_offsets  # P'×taps rows of the padded matrix
            chosen = rows_matrix.view(-1)[taps * c_group + cols[:, None]].view(-1, kh, kw)
            window = chosen.mul_(weight[co[rows], :, :, cols])
        else:
            window = contrib[rows, :, :, cols]
        window = window.masked_fill(~inside[rows], float("-inf")).flatten(1)  # never the padding
        # A window wholly in the padding (padding wider than the kernel's reach) has no input: its path ends.
        reaches = inside[rows].flatten(1).any(dim=1)
        rows, window, iy, ix = rows[reaches], window[reaches], iy[reaches], ix[reaches]
        best = window.argmax(dim=1)
        by, bx = iy.gather(1, (best // kw)[:, None])[:, 0], ix.gather(1, (best % kw)[:, None])[:, 0]
        channel = group[rows] * c_group + cols[reaches]
        batches.append(b[rows]), flats.append((channel * height + by) * width + bx), counts.append(c[rows])
    return [(parent, Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]


# ---------------------------------------------------------------------------------------------------------------------
# The table: which operation takes which rule
# ---------------------------------------------------------------------------------------------------------------------

MODULE_RULES: Tuple[Tuple[Tuple[type, ...], Rule], ...] = (
    (G.ELEMENTWISE_MODULES + (nn.Flatten,), identity),
    ((nn.Conv2d,), conv),
    ((nn.Linear,), linear),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), pool),
    ((nn.ZeroPad2d, nn.ConstantPad2d), pad),
)
FUNCTION_RULES: Dict[Callable[..., Any], Rule] = {
    **{f: identity for f in G.ELEMENTWISE_FUNCTIONS + G.RESHAPE_FUNCTIONS},
    F.conv2d: conv,
    F.linear: linear,
    **{f: pool for f in G.MAX_POOL_FUNCTIONS + G.AVG_POOL_FUNCTIONS + G.ADAPTIVE_FUNCTIONS + (torch.mean,)},
    **{f: add for f in G.ADD_FUNCTIONS},
    **{f: scale for f in G.SCALE_FUNCTIONS},
    **{f: cat for f in G.CAT_FUNCTIONS},
    F.pad: pad,
    F.interpolate: interpolate,
}
METHOD_RULES: Dict[str, Rule] = {
    **{m: identity for m in G.ELEMENTWISE_METHODS + G.RESHAPE_METHODS},
    **{m: add for m in G.ADD_METHODS},
    **{m: scale for m in G.SCALE_METHODS},
    "mean": pool,
}
READS_ACTIVATIONS: Tuple[Rule, ...] = (conv, linear, pool, add, interpolate)


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
