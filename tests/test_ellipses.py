"""Tests for the Li & Shimada ellipse datasets (captum_ext.datasets.ellipses)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.measure import label, regionprops
from torch.utils.data import DataLoader

from captum_ext.datasets import ellipses as E

SIZE = 32


@pytest.fixture(scope="module")
def batches():
    return {d: E.make_ellipses(200, dataset=d, seed=0) for d in (1, 2, 3)}


def _mask_angle(mask: np.ndarray) -> float:
    """Inclination (degrees, counter-clockwise from +x as displayed) of a binary region via skimage moments.

    skimage's ``orientation`` is the angle from the row axis (pointing down) to the major axis, so a vertical
    region has orientation 0 (θ = 90°) and a region rising to the upper right has negative orientation.
    """
    props = regionprops(mask.astype(np.uint8))[0]
    return (math.degrees(props.orientation) + 90.0) % 180.0


def _line_distance(point: np.ndarray, center: np.ndarray, angle_deg: float) -> float:
    """Distance from ``point`` to the line through ``center`` along (cos θ, -sin θ) (y pointing down)."""
    t = math.radians(angle_deg)
    d = point - center
    return abs(d[0] * -math.sin(t) - d[1] * math.cos(t))


# -------------------------------------------------------------------------------------------------------------
# shapes, dtypes, ranges
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", [1, 2, 3])
def test_shapes_and_dtypes(batches, dataset):
    b = batches[dataset]
    k = 1 if dataset == 1 else 2
    n = 200
    assert isinstance(b, E.EllipseBatch) and b.dataset == dataset and len(b) == n and b.size == SIZE
    assert b.images.shape == (n, 1, SIZE, SIZE) and b.images.dtype == torch.float32
    assert b.masks.shape == (n, 1, SIZE, SIZE) and b.masks.dtype == torch.bool
    assert b.targets.shape == ((n,) if dataset == 1 else (n, 2)) and b.targets.dtype == torch.float32
    assert b.centers.shape == (n, k, 2) and b.semi_axes.shape == (n, k, 2) and b.angles.shape == (n, k)
    for t in (b.centers, b.semi_axes, b.angles):
        assert t.dtype == torch.float32
    assert float(b.images.min()) >= 0.0 and float(b.images.max()) <= 1.0
    assert bool(torch.isfinite(b.targets).all())
    assert bool(((b.angles >= 0) & (b.angles < 180)).all())
    a, bb = b.semi_axes[..., 0], b.semi_axes[..., 1]
    assert bool((a / bb >= 1.6 - 1e-5).all())
    assert bool(((bb >= 2.0 - 1e-5) & (bb <= 3.2 + 1e-5) & (a >= 5.0 - 1e-5) & (a <= 8.0 + 1e-5)).all())


@pytest.mark.parametrize("dataset", [1, 2, 3])
def test_masks_nonempty_inside_and_bright(batches, dataset):
    b = batches[dataset]
    m = b.masks[:, 0]
    assert bool(m.flatten(1).any(1).all())
    # every ellipse lies inside the image with a margin: no mask pixel on the border
    border = m[:, 0, :] | m[:, -1, :] | m[:, :, 0] | m[:, :, -1]
    assert not bool(border.any())
    # ellipse pixels carry the ellipse's bright flat intensity (>= 0.6 or 0.7, minus noise)
    floor = 0.6 if dataset == 3 else 0.5
    assert float(b.images[b.masks].min()) > floor


def test_mask_components_match_stored_ellipses(batches):
    """Each ellipse is one connected region whose centroid is its stored centre (pixel (i, j) ↔ (j+.5, i+.5))."""
    for dataset in (1, 2, 3):
        b = batches[dataset]
        k = b.centers.shape[1]
        for i in range(40):
            lab = label(b.masks[i, 0].numpy(), connectivity=2)
            assert lab.max() == k
            props = regionprops(lab)
            centroids = np.array([[p.centroid[1] + 0.5, p.centroid[0] + 0.5] for p in props])
            for e in range(k):
                c = b.centers[i, e].numpy()
                j = int(np.argmin(np.linalg.norm(centroids - c, axis=1)))
                assert np.linalg.norm(centroids[j] - c) < 0.6
                region = lab == props[j].label
                assert float(E.angular_error(_mask_angle(region), b.angles[i, e])) < 6.0


# -------------------------------------------------------------------------------------------------------------
# determinism
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", [1, 2, 3])
def test_deterministic_prefix_and_seed_dependence(dataset):
    big = E.make_ellipses(600, dataset=dataset, seed=3)
    small = E.make_ellipses(300, dataset=dataset, seed=3)  # crosses a chunk boundary (256 at 32×32)
    again = E.make_ellipses(300, dataset=dataset, seed=3)
    other = E.make_ellipses(300, dataset=dataset, seed=4)
    for name in ("images", "masks", "targets", "centers", "semi_axes", "angles"):
        assert torch.equal(getattr(small, name), getattr(again, name)), name
        assert torch.equal(getattr(small, name), getattr(big, name)[:300]), name
    assert not torch.equal(small.images, other.images)
    assert not torch.equal(small.targets, other.targets)


def test_datasets_differ_for_same_seed():
    a, b = E.make_ellipses(8, dataset=2, seed=0), E.make_ellipses(8, dataset=3, seed=0)
    assert not torch.equal(a.centers, b.centers)


# -------------------------------------------------------------------------------------------------------------
# dataset 1: inclination target, area, distractors
# -------------------------------------------------------------------------------------------------------------
def test_ds1_angle_matches_mask_orientation():
    # At 64×64 the rasterised moments are accurate to < 2°; at 32×32 the pixel grid alone moves them by ~1°
    # on average (a few degrees at worst) — far below the paper's 13° error.
    b = E.make_ellipses(50, dataset=1, seed=11, size=64)
    err = torch.stack([E.angular_error(_mask_angle(b.masks[i, 0].numpy()), b.targets[i]) for i in range(50)])
    assert float(err.max()) < 2.0
    b32 = E.make_ellipses(200, dataset=1, seed=11)
    err32 = torch.stack([E.angular_error(_mask_angle(b32.masks[i, 0].numpy()), b32.targets[i]) for i in range(200)])
    assert float(err32.mean()) < 1.5 and float(err32.max()) < 7.0
    assert torch.equal(b32.targets, b32.angles[:, 0])


def test_ds1_orientation_convention_examples():
    """θ = 90° is vertical, θ near 0/180 horizontal, θ = 45° rises to the upper right (as displayed)."""
    b = E.make_ellipses(500, dataset=1, seed=2)
    for i in range(500):
        m = b.masks[i, 0].numpy()
        rows, cols = np.nonzero(m)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        theta = float(b.targets[i])
        if abs(theta - 90) < 15:
            assert height > width
        if theta < 15 or theta > 165:
            assert width > height
        if 35 < theta < 55:  # upper-right: the top rows (small row index) sit right of the bottom rows
            assert cols[rows == rows.min()].mean() > cols[rows == rows.max()].mean()
        if 125 < theta < 145:
            assert cols[rows == rows.min()].mean() < cols[rows == rows.max()].mean()


def test_ds1_ellipse_area_about_five_percent(batches):
    frac = batches[1].masks.float().mean().item()
    assert 0.045 < frac < 0.058
    area = math.pi * (batches[1].semi_axes[:, 0, 0] * batches[1].semi_axes[:, 0, 1]).mean().item() / SIZE**2
    assert 0.045 < area < 0.058
    for d in (2, 3):
        assert 0.09 < batches[d].masks.float().mean().item() < 0.115


def test_ds1_distractors_keep_away_from_ellipse(batches):
    """Around the ellipse (2 px ring) only background; outside it, 2–4 separate bright circles."""
    b = batches[1]
    ring_struct = np.ones((2 * E.GAP + 1, 2 * E.GAP + 1), dtype=bool)
    for i in range(len(b)):
        img = b.images[i, 0].numpy()
        m = b.masks[i, 0].numpy()
        ring = ndimage.binary_dilation(m, ring_struct) & ~m
        assert img[ring].max() < 0.3  # background level <= 0.1 plus noise; shapes are >= 0.6
        bright = img > 0.35
        # the bright component touching the ellipse is exactly the ellipse
        lab = label(bright, connectivity=2)
        assert np.array_equal(np.isin(lab, np.unique(lab[m])), m)
        n_circles = lab.max() - 1
        assert 2 <= n_circles <= 4
        for r in regionprops(lab):
            if not m[tuple(r.coords[0])]:
                # circles: compact (bounding box roughly square), radius <= 3 px
                assert r.area <= math.pi * 3.0**2 + 4
                h, w = r.bbox[2] - r.bbox[0], r.bbox[3] - r.bbox[1]
                assert abs(h - w) <= 1


# -------------------------------------------------------------------------------------------------------------
# datasets 2 and 3: intersection target
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", [2, 3])
def test_intersection_target_on_both_axes_inside_image(batches, dataset):
    b = batches[dataset]
    recomputed = E.intersect_major_axes(b.centers, b.angles)
    assert torch.allclose(recomputed, b.targets.double(), atol=1e-4)
    for i in range(len(b)):
        p = b.targets[i].double().numpy()
        for e in range(2):
            assert _line_distance(p, b.centers[i, e].double().numpy(), float(b.angles[i, e])) < 1e-4
    assert bool(((b.targets >= 0) & (b.targets <= SIZE)).all())
    diff = E.angular_error(b.angles[:, 0], b.angles[:, 1])
    assert float(diff.min()) >= 20.0 - 1e-4


@pytest.mark.parametrize("dataset", [2, 3])
def test_two_ellipses_do_not_touch(batches, dataset):
    b = batches[dataset]
    struct = np.ones((2 * E.GAP + 1, 2 * E.GAP + 1), dtype=bool)
    for i in range(60):
        lab = label(b.masks[i, 0].numpy(), connectivity=2)
        assert lab.max() == 2
        assert not (ndimage.binary_dilation(lab == 1, struct) & (lab == 2)).any()


def test_ds2_point_noise_outside_ellipses(batches):
    b = batches[2]
    img, m = b.images[:, 0].numpy(), b.masks[:, 0].numpy()
    points = (img > 0.35) & ~m
    density = points.sum(axis=(1, 2)) / (~m).sum(axis=(1, 2))
    assert 0.03 < density.min() and density.max() < 0.13
    assert 0.06 < density.mean() < 0.09


def test_ds3_has_photo_clutter(batches):
    b = batches[3]
    img, m = b.images[:, 0].numpy(), b.masks[:, 0].numpy()
    outside_std = np.array([img[i][~m[i]].std() for i in range(len(b))])
    assert outside_std.mean() > 0.05  # textured clutter, not a flat background
    assert img[~m].max() <= 0.85 + 0.12  # clutter is at most 0.85 (+ noise)


# -------------------------------------------------------------------------------------------------------------
# torch Dataset
# -------------------------------------------------------------------------------------------------------------
def test_dataset_items_and_collate():
    ds = E.EllipseDataset(20, dataset=1, seed=0)
    image, target, mask = ds[3]
    assert image.shape == (1, SIZE, SIZE) and mask.shape == (1, SIZE, SIZE) and target.shape == (1,)
    assert float(target[0]) == float(ds.batch.targets[3])
    cs = E.EllipseDataset(20, dataset=1, seed=0, angle_encoding="cos_sin")
    images, targets, masks = next(iter(DataLoader(cs, batch_size=8)))
    assert images.shape == (8, 1, SIZE, SIZE) and targets.shape == (8, 2) and masks.dtype == torch.bool
    assert torch.allclose(E.cos_sin_to_angle(targets), ds.batch.targets[:8], atol=1e-3)
    ds2 = E.EllipseDataset(10, dataset=2, seed=1, size=24)
    assert len(ds2) == 10 and ds2[0][1].shape == (2,) and ds2[0][0].shape == (1, 24, 24)
    assert torch.equal(ds2.targets, ds2.batch.targets)


def test_paper_splits():
    assert E.PAPER_SPLITS == {1: (8000, 3000), 2: (3000, 100), 3: (8000, 3000)}


# -------------------------------------------------------------------------------------------------------------
# angle helpers (hypothesis)
# -------------------------------------------------------------------------------------------------------------
angles = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(st.lists(angles, min_size=1, max_size=8))
def test_cos_sin_round_trip(values):
    deg = torch.tensor(values, dtype=torch.float64)
    enc = E.angle_to_cos_sin(deg)
    assert enc.shape == (len(values), 2)
    assert torch.allclose(enc.norm(dim=-1), torch.ones(len(values), dtype=torch.float64))
    back = E.cos_sin_to_angle(enc)
    assert bool(((back >= 0) & (back < 180)).all())
    assert float(E.angular_error(back, deg).max()) < 1e-6


@given(angles, st.floats(min_value=1e-3, max_value=1e3))
def test_cos_sin_to_angle_ignores_length(value, scale):
    enc = E.angle_to_cos_sin(torch.tensor([value], dtype=torch.float64))
    assert float(E.angular_error(E.cos_sin_to_angle(enc * scale), E.cos_sin_to_angle(enc))) < 1e-6


@given(angles, angles, st.integers(min_value=-5, max_value=5))
def test_angular_error_periodic_symmetric_bounded(p, t, k):
    p_, t_ = torch.tensor(p, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    err = float(E.angular_error(p_, t_))
    assert 0.0 <= err <= 90.0
    assert abs(float(E.angular_error(p_ + 180.0 * k, t_)) - err) < 1e-6
    assert abs(float(E.angular_error(t_, p_)) - err) < 1e-6
    assert float(E.angular_error(p_, p_ + 90.0)) == pytest.approx(90.0)


def test_angle_helpers_accept_plain_inputs():
    assert E.angle_to_cos_sin(45.0).shape == (2,)
    assert float(E.cos_sin_to_angle([0.0, -1.0])) == pytest.approx(135.0)
    assert float(E.angular_error(179.0, 1.0)) == pytest.approx(2.0)
    assert float(E.cos_sin_to_angle(torch.tensor([1.0, -1e-9]))) < 180.0


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=5),
    dataset=st.sampled_from([1, 2, 3]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    size=st.sampled_from([16, 24, 32, 48]),
)
def test_generation_properties(n, dataset, seed, size):
    if dataset == 3:
        size = 32  # each new size builds a photo bank for dataset 3 (~1 s); 32 is already cached
    b = E.make_ellipses(n, dataset=dataset, seed=seed, size=size)
    assert b.images.shape == (n, 1, size, size)
    assert bool(b.masks.flatten(1).any(1).all())
    assert float(b.images.min()) >= 0 and float(b.images.max()) <= 1
    if dataset == 1:
        assert bool(((b.targets >= 0) & (b.targets < 180)).all())
    else:
        assert bool(((b.targets >= 0) & (b.targets <= size)).all())
        assert torch.allclose(E.intersect_major_axes(b.centers, b.angles).float(), b.targets, atol=1e-4)


# -------------------------------------------------------------------------------------------------------------
# bad inputs
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(n=0), ValueError, "`n`"),
        (dict(n=-3), ValueError, "`n`"),
        (dict(n=2.5), TypeError, "`n`"),
        (dict(n=True), TypeError, "`n`"),
        (dict(n=4, dataset=4), ValueError, "`dataset`"),
        (dict(n=4, dataset=0), ValueError, "`dataset`"),
        (dict(n=4, dataset="1"), TypeError, "`dataset`"),
        (dict(n=4, seed=-1), ValueError, "`seed`"),
        (dict(n=4, seed=1.0), TypeError, "`seed`"),
        (dict(n=4, size=15), ValueError, "`size`"),
        (dict(n=4, size=32.0), TypeError, "`size`"),
    ],
)
def test_bad_inputs_raise(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        E.make_ellipses(**kwargs)


def test_bad_dataset_arguments_raise():
    with pytest.raises(ValueError, match="`angle_encoding`"):
        E.EllipseDataset(4, angle_encoding="radians")
    with pytest.raises(ValueError, match="`angle_encoding`"):
        E.EllipseDataset(4, dataset=2, angle_encoding="cos_sin")
    with pytest.raises(ValueError, match="`n`"):
        E.EllipseDataset(0)
    with pytest.raises(ValueError, match="`encoded`"):
        E.cos_sin_to_angle(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="`degrees`"):
        E.angle_to_cos_sin("45")
    with pytest.raises(ValueError, match="`centers`"):
        E.intersect_major_axes(torch.zeros(3, 2), torch.zeros(3, 2))


# -------------------------------------------------------------------------------------------------------------
# module split: public API and the private rasteriser
# -------------------------------------------------------------------------------------------------------------
def test_public_api_unchanged_after_split():
    from captum_ext import datasets

    assert E.__all__ == ["EllipseBatch", "EllipseDataset", "GAP", "OBJECT_FRACTION", "PAPER_SPLITS",
                         "angle_to_cos_sin", "angular_error", "cos_sin_to_angle", "intersect_major_axes",
                         "make_ellipses"]
    for name in E.__all__:
        assert hasattr(E, name), name
    assert E.GAP == 2 and datasets.ellipses is E and datasets.make_ellipses is E.make_ellipses
    assert E.EllipseBatch.__module__ == "captum_ext.datasets.ellipses"


def test_rasterisation_hand_values():
    from captum_ext.datasets._ellipse_raster import dilate, disk_masks, ellipse_masks

    one = np.array([4.0])
    horizontal = ellipse_masks(one, one, np.array([3.0]), np.array([1.0]), np.array([0.0]), 8)[0]
    expected = np.zeros((8, 8), dtype=bool)
    expected[3:5, 1:7] = True  # centres 1.5..6.5 are within 2.6 px of x = 4 on rows y = 3.5, 4.5
    np.testing.assert_array_equal(horizontal, expected)
    vertical = ellipse_masks(one, one, np.array([3.0]), np.array([1.0]), np.array([90.0]), 8)[0]
    np.testing.assert_array_equal(vertical, expected.T)
    disk = disk_masks(one, one, np.array([1.0]), 8)[0]
    assert disk.sum() == 4 and disk[3:5, 3:5].all()
    point = np.zeros((1, 5, 5), dtype=bool)
    point[0, 2, 2] = True
    assert dilate(point, 1)[0].sum() == 9 and dilate(point, 2)[0].all() and point.sum() == 1
