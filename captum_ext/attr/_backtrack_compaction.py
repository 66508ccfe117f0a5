"""When a NodeBacktrack walk removes duplicate kept nodes, and how.

Rules add entries without looking for duplicates (that would need a host synchronisation per rule); the walk unites
and de-duplicates a value's kept nodes only where it matters, each time at the cost of one synchronisation.
"""
from __future__ import annotations

from typing import Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor

from captum_ext._utils.chunking import chunk_budget, launch_bound
from captum_ext.attr import _backtrack_index_kernels as index_kernels
from captum_ext.attr import _backtrack_kernels as kernels
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


class Workspace:
    """Scratch slots that the de-duplications of one walk share on the CPU: a flag per node of the largest value
    so far (all false between uses) and a count per node (only the slots of the nodes at hand are ever written or
    read). Allocated once per walk, they spare each de-duplication a fresh dense array of its value's size, whose
    zeroing and first-touch page faults cost more than the de-duplication itself."""

    def __init__(self) -> None:
        self.flags: Optional[Tensor] = None
        self.counts: Optional[Tensor] = None

    def slots(self, total: int, count: Tensor) -> Tuple[Tensor, Tensor]:
        """``total + 1`` flags (false) and counts (undefined) on ``count``'s device, in its dtype; the last slot
        takes dead entries.

        Args:
            total (int): the value's element count over the batch.
            count (Tensor): the entries' counts.

        Returns:
            tuple: ``(flags, counts)``.
        """
        if self.flags is None or self.flags.numel() <= total or self.counts.dtype != count.dtype or \
                self.flags.device != count.device:
            self.flags = torch.zeros(total + 1, dtype=torch.bool, device=count.device)
            self.counts = torch.empty(total + 1, dtype=count.dtype, device=count.device)
        return self.flags[:total + 1], self.counts[:total + 1]


def compact(parts: Sequence[Selection], numel: int, total: int, collapse: bool,
            workspace: Optional[Workspace] = None) -> Selection:
    """Union of selections of the same value: one entry per node, counts added up (or 1 for every live node with
    ``collapse``, the paper's de-duplication), dead entries dropped. ``total`` is the value's element count over
    the batch. One host synchronisation (the number of distinct nodes).

    Args:
        parts (sequence of Selection): selections of the same value.
        numel (int): the value's element count per example.
        total (int): the value's element count over the batch.
        collapse (bool): count each live node once.
        workspace (Workspace, optional): scratch slots reused across the walk's de-duplications on the CPU.

    Returns:
        Selection: the united selection, ordered by example and index.
    """
    entries = sum(len(part) for part in parts)
    device = parts[0].batch.device
    if entries == 0:
        return Selection(parts[0].batch, parts[0].flat, parts[0].count)
    dense = _dense(entries, total, device)
    if dense and not launch_bound(device) and kernels.available() and \
            all(part.count.dtype == torch.float64 for part in parts):
        # One compiled pass over the entries (flags) and one over the flags (the nodes, flags cleared again).
        flags, slots = (workspace or Workspace()).slots(total, parts[0].count)
        batch, flat, counts = index_kernels.live_nodes([(p.batch, p.flat, p.count) for p in parts], numel,
                                                       flags[:total], slots, collapse)
        return Selection(batch, flat, counts, 0, len(batch))
    batch, flat, count = (parts[0].batch, parts[0].flat, parts[0].count) if len(parts) == 1 else (
        torch.cat([p.batch for p in parts]), torch.cat([p.flat for p in parts]), torch.cat([p.count for p in parts]))
    if dense and not launch_bound(device):
        # Live nodes flagged in one byte per node of the value (dead entries flag the spare slot past them), read
        # back in order; with summed counts, only the live nodes' count slots are cleared and added to. An eighth
        # of the memory traffic of a dense float64 count array and, with a workspace, no allocation; an
        # accelerator, bound by launches rather than memory, takes the summed counts below (fewer operations).
        flags, slots = (workspace or Workspace()).slots(total, count)
        keys = torch.where(count > 0, batch * numel + flat, total)
        flags.index_fill_(0, keys, True)
        nodes = flags[:total].nonzero().squeeze(1)
        flags.index_fill_(0, keys, False)  # all false again for the next use
        if collapse:
            counts = torch.ones_like(nodes, dtype=count.dtype)
        else:
            counts = slots.index_fill_(0, nodes, 0).index_add_(0, keys, count).index_select(0, nodes)
        return Selection(nodes // numel, nodes % numel, counts, 0, int(nodes.numel()))
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
              next_to_inputs: bool, workspace: Optional[Workspace] = None) -> Selection:
    """A node's kept nodes, united and de-duplicated where it matters: where several paths meet, next to the
    inputs, and where duplicates may have piled up (two rules or a fourfold growth since the last time). In
    between, selections keep a size known on the host. Pass-through operations (ReLU, flatten, …) keep the counts
    so that the arrivals at the input still count the kept nodes of the first layer; elsewhere ``collapse`` (the
    paper's de-duplication) counts each node once."""
    collapse = collapse and not passes_through
    if len(parts) > 1:
        return compact(parts, numel, total, collapse, workspace)
    selection = parts[0]
    if passes_through:
        return selection
    if (next_to_inputs or selection.since >= COMPACT_AFTER_RULES or len(selection) > total
            or len(selection) >= COMPACT_AFTER_GROWTH * max(selection.base, 1)):
        return compact(parts, numel, total, collapse, workspace)
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
