"""The dispatched-op counter that stands in for GPU profiling in CPU tests."""
import torch

from captum_ext.testing import count_ops, ops_of


def test_counts_operations_and_host_synchronisations():
    x = torch.arange(12.0).view(3, 4)
    with count_ops() as counts:
        y = x * 2 + 1              # mul, add
        kept = y[y > 5]            # gt, index with a boolean mask (sync)
        where = (y > 20).nonzero()  # gt, nonzero (sync)
        value = float(y.sum())     # sum, _local_scalar_dense (sync)
        index = x.view(-1)[torch.tensor([1, 2])]  # view, lift_fresh / index with integers (no sync)
    assert counts.syncs == 3
    assert counts.syncs_by_name == {"index": 1, "nonzero": 1, "_local_scalar_dense": 1}
    assert counts.by_name["mul"] == 1 and counts.by_name["add"] == 1 and counts.by_name["gt"] == 2
    assert counts.by_name["index"] == 2
    assert kept.numel() == 9 and where.shape == (2, 2) and value == 144.0 and index.tolist() == [1.0, 2.0]


def test_repeat_interleave_syncs_only_without_an_output_size():
    repeats = torch.tensor([1, 2])
    counts = ops_of(lambda: torch.repeat_interleave(torch.tensor([5, 6]), repeats))
    sized = ops_of(lambda: torch.repeat_interleave(torch.tensor([5, 6]), repeats, output_size=3))
    assert counts.syncs_by_name.get("repeat_interleave") == 1
    assert sized.syncs_by_name.get("repeat_interleave") is None
