"""Tests for captum_ext.metrics: hand-computed values, hypothesis properties, and input validation."""
from __future__ import annotations

import doctest
import importlib
import math
import pkgutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from captum_ext import metrics
from captum_ext.metrics import _batching
from captum_ext.metrics import (
    PAPER_ROI_BINS,
    BinnedAccuracy,
    FMeasure,
    binned_accuracy,
    box_iou,
    boxes_from_saliency,
    corloc,
    default_tolerance,
    energy_pointing_game,
    mae,
    mask_iou,
    masks_to_boxes,
    pointing_game,
    saliency_fmeasure,
)

FAST = settings(max_examples=25, deadline=None)

# --------------------------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------------------------

_coord = st.floats(0, 100, allow_nan=False, allow_infinity=False, width=32)
_extent = st.floats(0, 50, allow_nan=False, allow_infinity=False, width=32)
_positive_extent = st.floats(0.5, 50, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def boxes(draw, min_size=1, max_size=5, positive=False):
    count = draw(st.integers(min_size, max_size))
    ext = _positive_extent if positive else _extent
    rows = [(x, y, x + w, y + h) for x, y, w, h in draw(st.lists(st.tuples(_coord, _coord, ext, ext),
                                                                    min_size=count, max_size=count))]
    return torch.tensor(rows, dtype=torch.float32).reshape(count, 4)


@st.composite
def mask_batch(draw, non_empty=False, not_full=False, max_n=3, max_side=8, hw=None):
    n = draw(st.integers(1, max_n))
    h, w = hw if hw is not None else (draw(st.integers(1, max_side)), draw(st.integers(1 + not_full, max_side)))
    arr = draw(hnp.arrays(np.bool_, (n, h, w)))
    for i in range(n):
        if non_empty and not arr[i].any():
            arr[i, draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
        if not_full and arr[i].all():
            arr[i, draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = False
    return torch.from_numpy(arr)


@st.composite
def saliency_and_masks(draw, max_n=3, max_side=8, non_empty=True, hw=None):
    masks = draw(mask_batch(non_empty=non_empty, max_n=max_n, max_side=max_side, hw=hw))
    values = draw(hnp.arrays(np.float64, tuple(masks.shape),
                             elements=st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=32)))
    return torch.from_numpy(values), masks


@st.composite
def two_batches(draw, non_empty=True):
    """Two (saliency, masks) batches with the same H×W."""
    hw = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    return (draw(saliency_and_masks(non_empty=non_empty, hw=hw)),
            draw(saliency_and_masks(non_empty=non_empty, hw=hw)))


# --------------------------------------------------------------------------------------------------------------------
# Module-level
# --------------------------------------------------------------------------------------------------------------------


def _metric_modules():
    """The package and every submodule (the examples live where each function is defined)."""
    names = [info.name for info in pkgutil.iter_modules(metrics.__path__, "captum_ext.metrics.")]
    return [metrics] + [importlib.import_module(name) for name in sorted(names)]


def test_docstring_examples_run():
    attempted = 0
    for module in _metric_modules():
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 10


# The public API of the single-file ``captum_ext/metrics.py`` that the package replaced: all still importable.
_PUBLIC_API = [
    "PAPER_ROI_BINS", "BinnedAccuracy", "FMeasure", "binned_accuracy", "box_iou", "boxes_from_saliency",
    "boxes_to_masks", "corloc", "energy_pointing_game", "mae", "mask_iou", "masks_to_boxes", "pointing_game",
    "saliency_fmeasure",
    # dataset-scale evaluation
    "GroundTruth", "MaxBoxAccResult", "PxAPResult", "maxboxacc_v2", "pxap", "PointingGameMetric",
    "EnergyPointingGameMetric", "CorLocMetric", "MaxBoxAccV2Metric", "PxAPMetric",
    "class_distinctness", "DistinctnessResult",
    "default_tolerance",
    # which method to trust: faithfulness and the sanity check
    "FaithfulnessAUCMetric", "curve_auc", "deletion_insertion_curves", "SanityResult", "cascading_randomization",
    "PerturbationMetric", "infidelity_per_pair", "sensitivity_max_per_pair", "road_curves", "road_impute",
]


def test_public_api_unchanged_and_reexports_box_helpers():
    from captum_ext._utils import boxes as _boxes

    assert metrics.masks_to_boxes is _boxes.masks_to_boxes
    assert metrics.boxes_to_masks is _boxes.boxes_to_masks
    assert sorted(metrics.__all__) == sorted(_PUBLIC_API)
    for name in _PUBLIC_API:
        assert hasattr(metrics, name)
    assert metrics.PAPER_ROI_BINS == (0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 500000,
                                      1000000)
    assert metrics.binned_accuracy.__defaults__[0] is metrics.PAPER_ROI_BINS


# --------------------------------------------------------------------------------------------------------------------
# box_iou / corloc
# --------------------------------------------------------------------------------------------------------------------


def test_box_iou_hand_values():
    iou = box_iou(torch.tensor([[0.0, 0, 10, 10], [0, 0, 2, 2]]),
                  np.array([[5.0, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]))
    assert iou.shape == (2, 3)
    expected = torch.tensor([[1 / 3, 1.0, 0.0], [0.0, 0.04, 0.0]])
    torch.testing.assert_close(iou, expected, check_dtype=False)
    assert iou.dtype == torch.float64  # numpy float64 promotes


def test_box_iou_degenerate_boxes_are_zero_not_nan():
    iou = box_iou(torch.zeros(1, 4), torch.zeros(1, 4))
    assert iou.item() == 0.0
    assert box_iou(torch.tensor([[0.0, 0, 0, 5]]), torch.tensor([[0.0, 0, 5, 5]])).item() == 0.0


def test_box_iou_promotes_dtype():
    out = box_iou(torch.tensor([[0, 0, 4, 4]]), torch.tensor([[0.0, 0, 4, 2]], dtype=torch.float64))
    assert out.dtype == torch.float64 and out.item() == 0.5
    assert box_iou(torch.tensor([[0, 0, 4, 4]]), torch.tensor([[0, 0, 2, 4]])).dtype == torch.float32


@FAST
@given(boxes(), boxes())
def test_box_iou_symmetric_and_bounded(a, b):
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert torch.equal(ab, ba.T)
    assert bool(((ab >= 0) & (ab <= 1)).all())


def test_corloc_mini_batch():
    pred = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    gt = [
        torch.tensor([[0.0, 0, 10, 20]]),                        # IoU exactly 0.5 -> hit
        torch.tensor([[5.0, 0, 15, 10]]),                        # IoU 1/3 -> miss
        torch.tensor([[50.0, 50, 60, 60], [1, 1, 10, 10]]),      # second box IoU 0.81 -> hit
        torch.tensor([[0.0, 0, 0, 0], [20, 0, 30, 10]]),         # zero-area padding next to a real box -> miss
    ]
    assert corloc(pred, gt) == 0.5
    assert corloc(pred, gt, reduce=False).tolist() == [True, False, True, False]
    assert corloc(pred, gt, iou_threshold=0.3, reduce=False).tolist() == [True, True, True, False]
    assert corloc(pred, gt, iou_threshold=0.51, reduce=False).tolist() == [False, False, True, False]


def test_corloc_tensor_gt_forms():
    pred = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    gt2 = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10]])
    assert corloc(pred, gt2, reduce=False).tolist() == [True, False]
    gt3 = torch.stack([gt2, gt2.flip(0)], dim=1)                 # N×2×4: image 1 gets a matching second box
    assert corloc(pred, gt3, reduce=False).tolist() == [True, True]
    assert corloc(pred.numpy(), [[0, 0, 10, 10], [5, 0, 15, 10]], reduce=False).tolist() == [True, False]
    assert corloc(pred, [[0, 0, 10, 10], [[0, 0, 0, 0], [0, 0, 5, 10]]], reduce=False).tolist() == [True, True]


def test_corloc_many_images_across_blocks():
    n = 600  # more than one internal block of images
    pred = torch.tensor([[0.0, 0, 10, 10]]).repeat(n, 1)
    gt = [torch.tensor([[0.0, 0, 10, 10]]) if i % 3 == 0 else torch.tensor([[20.0, 0, 30, 10]]) for i in range(n)]
    hits = corloc(pred, gt, reduce=False)
    assert hits.tolist() == [i % 3 == 0 for i in range(n)]


@FAST
@given(boxes(positive=True))
def test_corloc_perfect_predictions(b):
    assert corloc(b, b) == 1.0
    assert corloc(b, [g[None] for g in b]) == 1.0


@FAST
@given(boxes(min_size=2, max_size=6), boxes(min_size=2, max_size=6, positive=True), st.integers(1, 5))
def test_corloc_batch_invariance(pred, gt, split):
    n = min(pred.shape[0], gt.shape[0])
    pred, gt = pred[:n], gt[:n]
    split = min(split, n - 1)
    whole = corloc(pred, gt, reduce=False)
    parts = torch.cat([corloc(pred[:split], gt[:split], reduce=False), corloc(pred[split:], gt[split:], reduce=False)])
    assert torch.equal(whole, parts)
    assert math.isclose(corloc(pred, gt), whole.double().mean().item())


# --------------------------------------------------------------------------------------------------------------------
# Pointing game
# --------------------------------------------------------------------------------------------------------------------


def _two_point_case():
    saliency = torch.zeros(2, 32, 32)
    saliency[0, 5, 20] = 1.0  # mask's last column is x = 6 -> 14 px
    saliency[1, 5, 22] = 1.0  # 16 px
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, :, :7] = True
    return saliency, masks


def test_pointing_game_tolerance_14_vs_16_px():
    saliency, masks = _two_point_case()
    assert pointing_game(saliency, masks, tolerance=15, reduce=False).tolist() == [True, False]
    assert pointing_game(saliency, masks, tolerance=15) == 0.5
    assert pointing_game(saliency, masks, tolerance=16, reduce=False).tolist() == [True, True]
    assert pointing_game(saliency, masks, tolerance=13.9, reduce=False).tolist() == [False, False]


def test_default_tolerance_is_torchrays_15_px_at_224_scaled_with_the_larger_side():
    assert default_tolerance(224, 224) == 15.0
    assert default_tolerance(64, 64) == 15 * 64 / 224
    assert default_tolerance(32, 448) == default_tolerance(448, 32) == 30.0  # the larger side, either way round
    with pytest.raises(ValueError, match="`height` must be >= 1"):
        default_tolerance(0, 64)
    with pytest.raises(TypeError, match="`width` must be an integer"):
        default_tolerance(64, 64.5)


def _offset_case(side, offsets):
    """One single-pixel mask at (2, 2) per map, and a map whose maximum lies ``offsets[i]`` px right of it."""
    saliency = torch.zeros(len(offsets), side, side)
    masks = torch.zeros(len(offsets), side, side, dtype=torch.bool)
    masks[:, 2, 2] = True
    for i, dx in enumerate(offsets):
        saliency[i, 2, 2 + dx] = 1.0
    return saliency, masks


def test_pointing_game_default_tolerance_scales_with_the_map_size():
    # 64 px: 15 px hits all three maxima, 8 and 14 px from the object, while the scaled 4.29 px only the 4-px one.
    saliency, masks = _offset_case(64, [4, 8, 14])
    assert pointing_game(saliency, masks, tolerance=15, reduce=False).tolist() == [True, True, True]
    assert pointing_game(saliency, masks, reduce=False).tolist() == [True, False, False]
    assert pointing_game(saliency, masks, tolerance=None) == pytest.approx(1 / 3)
    assert pointing_game(saliency, masks, tolerance=default_tolerance(64, 64), reduce=False).tolist() == \
        [True, False, False]
    # 224 px: the default is exactly 15 px, inclusive (a 15-px offset hits, 16 px misses).
    saliency, masks = _offset_case(224, [15, 16])
    assert pointing_game(saliency, masks, reduce=False).tolist() == \
        pointing_game(saliency, masks, tolerance=15, reduce=False).tolist() == [True, False]
    # Non-square maps: the larger side sets the radius (15 · 112 / 224 = 7.5 px on 56×112).
    saliency, masks = torch.zeros(2, 56, 112), torch.zeros(2, 56, 112, dtype=torch.bool)
    masks[:, 2, 2] = True
    saliency[0, 2, 9], saliency[1, 2, 10] = 1.0, 1.0  # 7 and 8 px away
    assert pointing_game(saliency, masks, reduce=False).tolist() == [True, False]


def test_pointing_game_metric_default_uses_each_maps_own_size_and_equals_the_functional_game():
    from captum_ext.metrics import GroundTruth, PointingGameMetric

    small, small_masks = _offset_case(64, [4, 8, 14])   # default 4.29 px: hit, miss, miss (15 px: all hits)
    large, large_masks = _offset_case(224, [8, 14, 16])  # default 15 px: hit, hit, miss
    maps = [*small, *large]
    truths = [GroundTruth(i % 2, torch.tensor([[2.0, 2.0, 3.0, 3.0]]), m)
              for i, m in enumerate([*small_masks, *large_masks])]
    metric = PointingGameMetric(num_classes=2)
    deltas, per_pair = metric.statistics(maps, truths)
    assert per_pair["pointing_hit"].tolist() == [1, 0, 0, 1, 1, 0]
    labels = torch.tensor([t.category for t in truths])
    expected = torch.cat([pointing_game(small, small_masks, reduce=False), pointing_game(large, large_masks,
                                                                                         reduce=False)])
    assert per_pair["pointing_hit"].tolist() == expected.long().tolist()
    # Streaming in two batches, with states summed exactly, equals the functional class-mean per size group.
    for part in ([0, 3, 5], [1, 2, 4]):
        metric.update([maps[i] for i in part], [truths[i] for i in part])
    hits = torch.zeros(2, dtype=torch.int64).index_add_(0, labels, expected.long())
    assert metric.hits.tolist() == hits.tolist() and metric.totals.tolist() == [3, 3]
    assert float(metric.compute()) == pytest.approx((1 / 3 + 2 / 3) / 2)
    same_size = PointingGameMetric(num_classes=2)
    same_size.update(list(small), truths[:3])
    assert float(same_size.compute()) == pytest.approx(pointing_game(small, small_masks, labels=labels[:3]))
    fixed = PointingGameMetric(num_classes=2, tolerance=15)
    assert fixed.statistics(maps, truths)[1]["pointing_hit"].tolist() == [1, 1, 1, 1, 1, 0]


def test_pointing_game_metric_counts_constant_maps_which_point_at_their_first_pixel():
    from captum_ext.metrics import GroundTruth, PointingGameMetric

    corner, elsewhere = torch.tensor([[0.0, 0.0, 3.0, 3.0]]), torch.tensor([[5.0, 5.0, 8.0, 8.0]])
    peak = torch.zeros(8, 8)
    peak[6, 6] = 1.0
    maps = [torch.zeros(8, 8), torch.full((8, 8), 0.5), peak, torch.zeros(6, 6)]
    truths = [GroundTruth(0, corner), GroundTruth(0, elsewhere), GroundTruth(1, elsewhere), GroundTruth(1, corner)]
    metric = PointingGameMetric(num_classes=2, tolerance=0)
    deltas, per_pair = metric.statistics(maps, truths)
    assert per_pair["pointing_hit"].tolist() == [1, 0, 1, 1]  # the constant maps "hit" the corner objects
    assert per_pair["constant_map"].tolist() == [1, 1, 0, 1] and int(deltas["constant"]) == 3
    metric.update_from_statistics(deltas)
    metric.update(maps[:1], truths[:1])
    assert int(metric.constant) == 4


def test_pointing_game_euclidean_distance_inclusive():
    saliency = torch.zeros(1, 1, 30, 30)
    saliency[0, 0, 12 + 9, 12 + 12] = 5.0  # offset (9, 12) from the single mask pixel: distance exactly 15
    mask = torch.zeros(1, 1, 30, 30, dtype=torch.uint8)
    mask[0, 0, 12, 12] = 1
    assert pointing_game(saliency, mask, tolerance=15.0) == 1.0
    assert pointing_game(saliency, mask, tolerance=14.99) == 0.0
    assert pointing_game(saliency, mask, tolerance=0.0) == 0.0


def test_pointing_game_ties_take_first_row_major_maximum():
    saliency = torch.zeros(2, 10, 10)
    saliency[0, 0, 9] = saliency[0, 9, 0] = 1.0   # first in row-major order: (y=0, x=9)
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[0, 0, 9] = True
    masks[1, 9, 9] = True                          # constant map points at (0, 0)
    assert pointing_game(saliency, masks, tolerance=0, reduce=False).tolist() == [True, False]
    masks[1, 0, 0] = True
    assert pointing_game(saliency, masks, tolerance=0, reduce=False).tolist() == [True, True]


def test_pointing_game_class_mean_vs_image_mean():
    saliency = torch.zeros(4, 8, 8)
    saliency[:, 0, 0] = 1.0
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:3, 0, 0] = True        # three hits of class 0
    masks[3, 7, 7] = True         # one miss of class 1 (distance ~9.9 > 5)
    labels = torch.tensor([0, 0, 0, 1])
    assert pointing_game(saliency, masks, tolerance=5) == 0.75
    assert pointing_game(saliency, masks, tolerance=5, labels=labels) == 0.5
    assert pointing_game(saliency, masks, tolerance=5, labels=[7, 7, 3, 3]) == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert pointing_game(saliency, masks, tolerance=5, labels=labels, reduce=False).tolist() == [True] * 3 + [False]


def _brute_force_pointing(saliency, masks, tol):
    out = []
    for s, m in zip(saliency, masks):
        idx = int(torch.argmax(s.flatten()))
        y, x = divmod(idx, s.shape[1])
        ys, xs = np.nonzero(m.numpy())
        out.append(bool(np.sqrt((ys - y) ** 2 + (xs - x) ** 2).min() <= tol))
    return out


@FAST
@given(saliency_and_masks(max_side=12), st.floats(0, 10, allow_nan=False))
def test_pointing_game_matches_brute_force(data, tol):
    saliency, masks = data
    assert pointing_game(saliency, masks, tolerance=tol, reduce=False).tolist() == \
        _brute_force_pointing(saliency, masks, tol)


@FAST
@given(mask_batch(non_empty=True), st.floats(0, 20, allow_nan=False))
def test_pointing_game_perfect_map(masks, tol):
    assert pointing_game(masks.float(), masks, tolerance=tol) == 1.0
    assert pointing_game(masks, masks, tolerance=tol, labels=torch.arange(masks.shape[0])) == 1.0


@FAST
@given(two_batches(), st.floats(0, 5, allow_nan=False))
def test_pointing_game_batch_invariance(pair, tol):
    a, b = pair
    sal, msk = torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
    whole = pointing_game(sal, msk, tolerance=tol, reduce=False)
    parts = torch.cat([pointing_game(*a, tolerance=tol, reduce=False), pointing_game(*b, tolerance=tol, reduce=False)])
    assert torch.equal(whole, parts)


# --------------------------------------------------------------------------------------------------------------------
# Energy pointing game
# --------------------------------------------------------------------------------------------------------------------


def test_energy_exact_fraction():
    saliency = torch.tensor([[[3.0, 1.0], [0.0, -5.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
                            dtype=torch.float64)
    masks = torch.tensor([[[1, 0], [0, 1]], [[1, 1], [1, 1]], [[1, 1], [1, 0]]], dtype=torch.bool)
    per_image = energy_pointing_game(saliency, masks, reduce=False)
    assert per_image.tolist() == [0.75, 0.0, 0.75]  # negatives clamped; all-zero map -> 0
    assert energy_pointing_game(saliency, masks) == pytest.approx(0.5)
    assert energy_pointing_game(-saliency[:1].abs(), masks[:1]) == 0.0


@FAST
@given(mask_batch(non_empty=True))
def test_energy_perfect_map_is_one(masks):
    assert energy_pointing_game(masks.double(), masks) == 1.0


@FAST
@given(two_batches())
def test_energy_batch_invariance_and_range(pair):
    a, b = pair
    whole = energy_pointing_game(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), reduce=False)
    parts = torch.cat([energy_pointing_game(*a, reduce=False), energy_pointing_game(*b, reduce=False)])
    torch.testing.assert_close(whole, parts)
    assert bool(((whole >= 0) & (whole <= 1 + 1e-12)).all())


# --------------------------------------------------------------------------------------------------------------------
# F-measure and MAE
# --------------------------------------------------------------------------------------------------------------------


def _hand_fmeasure_case():
    # Image A normalises to [[1, .5], [0, 0]], mask = top row.  Image B normalises to [[0, 1], [.5, 0]], mask = (1, 0).
    saliency = torch.tensor([[[0.9, 0.5], [0.1, 0.1]], [[0.0, 2.0], [1.0, 0.0]]])
    masks = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [1, 0]]], dtype=torch.bool)
    return saliency, masks


def test_fmeasure_hand_worked_2x2():
    result = saliency_fmeasure(*_hand_fmeasure_case())
    assert isinstance(result, FMeasure)
    assert result.thresholds.shape == (256,) and result.thresholds[0] == 0 and result.thresholds[-1] == 1
    # t = 0: everything predicted.  0 < t <= 0.5 (j = 1..127): the top two pixels.  t > 0.5: the single top pixel.
    # A: (P, R) = (.5, 1), (1, 1), (1, .5);  B: (.25, 1), (.5, 1), (0, 0).
    p, r = result.precision, result.recall
    assert p[0].item() == pytest.approx(0.375) and r[0].item() == 1.0
    assert p[1].item() == pytest.approx(0.75) and p[127].item() == pytest.approx(0.75) and r[127].item() == 1.0
    assert p[128].item() == pytest.approx(0.5) and r[128].item() == pytest.approx(0.25)
    assert p[255].item() == pytest.approx(0.5) and r[255].item() == pytest.approx(0.25)
    # max-F from the averaged curves: 1.3 · .75 · 1 / (.3 · .75 + 1) = 39/49.
    assert result.max_f == pytest.approx(39 / 49)
    # adaptive: both means are .375 -> threshold .75 -> A: P=1, R=.5, F=.65/.8; B: nothing correct, F=0.
    assert result.adaptive_f == pytest.approx(0.8125 / 2)


def test_fmeasure_beta2_and_constant_map():
    result = saliency_fmeasure(*_hand_fmeasure_case(), beta2=1.0, n_thresholds=3)  # thresholds 0, .5, 1
    torch.testing.assert_close(result.precision, torch.tensor([0.375, 0.75, 0.5], dtype=torch.float64))
    torch.testing.assert_close(result.recall, torch.tensor([1.0, 1.0, 0.25], dtype=torch.float64))
    assert result.max_f == pytest.approx(2 * 0.75 / 1.75)
    # A constant map normalises to zeros: predicted everywhere at t = 0 only; adaptive threshold 0 -> everything.
    const = saliency_fmeasure(torch.full((1, 2, 2), 7.0), torch.tensor([[[1, 0], [0, 0]]]), n_thresholds=4)
    torch.testing.assert_close(const.precision, torch.tensor([0.25, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(const.recall, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert const.adaptive_f == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1))


def _brute_force_fmeasure(saliency, masks, beta2, thresholds):
    # A plain loop over thresholds (the same float values, so ties at a threshold compare identically).
    ps, rs, adaptive = [], [], []
    for s, m in zip(saliency.double().numpy(), masks.numpy()):
        s = s.ravel()
        m = m.ravel()
        span = s.max() - s.min()
        v = (s - s.min()) / span if span > 0 else np.zeros_like(s)
        pred = v[None, :] >= thresholds[:, None]
        tp = (pred & m[None]).sum(1)
        ps.append(np.where(pred.sum(1) > 0, tp / np.maximum(pred.sum(1), 1), 0.0))
        rs.append(tp / m.sum())
        a = v >= min(2 * v.mean(), 1)
        tp_a = (a & m).sum()
        pa = tp_a / a.sum() if a.sum() else 0.0
        ra = tp_a / m.sum()
        adaptive.append((1 + beta2) * pa * ra / (beta2 * pa + ra) if beta2 * pa + ra > 0 else 0.0)
    p, r = np.mean(ps, 0), np.mean(rs, 0)
    den = beta2 * p + r
    f = np.where(den > 0, (1 + beta2) * p * r / np.where(den > 0, den, 1), 0)
    return f.max(), float(np.mean(adaptive)), p, r


@FAST
@given(saliency_and_masks(max_side=10), st.sampled_from([0.3, 1.0]), st.integers(2, 40))
def test_fmeasure_matches_threshold_loop(data, beta2, steps):
    saliency, masks = data
    result = saliency_fmeasure(saliency, masks, beta2=beta2, n_thresholds=steps)
    np.testing.assert_allclose(result.thresholds.numpy(), np.linspace(0, 1, steps), atol=1e-15)
    max_f, adaptive_f, p, r = _brute_force_fmeasure(saliency, masks, beta2, result.thresholds.numpy())
    np.testing.assert_allclose(result.precision.numpy(), p, atol=1e-12)
    np.testing.assert_allclose(result.recall.numpy(), r, atol=1e-12)
    assert result.max_f == pytest.approx(max_f, abs=1e-12)
    assert result.adaptive_f == pytest.approx(adaptive_f, abs=1e-12)


@FAST
@given(mask_batch(non_empty=True, not_full=True))
def test_fmeasure_and_mae_of_perfect_map(masks):
    # (an all-foreground mask is excluded: its "perfect" map is constant, and constant maps normalise to zeros)
    result = saliency_fmeasure(masks.float(), masks)
    assert result.max_f == pytest.approx(1.0) and result.adaptive_f == pytest.approx(1.0)
    assert mae(masks.float() * 3.0, masks) == 0.0


@FAST
@given(saliency_and_masks(), st.integers(-20, 20), st.floats(1e-3, 1e3, allow_nan=False))
def test_fmeasure_and_mae_scale_invariance(data, power, scale):
    saliency, masks = data
    base = saliency_fmeasure(saliency, masks)
    scaled = saliency_fmeasure(saliency * 2.0**power, masks)  # powers of two scale exactly
    assert torch.equal(base.precision, scaled.precision) and torch.equal(base.recall, scaled.recall)
    assert base.max_f == scaled.max_f and base.adaptive_f == scaled.adaptive_f
    torch.testing.assert_close(mae(saliency * scale, masks, reduce=False), mae(saliency, masks, reduce=False))


@FAST
@given(two_batches())
def test_fmeasure_and_mae_batch_invariance(pair):
    a, b = pair
    na, nb = a[0].shape[0], b[0].shape[0]
    whole = saliency_fmeasure(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), n_thresholds=32)
    fa, fb = saliency_fmeasure(*a, n_thresholds=32), saliency_fmeasure(*b, n_thresholds=32)
    torch.testing.assert_close(whole.precision, (na * fa.precision + nb * fb.precision) / (na + nb))
    torch.testing.assert_close(whole.recall, (na * fa.recall + nb * fb.recall) / (na + nb))
    assert whole.adaptive_f == pytest.approx((na * fa.adaptive_f + nb * fb.adaptive_f) / (na + nb))
    whole_mae = mae(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), reduce=False)
    torch.testing.assert_close(whole_mae, torch.cat([mae(*a, reduce=False), mae(*b, reduce=False)]))


def test_mae_hand_values():
    saliency = torch.tensor([[[4.0, 2.0], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]])
    masks = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]])
    assert mae(saliency, masks, reduce=False).tolist() == [0.125, 0.25]  # constant map -> zeros
    assert mae(saliency[:, None], masks[:, None]) == pytest.approx(0.1875)


def test_chunked_metrics_agree_with_single_chunk(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    saliency = torch.rand(5, 6, 7, generator=gen)
    masks = torch.rand(5, 6, 7, generator=gen) > 0.6
    masks[:, 0, 0] = True
    expected = (saliency_fmeasure(saliency, masks), mae(saliency, masks, reduce=False),
                energy_pointing_game(saliency, masks, reduce=False))
    monkeypatch.setattr(_batching, "CHUNK_ELEMENTS", 50)  # one image (42 px) per chunk
    assert len(_batching.chunks(5, 42)) == 5
    got = (saliency_fmeasure(saliency, masks), mae(saliency, masks, reduce=False),
           energy_pointing_game(saliency, masks, reduce=False))
    torch.testing.assert_close(got[0].precision, expected[0].precision)
    assert got[0].max_f == pytest.approx(expected[0].max_f)
    torch.testing.assert_close(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2])


# --------------------------------------------------------------------------------------------------------------------
# mask_iou
# --------------------------------------------------------------------------------------------------------------------


def test_mask_iou_hand_values():
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 1]]])
    gt = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 1], [1, 0]], [[1, 0], [0, 0]]])
    assert mask_iou(pred, gt).tolist() == [0.5, 0.0, 0.5, 0.0]  # an empty prediction is valid and scores 0
    assert mask_iou(pred.numpy().astype(np.float32), gt.bool(), reduce=True) == pytest.approx(0.25)


@FAST
@given(mask_batch(non_empty=True))
def test_mask_iou_perfect(masks):
    assert bool((mask_iou(masks, masks) == 1).all())


@FAST
@given(mask_batch(non_empty=True), st.data())
def test_mask_iou_symmetric_bounded_batch_invariant(a, data):
    b = torch.from_numpy(data.draw(hnp.arrays(np.bool_, tuple(a.shape))))
    b[:, 0, 0] = True  # non-empty, so each batch may serve as ground truth
    ab = mask_iou(a, b)
    assert torch.equal(ab, mask_iou(b, a))
    assert bool(((ab >= 0) & (ab <= 1)).all())
    assert torch.equal(ab, torch.cat([mask_iou(a[i:i + 1], b[i:i + 1]) for i in range(a.shape[0])]))


# --------------------------------------------------------------------------------------------------------------------
# boxes_from_saliency
# --------------------------------------------------------------------------------------------------------------------


def test_boxes_from_saliency_picks_largest_component_not_argmax():
    saliency = torch.zeros(2, 1, 10, 12)
    saliency[0, 0, 0, 0] = 1.0               # argmax, alone
    saliency[0, 0, 4:8, 5:11] = 0.3          # largest component (>= 0.2 · max)
    saliency[0, 0, 9, 0] = 0.1               # below threshold
    saliency[1, 0, 2:4, 2:4] = 2.0           # single blob holding the maximum
    boxes = boxes_from_saliency(saliency)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[5.0, 4.0, 11.0, 8.0], [2.0, 2.0, 4.0, 4.0]]


def test_boxes_from_saliency_eight_connectivity_and_threshold():
    saliency = torch.zeros(1, 8, 8)
    for k in range(4):                        # a diagonal chain of 4 pixels: one component with 8-connectivity
        saliency[0, k, k] = 1.0
    saliency[0, 6:8, 5:7] = 0.5               # a 2×2 block (4 pixels, later in row-major order) at exactly 0.5·max
    assert boxes_from_saliency(saliency, threshold=0.5).tolist() == [[0.0, 0.0, 4.0, 4.0]]  # tie -> first component
    saliency[0, 5, 5] = 0.5                    # block now has 5 pixels
    assert boxes_from_saliency(saliency, threshold=0.5).tolist() == [[5.0, 5.0, 7.0, 8.0]]
    assert boxes_from_saliency(saliency, threshold=0.6).tolist() == [[0.0, 0.0, 4.0, 4.0]]


def test_boxes_from_saliency_non_positive_map_gives_full_image():
    saliency = torch.stack([torch.zeros(5, 7), -torch.ones(5, 7)])
    assert boxes_from_saliency(saliency).tolist() == [[0.0, 0.0, 7.0, 5.0]] * 2


@FAST
@given(mask_batch(non_empty=True))
def test_boxes_from_saliency_single_blob_and_batch_invariance(masks):
    boxes = boxes_from_saliency(masks.float())
    h, w = masks.shape[1:]
    assert bool((boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all())
    assert bool((boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
    parts = torch.cat([boxes_from_saliency(masks[i:i + 1].float()) for i in range(masks.shape[0])])
    assert torch.equal(boxes, parts)
    full = masks.clone()
    full[:] = False
    full[:, : h // 2 + 1, : w // 2 + 1] = True  # one connected blob -> its tight box
    assert torch.equal(boxes_from_saliency(full.float() * 3), masks_to_boxes(full))


# --------------------------------------------------------------------------------------------------------------------
# binned_accuracy
# --------------------------------------------------------------------------------------------------------------------


def test_binned_accuracy_hand_table():
    # bin [0, 1000): class 0 two of two right, class 1 zero of one  -> per-image 2/3, class-mean 1/2
    # bin [1000, 2000): class 2 one of two right                    -> per-image 1/2, class-mean 1/2
    # bin [2000, 4000): empty
    predictions = torch.tensor([0, 0, 0, 2, 1])
    labels = torch.tensor([0, 0, 1, 2, 2])
    sizes = torch.tensor([0, 999.5, 500, 1000, 1999])
    result = binned_accuracy(predictions, labels, sizes, bin_edges=(0, 1000, 2000, 4000))
    assert isinstance(result, BinnedAccuracy)
    np.testing.assert_array_equal(result.edges, [0, 1000, 2000, 4000])
    np.testing.assert_array_equal(result.counts, [3, 2, 0])
    np.testing.assert_allclose(result.per_image, [2 / 3, 0.5, np.nan])
    np.testing.assert_allclose(result.class_mean, [0.5, 0.5, np.nan])
    assert result.overall_per_image == pytest.approx(0.6)
    assert result.overall_class_mean == pytest.approx((1 + 0 + 0.5) / 3)
    assert result.to_markdown() == "\n".join([
        "| ROI size (px) | count | class-mean acc | per-image acc |",
        "|---|---:|---:|---:|",
        "| 0-1000 | 3 | 50.0% | 66.7% |",
        "| 1000-2000 | 2 | 50.0% | 50.0% |",
        "| 2000-4000 | 0 | - | - |",
        "| all sizes | 5 | 50.0% | 60.0% |",
    ])
    assert "2000-4000" not in result.to_markdown(skip_empty=True)
    assert "| 0-1000 | 3 | 50% | 67% |" in result.to_markdown(digits=0)


def test_binned_accuracy_paper_bins_and_scores():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    result = binned_accuracy(logits, [0, 1, 1], np.array([10, 300000, 999999]), num_classes=2)
    assert len(result.counts) == len(PAPER_ROI_BINS) - 1 == 11
    assert result.counts.sum() == 3 and result.counts[0] == 1 and result.counts[9] == 1 and result.counts[10] == 1
    assert "| 500000-1000000 | 1 | 0.0% | 0.0% |" in result.to_markdown()


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3999)), min_size=1, max_size=40))
def test_binned_accuracy_consistency(rows):
    preds, labels, sizes = (list(col) for col in zip(*rows))
    result = binned_accuracy(preds, labels, sizes, bin_edges=(0, 1000, 2000, 4000))
    assert result.counts.sum() == len(rows)
    filled = result.counts > 0
    assert np.isnan(result.per_image[~filled]).all() and np.isnan(result.class_mean[~filled]).all()
    weighted = np.sum(result.per_image[filled] * result.counts[filled]) / len(rows)
    assert result.overall_per_image == pytest.approx(weighted)
    assert ((result.class_mean[filled] >= 0) & (result.class_mean[filled] <= 1)).all()


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------

_S = torch.rand(2, 4, 4)
_M = torch.zeros(2, 4, 4, dtype=torch.bool)
_M[:, 1, 1] = True
_B = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3]])
_NAN = _S.clone()
_NAN[0, 0, 0] = float("nan")
_INF = _S.clone()
_INF[1, 2, 2] = float("inf")

_MAP_FUNCS = [
    lambda s, m: pointing_game(s, m),
    lambda s, m: energy_pointing_game(s, m),
    lambda s, m: saliency_fmeasure(s, m),
    lambda s, m: mae(s, m),
]

_BAD_MAP_PAIRS = [
    (torch.rand(4, 4), _M, ValueError, "saliency"),                   # wrong ndim
    (torch.rand(2, 3, 4, 4), _M, ValueError, "saliency"),             # 3 channels
    (_NAN, _M, ValueError, "saliency"),
    (_INF, _M, ValueError, "saliency"),
    (torch.rand(2, 4, 4, dtype=torch.complex64), _M, TypeError, "saliency"),
    ("not a map", _M, TypeError, "saliency"),
    (torch.rand(0, 4, 4), _M[:0], ValueError, "saliency"),            # empty batch
    (torch.rand(3, 4, 4), _M, ValueError, "saliency.*masks"),         # mismatched N
    (torch.rand(2, 4, 5), _M, ValueError, "saliency.*masks"),         # mismatched H×W
    (_S, _M.float() * 2, ValueError, "masks"),                        # not 0/1
    (_S, torch.zeros(2, 2, 4, 4, dtype=torch.bool), ValueError, "masks"),
]


@pytest.mark.parametrize("func", _MAP_FUNCS)
@pytest.mark.parametrize("saliency,masks,exc,match", _BAD_MAP_PAIRS)
def test_map_metrics_reject_bad_input(func, saliency, masks, exc, match):
    with pytest.raises(exc, match=match):
        func(saliency, masks)


# Regression: energy_pointing_game used to score an image with an empty mask as 0 and average it in, while
# pointing_game and saliency_fmeasure raised. Every metric now rejects empty ground truth the same way.
_EMPTY_SECOND = _M.clone()
_EMPTY_SECOND[1] = False


@pytest.mark.parametrize("func,name", [
    (lambda m: pointing_game(_S, m), "masks"),
    (lambda m: pointing_game(_S, m, labels=[0, 1], reduce=False), "masks"),
    (lambda m: energy_pointing_game(_S, m), "masks"),
    (lambda m: energy_pointing_game(_S, m, reduce=False), "masks"),
    (lambda m: saliency_fmeasure(_S, m), "masks"),
    (lambda m: mae(_S, m), "masks"),
    (lambda m: mask_iou(_M, m), "gt_masks"),
])
def test_empty_ground_truth_mask_raises_naming_argument_and_index(func, name):
    with pytest.raises(ValueError, match=rf"^`{name}` must hold at least one foreground pixel per image; "
                                         r"empty at image index\(es\) \[1\]$"):
        func(_EMPTY_SECOND)
    with pytest.raises(ValueError, match=r"index\(es\) \[0, 1\]$"):
        func(torch.zeros_like(_M))
    with pytest.raises(ValueError, match=r"index\(es\) \[1\]$"):  # 0/1 and N×1×H×W masks too
        func(_EMPTY_SECOND[:, None].to(torch.uint8))


def test_energy_pointing_game_no_longer_averages_in_empty_masks():
    saliency = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    masks = torch.tensor([[[0, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    assert energy_pointing_game(saliency[:1], masks[:1]) == 0.75  # the valid image alone
    with pytest.raises(ValueError, match=r"`masks`.*\[1\]"):
        energy_pointing_game(saliency, masks)  # used to return (0.75 + 0) / 2 = 0.375


def test_empty_predictions_are_valid():
    # The rule is about ground truth only: an empty prediction is a valid, wrong answer.
    assert mask_iou(torch.zeros_like(_M), _M).tolist() == [0.0, 0.0]
    assert energy_pointing_game(torch.zeros_like(_S), _M, reduce=False).tolist() == [0.0, 0.0]
    assert corloc(torch.zeros(2, 4), _B, reduce=False).tolist() == [False, False]


@pytest.mark.parametrize("gt,index", [
    ([_B[0], torch.zeros(0, 4)], 1),                                  # no box at all
    ([[], _B[1]], 0),                                                 # an empty list
    ([_B[0], torch.tensor([[0.0, 0, 0, 0], [2, 2, 2, 5]])], 1),       # only zero-area boxes
    (torch.tensor([[0.0, 0, 2, 2], [3, 3, 3, 3]]), 1),                # N×4 tensor form
    (torch.tensor([[[0.0, 0, 2, 0]], [[0, 0, 1, 1]]]), 0),            # N×M×4 tensor form
])
def test_corloc_empty_ground_truth_region_raises_naming_index(gt, index):
    with pytest.raises(ValueError, match=rf"^`gt_boxes` must hold at least one box of positive area per pair; "
                                         rf"none at index\(es\) \[{index}\]$"):
        corloc(_B, gt)


@pytest.mark.parametrize("a,b,name", [
    (_B.bool(), _B, "boxes1"),
    (_B, _B.bool(), "boxes2"),
    (_B, _B.numpy().astype(bool), "boxes2"),
    ([[True, False, True, True]], _B, "boxes1"),
])
def test_box_iou_rejects_bool_boxes(a, b, name):
    with pytest.raises(TypeError, match=rf"^`{name}` must hold numeric box coordinates, got dtype torch.bool$"):
        box_iou(a, b)


@pytest.mark.parametrize("pred,gt,name", [
    (_B.bool(), _B, "pred_boxes"),
    (_B, _B.bool(), "gt_boxes"),
    (_B, [_B[0], _B[1].bool()], r"gt_boxes\[1\]"),
])
def test_corloc_rejects_bool_boxes(pred, gt, name):
    with pytest.raises(TypeError, match=rf"^`{name}` must hold numeric box coordinates"):
        corloc(pred, gt)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"tolerance": -1.0}, ValueError, "tolerance"),
    ({"tolerance": float("nan")}, ValueError, "tolerance"),
    ({"tolerance": "15"}, TypeError, "tolerance"),
    ({"labels": torch.tensor([0, 1, 2])}, ValueError, "labels"),
    ({"labels": torch.tensor([0.0, 1.0])}, TypeError, "labels"),
    ({"labels": torch.tensor([[0, 1]])}, ValueError, "labels"),
])
def test_pointing_game_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pointing_game(_S, _M, **kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"beta2": -0.1}, ValueError, "beta2"),
    ({"beta2": float("inf")}, ValueError, "beta2"),
    ({"n_thresholds": 1}, ValueError, "n_thresholds"),
    ({"n_thresholds": 2.5}, TypeError, "n_thresholds"),
    ({"n_thresholds": True}, TypeError, "n_thresholds"),
])
def test_fmeasure_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        saliency_fmeasure(_S, _M, **kwargs)


@pytest.mark.parametrize("a,b,exc,match", [
    (torch.tensor([[2.0, 0, 1, 1]]), _B, ValueError, "boxes1"),       # x2 < x1
    (_B, torch.tensor([[0.0, 3, 1, 1]]), ValueError, "boxes2"),       # y2 < y1
    (torch.zeros(2, 3), _B, ValueError, "boxes1"),
    (_B, torch.zeros(4), ValueError, "boxes2"),
    (torch.tensor([[0.0, 0, float("nan"), 1]]), _B, ValueError, "boxes1"),
    (_B, "boxes", TypeError, "boxes2"),
])
def test_box_iou_bad_input(a, b, exc, match):
    with pytest.raises(exc, match=match):
        box_iou(a, b)


@pytest.mark.parametrize("pred,gt,kwargs,exc,match", [
    (torch.tensor([[2.0, 0, 1, 1]]), torch.tensor([[0.0, 0, 1, 1]]), {}, ValueError, "pred_boxes"),
    (_B, _B[:1], {}, ValueError, "gt_boxes"),
    (_B, [_B[0]], {}, ValueError, "gt_boxes"),
    (_B, [_B[0], torch.tensor([[3.0, 0, 1, 1]])], {}, ValueError, r"gt_boxes\[1\]"),
    (_B, [_B[0], torch.zeros(2, 5)], {}, ValueError, r"gt_boxes\[1\]"),
    (_B, [_B[0], torch.tensor([[0.0, 0, float("nan"), 1]])], {}, ValueError, r"gt_boxes\[1\]"),
    (torch.cat([_B, _B[:1]]), [_B[:1], [], [[0, 0, 1, 1], [5, 5, 4, 6]]], {}, ValueError, r"gt_boxes\[2\]"),
    (_B, [_B[0], torch.zeros(1, 4, dtype=torch.complex64)], {}, TypeError, r"gt_boxes\[1\]"),
    (_B, torch.zeros(2, 3), {}, ValueError, "gt_boxes"),
    (_B, "gt", {}, TypeError, "gt_boxes"),
    (_B, _B, {"iou_threshold": 1.5}, ValueError, "iou_threshold"),
    (_B, _B, {"iou_threshold": -0.1}, ValueError, "iou_threshold"),
    (_B, _B, {"iou_threshold": None}, TypeError, "iou_threshold"),
    (torch.zeros(0, 4), torch.zeros(0, 4), {}, ValueError, "pred_boxes"),
])
def test_corloc_bad_input(pred, gt, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        corloc(pred, gt, **kwargs)


@pytest.mark.parametrize("a,b,exc,match", [
    (_M.float() * 0.5, _M, ValueError, "pred_masks"),
    (_M, torch.zeros(2, 4), ValueError, "gt_masks"),
    (_M, _M[:1], ValueError, "pred_masks.*gt_masks"),
    (_M, torch.zeros(2, 4, 3, dtype=torch.bool), ValueError, "pred_masks.*gt_masks"),
    (_M.to(torch.complex64), _M, TypeError, "pred_masks"),
])
def test_mask_iou_bad_input(a, b, exc, match):
    with pytest.raises(exc, match=match):
        mask_iou(a, b)


@pytest.mark.parametrize("saliency,kwargs,exc,match", [
    (torch.rand(4, 4), {}, ValueError, "saliency"),
    (_NAN, {}, ValueError, "saliency"),
    (_S, {"threshold": 1.5}, ValueError, "threshold"),
    (_S, {"threshold": -0.5}, ValueError, "threshold"),
    (_S, {"threshold": "0.2"}, TypeError, "threshold"),
])
def test_boxes_from_saliency_bad_input(saliency, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        boxes_from_saliency(saliency, **kwargs)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    (([0, 1], [0], [1, 2]), {}, ValueError, "predictions.*labels"),
    (([0, 1], [0, 1], [1]), {}, ValueError, "labels.*roi_sizes"),
    (([0, 1], [0, 1], [1, 1000000]), {}, ValueError, "roi_sizes"),   # upper edge is exclusive
    (([0, 1], [0, 1], [-1, 5]), {}, ValueError, "roi_sizes"),
    (([0, 1], [0, 1], [1, float("nan")]), {}, ValueError, "roi_sizes"),
    (([0.0, 1.0], [0, 1], [1, 2]), {}, TypeError, "predictions"),
    (([0, 1], [0.0, 1.0], [1, 2]), {}, TypeError, "labels"),
    (([0, 1], [0, -1], [1, 2]), {}, ValueError, "labels"),
    (([0, 1], [0, 1], [1, 2]), {"bin_edges": (0, 10, 5)}, ValueError, "bin_edges"),
    (([0, 1], [0, 1], [1, 2]), {"bin_edges": (0,)}, ValueError, "bin_edges"),
    (([0, 1], [0, 1], [1, 2]), {"bin_edges": ("a", "b")}, TypeError, "bin_edges"),
    (([0, 1], [0, 2], [1, 2]), {"num_classes": 2}, ValueError, "labels"),
    (([0, 5], [0, 1], [1, 2]), {"num_classes": 2}, ValueError, "predictions"),
    (([0, 1], [0, 1], [1, 2]), {"num_classes": 0}, ValueError, "num_classes"),
    (([], [], []), {}, ValueError, "labels"),
])
def test_binned_accuracy_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        binned_accuracy(*args, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# class_distinctness
# --------------------------------------------------------------------------------------------------------------------


def test_class_distinctness_by_hand():
    # Pair 0: mass 3 on its own object, 1 + 2 on two others → ratio 1.0, own first (3 > 2).
    # Pair 1: mass 1 on its own object, 4 on the other → ratio 4.0, not own first.
    sal = torch.tensor([[[3.0, 1.0, 2.0, 0.5]], [[1.0, 4.0, 0.0, 0.0]]])
    own = torch.tensor([[[True, False, False, False]], [[True, False, False, False]]])
    others = [torch.tensor([[[False, True, False, False]], [[False, False, True, False]]]),
              torch.tensor([[[False, True, False, False]]])]
    per_pair = metrics.class_distinctness(sal, own, others, reduce=False)
    assert per_pair.tolist() == [[1.0, 1.0], [4.0, 0.0]]
    result = metrics.class_distinctness(sal, own, others)
    assert result.median_ratio == 1.0  # torch's median of two values is the lower one
    assert result.pooled_ratio == 7.0 / 4.0 and result.own_first == 0.5
    # Negative values do not count, and no mass on the own object gives an infinite ratio.
    zero_own = metrics.class_distinctness(torch.tensor([[[-1.0, 2.0]]]), torch.tensor([[[True, False]]]),
                                          [torch.tensor([[[False, True]]])], reduce=False)
    assert zero_own[0, 0] == float("inf") and zero_own[0, 1] == 0.0


def test_class_distinctness_bad_input():
    sal = torch.rand(1, 2, 2)
    own = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="no other class"):
        metrics.class_distinctness(sal, own, [torch.zeros(0, 2, 2, dtype=torch.bool)])
    with pytest.raises(ValueError, match="one stack per pair"):
        metrics.class_distinctness(sal, own, [])
    with pytest.raises(ValueError, match="own_masks"):
        metrics.class_distinctness(sal, torch.ones(1, 3, 3, dtype=torch.bool), [torch.ones(1, 2, 2).bool()])
