"""NodeBacktrack's fully connected rule: which inputs a kept output node of a linear layer continues through."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.fx as fx
from torch import Tensor

from captum_ext._utils.chunking import budget_chunks
from captum_ext.attr._backtrack_core import Selection, Values, Walk, arg, strongest_first


def _feeds_from_spatial(walk: Walk, node: fx.Node, values: Values) -> bool:
    """Whether a linear layer's input is a flattened spatial map (through reshapes/elementwise ops only); a
    globally pooled ``C×1×1`` map is a plain vector."""
    current = node
    while True:
        if values[current].dim() == 4:
            return values[current].shape[-2:].numel() > 1
        if current.op == "placeholder" or not walk.passes_through(current):
            return False
        current = walk.first_input(current)


# Weight matrices up to this many elements (ResNet-50's classifier) take the positive rule as two matrix products
# with their sign patterns in float64; larger ones (VGG's classifier) go node by node. Larger transient matrices
# (32 MB each for VGG's last layer) raise glibc's mmap threshold, after which the node-by-node chunks of the next
# layer stay in the heap and fragment it: measured on VGG16, 1.5 GB peak instead of 0.6 GB.
SIGN_PRODUCT_LIMIT = 1 << 21


def _positive_by_signs(weight: Tensor, activations: Tensor, sel: Selection) -> Selection:
    """The positive rule for a whole batch in two matrix products: ``A_j W_ij > 0`` exactly when both factors
    are non-zero with the same sign, so the paths reaching input ``j`` of image ``b`` number
    ``[A_bj > 0] Σ_i C_bi [W_ij > 0] + [A_bj < 0] Σ_i C_bi [W_ij < 0]``, with ``C`` the kept nodes' counts (integer
    sums in float64: exact). One host synchronisation (the number of kept inputs)."""
    # Made per call, not cached: long-lived copies of the weights would cost memory for 2 cheap operations.
    positive, negative = (weight > 0).to(torch.float64), (weight < 0).to(torch.float64)
    counts = torch.zeros(activations.shape[0], weight.shape[0], dtype=torch.float64, device=activations.device)
    counts.index_put_((sel.batch, sel.flat), sel.count, accumulate=True)
    dense = (activations > 0) * (counts @ positive) + (activations < 0) * (counts @ negative)
    rows, cols = dense.nonzero(as_tuple=True)
    return Selection(rows, cols, dense[rows, cols])


def linear_parameters(walk: Walk, node: fx.Node, values: Values) -> Tuple[Tensor, Optional[Tensor]]:
    """A linear layer's ``(weight, bias)``, for a module or an ``F.linear`` call."""
    if node.op == "call_module":
        module = walk.module(node)
        return module.weight, module.bias
    bias = arg(node, 2, "bias", None)
    return values[node.args[1]], values[bias] if isinstance(bias, fx.Node) else bias


def linear(walk: Walk, node: fx.Node, sel: Selection, values: Values) -> List[Tuple[fx.Node, Selection]]:
    """Fully connected: every input with a positive contribution ``A_j W_ij`` (or the top n of them). Fed by a
    flattened spatial map, the walk's spatial rule: the argmax over ``C×H×W``, every positive contribution or the
    top n."""
    parent = walk.first_input(node)
    weight, bias = linear_parameters(walk, node, values)
    activations = values[parent]
    if activations.dim() != 2:
        raise NotImplementedError(f"{walk.describe(node)}: linear layers on inputs shaped "
                                  f"{tuple(activations.shape)} are not supported (need N×features)")
    spatial = _feeds_from_spatial(walk, parent, values)
    rule, top_n = (walk.spatial_fc_rule, walk.spatial_fc_top_n) if spatial else (walk.fc_rule, walk.fc_top_n)
    one_argmax = rule == "argmax"
    use_bias = walk.include_bias and bias is not None
    if rule == "positive" and not use_bias and weight.numel() <= SIGN_PRODUCT_LIMIT:
        return [(parent, _positive_by_signs(weight, activations, sel))]
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
            top = strongest_first(contrib, min(top_n, contrib.shape[1]))
            positive &= torch.zeros_like(positive).scatter_(1, top, True)
        assert dense is not None
        dense.index_add_(0, b, positive.to(torch.float64) * c[:, None])
    if dense is not None:
        rows, cols = dense.nonzero(as_tuple=True)
        batches, counts = [rows], [dense[rows, cols]]
        flats = [cols if columns is None else columns[cols]]
    return [(parent, Selection(torch.cat(batches), torch.cat(flats), torch.cat(counts)))]
