"""The ``voc:`` source of :func:`captum_ext.evaluation.data.open_dataset`: ``VOCDetection`` and its XML parsing."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from captum_ext._utils.images import displayed_size
from captum_ext.datasets.export import voc_base_dir
from captum_ext.evaluation._annotations import BadAnnotation, box_problem, clip_box
from captum_ext.evaluation.class_maps import ClassMap, carried_class_map
from captum_ext.evaluation.data import VOC_CLASSES, ImageEntry, _is_count, read_image
from captum_ext.metrics.ground_truth import GroundTruth


def category_table(names: set, class_map: Optional[ClassMap]) -> Dict[str, int]:
    """Name → category id, fixed by a class list and never by which names happen to appear: the class map's
    names (ordered by class index, then name) when there is one; else the 20 VOC classes as 1–20 when every name
    is one; else integer names as ``int + 1`` (the ids :func:`~captum_ext.datasets.export.export_coco` gives the
    same digits). A name outside the list is a bad annotation."""
    if class_map is not None:
        ordered = sorted(class_map.classes.items(), key=lambda item: (item[1], item[0]))
        return {name: i + 1 for i, (name, _) in enumerate(ordered)}
    if names and all(_is_count(n) for n in names):
        return {n: int(n) + 1 for n in names}
    return {n: i + 1 for i, n in enumerate(VOC_CLASSES)}


def _names_map(class_map: Optional[ClassMap], root: str) -> Optional[ClassMap]:
    """The class map as one keyed by names (VOC annotations carry names only: ids are this reader's numbering)."""
    if class_map is None or class_map.keys != "ids":
        return class_map
    raise ValueError(f"{class_map.source} is keyed by category ids, but the VOC dataset {root!r} names its classes "
                     f"in the XML <name> tags: key the class map by those names ({{\"names\": {{...}}}})")


def _size(annotation: dict, image_file: str) -> Tuple[int, int]:
    """``(height, width)`` from ``<size>``, or the image header when the annotation lacks it (0, 0 if unreadable)."""
    try:
        size = annotation["size"]
        height, width = int(size["height"]), int(size["width"])
        if height > 0 and width > 0:
            return height, width
    except (KeyError, TypeError, ValueError):
        pass
    try:
        with Image.open(image_file) as img:
            return displayed_size(img)
    except Exception:  # reported when the image itself is read
        return 0, 0


def _objects(annotation: dict, xml_file: str) -> List[Tuple[str, List[float]]]:
    """``(name, [x1, y1, x2, y2])`` of every object, converted from 1-based inclusive to 0-based exclusive edges."""
    found = []
    for obj in annotation.get("object", []) or []:
        try:
            box = obj["bndbox"]
            xmin, ymin, xmax, ymax = (float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            name = str(obj["name"]).strip()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{xml_file}: object without a name and numeric bndbox ({exc!r})") from None
        # Pixel number xmin is 0-based column xmin - 1; xmax is inclusive, so it is the exclusive 0-based edge.
        found.append((name, [xmin - 1.0, ymin - 1.0, xmax, ymax]))
    return found


class VocSource:
    """Annotations of a VOC split (all XML files parsed up front); images decoded on demand."""

    def __init__(self, root: str, year: str = "2012", split: str = "val",
                 class_map: Optional[ClassMap] = None) -> None:
        from torchvision.datasets import VOCDetection

        try:
            from defusedxml.ElementTree import ParseError, parse
        except ImportError:  # the parser VOCDetection itself uses
            from xml.etree.ElementTree import ParseError, parse

        base = os.path.join(root, voc_base_dir(year, split))  # ValueError for a year/split VOCDetection refuses
        if not os.path.isdir(root):
            raise FileNotFoundError(f"VOC root not found: {root}")
        if not os.path.isdir(base):
            raise FileNotFoundError(f"VOC{year} directory not found: {base}")
        split_file = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"VOC split list not found: {split_file}")
        self.dataset = VOCDetection(root, year=year, image_set=split)
        parsed = []
        listed: Set[str] = set()
        for image_file, xml_file in zip(self.dataset.images, self.dataset.annotations):
            if os.path.basename(xml_file) == ".xml":  # a blank line in the split list, not an image
                continue
            if xml_file in listed:  # it would be scored twice, weighing double in every metric
                raise ValueError(f"VOC split list {split_file} names image "
                                 f"{os.path.splitext(os.path.basename(xml_file))[0]!r} twice")
            listed.add(xml_file)
            if not os.path.isfile(xml_file):
                raise FileNotFoundError(f"VOC annotation not found: {xml_file}")
            try:
                annotation = VOCDetection.parse_voc_xml(parse(xml_file).getroot()).get("annotation")
            except ParseError as exc:
                raise ValueError(f"{xml_file} is not a valid VOC annotation: {exc}") from None
            if not isinstance(annotation, dict):
                raise ValueError(f"{xml_file} is not a valid VOC annotation: no <annotation> element")
            height, width = _size(annotation, image_file)
            parsed.append((image_file, xml_file, height, width, _objects(annotation, xml_file)))
        self.carried_class_map = carried_class_map(root)
        names_map = _names_map(class_map if class_map is not None else self.carried_class_map, root)
        ids = category_table({name for *_, objects in parsed for name, _ in objects}, names_map)
        self.categories: Dict[int, str] = {i: n for n, i in sorted(ids.items(), key=lambda item: item[1])}
        listed = "the class map's names" if names_map is not None else (
            "the 20 Pascal VOC classes (a class map keyed by names sets another list)"
            if set(ids) == set(VOC_CLASSES) else "the integer names (a class map keyed by names sets the list)")
        self.has_boxes, self.has_masks = True, False
        self.ids_are_classes = False
        self.annotation_files = [split_file] + [xml for _, xml, *_ in parsed]
        self.entries: List[ImageEntry] = []
        self.bad: List[BadAnnotation] = []
        # Compact per-image arrays: a Python object per box would dominate memory on large splits.
        self._labels: List[np.ndarray] = []
        self._boxes: List[np.ndarray] = []
        boxed: Tuple[List[int], List[int], List[List[float]], List[str]] = ([], [], [], [])
        for index, (image_file, xml_file, height, width, objects) in enumerate(parsed):
            stem = os.path.splitext(os.path.basename(image_file))[0]
            labels, boxes = [], []
            for k, (name, box) in enumerate(objects):
                where = f"object {k + 1} in {os.path.basename(xml_file)}"
                why = None if name in ids else f"class {name!r} is not one of {listed}"
                if why is None and height == 0:  # no <size>, and the image does not open to tell it
                    why = f"the image's size is unknown: {os.path.basename(xml_file)} has no <size> and the image " \
                          f"does not open"
                why = why or box_problem(box, height, width)
                if why is not None:
                    self.bad.append(BadAnnotation(stem, image_file, where, ids.get(name), why, index))
                labels.append(ids.get(name, 0))  # 0: no category; such an object is never part of a truth
                boxes.append(clip_box(box, height, width))
                if why is None:  # checked at the stored size when the dataset opens
                    for column, value in zip(boxed, (index, ids[name], boxes[-1], where)):
                        column.append(value)
            self._labels.append(np.array(labels, dtype=np.int64))
            self._boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
            cats = tuple(sorted({c for c in labels if c}))
            self.entries.append(ImageEntry(index, stem, image_file, height, width, cats))
        self.region_boxes = (np.array(boxed[0], dtype=np.int64), np.array(boxed[1], dtype=np.int64),
                             np.array(boxed[2], dtype=np.float32).reshape(-1, 4), boxed[3])

    def image(self, entry: ImageEntry) -> Tensor:
        """The decoded image of ``entry``."""
        return read_image(entry.file)

    def truths(self, entry: ImageEntry) -> List[GroundTruth]:
        """Per category: the boxes of all its objects (no masks)."""
        labels, boxes = self._labels[entry.index], torch.from_numpy(self._boxes[entry.index])
        return [GroundTruth(c, boxes[torch.from_numpy(labels == c)].clone(), None) for c in entry.categories]
