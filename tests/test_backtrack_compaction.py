"""De-duplication of kept nodes: the sort-based way, the scatter-based way and the compiled CPU kernel give the same
nodes and counts."""
from contextlib import contextmanager

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_ext.attr import _backtrack_compaction as C
from captum_ext.attr import _backtrack_kernels as kernels
from captum_ext.attr._backtrack_core import Selection


@contextmanager
def scattering(dense: bool):
    original = C._dense
    C._dense = lambda entries, total, device: dense
    try:
        yield
    finally:
        C._dense = original


def live(selection: Selection):
    keep = selection.count > 0
    return selection.batch[keep].tolist(), selection.flat[keep].tolist(), selection.count[keep].tolist()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), images=st.integers(1, 3), numel=st.integers(1, 40_000), entries=st.integers(1, 40),
       parts=st.integers(1, 3), collapse=st.booleans())
def test_scatter_and_sort_compactions_agree(seed, images, numel, entries, parts, collapse):
    generator = torch.Generator().manual_seed(seed)
    selections = []
    for _ in range(parts):
        batch = torch.randint(0, images, (entries,), generator=generator)
        flat = torch.randint(0, numel, (entries,), generator=generator)
        count = torch.randint(0, 4, (entries,), generator=generator).double()  # 0: dead entries
        selections.append(Selection(batch, flat, count))
    total = images * numel
    workspace = C.Workspace()
    with scattering(True):
        compiled = C.compact(selections, numel, total, collapse, workspace)
        kernels.ENABLED = False
        try:
            by_scatter = C.compact(selections, numel, total, collapse, workspace)
        finally:
            kernels.ENABLED = True
    with scattering(False):
        by_sort = C.compact(selections, numel, total, collapse)
    assert live(by_scatter) == live(by_sort) == live(compiled)
    assert not workspace.flags.any()  # left all false for the next use
    batch, flat, counts = live(by_sort)
    keys = [b * numel + f for b, f in zip(batch, flat)]
    assert keys == sorted(set(keys))  # one entry per node, in order
    expected = {}
    for s in selections:
        for b, f, c in zip(s.batch.tolist(), s.flat.tolist(), s.count.tolist()):
            if c > 0:
                expected[b * numel + f] = 1.0 if collapse else expected.get(b * numel + f, 0.0) + c
    assert dict(zip(keys, counts)) == expected
