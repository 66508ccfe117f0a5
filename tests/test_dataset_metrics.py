"""Tests for the dataset-scale metrics: MaxBoxAccV2 / PxAP (captum_ext.metrics.wsol, hand-computed and against brute
force) and the streaming torchmetrics metrics (captum_ext.metrics.streaming: equal to the functional metrics over
the concatenated data, exact replay of stored statistics, and a 2-process gloo run equal to one process)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchmetrics.utilities.data import dim_zero_sum

from captum_ext import metrics
from captum_ext.metrics import (
    CorLocMetric,
    EnergyPointingGameMetric,
    MaxBoxAccResult,
    MaxBoxAccV2Metric,
    PointingGameMetric,
    PxAPMetric,
    PxAPResult,
    box_iou,
    boxes_from_saliency,
    boxes_to_masks,
    corloc,
    energy_pointing_game,
    masks_to_boxes,
    maxboxacc_v2,
    pointing_game,
    pxap,
)
from captum_ext.metrics.ground_truth import GroundTruth

SWEEP = [0.25, 0.5, 0.75]  # exact in binary, so hand values are exact


# --------------------------------------------------------------------------------------------------------------------
# MaxBoxAccV2, by hand
# --------------------------------------------------------------------------------------------------------------------


def _hand_boxacc_batch() -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Three 3×10 maps (values already in [0, 1], min 0, max 1: normalisation changes nothing)."""
    maps = torch.zeros(3, 3, 10, dtype=torch.float64)
    # A: object at columns 2..5 of row 1; a distractor at 8..9; a 0.375 halo at columns 1 and 6.
    maps[0, 1] = torch.tensor([0, 0.375, 1, 1, 1, 1, 0.375, 0, 0.625, 0.625])
    # B: object at columns 0..3 of row 1; only column 0 is hot, a 0.375 plateau spreads to column 7.
    maps[1, 1] = torch.tensor([1, 0.375, 0.375, 0.375, 0.375, 0.375, 0.375, 0.375, 0, 0])
    # C: the object is a 2×2 blob (value 1) at the top left; a larger 3×4 distractor (0.625) at columns 4..7.
    maps[2, 0:2, 0:2] = 1.0
    maps[2, :, 4:8] = 0.625
    gts = [torch.tensor([[2.0, 1, 6, 2]]), torch.tensor([[0.0, 1, 4, 2]]), torch.tensor([[0.0, 0, 2, 2]])]
    return maps, gts


def test_maxboxacc_hand_values_best_threshold_differs_per_iou():
    maps, gts = _hand_boxacc_batch()
    # Best IoU per τ = 0.25, 0.5, 0.75 (candidates: all components of {map >= τ}):
    #   A: τ=.25 -> runs [1, 7) and [8, 10): IoU([1,7), [2,6)) = 4/6; τ=.5 -> [2, 6), [8, 10): 1; τ=.75 -> [2, 6): 1
    #   B: τ=.25 -> [0, 8): 4/8 = 0.5; τ=.5 and .75 -> [0, 1): 1/4
    #   C: τ=.25, .5 -> the blob (0,0,2,2) and the distractor (4,0,8,3): 1 (the *largest* component alone, the
    #      distractor, would score 0); τ=.75 -> the blob: 1
    # δ = 0.3: A [1,1,1], B [1,0,0], C [1,1,1] -> accuracy [1, 2/3, 2/3]: BoxAcc 1 at τ = 0.25
    # δ = 0.7: A [0,1,1], B [0,0,0], C [1,1,1] -> accuracy [1/3, 2/3, 2/3]: BoxAcc 2/3 at τ = 0.5
    result = maxboxacc_v2(maps, gts, thresholds=SWEEP, iou_thresholds=(0.3, 0.7), reduce=False)
    assert isinstance(result, MaxBoxAccResult)
    torch.testing.assert_close(
        result.accuracy, torch.tensor([[1, 2 / 3, 2 / 3], [1 / 3, 2 / 3, 2 / 3]], dtype=torch.float64)
    )
    assert result.box_acc.tolist() == [1.0, 2 / 3]
    assert result.best_thresholds.tolist() == [0.25, 0.5]
    assert result.value == pytest.approx(5 / 6, abs=1e-15)
    assert result.thresholds.tolist() == SWEEP and result.iou_thresholds.tolist() == [0.3, 0.7]
    assert maxboxacc_v2(maps, gts, thresholds=SWEEP, iou_thresholds=(0.3, 0.7)) == result.value
    # The CAM box (largest component) of C misses, which is why MaxBoxAccV2 scores every component.
    assert boxes_from_saliency(maps[2:], threshold=0.5).tolist() == [[4.0, 0.0, 8.0, 3.0]]


def test_maxboxacc_components_are_eight_connected():
    # Two diagonal pixels are one component (0,0,2,2) -> IoU 1 with the gt; 4-connected they would be two 1-px
    # boxes with IoU 1/4.
    sal = torch.zeros(1, 3, 3)
    sal[0, 0, 0] = sal[0, 1, 1] = 1.0
    assert maxboxacc_v2(sal, torch.tensor([[0.0, 0, 2, 2]]), thresholds=[0.5], iou_thresholds=[1.0]) == 1.0


def test_maxboxacc_constant_map_and_default_sweep():
    # A constant map normalises to zeros: τ = 0 keeps the whole image (box = gt here), every τ > 0 keeps nothing.
    result = maxboxacc_v2(torch.full((1, 4, 5), 3.0), [torch.tensor([[0.0, 0, 5, 4]])], reduce=False)
    assert result.thresholds.tolist() == [k / 100 for k in range(100)]
    expected = torch.zeros(3, 100, dtype=torch.float64)
    expected[:, 0] = 1.0
    assert torch.equal(result.accuracy, expected)
    assert result.best_thresholds.tolist() == [0.0, 0.0, 0.0] and result.value == 1.0


def _brute_maxboxacc(maps, gts, thresholds, ious):
    """Straight from the definition: label {map >= τ}, one mask per component, its tight box, the best IoU."""
    correct = np.zeros((len(ious), len(thresholds)))
    for sal, gt in zip(maps, gts):
        low, high = sal.min(), sal.max()
        norm = (sal - low) / (high - low) if high > low else torch.zeros_like(sal)
        for t, tau in enumerate(thresholds):
            labelled, count = ndimage.label((norm >= tau).numpy(), structure=np.ones((3, 3)))
            if count == 0:
                continue
            components = torch.stack([torch.from_numpy(labelled == k) for k in range(1, count + 1)])
            best = float(box_iou(masks_to_boxes(components), gt).max())
            correct[:, t] += [best >= d for d in ious]
    accuracy = correct / len(maps)
    return float(accuracy.max(axis=1).mean())


def test_maxboxacc_matches_brute_force_on_random_maps():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(6, 7, 9, generator=gen, dtype=torch.float64)
    maps[::2] = (maps[::2] * 5).floor()  # plateaus: several τ keep the same region
    gts = [torch.tensor([[1.0, 1, 5, 6], [4, 0, 9, 3]]), torch.tensor([[0.0, 0, 9, 7]])] * 3
    for sweep in (None, [0.0, 0.3, 0.31, 0.8, 1.0]):
        grid = [k / 100 for k in range(100)] if sweep is None else sweep
        expected = _brute_maxboxacc(maps, gts, grid, (0.3, 0.5, 0.7))
        assert maxboxacc_v2(maps, gts, thresholds=sweep) == pytest.approx(expected, abs=1e-12)
    # Noise: over 64 components at high τ, where the boxes come from the vectorised path.
    noise = torch.rand(3, 30, 30, generator=gen, dtype=torch.float64)
    gts = [torch.tensor([[10.0, 10, 11, 11]]), torch.tensor([[0.0, 0, 30, 30]]), torch.tensor([[3.0, 4, 6, 6]])]
    expected = _brute_maxboxacc(noise, gts, [0.5, 0.8, 0.9], (0.3, 0.5, 0.7))
    assert maxboxacc_v2(noise, gts, thresholds=[0.5, 0.8, 0.9]) == pytest.approx(expected, abs=1e-12)


def test_maxboxacc_input_errors():
    maps = torch.rand(2, 4, 4)
    gt = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3]])
    with pytest.raises(ValueError, match="`saliency` and `gt_boxes`"):
        maxboxacc_v2(maps, gt[:1])
    with pytest.raises(ValueError, match=r"`gt_boxes`.*positive area.*\[1\]"):
        maxboxacc_v2(maps, [gt[:1], torch.tensor([[2.0, 2, 2, 3]])])
    with pytest.raises(ValueError, match="strictly increasing"):
        maxboxacc_v2(maps, gt, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"`thresholds` must lie in \[0, 1\]"):
        maxboxacc_v2(maps, gt, thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match=r"iou_thresholds\[0\]"):
        maxboxacc_v2(maps, gt, iou_thresholds=[0.0])
    with pytest.raises(TypeError, match="`gt_boxes`"):
        maxboxacc_v2(maps, gt.bool())


# --------------------------------------------------------------------------------------------------------------------
# PxAP, by hand
# --------------------------------------------------------------------------------------------------------------------


def test_pxap_hand_values_pool_pixels_over_images():
    maps = torch.tensor([[[1.0, 0.5], [0.5, 0.0]], [[0.0, 1.0], [0.25, 0.75]]])
    masks = torch.tensor([[[True, True], [False, False]], [[False, True], [True, False]]])
    # Pooled foreground values: 1, .5, 1, .25; background: .5, 0, 0, .75. Curve τ = 1, .5, 0 (the sweep + 1):
    #   τ=1:  TP 2, FP 0 -> P 1,   R .5
    #   τ=.5: TP 3, FP 2 -> P 3/5, R .75
    #   τ=0:  TP 4, FP 4 -> P 1/2, R 1
    # PxAP = 1 · .5 + 3/5 · .25 + 1/2 · .25 = 0.775 (the mean of the two images' APs would be 0.7917)
    result = pxap(maps, masks, thresholds=[0.0, 0.5], reduce=False)
    assert isinstance(result, PxAPResult)
    assert result.thresholds.tolist() == [0.0, 0.5, 1.0]
    assert result.precision.tolist() == [0.5, 0.6, 1.0] and result.recall.tolist() == [1.0, 0.75, 0.5]
    assert result.value == pytest.approx(0.775, abs=1e-15)
    assert pxap(maps, masks, thresholds=[0.0, 0.5]) == result.value
    # A sweep that already ends at 1 gets no second 1.
    assert pxap(maps, masks, thresholds=[0.0, 0.5, 1.0], reduce=False).thresholds.tolist() == [0.0, 0.5, 1.0]


def test_pxap_perfect_map_is_one_and_reversed_map_is_the_foreground_share():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 6, 7, generator=gen) > 0.6
    masks[:, 0, 0] = True
    masks[:, 5, 6] = False
    assert pxap(masks.double() * 3 + 1, masks) == 1.0
    # Reversed: the foreground is found only at τ = 0, together with all of the background: AP = P / (P + N).
    share = float(masks.sum()) / masks.numel()
    assert pxap((~masks).double(), masks) == pytest.approx(share, abs=1e-15)


def _brute_pxap(maps, masks, curve):
    """Straight from the definition, threshold by threshold, highest first."""
    norm = torch.stack([(m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
                        for m in maps.double()])
    positives = int(masks.sum())
    ap, previous = 0.0, 0.0
    for tau in sorted(curve, reverse=True):
        predicted = norm >= tau
        tp, fp = int((predicted & masks).sum()), int((predicted & ~masks).sum())
        recall = tp / positives
        ap += (tp / (tp + fp) if tp + fp else 0.0) * (recall - previous)
        previous = recall
    return ap


def test_pxap_matches_brute_force_on_random_maps():
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(5, 8, 6, generator=gen) > 0.5
    masks[:, 3, 3] = True
    maps = torch.rand(5, 8, 6, generator=gen, dtype=torch.float64) + masks * 0.3
    maps[1] = (maps[1] * 4).round()
    maps[2] = 2.0  # constant: all zeros after normalisation
    assert pxap(maps, masks) == pytest.approx(_brute_pxap(maps, masks, [k / 100 for k in range(100)] + [1]), abs=1e-12)
    assert pxap(maps, masks, [0.2, 0.7]) == pytest.approx(_brute_pxap(maps, masks, [0.2, 0.7, 1.0]), abs=1e-12)


def test_pxap_empty_mask_is_an_error_naming_the_image():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match=r"`masks`.*\[1, 2\]"):
        pxap(torch.rand(3, 4, 4), masks)


# --------------------------------------------------------------------------------------------------------------------
# Streaming metrics
# --------------------------------------------------------------------------------------------------------------------

NUM_CLASSES = 4


def _dataset(seed: int, n: int, sizes=((9, 11),), no_mask_every: int = 0):
    """Random pairs: a blob object (mask; its box plus sometimes a second instance box), maps that partly light it
    up, quantised maps (plateaus), an all-zero map, and every ``no_mask_every``-th pair without a mask."""
    gen = torch.Generator().manual_seed(seed)
    maps, truths = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        y0, x0 = (int(torch.randint(0, h - 2, (1,), generator=gen)), int(torch.randint(0, w - 2, (1,), generator=gen)))
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[y0 : y0 + 3, x0 : x0 + 2 + i % 3] = True
        boxes = masks_to_boxes(mask[None])
        if i % 4 == 1:
            boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        sal = torch.rand(h, w, generator=gen, dtype=torch.float64) * 0.6 + mask * torch.rand(1, generator=gen)
        if i % 3 == 0:
            sal = (sal * 4).floor()
        if i == 4:
            sal = torch.zeros(h, w, dtype=torch.float64)
        keep = not no_mask_every or i % no_mask_every
        truths.append(GroundTruth(i % NUM_CLASSES, boxes, mask if keep else None))
        maps.append(sal)
    return maps, truths


def _regions(maps, truths):
    return torch.stack([t.mask if t.mask is not None else boxes_to_masks(t.boxes, *m.shape).any(0)
                        for m, t in zip(maps, truths)])


def _all_metrics(**kwargs):
    return [
        PointingGameMetric(NUM_CLASSES, tolerance=2, **kwargs),
        EnergyPointingGameMetric(**kwargs),
        CorLocMetric(cam_threshold=0.3, iou=0.4, **kwargs),
        MaxBoxAccV2Metric(thresholds=torch.linspace(0, 0.95, 20, dtype=torch.float64), **kwargs),
        PxAPMetric(**kwargs),
    ]


def _functional_values(maps, truths):
    """The functional metrics over the concatenated data, in the order of :func:`_all_metrics`."""
    sal = torch.stack(maps)
    labels = torch.tensor([t.category for t in truths])
    gt_boxes = [t.boxes for t in truths]
    masked = [i for i, t in enumerate(truths) if t.mask is not None]
    return [
        pointing_game(sal, _regions(maps, truths), tolerance=2, labels=labels),
        energy_pointing_game(sal, _regions(maps, truths)),
        corloc(boxes_from_saliency(sal, 0.3), gt_boxes, 0.4),
        maxboxacc_v2(sal, gt_boxes, thresholds=torch.linspace(0, 0.95, 20, dtype=torch.float64)),
        pxap(sal[masked], torch.stack([truths[i].mask for i in masked])),
    ]


def _batches(n, size=5):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def test_streaming_equals_functional_over_the_concatenated_data():
    maps, truths = _dataset(0, 13, no_mask_every=4)
    streams = _all_metrics()
    for part in _batches(len(maps)):
        for metric in streams:
            metric.update(maps[part], truths[part])
    got = [float(metric.compute()) for metric in streams]
    expected = _functional_values(maps, truths)
    assert got[0] == expected[0] and got[2] == expected[2] and got[3] == expected[3] and got[4] == expected[4]
    assert got[1] == pytest.approx(expected[1], abs=2.0**-33)  # each pair's share rounded to the fixed-point unit
    assert int(streams[4].skipped) == 4  # pairs 0, 4, 8, 12 have no mask
    # The full results agree too.
    box_result = streams[3].compute_result()
    reference = maxboxacc_v2(torch.stack(maps), [t.boxes for t in truths],
                             thresholds=torch.linspace(0, 0.95, 20, dtype=torch.float64), reduce=False)
    assert torch.equal(box_result.accuracy, reference.accuracy)
    assert torch.equal(box_result.best_thresholds, reference.best_thresholds)


def test_streaming_per_pair_values_and_mixed_sizes():
    maps, truths = _dataset(1, 9, sizes=((9, 11), (6, 7), (9, 11)))
    streams = _all_metrics()
    per_pair = [metric.statistics(maps, truths)[1] for metric in streams]
    for metric in streams:
        metric.update(maps, truths)
    # One pair at a time, every pair is its own size group.
    hits = torch.cat([pointing_game(m[None], _regions([m], [t]), 2, reduce=False) for m, t in zip(maps, truths)])
    assert torch.equal(per_pair[0]["pointing_hit"], hits.long()) and per_pair[0]["pointing_hit"].dtype == torch.int64
    energy = torch.cat([energy_pointing_game(m[None], _regions([m], [t]), reduce=False) for m, t in zip(maps, truths)])
    assert torch.equal(per_pair[1]["energy"], energy) and per_pair[1]["energy"][4] == 0.0  # 4: the all-zero map
    cam = torch.cat([boxes_from_saliency(m[None], 0.3) for m in maps])
    assert torch.equal(per_pair[2]["corloc_hit"], corloc(cam, [t.boxes for t in truths], 0.4, reduce=False).long())
    assert torch.equal(per_pair[2]["corloc_hit"], (per_pair[2]["cam_box_iou"] >= 0.4).long())
    assert per_pair[4] == {}
    # The states are the sums of the per-pair values.
    labels = torch.tensor([t.category for t in truths])
    class_acc = [hits[labels == c].double().mean() for c in range(NUM_CLASSES) if bool((labels == c).any())]
    assert float(streams[0].compute()) == float(torch.stack(class_acc).mean())
    assert float(streams[1].compute()) == pytest.approx(float(energy.mean()), abs=2.0**-33)
    assert float(streams[2].compute()) == float(per_pair[2]["corloc_hit"].double().mean())
    # best_iou is the largest δ at which the pair alone is correct at some τ of the sweep.
    for m, t, best in zip(maps, truths, per_pair[3]["best_iou"].tolist()):
        def alone(delta, m=m, t=t):
            return maxboxacc_v2(m[None], [t.boxes], thresholds=streams[3].thresholds, iou_thresholds=[delta])
        assert best > 0 and alone(best) == 1.0 and (best == 1.0 or alone(min(best + 1e-9, 1.0)) == 0.0)


def test_predicted_boxes_replace_the_cam_boxes():
    maps, truths = _dataset(2, 6)
    predicted = torch.stack([t.boxes[0] for t in truths])
    predicted[::2, 2:] += 3.0  # half of them enlarged: IoU drops below 0.5
    metric = CorLocMetric()
    metric.update(maps, truths, predicted_boxes=predicted)
    assert float(metric.compute()) == corloc(predicted, [t.boxes for t in truths]) == 0.5


def test_replaying_statistics_equals_direct_updates():
    maps, truths = _dataset(3, 11, sizes=((9, 11), (7, 8)), no_mask_every=3)
    direct, replayed = _all_metrics(), _all_metrics()
    stored = [[metric.statistics(maps[part], truths[part])[0] for part in _batches(len(maps), 4)]
              for metric in direct]
    for metric in direct:
        for part in _batches(len(maps), 4):
            metric.update(maps[part], truths[part])
    for metric, deltas_per_batch in zip(replayed, stored):
        for deltas in deltas_per_batch:
            metric.update_from_statistics(deltas)
    for a, b, fresh in zip(direct, replayed, _all_metrics()):
        for name in a._defaults:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.equal(a.compute(), b.compute())
        fresh.load_state_dict(a.state_dict())  # persistent states: a checkpoint restores them too
        assert all(torch.equal(getattr(fresh, name), getattr(a, name)) for name in a._defaults)
    # Replaying after a compute() drops the cached value, like update() does.
    energy = EnergyPointingGameMetric()
    energy.update(maps[:2], truths[:2])
    first = energy.compute()
    energy.update_from_statistics(energy.statistics(maps[2:], truths[2:])[0])
    assert float(energy.compute()) != float(first)
    assert float(energy.compute()) == pytest.approx(float(replayed[1].compute()), abs=1e-12)  # all the pairs


def test_states_are_summed_int64_counts_or_float64_sums():
    for metric in _all_metrics():
        for name, default in metric._defaults.items():
            assert metric._reductions[name] is dim_zero_sum, name
            expected = torch.int64  # every state, energy's fixed-point sum included
            assert default.dtype == expected, name


def test_streaming_input_errors():
    maps, truths = _dataset(5, 3)
    with pytest.raises(ValueError, match=r"`truths` categories.*\[0, 2\).*\[2\]"):
        PointingGameMetric(2).update(maps, truths)
    empty = [GroundTruth(0, torch.zeros(0, 4), None), truths[1], GroundTruth(0, truths[2].boxes, torch.zeros(9, 11))]
    for metric in (PointingGameMetric(NUM_CLASSES), EnergyPointingGameMetric()):
        with pytest.raises(ValueError, match=r"`truths`.*foreground pixel.*\[0, 2\]"):
            metric.update(maps, empty)
    for metric in (CorLocMetric(), MaxBoxAccV2Metric()):
        with pytest.raises(ValueError, match=r"`truths`.*positive area.*\[0\]"):
            metric.update(maps, empty)
    with pytest.raises(ValueError, match=r"`truths` masks.*\[2\]"):
        PxAPMetric().update(maps, empty)
    with pytest.raises(ValueError, match=r"`truths\[1\].mask` must have its map's shape"):
        EnergyPointingGameMetric().update(maps[:2], [truths[0], GroundTruth(1, truths[1].boxes, torch.ones(3, 3))])
    with pytest.raises(ValueError, match="same length"):
        EnergyPointingGameMetric().update(maps, truths[:2])
    with pytest.raises(TypeError, match=r"`truths\[0\]`"):
        EnergyPointingGameMetric().update(maps[:1], [(0, torch.zeros(1, 4), None)])
    with pytest.raises(ValueError, match="`predicted_boxes` must have one row per pair"):
        CorLocMetric().update(maps, truths, predicted_boxes=torch.zeros(2, 4))
    metric = CorLocMetric()
    deltas = metric.statistics(maps, truths)[0]
    with pytest.raises(ValueError, match="exactly the keys"):
        metric.update_from_statistics({"hits": deltas["hits"]})
    with pytest.raises(TypeError, match=r"`deltas\['total'\]` must be a torch.int64"):
        metric.update_from_statistics({"hits": deltas["hits"], "total": deltas["total"].double()})
    with pytest.raises(ValueError, match="`num_classes`"):
        PointingGameMetric(0)


def test_no_pairs_and_no_masks_give_nan():
    maps, truths = _dataset(6, 3)
    boxes_only = [GroundTruth(t.category, t.boxes, None) for t in truths]
    metric = PxAPMetric()
    metric.update(maps, boxes_only)
    assert math.isnan(float(metric.compute())) and int(metric.skipped) == 3
    assert math.isnan(metric.compute_result().value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns that compute() ran before update()
        for fresh in _all_metrics():
            assert math.isnan(float(fresh.compute()))
    empty = _all_metrics()
    for metric in empty:
        metric.update([], [])  # an empty batch (e.g. a rank with nothing left) adds nothing
        assert all(int(getattr(metric, name).abs().sum()) == 0 for name in metric._defaults)


# --------------------------------------------------------------------------------------------------------------------
# Two processes (gloo, CPU)
# --------------------------------------------------------------------------------------------------------------------


_WORKER = """
import sys
import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[1])
from test_dataset_metrics import _all_metrics, _dataset

from captum_ext.evaluation.distributed import end_process_group

dist.init_process_group("gloo")  # torchrun's environment
rank = dist.get_rank()
try:
    maps, truths = _dataset(7, 10, sizes=((9, 11), (6, 7)), no_mask_every=3)
    half = slice(0, 6) if rank == 0 else slice(6, 10)  # disjoint, unequal halves
    streams = _all_metrics()
    for metric in streams:
        metric.update(maps[half], truths[half])
    values = [metric.compute() for metric in streams]
    results = [streams[3].compute_result(), streams[4].compute_result()]
    if rank == 0:
        torch.save({"values": values, "results": results}, sys.argv[2])
finally:
    end_process_group()
"""


def test_two_processes_equal_one(tmp_path):
    # Two processes under torchrun (gloo on the CPU), each updating a disjoint half; torchmetrics syncs at compute().
    out = str(tmp_path / "rank0.pt")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(Path(__file__).parent), out], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(out, weights_only=False)
    maps, truths = _dataset(7, 10, sizes=((9, 11), (6, 7)), no_mask_every=3)
    streams = _all_metrics()
    for metric in streams:
        metric.update(maps, truths)
    for i, (a, b) in enumerate(zip(got["values"], [metric.compute() for metric in streams])):
        assert torch.equal(a, b), i  # integer states: exact in any grouping, the fixed-point energy included
    assert torch.equal(got["results"][0].accuracy, streams[3].compute_result().accuracy)
    assert torch.equal(got["results"][1].precision, streams[4].compute_result().precision)
    # ... and the sync mattered: rank 0's own half alone gives other values.
    alone = _all_metrics()
    for metric in alone:
        metric.update(maps[:6], truths[:6])
    assert sum(not torch.equal(a, m.compute()) for a, m in zip(got["values"], alone)) >= 3


def test_exports():
    names = ["maxboxacc_v2", "pxap", "MaxBoxAccResult", "PxAPResult", "PointingGameMetric", "EnergyPointingGameMetric",
             "CorLocMetric", "MaxBoxAccV2Metric", "PxAPMetric"]
    assert all(name in metrics.__all__ and hasattr(metrics, name) for name in names)
