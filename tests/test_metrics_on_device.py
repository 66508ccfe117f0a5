"""The localisation metrics' device path (batched component labelling in tensor operations, used for maps on a
GPU) gives exactly what the SciPy host path gives. Run here on CPU tensors through the device functions directly;
``tests/test_cuda.py`` compares whole metrics on a GPU."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from captum_ext.metrics import _on_device, wsol
from captum_ext.metrics._components import component_boxes, label_components
from captum_ext.metrics.cam import boxes_from_saliency
from captum_ext.metrics.pointing import pointing_game


def scipy_min_index_labels(plane: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
    out = np.full(plane.shape, plane.size, dtype=np.int64)
    for k in range(1, count + 1):
        where = np.flatnonzero(labelled.ravel() == k)
        out.ravel()[where] = where.min()
    return out


def serpentine(size: int) -> np.ndarray:
    """One winding 4-connected path through every other row: a diameter of about size²/2 pixels."""
    plane = np.zeros((size, size), dtype=bool)
    plane[::2] = True
    for row in range(1, size, 2):
        plane[row, size - 1 if row % 4 == 1 else 0] = True
    return plane


STRUCTURED = {
    "empty": np.zeros((7, 9), dtype=bool),
    "full": np.ones((7, 9), dtype=bool),
    "one pixel": np.pad(np.ones((1, 1), dtype=bool), ((3, 3), (4, 4))),
    "diagonals only": np.eye(8, dtype=bool) | np.eye(8, dtype=bool)[::-1],
    "checkerboard": (np.add.outer(np.arange(9), np.arange(11)) % 2) == 0,
    "stripes": np.repeat((np.arange(10) % 2 == 0)[:, None], 12, axis=1),
    "serpentine": serpentine(33),
}


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_labels_equal_scipy_on_structured_planes(name):
    plane = STRUCTURED[name]
    got = label_components(torch.from_numpy(plane)[None])[0].numpy()
    assert np.array_equal(got, scipy_min_index_labels(plane))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_labels_equal_scipy_on_random_planes(height, width, density, seed):
    planes = np.random.default_rng(seed).random((3, height, width)) < density
    got = label_components(torch.from_numpy(planes)).numpy()
    assert np.array_equal(got, np.stack([scipy_min_index_labels(p) for p in planes]))



def test_labels_keep_a_component_whole_when_its_tree_is_hooked_from_inside():
    """Regression: hooking a non-root pointer target split its tree, and the edge that joined the two parts had
    already been dropped, so this 24×24 plane near the percolation density came out with one component in two."""
    rng = np.random.default_rng(14)
    plane = rng.random((24, 24)) < rng.uniform(0.3, 0.7)
    got = label_components(torch.from_numpy(plane)[None])[0].numpy()
    assert np.array_equal(got, scipy_min_index_labels(plane))


def test_labels_equal_scipy_on_many_planes_near_the_percolation_density():
    rng = np.random.default_rng(0)
    planes = rng.random((200, 32, 32)) < rng.uniform(0.35, 0.65, size=(200, 1, 1))
    got = label_components(torch.from_numpy(planes)).numpy()
    assert np.array_equal(got, np.stack([scipy_min_index_labels(p) for p in planes]))

def test_component_boxes_are_the_tight_boxes_in_scipy_order():
    planes = np.random.default_rng(3).random((4, 16, 20)) < 0.4
    plane, root, boxes = component_boxes(label_components(torch.from_numpy(planes)))
    for p in range(4):
        labelled, _ = ndimage.label(planes[p], structure=np.ones((3, 3), dtype=bool))
        expected = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labelled)]
        assert boxes[plane == p].tolist() == expected
        first = [int(np.flatnonzero(labelled.ravel() == k + 1).min()) for k in range(len(expected))]
        assert root[plane == p].tolist() == first


def maps_of_every_kind(size: int = 24) -> torch.Tensor:
    rng = np.random.default_rng(7)
    smooth = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
    noise = np.abs(rng.standard_normal((size, size)))
    plateaus = np.round(smooth * 6) / 6  # ties and flat levels
    blocky = np.kron(rng.random((size // 8, size // 8)), np.ones((8, 8)))  # a CAM upsampled without smoothing
    sparse = np.zeros((size, size))
    sparse[rng.integers(0, size, 12), rng.integers(0, size, 12)] = rng.random(12)  # one-pixel components
    constant = np.full((size, size), 0.3)
    negative = -np.abs(smooth)
    return torch.tensor(np.stack([smooth, noise, plateaus, blocky, sparse, constant, negative]), dtype=torch.float32)


def truths(n: int, size: int):
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        k = 1 + i % 3
        x1, y1 = rng.integers(0, size - 4, k), rng.integers(0, size - 4, k)
        w, h = rng.integers(2, size // 2, k), rng.integers(2, size // 2, k)
        out.append(torch.tensor(np.stack([x1, y1, np.minimum(x1 + w, size), np.minimum(y1 + h, size)], 1),
                                dtype=torch.float64))
    return out


def test_iou_curves_equal_the_host_path_exactly():
    maps = maps_of_every_kind()
    boxes = truths(len(maps), 24)
    sweep = wsol._check_thresholds(None)
    expected = wsol._iou_curves(maps, boxes, sweep)
    got = _on_device.iou_curves(maps, boxes, sweep)
    assert torch.equal(got, expected)
    custom = torch.tensor([0.0, 0.25, 0.5, 0.999], dtype=torch.float64)
    assert torch.equal(_on_device.iou_curves(maps, boxes, custom), wsol._iou_curves(maps, boxes, custom))


def test_iou_curves_in_chunks_equal_one_pass(monkeypatch):
    maps, boxes, sweep = maps_of_every_kind(), truths(7, 24), wsol._check_thresholds(None)
    whole = _on_device.iou_curves(maps, boxes, sweep)
    monkeypatch.setattr(_on_device, "PLANE_PIXELS", 24 * 24 * 100 * 2)  # two maps per chunk
    assert torch.equal(_on_device.iou_curves(maps, boxes, sweep), whole)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_cam_boxes_equal_the_host_path(fraction):
    maps = torch.cat([maps_of_every_kind(), torch.zeros(1, 24, 24)])
    two_equal = torch.zeros(1, 24, 24)
    two_equal[0, 2:5, 2:5] = 1.0
    two_equal[0, 10:13, 15:18] = 1.0  # same size: the first in row-major order wins
    maps = torch.cat([maps, two_equal])
    assert torch.equal(_on_device.cam_boxes(maps, fraction), boxes_from_saliency(maps, fraction))


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.5, 4.2857142857142856, 15.0])
def test_pointing_hits_equal_the_host_path(tolerance):
    maps = maps_of_every_kind()
    rng = np.random.default_rng(5)
    regions = torch.zeros(len(maps), 24, 24, dtype=torch.bool)
    for i in range(len(maps)):
        y, x = rng.integers(0, 20, 2)
        regions[i, y:y + 4, x:x + 3] = True
    expected = pointing_game(maps, regions, tolerance, reduce=False)
    assert torch.equal(_on_device.pointing_hits(maps, regions, tolerance), expected)


def test_float16_maps_have_order_free_energy_sums():
    """The energy metric runs on an accelerator only when its float64 sums are exact in any order: then a
    permutation of the pixels (another summation order) gives the very same bits."""
    from captum_ext.metrics._streaming import exact_float64_sums
    from captum_ext.metrics.pointing import energy_pointing_game

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 64, 64, generator=generator).half().float()
    masks = torch.rand(4, 64, 64, generator=generator) > 0.7
    assert exact_float64_sums(maps)
    order = torch.randperm(64 * 64, generator=generator)
    shuffled = energy_pointing_game(maps.flatten(1)[:, order].view(4, 64, 64),
                                    masks.flatten(1)[:, order].view(4, 64, 64), reduce=False)
    assert torch.equal(shuffled, energy_pointing_game(maps, masks, reduce=False))
    assert not exact_float64_sums(torch.rand(2, 8, 8, generator=generator))  # float32 values: rounding may differ
    assert not exact_float64_sums(torch.full((1, 64, 128), 60000.0).half().float())  # magnitudes too large


@pytest.mark.parametrize("force", [False, True], ids=["host path", "device path"])
def test_functional_metrics_take_strided_maps_and_values_that_require_grad(monkeypatch, force):
    from captum_ext.metrics import _checks

    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", force)
    maps = maps_of_every_kind()
    boxes = truths(len(maps), 24)
    masks = maps > 0.5
    masks[:, 0, 0] = True
    strided = maps.transpose(1, 2).contiguous().transpose(1, 2)  # equal values, column-major strides
    tracked = maps.clone().requires_grad_()
    tracked_boxes = [b.clone().requires_grad_() for b in boxes]
    assert not strided.is_contiguous()
    expected_boxes = boxes_from_saliency(maps, 0.2)
    assert torch.equal(boxes_from_saliency(strided, 0.2), expected_boxes)
    assert torch.equal(boxes_from_saliency(tracked, 0.2), expected_boxes)
    expected = wsol.maxboxacc_v2(maps, boxes, reduce=False).accuracy
    for sal, gts in ((strided, boxes), (tracked, tracked_boxes)):
        assert torch.equal(wsol.maxboxacc_v2(sal, gts, reduce=False).accuracy, expected)
        assert wsol.pxap(sal, masks) == wsol.pxap(maps, masks)


@pytest.mark.parametrize("force", [False, True], ids=["host path", "device path"])
def test_maps_whose_range_overflows_float64_are_scored_by_their_ranking(monkeypatch, force):
    """Before: the span of [1.7e308, -1.7e308] overflowed to inf, the peak became NaN, and PxAP was 0.0 on the host
    path and 1.0 on the device path; a map with the same ranking and a range of 2 scores 1.0 on both."""
    from captum_ext._utils.maps import minmax_normalise
    from captum_ext.metrics import _checks

    monkeypatch.setattr(_checks, "FORCE_DEVICE_PATH", force)
    huge = torch.tensor([[[1.7e308, -1.7e308]]], dtype=torch.float64)
    mask = torch.tensor([[[True, False]]])
    assert torch.equal(minmax_normalise(huge), torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    assert wsol.pxap(huge, mask) == wsol.pxap(torch.tensor([[[1.0, -1.0]]]), mask) == 1.0
