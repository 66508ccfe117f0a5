"""Digit scenes: shapes, determinism, exact ground truth, informative ROI context, bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from captum_ext._utils.boxes import masks_to_boxes
from captum_ext.datasets import scenes
from captum_ext.datasets import _digit_glyphs as glyphs
from captum_ext.datasets.scenes import CONTEXT_PALETTE


@pytest.fixture(scope="module", params=scenes.MODES)
def batch(request):
    return scenes.make_scenes(40, mode=request.param, split="test", seed=3)


def test_shapes_and_dtypes(batch):
    n, k = batch.object_labels.shape
    assert batch.images.shape == (n, 3, 64, 64) and batch.images.dtype == torch.float32
    assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert batch.labels.shape == (n,) and batch.labels.dtype == torch.int64
    assert batch.targets.shape == (n, 10) and batch.masks.shape == (n, 1, 64, 64) and batch.masks.dtype == torch.bool
    assert batch.boxes.shape == (n, 4) and batch.object_boxes.shape == (n, k, 4)
    assert batch.object_masks.shape == (n, k, 64, 64)
    assert k == {"single": 1, "multi": 3, "roi": 4}[batch.mode]


def test_boxes_are_tight_boxes_of_masks(batch):
    assert torch.equal(batch.boxes, masks_to_boxes(batch.masks[:, 0]))
    valid = batch.object_labels >= 0
    assert torch.equal(batch.object_boxes[valid], masks_to_boxes(batch.object_masks[valid]))
    assert torch.equal(batch.roi_sizes, batch.masks.flatten(1).sum(1))
    assert bool((batch.roi_sizes > 0).all())
    # every mask pixel lies inside its box
    from captum_ext._utils.boxes import boxes_to_masks

    inside = boxes_to_masks(batch.boxes, 64, 64)
    assert not bool((batch.masks[:, 0] & ~inside).any())


def test_objects_disjoint_and_padding_empty(batch):
    valid = batch.object_labels >= 0
    assert bool(valid[:, 0].all())
    assert not bool(batch.object_masks[~valid].any())
    assert int(batch.object_masks.sum(1).max()) <= 1  # no pixel belongs to two digits


def test_labels_match_pasted_digit(batch):
    digits = load_digits()
    valid = batch.object_labels >= 0
    assert torch.equal(torch.from_numpy(digits.target)[batch.object_sources[valid]], batch.object_labels[valid])
    # the mask is exactly the thresholded, up-sampled source digit at some size and position
    for i, k in list(zip(*np.nonzero(valid.numpy())))[:12]:
        x1, y1, x2, y2 = batch.object_boxes[i, k].int().tolist()
        crop = batch.object_masks[i, k, y1:y2, x1:x2].numpy()
        source = int(batch.object_sources[i, k])
        position = int(np.flatnonzero(glyphs.digits("all")[2] == source)[0])
        found = False
        for side in range(5, 60):
            glyph = glyphs.alpha(glyphs.digits_at("all", side)[position]) >= 0.5
            ys, xs = np.nonzero(glyph)
            if ys.size and glyph[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].shape == crop.shape:
                found |= np.array_equal(glyph[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], crop)
        assert found, f"object {i},{k} is not digit {source}"


def test_deterministic_prefix_and_seed_dependence():
    a = scenes.make_scenes(300, mode="single", seed=11)
    b = scenes.make_scenes(260, mode="single", seed=11)
    assert torch.equal(a.images[:260], b.images) and torch.equal(a.labels[:260], b.labels)
    c = scenes.make_scenes(20, mode="single", seed=12)
    assert not torch.equal(a.images[:20], c.images)


def test_splits_use_disjoint_digits():
    train = scenes.make_scenes(60, mode="multi", split="train", seed=1)
    test = scenes.make_scenes(60, mode="multi", split="test", seed=1)
    tr, te = train.object_sources[train.object_sources >= 0], test.object_sources[test.object_sources >= 0]
    assert bool((te % 4 == 3).all()) and bool((tr % 4 != 3).all())


def test_multi_mode_distinct_classes_and_targets():
    batch = scenes.make_scenes(50, mode="multi", seed=4)
    for labels, target in zip(batch.object_labels, batch.targets):
        present = labels[labels >= 0]
        assert 2 <= len(present) <= 3 and len(set(present.tolist())) == len(present)
        assert set(torch.nonzero(target).flatten().tolist()) == set(present.tolist())
    assert torch.equal(batch.class_masks(), batch.object_masks[:, 0])
    assert all(torch.equal(b, ob[:1]) for b, ob in zip(batch.class_boxes(), batch.object_boxes))
    absent = torch.tensor([next(c for c in range(10) if c not in labels.tolist()) for labels in batch.object_labels])
    assert not bool(batch.class_masks(absent).any()) and all(b.shape == (0, 4) for b in batch.class_boxes(absent))
    with pytest.raises(ValueError, match="`classes`"):
        batch.class_masks(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="`classes`"):
        batch.class_boxes([0])


def _plate_colour(image: torch.Tensor, box: torch.Tensor) -> np.ndarray:
    """Median colour of the 2-px ring just outside the digit's square (always on its context plate)."""
    x1, y1, x2, y2 = box.int().tolist()
    ring = np.zeros(image.shape[1:], dtype=bool)
    ring[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2] = True
    ring[y1:y2, x1:x2] = False
    return np.median(image.permute(1, 2, 0).numpy()[ring], axis=0)


@pytest.mark.parametrize("context_prob, low, high", [(0.9, 0.8, 1.0), (0.1, 0.0, 0.25)])
def test_roi_context_carries_class_information(context_prob, low, high):
    batch = scenes.make_scenes(120, mode="roi", seed=5, context_prob=context_prob)
    colours = np.stack([_plate_colour(im, box) for im, box in zip(batch.images, batch.boxes)])
    nearest = np.linalg.norm(colours[:, None] - CONTEXT_PALETTE[None], axis=2).argmin(1)
    agreement = float((nearest == batch.labels.numpy()).mean())
    assert low <= agreement <= high


def test_roi_sizes_span_small_to_large():
    sizes = scenes.make_scenes(300, mode="roi", seed=6).roi_sizes.float()
    assert float(sizes.quantile(0.1)) < 25 and float(sizes.quantile(0.9)) > 300


def test_public_api_unchanged_after_split():
    # scenes.py was split into private modules; everything it offered is still reachable from `scenes`.
    from captum_ext import datasets

    for name in ("CONTEXT_PALETTE", "DEFAULT_CLUTTER", "MODES", "NUM_CLASSES", "ROI_BINS_64", "SCENE_MEAN",
                 "SCENE_STD", "SPLITS", "SceneBatch", "SceneDataset", "denormalize", "digit_crops", "make_scenes",
                 "normalize"):
        assert hasattr(scenes, name), name
    assert datasets.scenes is scenes and datasets.make_scenes is scenes.make_scenes
    assert datasets.SceneBatch is scenes.SceneBatch and scenes.SceneBatch.__module__ == "captum_ext.datasets.scenes"
    assert scenes.NUM_CLASSES == 10 and CONTEXT_PALETTE.shape == (10, 3) and CONTEXT_PALETTE.dtype == np.float32


def test_normalize_hand_values_and_round_trip():
    images = torch.zeros(2, 3, 1, 2)
    images[0, :, 0, 0] = torch.tensor(scenes.SCENE_MEAN)                   # the mean pixel -> 0
    images[1, :, 0, 1] = torch.tensor(scenes.SCENE_MEAN) + torch.tensor(scenes.SCENE_STD)  # mean + std -> 1
    out = scenes.normalize(images)
    assert out.shape == images.shape and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out[0, :, 0, 0], torch.zeros(3))
    torch.testing.assert_close(out[1, :, 0, 1], torch.ones(3))
    torch.testing.assert_close(out[0, 0, 0, 1], torch.tensor(-0.4841 / 0.2729))  # a black pixel
    torch.testing.assert_close(scenes.denormalize(out), images)
    assert scenes.normalize(images.double()).dtype == torch.float64


def test_dataset_wrapper_and_normalisation():
    data = scenes.SceneDataset(20, mode="roi", seed=2)
    item = data[3]
    assert set(item) == {"image", "label", "target", "mask", "box", "roi_size"}
    assert torch.allclose(scenes.denormalize(item["image"][None])[0], data.scenes.images[3], atol=1e-6)
    loaded = next(iter(DataLoader(data, batch_size=8)))
    assert loaded["image"].shape == (8, 3, 64, 64) and loaded["mask"].shape == (8, 1, 64, 64)
    raw = scenes.SceneDataset(4, normalize=False)
    assert torch.equal(raw[0]["image"], raw.scenes.images[0])


@settings(max_examples=8, deadline=None)
@given(mode=st.sampled_from(scenes.MODES), seed=st.integers(0, 10_000), size=st.sampled_from([32, 48, 64, 80]))
def test_ground_truth_invariants(mode, seed, size):
    batch = scenes.make_scenes(6, mode=mode, seed=seed, size=size)
    assert batch.images.shape[-1] == size
    assert torch.equal(batch.boxes, masks_to_boxes(batch.masks[:, 0]))
    assert bool((batch.boxes[:, 2:] <= size).all()) and bool((batch.roi_sizes > 0).all())
    assert bool(((batch.labels >= 0) & (batch.labels < 10)).all())
    sliced = batch[2:4]
    assert len(sliced) == 2 and torch.equal(sliced.images, batch.images[2:4])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n": 0}, "`n`"), ({"n": 2.5}, "`n`"), ({"mode": "pairs"}, "`mode`"), ({"split": "val"}, "`split`"),
     ({"size": 16}, "`size`"), ({"seed": -1}, "`seed`"), ({"context_prob": 1.5}, "`context_prob`")],
)
def test_bad_input(kwargs, match):
    args = {"n": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        scenes.make_scenes(**args)


def test_digit_crops_are_centred_on_the_object_of_interest():
    import dataclasses

    batch = scenes.make_scenes(6, mode="single", seed=3)
    crops = scenes.digit_crops(batch, side=16, jitter=3.0, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 16, 16) and bool(torch.isfinite(crops).all())
    # crop the object's own mask instead of the image: a centred 48×48 crop holds all of the object's pixels
    mask_images = batch.masks.float().expand(-1, 3, -1, -1)
    crops = scenes.denormalize(scenes.digit_crops(dataclasses.replace(batch, images=mask_images), side=48, jitter=0.0))
    inside = (batch.boxes[:, :2] > 0).all(1) & (batch.boxes[:, 2:] < 64).all(1)  # roi_align repeats edge pixels
    assert int(inside.sum()) >= 3
    torch.testing.assert_close(crops[inside, 0].sum(dim=(1, 2)), batch.roi_sizes[inside].float(), rtol=1e-4, atol=1e-3)
    with pytest.raises(TypeError, match="batch"):
        scenes.digit_crops(batch.images)
    with pytest.raises(ValueError, match="side"):
        scenes.digit_crops(batch, side=0)
