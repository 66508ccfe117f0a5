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
from captum_ext._utils.chunking import budget_chunks, chunk_budget
from captum_ext._utils.folding import fold_bn
from captum_ext.attr._backtrack_core import Rule, Selection, Values, Walk, arg, pair, windows
from captum_ext.attr._backtrack_pooling import interpolate, pool
from captum_ext.attr._backtrack_routing import add, cat, identity, pad, scale, scale_problem

__all__ = ["READS_ACTIVATIONS", "conv", "identity", "linear", "rule_for", "scale", "scale_problem"]

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


# Weight matrices up to this many elements take the positive rule as two matrix products (their sign patterns are
# kept in float64, 8 bytes per weight); larger ones (VGG's 25088-wide first layer) go node by node.
SIGN_PRODUCT_LIMIT = 1 << 22


def _positive_by_signs(walk: Walk, node: fx.Node, weight: Tensor, activations: Tensor, sel: Selection
                       ) -> Selection:
    """The positive rule for a whole batch in two matrix products: ``A_j W_ij > 0`` exactly when both factors
    are non-zero with the same sign, so the paths reaching input ``j`` of image ``b`` number
    ``[A_bj > 0] Σ_i C_bi [W_ij > 0] + [A_bj < 0] Σ_i C_bi [W_ij < 0]``, with ``C`` the kept nodes' counts (integer
    sums in float64: exact). One host synchronisation (the number of kept inputs)."""
    key = _versions(weight)
    cached = walk.cache.get(("signs", node))
    if cached is None or cached[0] != key:
        cached = (key, (weight > 0).to(torch.float64), (weight < 0).to(torch.float64))
        walk.cache[("signs", node)] = cached
    _, positive, negative = cached
    counts = torch.zeros(activations.shape[0], weight.shape[0], dtype=torch.float64, device=activations.device)
    counts.index_put_((sel.batch, sel.flat), sel.count, accumulate=True)
    dense = (activations > 0) * (counts @ positive) + (activations < 0) * (counts @ negative)
    rows, cols = dense.nonzero(as_tuple=True)
    return Selection(rows, cols, dense[rows, cols])


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
    if rule == "positive" and not use_bias and weight.numel() <= SIGN_PRODUCT_LIMIT:
        return [(parent, _positive_by_signs(walk, node, weight, activations, sel))]
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


def _versions(*tensors: Optional[Tensor]) -> Tuple[Tuple[int, int], ...]:
    """Identity and in-place version of tensors: changes when a parameter is replaced or updated in place."""
    return tuple((id(t), t._version) for t in tensors if t is not None)


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
    key = _versions(params["weight"], params["bias"], *([] if bn is None else [*bn.parameters(), *bn.buffers()]))
    cached = walk.cache.get(("conv", node))
    if cached is not None and cached[0] == key:
        return cached[1]
    weight, bias = params["weight"], params["bias"]
    if bn is not None:
        weight, bias = fold_bn(weight, bias, bn)
    weight = weight.detach()
    c_out, c_group, kh, kw = weight.shape
    params.update(
        bias=None if bias is None else bias.detach(),
        stride=pair(params["stride"]), padding=pair(params["padding"]), dilation=pair(params["dilation"]),
        fields_weight=weight.permute(0, 2, 3, 1).contiguous(),  # Co×kh×kw×Cg, the fields' layout
        weight_taps=weight.permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_group).contiguous())
    walk.cache[("conv", node)] = (key, params)
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
    sums = rows_matrix.index_select(0, row_base + tap_offsets[0]).mul_(weight_taps[0].index_select(0, out_channel))
    for tap in range(1, len(tap_offsets)):
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
    top = min(walk.conv_top_n, sums.shape[1])
    cols = sums.topk(top, dim=1).indices  # P×top
    alive = sums.gather(1, cols) > 0
    rows = torch.arange(len(sums), device=sums.device)[:, None].expand(-1, top)
    return rows.reshape(-1), cols.reshape(-1), alive.reshape(-1)


def conv(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Convolution: in the kept node's receptive field, the channel with the largest summed contribution
    ``W ⊙ A_rf`` (or the top n, or every positive one), then the position of the largest contribution inside that
    channel's window."""
    parent = walk.first_input(node)
    p = _conv_parameters(walk, node, values)
    bias, stride, padding, dilation, groups = p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"]
    activations = values[parent]
    _, _, height, width = activations.shape
    c_out, kh, kw, c_group = p["fields_weight"].shape
    _, _, h_out, w_out = values[node].shape
    device = sel.flat.device
    # A channels-last copy of the whole input pays off when the kept nodes gather more than a fraction of it;
    # a few nodes in a large early layer gather their fields straight from the input instead.
    by_rows = FIELD_COPY_RATIO * len(sel) * c_group * kh * kw >= activations.numel()
    if by_rows:
        rows_matrix = _channels_last_rows(activations, groups, padding)
        padded_width = width + 2 * padding[1]
        tap_offsets = walk.cache.get(("taps", node, padded_width, device))
        if tap_offsets is None:
            tap_offsets = ((torch.arange(kh, device=device)[:, None] * dilation[0] * padded_width
                            + torch.arange(kw, device=device) * dilation[1]) * groups).reshape(-1)
            walk.cache[("taps", node, padded_width, device)] = tap_offsets
    out_per_group = c_out // groups
    batches, flats, counts = [], [], []
    # Per kept node, the channels-last way holds Cg sums at a time; the fields way Cg·kh·kw products.
    for part in budget_chunks(len(sel), c_group * (1 if by_rows else kh * kw), chunk_budget(device)):
        b, f, c = sel.batch[part], sel.flat[part], sel.count[part]
        co, y, x = f // (h_out * w_out), (f // w_out) % h_out, f % w_out
        group = co // out_per_group if groups > 1 else None
        window_rows, window_cols, inside = windows(y, x, (kh, kw), stride, padding, dilation, (height, width))
        if by_rows:
            # The window's top-left input row in the padded matrix (window rows/columns start at -padding).
            top_left = (b * (height + 2 * padding[0]) + y * stride[0]) * padded_width + x * stride[1]
            top_left = top_left * groups + group if group is not None else top_left
            sums = _tap_sums(rows_matrix, p["weight_taps"], top_left, tap_offsets, co)  # P×Cg
        else:
            first_channel = group * c_group if group is not None else torch.zeros_like(co)
            contrib = _gather_fields(activations, b, first_channel, c_group, window_rows, window_cols, inside)
            contrib.mul_(p["fields_weight"].index_select(0, co))
            sums = contrib.sum(dim=(1, 2))  # P×Cg
        if walk.include_bias and bias is not None:
            sums = sums + bias[co][:, None] * (kh * kw)  # the paper's W * A + b, summed over x and y
        rows, cols, alive = _chosen_channels(walk, sums)
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        if by_rows:
            # Only the chosen channels' windows are needed: kh·kw values per (node, channel).
            taps = pick(top_left)[:, None] + tap_offsets  # P'×taps rows of the padded matrix
            chosen = rows_matrix.view(-1)[taps * c_group + cols[:, None]].view(-1, kh, kw)
            window = chosen.mul_(p["fields_weight"][pick(co), :, :, cols])
        else:
            window = contrib[torch.arange(len(b), device=device) if rows is None else rows, :, :, cols]
        node_inside = pick(inside)
        window = window.masked_fill(~node_inside, float("-inf")).flatten(1)  # never the padding
        best = window.argmax(dim=1)
        # A window wholly in the padding (padding wider than the kernel's reach) has no input: its path ends.
        reaches = node_inside.flatten(1).any(dim=1)
        alive = reaches if alive is None else alive & reaches
        by = pick(window_rows).gather(1, (best // kw)[:, None])[:, 0].clamp_(0, height - 1)
        bx = pick(window_cols).gather(1, (best % kw)[:, None])[:, 0].clamp_(0, width - 1)
        channel = cols if group is None else pick(group) * c_group + cols
        batches.append(pick(b)), flats.append((channel * height + by) * width + bx)
        counts.append(pick(c) * alive)
    if len(batches) == 1:
        return [(parent, Selection(batches[0], flats[0], counts[0]))]
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
