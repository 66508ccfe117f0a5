"""When a NodeBacktrack walk removes duplicate kept nodes, and how.

Rules add entries without looking for duplicates (that would need a host synchronisation per rule); the walk unites
and de-duplicates a value's kept nodes only where it matters, each time at the cost of one synchronisation.
"""
from __future__ import annotations

from typing import Sequence, Set

import torch
import torch.fx as fx

from captum_ext._utils.chunking import chunk_budget, launch_bound
from captum_ext.attr._backtrack_core import Selection

# De-duplicate after this many rules since the last time, or when the selection grew this many times over.
COMPACT_AFTER_RULES = 2
COMPACT_AFTER_GROWTH = 4


# De-duplicate by scattering into one slot per node of the value (no sort) when the value has at most this many
# times as many nodes as there are entries (on the CPU), or fits the chunk budget (on an accelerator, where a sort
# costs many launches).
DENSE_RATIO = 16


def _dense(entries: int, total: int, device: torch.device) -> bool:
    if launch_bound(device):
        return total <= chunk_budget(device)
    return total <= DENSE_RATIO * entries


def compact(parts: Sequence[Selection], numel: int, total: int, collapse: bool) -> Selection:
    """Union of selections of the same value: one entry per node, counts added up (or 1 for every live node with
    ``collapse``, the paper's de-duplication), dead entries dropped. ``total`` is the value's element count over
    the batch. One host synchronisation (the number of distinct nodes).

    Args:
        parts (sequence of Selection): selections of the same value.
        numel (int): the value's element count per example.
        total (int): the value's element count over the batch.
        collapse (bool): count each live node once.

    Returns:
        Selection: the united selection, ordered by example and index.
    """
    batch, flat, count = (parts[0].batch, parts[0].flat, parts[0].count) if len(parts) == 1 else (
        torch.cat([p.batch for p in parts]), torch.cat([p.flat for p in parts]), torch.cat([p.count for p in parts]))
    if batch.numel() == 0:
        return Selection(batch, flat, count)
    dense = _dense(len(batch), total, batch.device)
    if dense and collapse and not launch_bound(batch.device):
        # Live nodes flagged in one byte per node of the value (dead entries flag a spare slot past them): an
        # eighth of the memory traffic of summed counts, about twice as fast on ResNet-50's largest values on the
        # CPU. An accelerator, bound by launches rather than memory, takes the summed counts (two operations fewer).
        flags = torch.zeros(total + 1, dtype=torch.bool, device=batch.device)
        flags.index_fill_(0, torch.where(count > 0, batch * numel + flat, total), True)
        nodes = flags[:total].nonzero().squeeze(1)
        return Selection(nodes // numel, nodes % numel, torch.ones_like(nodes, dtype=count.dtype), 0,
                         int(nodes.numel()))
    if dense:
        # Counts scattered into one slot per node of the value; the occupied slots, in order, are the nodes.
        summed = torch.zeros(total, dtype=count.dtype, device=count.device).index_add_(0, batch * numel + flat, count)
        nodes = summed.nonzero().squeeze(1)
        counts = torch.ones_like(nodes, dtype=count.dtype) if collapse else summed.index_select(0, nodes)
        return Selection(nodes // numel, nodes % numel, counts, 0, int(nodes.numel()))
    # Dead entries share the key `total`, past every node, so they sort last and leave as one entry of count 0.
    key = torch.where(count > 0, batch * numel + flat, total)
    unique, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(unique.numel(), dtype=count.dtype, device=count.device).index_add_(0, inverse, count)
    if collapse:
        summed = (summed > 0).to(count.dtype)
    unique = unique.clamp_(max=total - 1)  # the dead entry, if any, keeps a valid index
    return Selection(unique // numel, unique % numel, summed, 0, int(unique.numel()))


def compacted(parts: Sequence[Selection], numel: int, total: int, passes_through: bool, collapse: bool,
              next_to_inputs: bool) -> Selection:
    """A node's kept nodes, united and de-duplicated where it matters: where several paths meet, next to the
    inputs, and where duplicates may have piled up (two rules or a fourfold growth since the last time). In
    between, selections keep a size known on the host. Pass-through operations (ReLU, flatten, …) keep the counts
    so that the arrivals at the input still count the kept nodes of the first layer; elsewhere ``collapse`` (the
    paper's de-duplication) counts each node once."""
    collapse = collapse and not passes_through
    if len(parts) > 1:
        return compact(parts, numel, total, collapse)
    selection = parts[0]
    if passes_through:
        return selection
    if (next_to_inputs or selection.since >= COMPACT_AFTER_RULES or len(selection) > total
            or len(selection) >= COMPACT_AFTER_GROWTH * max(selection.base, 1)):
        return compact(parts, numel, total, collapse)
    return selection


def layers_next_to_inputs(graph_module: fx.GraphModule, pass_through: Set[fx.Node]) -> Set[fx.Node]:
    """Nodes outside ``pass_through`` whose inputs reach a placeholder through ``pass_through`` nodes only: their
    kept nodes are the ones whose arrivals the hits count, so they are de-duplicated exactly there (elsewhere
    de-duplication may wait: it does not change which nodes a rule keeps)."""
    near: Set[fx.Node] = set()
    last: Set[fx.Node] = set()
    for node in graph_module.graph.nodes:  # topological order: inputs come first
        if node.op in ("output", "get_attr"):
            continue
        feeds = any(parent in near for parent in node.all_input_nodes)
        if node.op == "placeholder" or (node in pass_through and feeds):
            near.add(node)
        elif feeds:
            last.add(node)
    return last
