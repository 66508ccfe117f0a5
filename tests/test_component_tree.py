"""The compiled component tree gives MaxBoxAccV2's IoU curves (and PxAP's histogram bins) with exactly the values
of labelling each thresholded region with SciPy."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from captum_ext._utils.maps import minmax_normalise
from captum_ext._utils.validation import check_finite
from captum_ext.metrics import _component_tree, maxboxacc_v2, pxap
from captum_ext.metrics.cam import boxes_from_saliency
from captum_ext.testing import iou_curve_by_regions

pytestmark = pytest.mark.skipif(not _component_tree.available(), reason="needs the `fast` extra (Numba)")

SWEEP = (torch.arange(100, dtype=torch.float64) / 100).numpy()


def _normalised(values: np.ndarray) -> np.ndarray:
    return minmax_normalise(torch.from_numpy(np.asarray(values, dtype=np.float64))[None])[0].numpy()


def _boxes(rng: np.random.Generator, height: int, width: int, count: int) -> torch.Tensor:
    corner = rng.integers(0, (width, height), (count, 2)).astype(np.float64)
    size = rng.integers(0, max(height, width) + 1, (count, 2)).astype(np.float64)  # zero-area boxes too
    if rng.random() < 0.5:  # fractional corners, as annotations scaled to the map's size have
        corner, size = corner + rng.random((count, 2)), size * rng.random((count, 2))
    return torch.from_numpy(np.concatenate([corner, corner + size], 1))


def test_hand_built_map_nodes_and_curve():
    # Two peaks (levels 3 and 2) that meet at level 1: the tree has the two peaks and their union.
    levels = np.array([[3, 0, 0], [1, 1, 2], [0, 0, 0]], dtype=np.int32)
    boxes, low, high = _component_tree._tree_nodes(levels.ravel(), 3, 3)
    nodes = sorted(zip(boxes.tolist(), low.tolist(), high.tolist()))
    assert nodes == [([0.0, 0.0, 1.0, 1.0], 1, 3), ([0.0, 0.0, 3.0, 2.0], 0, 1), ([2.0, 1.0, 3.0, 2.0], 1, 2)]
    values = levels / 3.0
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    sweep = np.array([0.2, 0.5, 0.9])  # levels > 0, > 1, > 2 of the map above
    curve = _component_tree.iou_curve(values, gt, sweep)
    # τ = 0.2: one component of 3×2 (IoU 1/6); τ = 0.5: two single pixels, one exact (1); τ = 0.9: the exact one.
    assert curve.tolist() == [1 / 6, 1.0, 1.0]


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    kind=st.sampled_from(["uniform", "few_values", "binary", "smooth", "constant", "hundredths"]),
    custom_sweep=st.booleans(),
)
def test_iou_curve_equals_labelling_each_region(seed, height, width, kind, custom_sweep):
    rng = np.random.default_rng(seed)
    raw = {
        "uniform": lambda: rng.random((height, width)),
        "few_values": lambda: rng.integers(0, 4, (height, width)).astype(float),  # plateaus and ties
        "binary": lambda: (rng.random((height, width)) > 0.6).astype(float),  # one-pixel components
        "smooth": lambda: ndimage.gaussian_filter(rng.random((height, width)), 2),
        "constant": lambda: np.full((height, width), 2.5),
        "hundredths": lambda: np.round(rng.random((height, width)) * 100) / 100,  # values on the thresholds
    }[kind]()
    normalised = _normalised(raw)
    gt = _boxes(rng, height, width, int(rng.integers(1, 4)))
    sweep = SWEEP
    if custom_sweep:
        sweep = np.sort(rng.choice(np.arange(1001) / 1000, int(rng.integers(1, 40)), replace=False))
    expected = iou_curve_by_regions(normalised, gt, sweep)
    assert torch.equal(_component_tree.iou_curve(normalised, gt, sweep), expected)


def test_many_components_and_large_maps_equal_the_reference():
    rng = np.random.default_rng(3)
    for values in (rng.random((97, 131)), np.abs(ndimage.gaussian_filter(rng.standard_normal((160, 120)), 1))):
        normalised = _normalised(values)
        gt = _boxes(rng, *values.shape, 3)
        expected = iou_curve_by_regions(normalised, gt, SWEEP)
        assert torch.equal(_component_tree.iou_curve(normalised, gt, SWEEP), expected)


@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 50))
@settings(max_examples=40, deadline=None)
def test_quantise_is_searchsorted(seed, count):
    rng = np.random.default_rng(seed)
    sweep = np.sort(rng.choice(np.arange(201) / 200, count, replace=False))
    values = np.concatenate([rng.random(300), sweep, np.nextafter(sweep, -1), [0.0, 1.0]])
    assert np.array_equal(_component_tree.quantise(values, sweep), np.searchsorted(sweep, values, side="right"))


def test_metrics_equal_without_numba(monkeypatch):
    rng = np.random.default_rng(5)
    maps = torch.from_numpy(np.abs(rng.standard_normal((6, 40, 48)))).float()
    boxes = [_boxes(rng, 40, 48, 2).float() for _ in range(6)]
    masks = torch.from_numpy(rng.random((6, 40, 48)) > 0.5)
    fast = maxboxacc_v2(maps, boxes, reduce=False), pxap(maps, masks, reduce=False)
    monkeypatch.setattr(_component_tree, "available", lambda: False)
    slow = maxboxacc_v2(maps, boxes, reduce=False), pxap(maps, masks, reduce=False)
    assert torch.equal(fast[0].accuracy, slow[0].accuracy) and fast[0].value == slow[0].value
    assert torch.equal(fast[1].precision, slow[1].precision) and fast[1].value == slow[1].value


def test_minmax_normalise_leaves_its_input_and_zeroes_constant_maps():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]], dtype=torch.float64)
    before = maps.clone()
    out = minmax_normalise(maps)
    assert torch.equal(maps, before)
    assert out.tolist() == [[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    assert not torch.signbit(out).any()


def test_check_finite_accepts_values_whose_sum_overflows():
    check_finite(torch.tensor([3e38, 3e38, -1.0]), "saliency")  # the sum is inf, every value finite
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="`saliency` contains NaN or inf"):
            check_finite(torch.tensor([3e38, bad, 1.0]), "saliency")


@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 30))
@settings(max_examples=30, deadline=None)
def test_joint_histogram_equals_bucketize_and_bincount(seed, count):
    rng = np.random.default_rng(seed)
    sweep = np.sort(rng.choice(np.arange(101) / 100, count, replace=False))
    values = np.concatenate([rng.random(500), sweep, np.round(rng.random(50), 2)])
    inside = rng.random(len(values)) > 0.4
    bins = torch.bucketize(torch.from_numpy(values), torch.from_numpy(sweep), right=True)
    expected = torch.bincount(bins * 2 + torch.from_numpy(inside), minlength=2 * (count + 1)).view(count + 1, 2)
    assert torch.equal(torch.from_numpy(_component_tree.joint_histogram(values, inside, sweep)), expected)


@given(seed=st.integers(0, 2**31 - 1), planes=st.integers(1, 4), height=st.integers(1, 20), width=st.integers(1, 20),
       fraction=st.sampled_from([0.0, 0.2, 0.5, 1.0]), kind=st.sampled_from(["uniform", "few_values", "signed"]))
@settings(max_examples=60, deadline=None)
def test_cam_boxes_equal_labelling_with_scipy(seed, planes, height, width, fraction, kind):
    rng = np.random.default_rng(seed)
    maps = {
        "uniform": lambda: rng.random((planes, height, width)),
        "few_values": lambda: rng.integers(0, 3, (planes, height, width)).astype(float),  # ties between sizes
        "signed": lambda: rng.standard_normal((planes, height, width)) - 1.0,  # some maps all negative
    }[kind]()
    saliency = torch.from_numpy(maps).float()
    fast = boxes_from_saliency(saliency, fraction)
    with mock.patch.object(_component_tree, "available", lambda: False):
        assert torch.equal(fast, boxes_from_saliency(saliency, fraction))


def test_maps_on_several_threads_give_each_map_s_own_curve():
    """The trees of a batch built on several threads: each row is the map's own curve, whatever the thread count,
    and the metric under more torch threads gives the same result."""
    rng = np.random.default_rng(11)
    maps = np.stack([_normalised(rng.random((17, 23)) ** (1 + i % 3)) for i in range(7)])
    gts = [_boxes(rng, 17, 23, 1 + i % 3) for i in range(7)]
    alone = torch.stack([_component_tree.iou_curve(m, g, SWEEP) for m, g in zip(maps, gts)])
    for threads in (1, 3, 8):
        assert torch.equal(_component_tree.iou_curves(maps, gts, SWEEP, threads), alone)
    assert _component_tree.iou_curves(maps[:0], [], SWEEP, 4).shape == (0, len(SWEEP))
    saliency = torch.from_numpy(maps)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = maxboxacc_v2(saliency, gts, reduce=False)
        torch.set_num_threads(3)
        three = maxboxacc_v2(saliency, gts, reduce=False)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.accuracy, three.accuracy) and one.value == three.value


def test_cam_boxes_and_histograms_on_several_threads_equal_one_thread():
    rng = np.random.default_rng(12)
    keep = rng.random((7, 19, 13)) > 0.6
    keep[3] = False  # an empty plane keeps its -1 row
    one = _component_tree.largest_component_boxes(keep, 1)
    assert (one[3] == -1).all()
    for threads in (2, 3, 16):
        assert np.array_equal(_component_tree.largest_component_boxes(keep, threads), one)
    values, inside = rng.random(300_000), rng.random(300_000) > 0.5
    counts = _component_tree.joint_histogram(values, inside, SWEEP, 1)
    assert counts.sum() == 300_000
    for threads in (2, 5):
        assert np.array_equal(_component_tree.joint_histogram(values, inside, SWEEP, threads), counts)
    assert _component_tree._parts(10, 4, smallest=6) == [slice(0, 10)]
    assert _component_tree._parts(0, 4) == [slice(0, 0)]
