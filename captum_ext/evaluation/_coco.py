"""The ``coco:`` source of :func:`captum_ext.evaluation.data.open_dataset`: pycocotools through ``CocoDetection``."""
from __future__ import annotations

import contextlib
import io
import math
import numbers
import os
import warnings
from collections import defaultdict
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_ext.evaluation._annotations import BadAnnotation, box_problem, clip_box
from captum_ext.evaluation.class_maps import carried_class_map
from captum_ext.evaluation.data import ImageEntry, read_image
from captum_ext.metrics.ground_truth import GroundTruth


def _fail(ann_file: str, why: str) -> ValueError:
    return ValueError(f"{ann_file} is not a valid COCO annotation file: {why}")


def _positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _unique_ids(records: List[Dict[str, Any]], kind: str, label: str, ann_file: str) -> Set[object]:
    """The ids of ``records``, refusing an id used twice and naming both records by their ``label`` field.

    Args:
        records (list of dict): the image or category records.
        kind (str): ``"image"`` or ``"category"``, for the message.
        label (str): the field that names a record (``"file_name"``, ``"name"``).
        ann_file (str): the annotation file, for the message.

    Returns:
        set: the ids.

    Raises:
        ValueError: an id used twice.
    """
    first: Dict[object, object] = {}
    for record in records:
        key = record.get("id")
        if key in first:
            raise _fail(ann_file, f"{kind} id {key!r} is used twice, by {first[key]!r} and {record.get(label)!r}")
        first[key] = record.get(label)
    return set(first)


def _check(dataset: object, ann_file: str) -> None:
    """Refuse what pycocotools indexes silently but would break later (every message names the file)."""
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise _fail(ann_file, 'expected a JSON object with an "images" list')
    for img in dataset["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            raise _fail(ann_file, f"image record without a file_name: {str(img)[:120]}")
        if not (_positive_int(img.get("height")) and _positive_int(img.get("width"))):
            raise _fail(ann_file, f"image {img.get('id')!r} needs positive integer height and width")
    annotations = dataset.get("annotations", [])
    if not isinstance(annotations, list) or not isinstance(dataset.get("categories", []), list):
        raise _fail(ann_file, '"annotations" and "categories" must be lists')
    # pycocotools keeps the last record of an id and scores every record's objects against it.
    images = _unique_ids(dataset["images"], "image", "file_name", ann_file)
    files: Dict[str, Tuple[str, object]] = {}
    for img in dataset["images"]:  # two records of one file would score both images' objects on the same pixels
        file = os.path.normpath(img["file_name"])  # "a.png" and "./a.png" are one file
        if file in files:
            raise _fail(ann_file, f"file_name {img['file_name']!r} of image {img.get('id')!r} names the file of "
                                  f"image {files[file][1]!r} ({files[file][0]!r})")
        files[file] = (img["file_name"], img.get("id"))
    category_records = [c for c in dataset.get("categories", []) if isinstance(c, dict)]
    for category in category_records:  # ids are read as integers: 1.2 and 1.7 would become one category
        if not isinstance(category.get("id"), numbers.Integral) or isinstance(category.get("id"), bool):
            raise _fail(ann_file, f"category {category.get('name')!r} needs an integer id, got "
                                  f"{category.get('id')!r}")
    categories = _unique_ids(category_records, "category", "name", ann_file)
    for ann in annotations:
        if not isinstance(ann, dict):
            raise _fail(ann_file, f"annotation is not an object: {str(ann)[:120]}")
        if ann.get("image_id") not in images:
            raise _fail(ann_file, f"annotation {ann.get('id')!r} refers to unknown image {ann.get('image_id')!r}")
        if ann.get("category_id") not in categories:
            raise _fail(ann_file, f"annotation {ann.get('id')!r} has unknown category {ann.get('category_id')!r}")
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, numbers.Real) for v in box):
            raise _fail(ann_file, f"annotation {ann.get('id')!r} needs a bbox [x, y, w, h] of numbers")


def _segmentation_problem(segmentation: object, box: Tuple[float, float, float, float], height: int, width: int
                          ) -> Optional[str]:
    """Why a COCO ``segmentation`` cannot be decoded (polygons of at least three finite points, or an RLE of the
    image's size), or disagrees with its annotation's ``box`` ``(x1, y1, x2, y2)``; ``None`` when it can be
    scored."""
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0 and all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in polygon)):
                return (f"segmentation polygon {str(polygon)[:60]} is not a list of at least three (x, y) points "
                        f"of finite numbers")
        return _off_box(_polygons_extent(segmentation), box)
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if "counts" not in segmentation or size != [height, width]:
            return (f"RLE segmentation needs counts and size [{height}, {width}], got keys {sorted(segmentation)} "
                    f"and size {size!r}")
        runs = _rle_runs(segmentation["counts"])
        if runs is None or any(run < 0 for run in runs) or sum(runs) != height * width:
            return f"RLE segmentation's runs do not cover the {height}×{width} image exactly"
        return _off_box(_runs_extent(runs, height), box)
    return f"segmentation must be a list of polygons or an RLE object, got {type(segmentation).__name__}"


#: Below this IoU between an annotation's bbox and its segmentation's extent, the two describe different regions
#: (the mask metrics would score one place and the box metrics another). COCO derives the bbox from the
#: segmentation, so the two agree exactly there.
MIN_SEGMENTATION_BOX_IOU = 0.5


def _off_box(extent: Optional[Tuple[float, float, float, float]], box: Tuple[float, float, float, float]
             ) -> Optional[str]:
    """Why a segmentation of this ``extent`` disagrees with its annotation's ``box``, or ``None``."""
    if extent is None or extent[2] <= extent[0] or extent[3] <= extent[1]:
        return None  # no pixel, or a polygon without area: the empty-union check names it
    overlap = (max(0.0, min(box[2], extent[2]) - max(box[0], extent[0]))
               * max(0.0, min(box[3], extent[3]) - max(box[1], extent[1])))
    union = (box[2] - box[0]) * (box[3] - box[1]) + (extent[2] - extent[0]) * (extent[3] - extent[1]) - overlap
    iou = overlap / union if union > 0 else 0.0
    if iou >= MIN_SEGMENTATION_BOX_IOU:
        return None
    shown = ", ".join(f"{v:g}" for v in extent)
    return (f"its segmentation spans ({shown}) but its bbox is ({', '.join(f'{v:g}' for v in box)}): IoU "
            f"{iou:.2f} < {MIN_SEGMENTATION_BOX_IOU}, so they describe different regions")


def _polygons_extent(polygons: List[List[float]]) -> Tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` of checked polygons' points."""
    xs = [v for polygon in polygons for v in polygon[0::2]]
    ys = [v for polygon in polygons for v in polygon[1::2]]
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def _runs_extent(runs: List[int], height: int) -> Optional[Tuple[float, float, float, float]]:
    """``(x1, y1, x2, y2)`` of the pixels an RLE's checked ``runs`` cover (column by column, as COCO stores them);
    ``None`` without a pixel."""
    x1 = y1 = x2 = y2 = None
    position = 0
    for k, run in enumerate(runs):
        if k % 2 == 1 and run > 0:  # odd runs are foreground
            (first_x, first_y), (last_x, last_y) = divmod(position, height), divmod(position + run - 1, height)
            low, high = (first_y, last_y) if first_x == last_x else (0, height - 1)  # a run over two columns
            x1 = first_x if x1 is None else min(x1, first_x)
            x2 = last_x if x2 is None else max(x2, last_x)
            y1 = low if y1 is None else min(y1, low)
            y2 = high if y2 is None else max(y2, high)
        position += run
    if x1 is None:
        return None
    return float(x1), float(y1), float(x2 + 1), float(y2 + 1)  # type: ignore[operator]


def _rle_runs(counts: object) -> Optional[List[int]]:
    """The run lengths of an RLE's ``counts`` (a list, or pycocotools' compressed string), or ``None`` when they
    do not parse. pycocotools decodes runs that fall short of the image without complaint (the rest reads as
    background), so their total is checked here."""
    if isinstance(counts, list):
        ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in counts)
        return [int(v) for v in counts] if ints else None
    if not isinstance(counts, (str, bytes)):
        return None
    text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
    runs: List[int] = []
    position = 0
    while position < len(text):  # each run: 5-bit groups, a continuation bit, a sign bit, deltas from two back
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                return None
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
    return runs


def _quiet_decode(rle: Dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' decoder trips NumPy 2's `copy` deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _merged_rle(coco: Any, anns: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The run-length encoding of the union of the annotations' masks."""
    from pycocotools import mask as mask_utils

    return mask_utils.merge([coco.annToRLE(ann) for ann in anns])


def _empty_union(coco: Any, anns: List[Dict[str, Any]]) -> Optional[str]:
    """Why the union of the annotations' masks cannot be a ground-truth region (it covers no pixel, or it does not
    decode), or ``None``; from their run-length encodings, without drawing the masks (each RLE's runs were checked
    against its image by :func:`_segmentation_problem`)."""
    from pycocotools import mask as mask_utils

    try:
        area = int(mask_utils.area(_merged_rle(coco, anns)))
    except Exception as exc:  # pycocotools raises TypeError, ValueError, ... for the ways an RLE breaks
        return f"segmentation does not decode ({type(exc).__name__}: {exc})"
    return None if area > 0 else "segmentation covers no pixel"


class CocoSource:
    """Annotations of a COCO instances file; images decoded on demand from ``images_dir``."""

    def __init__(self, ann_file: str, images_dir: str) -> None:
        from torchvision.datasets import CocoDetection

        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(f"COCO image directory not found: {images_dir}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self.dataset = CocoDetection(images_dir, ann_file)
        except (ValueError, AssertionError, KeyError, TypeError, AttributeError) as exc:
            # JSONDecodeError and UnicodeDecodeError are ValueErrors; the rest is pycocotools meeting a non-COCO shape
            raise _fail(ann_file, f"{type(exc).__name__}: {exc}") from None
        coco = self.dataset.coco
        _check(coco.dataset, ann_file)
        self.images_dir = images_dir
        self.categories: Dict[int, str] = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.cats.values()}
        anns = coco.dataset.get("annotations", [])
        self.has_boxes = bool(anns)
        self.has_masks = bool(anns) and all(bool(a.get("segmentation")) for a in anns)
        self.annotation_files = [ann_file]
        self.ids_are_classes = False
        self.carried_class_map = carried_class_map(os.path.dirname(os.path.abspath(ann_file)))
        self.entries: List[ImageEntry] = []
        self.bad: List[BadAnnotation] = []
        boxed: Tuple[List[int], List[int], List[List[float]], List[str]] = ([], [], [], [])
        #: Image index → the categories whose region is their masks' union (checked after a resize on open).
        self.masked_pairs: Dict[int, List[int]] = {}
        for index, image_id in enumerate(self.dataset.ids):  # sorted image ids: a stable order to resume by
            info = coco.imgs[image_id]
            cats = tuple(sorted({int(a["category_id"]) for a in coco.imgToAnns.get(image_id, [])}))
            path = os.path.join(images_dir, info["file_name"])
            height, width = int(info["height"]), int(info["width"])
            self.entries.append(ImageEntry(index, image_id, path, height, width, cats))
            by_category: Dict[int, list] = defaultdict(list)
            for ann in coco.imgToAnns.get(image_id, []):
                x, y, w, h = ann["bbox"]
                why = box_problem((x, y, x + w, y + h), height, width)
                if why is None and ann.get("segmentation"):
                    why = _segmentation_problem(ann["segmentation"], (x, y, x + w, y + h), height, width)
                by_category[int(ann["category_id"])].append((ann, why))
            for category, anns in by_category.items():
                wrong = [(ann, why) for ann, why in anns if why is not None]
                for ann, why in wrong:
                    self.bad.append(BadAnnotation(image_id, path, f"annotation {ann.get('id')!r}", category, why,
                                                  index))
                if wrong:
                    continue
                if all(ann.get("segmentation") for ann, _ in anns):  # the region is the masks' union
                    why = _empty_union(coco, [ann for ann, _ in anns])
                    if why is not None:
                        names = ", ".join(f"annotation {ann.get('id')!r}" for ann, _ in anns)
                        self.bad.append(BadAnnotation(image_id, path, names, category, why, index))
                    else:
                        self.masked_pairs.setdefault(index, []).append(category)
                    continue
                for ann, _ in anns:  # the region is the boxes: checked at the stored size when the dataset opens
                    x, y, w, h = ann["bbox"]
                    boxed[0].append(index)
                    boxed[1].append(category)
                    boxed[2].append(clip_box((x, y, x + w, y + h), height, width))
                    boxed[3].append(f"annotation {ann.get('id')!r}")
        self.region_boxes = (np.array(boxed[0], dtype=np.int64), np.array(boxed[1], dtype=np.int64),
                             np.array(boxed[2], dtype=np.float32).reshape(-1, 4), boxed[3])

    def mask_union(self, entry: ImageEntry, category: int) -> np.ndarray:
        """The union of the masks of ``category``'s annotations on ``entry``'s image, ``H×W`` bool (one decode of
        their merged run-length encoding)."""
        coco = self.dataset.coco
        anns = [a for a in coco.imgToAnns.get(entry.image_id, []) if int(a["category_id"]) == category]
        try:
            return _quiet_decode(_merged_rle(coco, anns)).astype(bool)
        except Exception as exc:  # checked when the dataset opens; named here should the file change since
            names = ", ".join(f"annotation {a.get('id')!r}" for a in anns)
            raise ValueError(f"{self.annotation_files[0]}: image {entry.file}, {names}: segmentation does not "
                             f"decode ({type(exc).__name__}: {exc})") from None

    def image(self, entry: ImageEntry) -> Tensor:
        """The decoded image of ``entry``."""
        return read_image(entry.file)

    def truths(self, entry: ImageEntry) -> List[GroundTruth]:
        """Per category: every instance's box and, when all have one, the union of their masks."""
        coco = self.dataset.coco
        by_category: Dict[int, list] = defaultdict(list)
        for ann in coco.imgToAnns.get(entry.image_id, []):
            if int(ann["category_id"]) in entry.categories:  # a skipped pair's annotations may not even decode
                by_category[int(ann["category_id"])].append(ann)
        truths = []
        for category in sorted(by_category):
            anns = by_category[category]
            boxes = torch.tensor([clip_box((x, y, x + w, y + h), entry.height, entry.width)
                                  for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32).reshape(-1, 4)
            mask = None
            if all(a.get("segmentation") for a in anns):
                mask = torch.from_numpy(self.mask_union(entry, category))
            truths.append(GroundTruth(category, boxes, mask))
        return truths
