"""NodeBacktrack's launch and synchronisation budget, guarded on the CPU.

On a GPU the walk is bound by kernel launches and host synchronisations, not arithmetic. Every dispatched ATen
operation is a launch there and the same operations are dispatched on every device, so counting them on the CPU
(:func:`captum_ext.testing.count_ops`) guards the GPU behaviour: a fixed number of operations per graph node, whatever
the batch, and few host synchronisations. :func:`captum_ext.testing.accelerator_code_paths` makes the CPU take the
GPU's code paths (whole windows per gather, chunks sized for an accelerator's memory).
"""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import torch
from torch import nn

from captum_ext import NodeBacktrack
from captum_ext.testing import OpCounts, accelerator_code_paths, count_ops

torchvision = pytest.importorskip("torchvision")

MAX_OPS = 3500  # per attribute call, ResNet-50 at 112²
MAX_SYNCS = 60
BATCH_GROWTH = 1.05  # batch 8 may dispatch at most 5 % more operations than batch 1
RULE_SETS = {"default": {}, "two_channel": NodeBacktrack.TWO_CHANNEL_RULES}


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def counted(explainer: NodeBacktrack, batch: int) -> OpCounts:
    x = torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(batch))
    target = torch.arange(batch) % 1000
    explainer.attribute(x, target=target)  # the first call traces and builds the index tables
    with count_ops() as counts:
        explainer.attribute(x, target=target)
    return counts


@pytest.fixture(scope="module")
def measured(resnet50: nn.Module) -> Dict[Tuple[str, str, int], OpCounts]:
    result = {}
    for name, rules in RULE_SETS.items():
        explainer = NodeBacktrack(resnet50, **rules)
        for batch in (1, 8):
            with accelerator_code_paths():
                result[name, "accelerator", batch] = counted(explainer, batch)
            result[name, "cpu", batch] = counted(explainer, batch)
    return result


@pytest.mark.parametrize("rules", list(RULE_SETS))
@pytest.mark.parametrize("batch", [1, 8])
def test_accelerator_path_stays_within_the_op_and_sync_budget(measured, rules, batch):
    counts = measured[rules, "accelerator", batch]
    assert counts.total <= MAX_OPS, counts.by_name.most_common(12)
    assert counts.syncs <= MAX_SYNCS, dict(counts.syncs_by_name)


@pytest.mark.parametrize("rules", list(RULE_SETS))
def test_accelerator_path_op_count_does_not_grow_with_the_batch(measured, rules):
    one, eight = measured[rules, "accelerator", 1], measured[rules, "accelerator", 8]
    assert eight.total <= BATCH_GROWTH * one.total, (one.total, eight.total)
    assert eight.syncs <= one.syncs, (dict(one.syncs_by_name), dict(eight.syncs_by_name))


@pytest.mark.parametrize("rules", list(RULE_SETS))
@pytest.mark.parametrize("batch", [1, 8])
def test_cpu_path_synchronises_as_rarely(measured, rules, batch):
    """The CPU's own path (compiled kernels where Numba is installed, else cache-sized chunks of tensor operations)
    synchronises no more often."""
    assert measured[rules, "cpu", batch].syncs <= measured[rules, "accelerator", batch].syncs


def test_both_paths_give_identical_hits(resnet50):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for rules in RULE_SETS.values():
        explainer = NodeBacktrack(resnet50, **rules)
        with accelerator_code_paths():
            accelerated = explainer.attribute(x, target=[1, 2])
        assert torch.equal(explainer.attribute(x, target=[1, 2]), accelerated)
