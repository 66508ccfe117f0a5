"""The streaming metrics check and group a batch of pairs at once (``captum_ext.metrics._pairs``): the same values
as pair by pair, on both scoring paths, and the same errors naming the first offending pair."""
import numpy as np
import pytest
import torch

from captum_ext.metrics import (
    CorLocMetric,
    EnergyPointingGameMetric,
    MaxBoxAccV2Metric,
    PointingGameMetric,
    PxAPMetric,
    _checks,
    _pairs,
)
from captum_ext.metrics.ground_truth import GroundTruth

METRICS = {
    "pointing_game": lambda: PointingGameMetric(4),
    "energy_pointing_game": EnergyPointingGameMetric,
    "corloc": CorLocMetric,
    "maxboxacc_v2": MaxBoxAccV2Metric,
    "pxap": PxAPMetric,
}


def mixed_batch(seed: int = 0):
    """Maps of two sizes in interleaved order (float16 values, as evaluate stores them), some pairs with a mask and
    some without, 1 to 3 boxes per pair (integer boxes for one pair), a 1×H×W map and a zero-area padding box."""
    generator = torch.Generator().manual_seed(seed)
    maps, truths = [], []
    for i in range(9):
        height, width = (24, 32) if i % 3 else (16, 16)
        noise = torch.rand(1, 1, height, width, generator=generator)
        sal = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1)[0, 0]
        sal = sal.to(torch.float16).to(torch.float32)
        corners = torch.randint(0, min(height, width) // 2, (1 + i % 3, 2), generator=generator).float()
        boxes = torch.cat([corners, corners + torch.tensor([6.0, 5.0])], 1)
        if i == 4:
            boxes = boxes.long()
        if i == 5:
            boxes = torch.cat([boxes, torch.zeros(1, 4)])
        mask = None
        if i % 2 == 0:
            mask = torch.rand(height, width, generator=generator) > 0.7
        maps.append(sal.unsqueeze(0) if i == 7 else sal)
        truths.append(GroundTruth(i % 4, boxes, mask))
    return maps, truths


def per_pair(name, maps, truths):
    """Each pair scored alone, the states summed and the per-pair values concatenated: the reference."""
    total, values = None, {}
    for sal, truth in zip(maps, truths):
        deltas, columns = METRICS[name]().statistics([sal], [truth])
        total = deltas if total is None else {k: total[k] + v for k, v in deltas.items()}
        for key, value in columns.items():
            values.setdefault(key, []).append(value)
    return total, {k: torch.cat(v) for k, v in values.items()}


def assert_same(got, expected):
    assert got[0].keys() == expected[0].keys() and got[1].keys() == expected[1].keys()
    for part in (0, 1):
        for key in got[part]:
            assert torch.equal(got[part][key], expected[part][key]), key


@pytest.mark.parametrize("force", [False, True], ids=["host path", "device path"])
@pytest.mark.parametrize("name", list(METRICS))
def test_a_mixed_batch_scores_as_its_pairs_one_by_one(monkeypatch, name, force):
    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", force)
    maps, truths = mixed_batch()
    assert_same(METRICS[name]().statistics(maps, truths), per_pair(name, maps, truths))


@pytest.mark.parametrize("name", list(METRICS))
def test_both_paths_and_both_batch_forms_agree(monkeypatch, name):
    maps, truths = mixed_batch(1)
    same_size = [(m[0] if m.dim() == 3 else m) for m in maps if m.shape[-2:] == (24, 32)]
    truths_same = [t for m, t in zip(maps, truths) if m.shape[-2:] == (24, 32)]
    host = METRICS[name]().statistics(same_size, truths_same)
    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", True)
    assert_same(METRICS[name]().statistics(torch.stack(same_size), truths_same), host)
    assert_same(METRICS[name]().statistics(torch.stack(same_size).unsqueeze(1), truths_same), host)


def test_masks_and_boxes_that_need_the_per_pair_checks_give_the_same_values():
    """A 0/1 float mask, a numpy map and a numpy integer category take the per-pair checks; same numbers."""
    maps, truths = mixed_batch(2)
    odd_maps = [m.numpy() if i == 3 else m for i, m in enumerate(maps)]
    odd_truths = [GroundTruth(np.int64(t.category), t.boxes, t.mask.float() if t.mask is not None else None)
                  for t in truths]
    for name in METRICS:
        assert_same(METRICS[name]().statistics(odd_maps, odd_truths), METRICS[name]().statistics(maps, truths))


def test_a_non_finite_map_in_a_stacked_batch_is_named():
    maps = torch.rand(5, 8, 8)
    maps[3, 2, 2] = float("nan")
    truths = [GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0]]))] * 5
    with pytest.raises(ValueError, match=r"`maps\[3\]` contains NaN"):
        PointingGameMetric(1).statistics(maps, truths)


def test_an_unordered_box_is_named_after_its_pair():
    maps = list(torch.rand(4, 8, 8))
    truths = [GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0]])) for _ in range(4)]
    truths[2] = GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 0.0, 3.0, 2.0]]))
    with pytest.raises(ValueError, match=r"`truths\[2\]\.boxes` must be \(x1, y1, x2, y2\)"):
        EnergyPointingGameMetric().statistics(maps, truths)


def test_empty_regions_are_listed_across_size_groups():
    maps = [torch.rand(8, 8), torch.rand(6, 10), torch.rand(8, 8), torch.rand(6, 10)]
    full = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    flat = torch.tensor([[1.0, 1.0, 1.0, 3.0]])  # zero width: no pixel centre inside
    truths = [GroundTruth(0, full), GroundTruth(0, torch.zeros(0, 4)), GroundTruth(0, flat),
              GroundTruth(0, full, torch.zeros(6, 10, dtype=torch.bool))]
    with pytest.raises(ValueError, match=r"empty at index\(es\) \[1, 2, 3\]"):
        PointingGameMetric(1).statistics(maps, truths)
    with pytest.raises(ValueError, match=r"masks must hold at least one foreground pixel; empty at index\(es\) \[3\]"):
        PxAPMetric().statistics(maps, truths)


def test_box_regions_are_drawn_a_bounded_number_of_boxes_at_a_time(monkeypatch):
    """Pairs with many boxes: drawing them in several steps gives the union drawn at once."""
    generator = torch.Generator().manual_seed(3)
    boxes = []
    for count in (7, 1, 0, 4):
        corner = torch.randint(0, 10, (count, 2), generator=generator).float()
        boxes.append(torch.cat([corner, corner + torch.randint(0, 6, (count, 2), generator=generator)], 1))
    whole = _pairs.draw_boxes(boxes, 14, 12, torch.device("cpu"))
    monkeypatch.setattr(_pairs, "DRAW_ELEMENTS", 14 * 12 * 4 * 2)  # two boxes per pair at a time
    assert torch.equal(_pairs.draw_boxes(boxes, 14, 12, torch.device("cpu")), whole)
    from captum_ext._utils.boxes import boxes_to_masks

    for i, pair in enumerate(boxes):
        expected = boxes_to_masks(pair, 14, 12).any(dim=0) if len(pair) else torch.zeros(14, 12, dtype=torch.bool)
        assert torch.equal(whole[i], expected)


def test_a_half_precision_batch_whose_sum_overflows_float16_is_checked_at_once(monkeypatch):
    """64 float16 maps of ones sum past float16's largest value: still the batched checks, not pair by pair."""
    maps = torch.ones(64, 32, 32, dtype=torch.float16)
    truths = [GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0]]))] * 64
    calls = []
    monkeypatch.setattr(_pairs, "_check_map", lambda *args: calls.append(args))
    deltas, _ = PointingGameMetric(1).statistics(maps, truths)
    assert not calls and int(deltas["totals"][0]) == 64


def test_boxes_whose_area_rounds_to_zero_in_their_own_dtype_count_as_none():
    maps = list(torch.rand(3, 8, 8))
    truths = [GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0]])),
              GroundTruth(0, torch.tensor([[0.0, 0.0, 1e-23, 1e-23]])),  # float32 area 1e-46: 0
              GroundTruth(0, torch.tensor([[0, 0, 2**-13, 2**-13], [3, 3, 3, 8]], dtype=torch.float16))]
    for metric in (MaxBoxAccV2Metric(), CorLocMetric()):
        with pytest.raises(ValueError, match=r"box of positive area; none at index\(es\) \[1, 2\]"):
            metric.statistics(maps, truths)


@pytest.mark.parametrize("force", [False, True], ids=["host path", "device path"])
@pytest.mark.parametrize("name", list(METRICS))
def test_a_non_contiguous_batch_scores_as_its_contiguous_copy(monkeypatch, name, force):
    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", force)
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(4, 14, 10, generator=generator).transpose(1, 2)  # 4×10×14, strided
    truths = [GroundTruth(0, torch.tensor([[1.0, 2.0, 7.0, 6.0]]), torch.rand(10, 14, generator=generator) > 0.5)
              for _ in range(4)]
    expected = METRICS[name]().statistics(maps.contiguous(), truths)
    assert not maps.is_contiguous()
    assert_same(METRICS[name]().statistics(maps, truths), expected)
    assert_same(METRICS[name]().statistics(maps.unsqueeze(1), truths), expected)


@pytest.mark.parametrize("name", list(METRICS))
def test_maps_and_boxes_that_require_grad_score_as_plain_values(name):
    maps, truths = mixed_batch(4)
    tracked_maps = [m.clone().requires_grad_() for m in maps]
    tracked = [GroundTruth(t.category, t.boxes.float().requires_grad_(), t.mask) for t in truths]
    plain = [GroundTruth(t.category, t.boxes.float(), t.mask) for t in truths]
    assert_same(METRICS[name]().statistics(tracked_maps, tracked), METRICS[name]().statistics(maps, plain))


def test_one_ground_truth_given_for_the_sequence_is_a_type_error():
    truth = GroundTruth(0, torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    with pytest.raises(TypeError, match=r"`truths` must be a sequence of GroundTruth, got GroundTruth"):
        PointingGameMetric(1).statistics([torch.rand(8, 8)], truth)
