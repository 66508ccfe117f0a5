"""NodeBacktrack's resampling rules: which input element each pooled or resized output element backtracks to."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._utils import graph as G
from captum_ext._utils.chunking import launch_bound
from captum_ext.attr import _backtrack_index_kernels as index_kernels
from captum_ext.attr import _backtrack_kernels as kernels
from captum_ext.attr._backtrack_core import Selection, Values, Walk, arg, at_nodes, pair, take, windows


def _whole_map_windows(kind: str, activations: Tensor, out: Tensor) -> Tensor:
    """For every output element of a global or adaptive pooling, the flat (per-channel) input index it backtracks
    to (windowed pooling reads only the kept nodes' windows, :func:`_window_argmax`)."""
    height, width = activations.shape[-2:]
    if kind == "global":
        flat = activations.flatten(2).argmax(dim=2)
        return flat.view(*flat.shape, 1, 1)
    # adaptive: windows of floor(i·H/Ho) … ceil((i+1)·H/Ho)
    h_out, w_out = out.shape[-2:]
    if height % h_out == 0 and width % w_out == 0:
        kh, kw = height // h_out, width // w_out
        _, index = F.max_pool2d(activations, (kh, kw), (kh, kw), return_indices=True)
        return index
    rows, row_ok = _adaptive_windows(height, h_out, activations.device)
    cols, col_ok = _adaptive_windows(width, w_out, activations.device)
    gathered = activations[:, :, rows][:, :, :, :, cols]  # N×C×Ho×Lh×Wo×Lw
    valid = row_ok[:, :, None, None] & col_ok[None, None, :, :]
    gathered = gathered.masked_fill(~valid, float("-inf")).permute(0, 1, 2, 4, 3, 5).flatten(4)
    best = gathered.argmax(dim=4)  # N×C×Ho×Wo, over Lh·Lw
    n, c = best.shape[:2]
    lw = cols.shape[1]
    row_index = rows[None, None, :, None, :].expand(n, c, h_out, w_out, rows.shape[1])
    col_index = cols[None, None, None, :, :].expand(n, c, h_out, w_out, lw)
    by = torch.gather(row_index, 4, (best // lw)[..., None])[..., 0]
    bx = torch.gather(col_index, 4, (best % lw)[..., None])[..., 0]
    return by * width + bx

def _window_argmax(activations: Tensor, batch: Tensor, channel: Tensor, y: Tensor, x: Tensor,
                   settings: Dict[str, Any]) -> Tensor:
    """For kept output nodes of a windowed pooling, the flat ``H×W`` index of the largest input in each window
    (positions in the padding or past the edge are never chosen; ties go to the first, as in ``max_pool2d``)."""
    _, channels, height, width = activations.shape
    kw = pair(settings["kernel_size"])[1]
    iy, ix, inside = windows(y, x, pair(settings["kernel_size"]), pair(settings["stride"]),
                             pair(settings["padding"]), pair(settings["dilation"]), (height, width))
    plane = (batch * channels + channel)[:, None, None]
    index = (plane * height + iy.clamp(0, height - 1)[:, :, None]) * width + ix.clamp(0, width - 1)[:, None, :]
    window = take(activations, index).masked_fill(~inside, float("-inf")).flatten(1)
    best = window.argmax(dim=1)
    return iy.gather(1, (best // kw)[:, None])[:, 0] * width + ix.gather(1, (best % kw)[:, None])[:, 0]


def _compiled(activations: Tensor) -> bool:
    """Whether the compiled CPU kernel reads the windows (the same choice as the tensor operations, one launch)."""
    return not launch_bound(activations.device) and kernels.available() and \
        activations.dtype in (torch.float32, torch.float64)


def _adaptive_windows(size: int, out_size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    starts = [(i * size) // out_size for i in range(out_size)]
    ends = [-(-((i + 1) * size) // out_size) for i in range(out_size)]
    length = max(e - s for s, e in zip(starts, ends))
    offsets = torch.arange(length, device=device)
    start = torch.tensor(starts, device=device)[:, None]
    end = torch.tensor(ends, device=device)[:, None]
    index = start + offsets
    return index.clamp(max=size - 1), index < end

def _pool_kind(walk: Walk, node: fx.Node) -> Tuple[str, Dict[str, Any]]:
    if node.op == "call_module":
        module = walk.module(node)
        if isinstance(module, nn.MaxPool2d):
            return "window", {"kernel_size": module.kernel_size, "stride": module.stride,
                              "padding": module.padding, "dilation": module.dilation,
                              "ceil_mode": module.ceil_mode}
        if isinstance(module, nn.AvgPool2d):
            return "window", {"kernel_size": module.kernel_size, "stride": module.stride or module.kernel_size,
                              "padding": module.padding, "dilation": 1, "ceil_mode": module.ceil_mode}
        return "adaptive", {}
    if node.target in (F.max_pool2d, F.avg_pool2d):
        kernel = arg(node, 1, "kernel_size", None)
        stride = arg(node, 2, "stride", None) or kernel
        padding = arg(node, 3, "padding", 0)
        if node.target is F.max_pool2d:
            dilation, ceil_mode = arg(node, 4, "dilation", 1), arg(node, 5, "ceil_mode", False)
        else:
            dilation, ceil_mode = 1, arg(node, 4, "ceil_mode", False)
        return "window", {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation,
                          "ceil_mode": ceil_mode}
    if node.target in G.ADAPTIVE_FUNCTIONS:
        return "adaptive", {}
    # mean over the spatial dimensions
    dims = arg(node, 1, "dim", None)
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if sorted(d % 4 for d in dims if isinstance(d, int)) != [2, 3]:
        raise NotImplementedError(f"{walk.describe(node)}: only a mean over the spatial "
                                  f"dimensions (2, 3) of an N×C×H×W tensor is supported, got dim={dims}")
    return "global", {}


def pool(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Max-pooling: the argmax inside the window; average / adaptive pooling and a spatial mean: the argmax of
    the contribution in the window (equal weights: the largest activation)."""
    parent = walk.first_input(node)
    activations = values[parent]
    if activations.dim() != 4:
        raise NotImplementedError(f"{walk.describe(node)}: pooling needs N×C×H×W input")
    height, width = activations.shape[-2:]
    kind, settings = _pool_kind(walk, node)
    if kind == "window":  # only the kept nodes' windows are read
        h_out, w_out = values[node].shape[-2:]
        if _compiled(activations):
            geometry = (pair(settings[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
            flat = index_kernels.window_argmax(activations, sel.batch, sel.flat, (h_out, w_out), *geometry)
            return [(parent, Selection(sel.batch, flat, sel.count))]
        channel = sel.flat // (h_out * w_out)
        chosen = _window_argmax(activations, sel.batch, channel, (sel.flat // w_out) % h_out, sel.flat % w_out,
                                settings)
        return [(parent, Selection(sel.batch, channel * height * width + chosen, sel.count))]
    index = _whole_map_windows(kind, activations, values[node])  # N×C×Ho×Wo, flat index in H×W
    channels = index.shape[1]
    per_channel_out = index[0, 0].numel()
    channel = sel.flat // per_channel_out
    # the output may be N×C (mean without keepdim) or N×C×Ho×Wo; both flatten the same way
    chosen = index.reshape(index.shape[0], -1)[sel.batch, sel.flat]
    if int(channels) * per_channel_out != values[node].shape[1:].numel():
        raise NotImplementedError(f"{walk.describe(node)}: unexpected output shape "
                                  f"{tuple(values[node].shape)}")
    return [(parent, Selection(sel.batch, channel * height * width + chosen, sel.count))]


def _source_positions(out_size: int, in_size: int, mode: str, align_corners: bool, device: torch.device
                      ) -> Tuple[Tensor, Tensor]:
    """For each output row (or column): the two source positions it reads and the weight of the second."""
    dst = torch.arange(out_size, device=device, dtype=torch.float64)
    if mode == "nearest":
        first = (dst * in_size / out_size).floor().long().clamp(max=in_size - 1)
        return torch.stack([first, first], dim=1), torch.zeros(out_size, dtype=torch.float64, device=device)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(dst)
    else:
        src = ((dst + 0.5) * in_size / out_size - 0.5).clamp_min(0)
    first = src.floor().long().clamp(max=in_size - 1)
    second = (first + 1).clamp(max=in_size - 1)
    return torch.stack([first, second], dim=1), src - first


def interpolate(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Resizing (``F.interpolate``, nearest or bilinear): the source pixel with the largest contribution
    (bilinear weight × activation) among those the output pixel reads."""
    parent = walk.first_input(node)
    mode = arg(node, 3, "mode", "nearest")
    align_corners = bool(arg(node, 4, "align_corners", None) or False)
    if mode not in ("nearest", "bilinear"):
        raise NotImplementedError(f"{walk.describe(node)}: only nearest and bilinear resizing are supported, got "
                                  f"mode '{mode}'")
    activations, out = values[parent], values[node]
    if activations.dim() != 4:
        raise NotImplementedError(f"{walk.describe(node)}: resizing needs N×C×H×W input")
    height, width = activations.shape[-2:]
    h_out, w_out = out.shape[-2:]
    rows, row_weight = _source_positions(h_out, height, mode, align_corners, activations.device)
    cols, col_weight = _source_positions(w_out, width, mode, align_corners, activations.device)
    plane = sel.flat // (h_out * w_out)
    y, x = (sel.flat // w_out) % h_out, sel.flat % w_out
    ys, xs = rows[y], cols[x]  # P×2 each
    wy = torch.stack([1 - row_weight[y], row_weight[y]], dim=1)
    wx = torch.stack([1 - col_weight[x], col_weight[x]], dim=1)
    candidates_y = ys[:, :, None].expand(-1, 2, 2).reshape(-1, 4)
    candidates_x = xs[:, None, :].expand(-1, 2, 2).reshape(-1, 4)
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(-1, 4)
    index = (plane[:, None] * height + candidates_y) * width + candidates_x
    contribution = weights * at_nodes([activations], sel.batch[:, None], index)[0].to(torch.float64)
    contribution = contribution.masked_fill(weights == 0, float("-inf"))
    best = contribution.argmax(dim=1)
    chosen = index.gather(1, best[:, None])[:, 0]
    return [(parent, Selection(sel.batch, chosen, sel.count))]
