"""NodeBacktrack's walk: from the explained output's kept nodes back through the graph to the inputs, one rule per
operation, counting the kept nodes that arrive at each input element."""
from __future__ import annotations

from typing import Dict, List, Set

import torch
import torch.fx as fx
from torch import Tensor

from captum_ext.attr._backtrack_compaction import Workspace, compacted
from captum_ext.attr._backtrack_core import Selection, Values, Walk
from captum_ext.attr._backtrack_rules import identity, rule_for


def walk_back(walk: Walk, values: Values, source: fx.Node, start: Selection, deduplicate: bool,
              next_to_inputs: Set[fx.Node]) -> Dict[fx.Node, Tensor]:
    """The hits of each placeholder that a path from ``start`` (kept nodes of ``source``) reaches.

    Args:
        walk (Walk): the walk's graph, rule settings and caches.
        values (dict): the recorded forward pass's values (meta tensors where no rule reads them).
        source (fx.Node): the explained output.
        start (Selection): its kept nodes, one per example.
        deduplicate (bool): count each live node of a value once (the paper's memory vectors).
        next_to_inputs (set): the nodes whose kept nodes are de-duplicated before their rule runs.

    Returns:
        dict: per reached placeholder, float64 counts in its value's shape.
    """
    pending: Dict[fx.Node, List[Selection]] = {source: [start]}
    hits: Dict[fx.Node, Tensor] = {}
    workspace = Workspace()
    device = start.batch.device
    for node in reversed(list(walk.graph_module.graph.nodes)):
        parts = pending.pop(node, None)
        if not parts:
            continue
        value = values[node]
        numel = value.shape[1:].numel()
        if node.op == "placeholder":  # count every kept first-layer node's arrival
            counts = torch.zeros(value.numel(), dtype=torch.float64, device=device)  # value may be meta
            for part in parts:
                counts.index_add_(0, part.batch * numel + part.flat, part.count.to(device))
            hits[node] = counts.view(value.shape)
            continue
        rule = rule_for(node, walk.graph_module)
        assert rule is not None  # the walk's dependent nodes were checked for rules when the model was traced
        selection = compacted(parts, numel, value.numel(), passes_through=rule is identity, collapse=deduplicate,
                              next_to_inputs=node in next_to_inputs, workspace=workspace)
        if not len(selection):  # every path through this value ended
            continue
        steps = selection.since + (rule is not identity)
        for parent, parent_selection in rule(walk, node, selection, values):
            if len(parent_selection) and parent in walk.dependent:
                parent_selection.since, parent_selection.base = steps, selection.base
                pending.setdefault(parent, []).append(parent_selection)
    return hits
