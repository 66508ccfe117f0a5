"""Scenes exported to COCO and VOC read back exactly, through torchvision and through ``open_dataset``; every spec
kind, the resize rule, and every bad input with the message that names it."""
import json
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader
from torchvision.datasets import CocoDetection, VOCDetection

from captum_ext.datasets import export_coco, export_voc, make_scenes
from captum_ext.datasets.export import coco_categories, voc_base_dir
from captum_ext.evaluation import default_class_map, open_dataset, read_image
from captum_ext.training.scene_classifiers import HELD_OUT_SEED


@pytest.fixture(scope="module", params=["single", "multi", "roi"])
def batch(request):
    return make_scenes(4, mode=request.param, split="test", seed=5)


@pytest.fixture(scope="module")
def multi():
    return make_scenes(3, mode="multi", split="test", seed=7)


def quantized(images):
    """What an exact 8-bit round trip returns."""
    return (images * 255).round() / 255


def expected_truths(batch, i, offset):
    """``(category, boxes, mask)`` per class present in scene ``i``, category = digit + offset."""
    labels = batch.object_labels[i]
    found = []
    for digit in sorted({int(c) for c in labels[labels >= 0]}):
        match = labels == digit
        found.append((digit + offset, batch.object_boxes[i][match], batch.object_masks[i][match].any(0)))
    return found


def coco_spec(tmp_path, batch, **kwargs):
    ann, images = export_coco(batch, tmp_path / "coco", **kwargs)
    return f"coco:{ann}:{images}", ann, images


# --- COCO -------------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools' decoder
def test_coco_export_reads_with_torchvision(tmp_path, batch):
    _, ann, images = coco_spec(tmp_path, batch)
    coco = CocoDetection(str(images), str(ann))
    assert len(coco) == len(batch)
    assert [c["name"] for c in coco.coco.loadCats(coco.coco.getCatIds())] == [str(d) for d in range(10)]
    for i in range(len(batch)):
        image, anns = coco[i]
        assert np.array_equal(np.asarray(image), (quantized(batch.images[i]) * 255).byte().permute(1, 2, 0).numpy())
        valid = [k for k in range(batch.object_labels.shape[1]) if batch.object_labels[i, k] >= 0]
        assert len(anns) == len(valid)
        for a, k in zip(anns, valid):
            x, y, w, h = a["bbox"]
            assert torch.equal(torch.tensor([x, y, x + w, y + h]), batch.object_boxes[i, k])  # exact, exclusive
            assert a["category_id"] == int(batch.object_labels[i, k]) + 1 and a["iscrowd"] == 0
            mask = coco.coco.annToMask(a).astype(bool)
            assert np.array_equal(mask, batch.object_masks[i, k].numpy())  # RLE is lossless
            assert list(mask_utils.toBbox(a["segmentation"])) == a["bbox"] and a["area"] == mask.sum()


def test_coco_open_dataset_matches_the_scenes(tmp_path, batch):
    spec, _, _ = coco_spec(tmp_path, batch)
    data = open_dataset(spec)
    assert len(data) == len(batch) and data.has_masks and data.has_boxes and data.spec == spec
    assert data.categories == {d + 1: str(d) for d in range(10)}
    assert default_class_map(data.categories) == {d + 1: d for d in range(10)}
    for i in range(len(batch)):
        sample, entry = data[i], data.entries[i]
        assert (entry.index, entry.image_id, entry.height, entry.width) == (i, i + 1, 64, 64)
        assert sample.error is None and sample.image.dtype == torch.float32
        assert torch.equal(sample.image, quantized(batch.images[i]))
        expected = expected_truths(batch, i, offset=1)
        assert entry.categories == tuple(c for c, _, _ in expected)
        assert len(sample.truths) == len(expected)
        for truth, (category, boxes, mask) in zip(sample.truths, expected):
            assert truth.category == category
            assert torch.equal(truth.boxes, boxes) and truth.boxes.dtype == torch.float32
            assert torch.equal(truth.mask, mask) and truth.mask.dtype == torch.bool


def test_coco_jpeg_images_are_close(tmp_path, multi):
    spec, _, images = coco_spec(tmp_path, multi, image_format="jpg")
    assert sorted(p.suffix for p in images.iterdir()) == [".jpg"] * len(multi)
    sample = open_dataset(spec)[0]
    assert (sample.image - multi.images[0]).abs().mean() < 0.03


def test_images_without_objects_are_kept_with_no_truths(tmp_path, multi):
    _, ann, images = coco_spec(tmp_path, multi)
    document = json.loads(ann.read_text())
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != 2]
    ann.write_text(json.dumps(document))
    data = open_dataset(f"coco:{ann}:{images}")
    assert len(data) == len(multi) and data.entries[1].categories == () and data[1].truths == []
    assert data[1].image is not None


# --- VOC --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("year, split", [("2012", "val"), ("2007", "test"), ("2011", "trainval")])
def test_voc_export_reads_with_torchvision(tmp_path, multi, year, split):
    root = export_voc(multi, tmp_path / "voc", year=year, split=split)
    assert (root / voc_base_dir(year, split) / "ImageSets" / "Main" / f"{split}.txt").is_file()
    voc = VOCDetection(str(root), year=year, image_set=split)
    assert len(voc) == len(multi)
    for i in range(len(multi)):
        image, target = voc[i]
        assert (np.asarray(image, dtype=np.float32) / 255 - multi.images[i].permute(1, 2, 0).numpy()).std() < 0.05
        objects = target["annotation"]["object"]
        valid = [k for k in range(multi.object_labels.shape[1]) if multi.object_labels[i, k] >= 0]
        assert [o["name"] for o in objects] == [str(int(multi.object_labels[i, k])) for k in valid]
        for obj, k in zip(objects, valid):
            x1, y1, x2, y2 = multi.object_boxes[i, k].tolist()
            box = obj["bndbox"]  # 1-based inclusive: first pixel number x1 + 1, last pixel number x2
            assert [int(box[t]) for t in ("xmin", "ymin", "xmax", "ymax")] == [x1 + 1, y1 + 1, x2, y2]


def test_voc_open_dataset_round_trips_boxes(tmp_path, batch):
    root = export_voc(batch, tmp_path / "voc")
    data = open_dataset(f"voc:{root}")
    assert data.has_boxes and not data.has_masks and len(data) == len(batch)
    assert default_class_map(data.categories) == {c: int(n) for c, n in data.categories.items()}
    for i in range(len(batch)):
        sample = data[i]
        assert sample.image_id == f"{i:06d}" and sample.image.shape == (3, 64, 64)
        assert (sample.image - batch.images[i]).abs().mean() < 0.03  # JPEG: close, not exact
        expected = expected_truths(batch, i, offset=1)  # the same ids as the COCO export
        assert [t.category for t in sample.truths] == [c for c, _, _ in expected]
        for truth, (_, boxes, _) in zip(sample.truths, expected):
            assert torch.equal(truth.boxes, boxes) and truth.mask is None


def test_voc_standard_class_names_get_voc_ids(tmp_path, multi):
    root = export_voc(multi, tmp_path / "voc")
    (root / "class_map.json").unlink()  # the export's digit class list would make "dog" a stray name
    for xml in (root / "VOCdevkit" / "VOC2012" / "Annotations").iterdir():
        xml.write_text(re.sub(r"<name>[^<]*</name>", "<name>dog</name>", xml.read_text()))
    data = open_dataset(f"voc:{root}:2012:val")
    assert data.categories[12] == "dog" and list(data.categories) == list(range(1, 21))
    assert [t.category for t in data[0].truths] == [12] and len(data[0].truths[0].boxes) == 2
    assert default_class_map(data.categories)[12] == 11


# --- folder and scenes ------------------------------------------------------------------------------------------

def test_folder_spec_gives_class_labels_only(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    (tmp_path / "3").mkdir(), (tmp_path / "7" / "sub").mkdir(parents=True), (tmp_path / "empty").mkdir()
    Image.fromarray(rgb).save(tmp_path / "3" / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "7" / "gray.png")  # gray -> RGB
    Image.fromarray(np.dstack([rgb, np.zeros((6, 5), np.uint8)])).save(tmp_path / "7" / "sub" / "alpha.png")
    data = open_dataset(f"folder:{tmp_path}")
    assert data.categories == {0: "3", 1: "7", 2: "empty"} and not data.has_boxes and not data.has_masks
    assert [e.image_id for e in data.entries] == ["3/a.png", "7/gray.png", "7/sub/alpha.png"]
    assert [(e.height, e.width, e.categories) for e in data.entries] == [(6, 5, (0,)), (6, 5, (1,)), (6, 5, (1,))]
    colour = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert torch.equal(data[0].image, colour) and torch.equal(data[2].image, colour)  # alpha dropped, not blended
    assert torch.equal(data[1].image, colour[:1].expand(3, -1, -1))
    truth = data[1].truths[0]
    assert truth.category == 1 and truth.boxes.shape == (0, 4) and truth.mask is None
    assert default_class_map({0: "3", 1: "7"}) == {0: 3, 1: 7}
    (tmp_path / "3" / "broken.png").write_bytes(b"\x89PNG nothing else")
    lenient = open_dataset(f"folder:{tmp_path}", resize=(8, 8), skip_bad=True)
    broken = lenient[1]
    assert (lenient.entries[1].height, lenient.entries[1].width) == (0, 0)  # the header did not read either
    assert broken.image is None and "3/broken.png" in broken.error and broken.truths[0].boxes.shape == (0, 4)
    assert lenient[0].image.shape == (3, 8, 8)


def test_sixteen_bit_gray_is_scaled(tmp_path):
    Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert torch.allclose(read_image(tmp_path / "deep.png"), torch.full((3, 4, 4), 0.5), atol=1e-4)


def test_scenes_spec_is_the_held_out_scenes():
    data = open_dataset("scenes:multi:5")
    reference = make_scenes(5, mode="multi", split="test", seed=HELD_OUT_SEED)
    assert data.categories == {d: str(d) for d in range(10)} and data.has_masks
    assert default_class_map(data.categories) == {d: d for d in range(10)}
    for i in range(5):
        sample = data[i]
        assert sample.image_id == i and torch.equal(sample.image, reference.images[i])
        for truth, (category, boxes, mask) in zip(sample.truths, expected_truths(reference, i, offset=0)):
            assert truth.category == category and torch.equal(truth.boxes, boxes) and torch.equal(truth.mask, mask)


def test_dataset_pickles_and_loads_in_batches(tmp_path, multi):
    spec, _, _ = coco_spec(tmp_path, multi)
    data = pickle.loads(pickle.dumps(open_dataset(spec)))
    batches = list(DataLoader(data, batch_size=2, collate_fn=list))
    assert [len(b) for b in batches] == [2, 1] and batches[1][0].index == 2


# --- resize -----------------------------------------------------------------------------------------------------

def test_resize_up_is_exact_on_boxes_and_masks(tmp_path, multi):
    spec, _, _ = coco_spec(tmp_path, multi)
    native, big = open_dataset(spec)[0], open_dataset(spec, resize=(128, 192))[0]
    assert big.image.shape == (3, 128, 192) and 0 <= big.image.min() and big.image.max() <= 1
    for small, large in zip(native.truths, big.truths):
        assert torch.equal(large.boxes, small.boxes * torch.tensor([3.0, 2.0, 3.0, 2.0]))
        assert large.mask.shape == (128, 192)
        assert torch.equal(large.mask, small.mask.repeat_interleave(2, 0).repeat_interleave(3, 1))


def test_resize_down_keeps_masks_inside_their_boxes():
    native, small = open_dataset("scenes:roi:3")[2], open_dataset("scenes:roi:3", resize=(40, 24))[2]
    assert small.image.shape == (3, 40, 24)
    for before, after in zip(native.truths, small.truths):
        assert torch.allclose(after.boxes, before.boxes * torch.tensor([24 / 64, 40 / 64, 24 / 64, 40 / 64]))
        # Nearest-exact keeps a pixel whose centre maps into the mask, so the mask stays within the rounded-out box.
        ys, xs = torch.nonzero(after.mask, as_tuple=True)
        x1, y1 = after.boxes[:, 0].min().floor(), after.boxes[:, 1].min().floor()
        x2, y2 = after.boxes[:, 2].max().ceil(), after.boxes[:, 3].max().ceil()
        assert xs.min() >= x1 and xs.max() + 1 <= x2 and ys.min() >= y1 and ys.max() + 1 <= y2


# --- bad input --------------------------------------------------------------------------------------------------

def test_missing_paths_are_named(tmp_path, multi):
    _, ann, images = coco_spec(tmp_path, multi)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        open_dataset(f"coco:{tmp_path / 'nope.json'}:{images}")
    with pytest.raises(FileNotFoundError, match="no_images"):
        open_dataset(f"coco:{ann}:{tmp_path / 'no_images'}")
    with pytest.raises(FileNotFoundError, match="no_voc"):
        open_dataset(f"voc:{tmp_path / 'no_voc'}")
    with pytest.raises(FileNotFoundError, match="not_here"):
        open_dataset(f"folder:{tmp_path / 'not_here'}")
    root = export_voc(multi, tmp_path / "voc")
    with pytest.raises(FileNotFoundError, match="train.txt"):
        open_dataset(f"voc:{root}:2012:train")
    (root / "VOCdevkit" / "VOC2012" / "Annotations" / "000001.xml").unlink()
    with pytest.raises(FileNotFoundError, match="000001.xml"):
        open_dataset(f"voc:{root}")


@pytest.mark.parametrize("content, why", [
    ("{not json", "Expecting"), ("[1, 2]", "not supported"), ('{"info": {}}', "images"),
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 4}]}', "height and width"),
    ('{"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}], "categories": [],'
     ' "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}]}', "unknown category"),
])
def test_invalid_coco_files_are_named(tmp_path, content, why):
    ann = tmp_path / "broken.json"
    ann.write_text(content)
    with pytest.raises(ValueError, match=f"broken.json is not a valid COCO annotation file.*{why}"):
        open_dataset(f"coco:{ann}:{tmp_path}")


def test_invalid_voc_xml_is_named(tmp_path, multi):
    root = export_voc(multi, tmp_path / "voc")
    (root / "VOCdevkit" / "VOC2012" / "Annotations" / "000002.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="000002.xml is not a valid VOC annotation"):
        open_dataset(f"voc:{root}")
    with pytest.raises(ValueError, match="2031"):
        open_dataset(f"voc:{root}:2031:val")


def test_bad_images_raise_or_are_reported(tmp_path, multi):
    spec, _, images = coco_spec(tmp_path, multi)
    (images / "000001.png").write_bytes(b"not a png")
    (images / "000002.png").unlink()
    data = open_dataset(spec)
    assert data[0].error is None
    with pytest.raises(ValueError, match="000001.png"):
        data[1]
    with pytest.raises(FileNotFoundError, match="000002.png"):
        data[2]
    lenient = open_dataset(spec, skip_bad=True, resize=(32, 32))
    bad, missing = lenient[1], lenient[2]
    assert bad.image is None and "cannot decode image" in bad.error and "000001.png" in bad.error
    assert missing.image is None and "000002.png" in missing.error
    assert bad.truths and bad.truths[0].mask.shape == (32, 32)  # the truth is still listed, at the resized size


def test_image_of_the_wrong_size_is_bad(tmp_path, multi):
    spec, _, images = coco_spec(tmp_path, multi)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(images / "000000.png")
    with pytest.raises(ValueError, match=r"000000.png decodes to 10×12 pixels but is annotated as 64×64"):
        open_dataset(spec)[0]
    assert "10×12" in open_dataset(spec, skip_bad=True)[0].error


def test_empty_datasets_are_refused(tmp_path, multi):
    ann = tmp_path / "empty.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": coco_categories()}))
    with pytest.raises(ValueError, match="yields no images"):
        open_dataset(f"coco:{ann}:{tmp_path}")
    root = export_voc(multi, tmp_path / "voc")
    (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "val.txt").write_text("")
    with pytest.raises(ValueError, match="yields no images"):
        open_dataset(f"voc:{root}")
    (tmp_path / "folder" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="yields no images"):
        open_dataset(f"folder:{tmp_path / 'folder'}")
    with pytest.raises(ValueError, match="yields no images"):
        open_dataset("scenes:single:0")


@pytest.mark.parametrize("spec", [
    "", "coco", "nope:x", "coco:only.json", "coco:a.json:b:c", "voc:root:2012", "voc:", "folder:a:b",
    "scenes:single", "scenes:bad:3", "scenes:single:-1", "scenes:single:two", "coco::dir",
])
def test_malformed_specs_show_the_accepted_forms(spec):
    with pytest.raises(ValueError, match=r"malformed dataset spec .*coco:ANNOTATIONS.json:IMAGES_DIR.*scenes:MODE:N"):
        open_dataset(spec)


def test_other_argument_errors(multi, tmp_path):
    with pytest.raises(TypeError, match="string"):
        open_dataset(3)
    with pytest.raises(ValueError, match="resize"):
        open_dataset("scenes:single:1", resize=(0, 5))
    with pytest.raises(ValueError, match="image_format"):
        export_coco(multi, tmp_path, image_format="gif")
    with pytest.raises(ValueError, match="split"):
        export_voc(multi, tmp_path, year="2012", split="test")
    with pytest.raises(TypeError, match="SceneBatch"):
        export_voc(multi.images, tmp_path)
    with pytest.raises(ValueError, match="explicit"):
        default_class_map({1: "person", 2: "bicycle", 3: "07"})
