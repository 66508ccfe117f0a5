"""Inputs of the dataset API: integer indexing of scene batches, exports that never replace another export's files,
and ``make_scenes`` arguments refused with a message naming them."""
import numpy as np
import pytest
import torch
from torchvision.datasets import VOCDetection

from captum_ext.datasets import export_coco, export_voc, make_scenes


@pytest.fixture(scope="module")
def three():
    return make_scenes(3, mode="single", seed=0)


# --- SceneBatch.__getitem__ ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [2, -1, np.int64(-1), np.int32(2), torch.tensor(2), torch.tensor(-1),
                                   np.array(2)], ids=repr)
def test_any_integer_selects_one_scene_counting_negatives_from_the_end(three, index):
    scene = three[index]
    assert len(scene) == 1 and scene.images.shape == (1, 3, 64, 64) and scene.mode == three.mode
    assert torch.equal(scene.images, three.images[2:3]) and torch.equal(scene.labels, three.labels[2:3])
    assert torch.equal(scene.object_masks, three.object_masks[2:3])


def test_negative_indices_reach_every_scene(three):
    for i in range(-3, 0):
        assert torch.equal(three[i].images, three.images[i + 3:i + 4])


@pytest.mark.parametrize("index", [3, -4, 5, np.int64(3), torch.tensor(-4)], ids=repr)
def test_an_integer_out_of_range_raises_index_error_naming_index_and_length(three, index):
    with pytest.raises(IndexError, match=rf"{int(index)}.*3 scenes"):
        three[index]


@pytest.mark.parametrize("index", [True, np.bool_(False), torch.tensor(True)], ids=repr)
def test_a_bool_index_is_refused(three, index):
    with pytest.raises(TypeError, match="bool"):
        three[index]


def test_slices_and_index_sequences_work_as_before(three):
    assert torch.equal(three[1:].images, three.images[1:]) and len(three[5:]) == 0
    for index in ([2, 0], torch.tensor([2, 0]), np.array([2, 0]), (2, 0)):
        picked = three[index]
        assert len(picked) == 2 and torch.equal(picked.labels, three.labels[[2, 0]])
    mask = torch.tensor([True, False, True])
    assert torch.equal(three[mask].images, three.images[mask])


# --- exports into a folder that already holds one -------------------------------------------------------------------

def test_a_second_voc_split_into_the_same_root_is_refused_and_leaves_the_first_intact(tmp_path):
    train, val = make_scenes(2, mode="single", seed=10), make_scenes(2, mode="single", seed=11)
    root = export_voc(train, tmp_path, split="train")
    first = (root / "VOCdevkit/VOC2012/JPEGImages/000000.jpg").read_bytes()
    with pytest.raises(ValueError, match=r"`root` .* already holds .*000000\.jpg.*`prefix`"):
        export_voc(val, root, split="val")
    assert (root / "VOCdevkit/VOC2012/JPEGImages/000000.jpg").read_bytes() == first
    assert not (root / "VOCdevkit/VOC2012/ImageSets/Main/val.txt").exists()
    names = [VOCDetection(str(root), year="2012", image_set="train")[i][1]["annotation"]["object"][0]["name"]
             for i in range(2)]
    assert names == [str(int(c)) for c in train.labels]


def test_voc_splits_with_their_own_prefix_share_one_root(tmp_path):
    train, val = make_scenes(3, mode="single", seed=10), make_scenes(2, mode="single", seed=11)
    export_voc(train, tmp_path, split="train", prefix="train_")
    export_voc(val, tmp_path, split="val", prefix="val_")
    for split, batch in (("train", train), ("val", val)):
        voc = VOCDetection(str(tmp_path), year="2012", image_set=split)
        assert len(voc) == len(batch) and voc.images[0].endswith(f"{split}_000000.jpg")
        assert [voc[i][1]["annotation"]["object"][0]["name"] for i in range(len(voc))] == \
            [str(int(c)) for c in batch.labels]
        image = np.asarray(voc[0][0], dtype=np.float32) / 255
        assert np.abs(image - batch.images[0].permute(1, 2, 0).numpy()).mean() < 0.03


@pytest.mark.parametrize("prefix", ["a/b", "x y", 3], ids=repr)
def test_a_voc_prefix_that_is_not_a_plain_name_is_refused(tmp_path, three, prefix):
    with pytest.raises(ValueError, match="`prefix`"):
        export_voc(three, tmp_path, prefix=prefix)


def test_exporting_the_same_batch_again_is_a_no_op(tmp_path, three):
    root = export_voc(three, tmp_path / "voc")
    ann, images = export_coco(three, tmp_path / "coco")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert export_voc(three, tmp_path / "voc") == root and export_coco(three, tmp_path / "coco") == (ann, images)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_second_coco_export_into_the_same_folder_is_refused(tmp_path, three):
    ann, images = export_coco(three, tmp_path)
    before = ann.read_bytes()
    with pytest.raises(ValueError, match=r"`out_dir` .* already holds .*000000\.png.*own folder"):
        export_coco(make_scenes(2, mode="single", seed=1), tmp_path)
    assert ann.read_bytes() == before and len(list(images.iterdir())) == 3


def test_coco_and_voc_exports_cannot_share_a_class_map(tmp_path, three):
    export_coco(three, tmp_path)
    with pytest.raises(ValueError, match="class_map.json"):
        export_voc(three, tmp_path)


# --- make_scenes arguments ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": True}, ValueError, "`seed`"),
    ({"seed": np.bool_(True)}, ValueError, "`seed`"),
    ({"mode": "roi", "context_prob": "0.5"}, TypeError, "`context_prob` must be a real number"),
    ({"mode": "roi", "context_prob": True}, TypeError, "`context_prob`"),
    ({"mode": "roi", "context_prob": float("nan")}, ValueError, "`context_prob`"),
    # Before: ignored, so an ablation without context plates ran on scenes that never had any.
    ({"mode": "multi", "context_prob": 0.1}, ValueError, "`context_prob` applies to mode 'roi' only"),
    ({"clutter": 5}, TypeError, r"`clutter` must be a \(min, max\) pair"),
    ({"clutter": "12"}, TypeError, "`clutter`"),
    ({"clutter": (True, True)}, ValueError, "`clutter`"),
    ({"clutter": (2, 1)}, ValueError, "`clutter`"),
    ({"mode": "roi", "clutter": (1, 2)}, ValueError, "`clutter` applies to modes 'single' and 'multi'"),
], ids=repr)
def test_bad_make_scenes_arguments_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_scenes(1, **kwargs)


def test_valid_clutter_and_numbers_give_the_same_scenes(three):
    assert torch.equal(make_scenes(3, mode="single", seed=np.int64(0), clutter=[3, 6]).images, three.images)
    assert torch.equal(make_scenes(3, mode="single", seed=0, clutter=np.array([3, 6])).images, three.images)
    roi = make_scenes(2, mode="roi", seed=0, context_prob=np.float32(0.9))
    assert torch.equal(make_scenes(2, mode="roi", seed=0, clutter=(0, 0)).images, roi.images)
