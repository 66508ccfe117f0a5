"""NodeBacktrack's compiled CPU kernel against a plain tensor reference: the channel sums in the same order, the
strongest channels with ties to the lower channel, the strongest tap with ties to the first, on values built to tie
(small integers, both signed zeros, negative and all-negative sums, taps outside the input) and on random floats,
whose rounding shows any change in the order of the sums."""
from __future__ import annotations

from typing import Optional, Tuple

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor

from captum_ext.attr import _backtrack_kernels as kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="Numba (the `fast` extra) is not installed")

VALUES = torch.tensor([-2.0, -1.0, -0.0, 0.0, 0.0, 1.0, 2.0, 3.0])


def reference(rows: Tensor, weights: Tensor, top_left: Tensor, tap_rows: Tensor, out_channel: Tensor,
              pixel: Tensor, inside: Optional[Tensor], bias: Optional[Tensor], n: int
              ) -> Tuple[Tensor, Tensor, Tensor]:
    n_taps = len(tap_rows)
    windows = rows[top_left[:, None] + tap_rows]  # P×T×Cg
    products = windows * weights[out_channel]
    sums = products[:, 0].clone()
    for t in range(1, n_taps):  # the kernel's order: first tap, then each next one
        sums = sums + products[:, t]
    if bias is not None:
        sums = sums + (bias[out_channel] * n_taps)[:, None]
    order = torch.sort(sums, dim=1, descending=True, stable=True).indices[:, :n]
    chosen = products.gather(2, order[:, None, :].expand(-1, n_taps, -1))  # P×T×n
    if inside is not None:
        chosen = chosen.masked_fill(~inside[pixel][:, :, None], float("-inf"))
    return order, sums.gather(1, order), chosen.argmax(dim=1)


@settings(max_examples=150, deadline=None)
@given(width=st.sampled_from([1, 2, 3, 4, 5, 8, 17, 40]), n_taps=st.sampled_from([1, 2, 9, 16, 25]),
       n=st.integers(1, 3), masked=st.booleans(), with_bias=st.booleans(), tied=st.booleans(),
       seed=st.integers(0, 2**16))
def test_kernel_matches_the_tensor_reference(width, n_taps, n, masked, with_bias, tied, seed):
    generator = torch.Generator().manual_seed(seed)
    n = min(n, width)
    n_rows, c_out, n_nodes, positions = 30, 5, 200, 7

    def draw(*shape: int) -> Tensor:
        if not tied:
            return torch.randn(shape, generator=generator)
        return VALUES[torch.randint(len(VALUES), shape, generator=generator)]

    rows, weights = draw(n_rows, width), draw(c_out, n_taps, width)
    tap_rows = torch.randint(0, 6, (n_taps,), generator=generator)
    top_left = torch.randint(0, n_rows - 6, (n_nodes,), generator=generator)
    out_channel = torch.randint(0, c_out, (n_nodes,), generator=generator)
    pixel = torch.randint(0, positions, (n_nodes,), generator=generator)
    inside = torch.rand(positions, n_taps, generator=generator) < 0.7 if masked else None
    if inside is not None:
        inside[0] = False  # a position whose taps all lie outside
    bias = draw(c_out) if with_bias else None
    got = kernels.strongest_channels(rows, weights, top_left, tap_rows, out_channel, pixel, inside, bias, n)
    expected = reference(rows, weights, top_left, tap_rows, out_channel, pixel, inside, bias, n)
    for name, a, b in zip(("channels", "sums", "taps"), got, expected):
        assert torch.equal(a, b), name


def test_all_negative_and_zero_sums_take_the_ordered_scan():
    """Sums that are all negative, or whose largest is zero of either sign, pick the first of the largest."""
    rows = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    weights = torch.tensor([[[-3.0, -1.0, -1.0, -2.0]], [[-1.0, 0.0, -0.0, 0.0]], [[-0.0, 0.0, -1.0, 5.0]]])
    one = torch.zeros(3, dtype=torch.int64)
    channels, sums, taps = kernels.strongest_channels(rows, weights, one, torch.zeros(1, dtype=torch.int64),
                                                      torch.arange(3), one, None, None, 2)
    assert channels.tolist() == [[1, 2], [1, 2], [3, 0]]
    assert sums.tolist() == [[-1.0, -1.0], [0.0, 0.0], [5.0, 0.0]]
    assert taps.tolist() == [[0, 0]] * 3


def test_a_first_launch_leaves_torchs_thread_count_as_found():
    """Before: Numba's OpenMP layer set the process's OpenMP threads to every core on its first launch, so after one
    NodeBacktrack call a process of ``torch.set_num_threads(1)`` ran on 2 threads and its convolutions rounded
    differently (a dataset run's second batch differed in its last bits from the same batch run alone)."""
    import os
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(1)\n"
            "from torch import nn\n"
            "from captum_ext import NodeBacktrack\n"
            "model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),\n"
            "                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()\n"
            "x = torch.rand(4, 3, 32, 32)\n"
            "with torch.no_grad(): before = model(x)\n"
            "NodeBacktrack(model).attribute(x, target=0)\n"
            "with torch.no_grad(): after = model(x)\n"
            "print(torch.get_num_threads(), torch.equal(before, after))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "True"]
