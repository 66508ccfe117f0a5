"""The ``voc:`` source of :func:`captum_ext.evaluation.data.open_dataset`: ``VOCDetection`` and its XML parsing."""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from captum_ext.datasets.export import voc_base_dir
from captum_ext.evaluation.data import VOC_CLASSES, ImageEntry, _is_count, read_image
from captum_ext.metrics.ground_truth import GroundTruth


def category_ids(names: set) -> Dict[str, int]:
    """Name → category id: VOC's own 20 classes as 1–20, integer names as ``int + 1``, else sorted ``1…K``."""
    if names and names <= set(VOC_CLASSES):
        return {n: i + 1 for i, n in enumerate(VOC_CLASSES)}
    if names and all(_is_count(n) for n in names):
        return {n: int(n) + 1 for n in names}  # the ids export_coco gives the same digits
    return {n: i + 1 for i, n in enumerate(sorted(names))}


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
            return img.height, img.width
    except Exception:  # reported when the image itself is read
        return 0, 0


def _objects(annotation: dict, xml_file: str, height: int, width: int) -> List[Tuple[str, List[float]]]:
    """``(name, [x1, y1, x2, y2])`` of every object, converted from 1-based inclusive to 0-based exclusive edges."""
    found = []
    for obj in annotation.get("object", []) or []:
        try:
            box = obj["bndbox"]
            xmin, ymin, xmax, ymax = (float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            name = str(obj["name"]).strip()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{xml_file}: object without a name and numeric bndbox ({exc!r})") from None
        x1, y1 = xmin - 1.0, ymin - 1.0  # pixel number xmin is 0-based column xmin - 1; xmax is inclusive
        if width and height:
            x1, x2 = min(max(x1, 0.0), width), min(max(xmax, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(ymax, 0.0), height)
        else:
            x2, y2 = xmax, ymax
        found.append((name, [x1, y1, x2, y2]))
    return found


class VocSource:
    """Annotations of a VOC split (all XML files parsed up front); images decoded on demand."""

    def __init__(self, root: str, year: str = "2012", split: str = "val") -> None:
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
        for image_file, xml_file in zip(self.dataset.images, self.dataset.annotations):
            if os.path.basename(xml_file) == ".xml":  # a blank line in the split list, not an image
                continue
            if not os.path.isfile(xml_file):
                raise FileNotFoundError(f"VOC annotation not found: {xml_file}")
            try:
                annotation = VOCDetection.parse_voc_xml(parse(xml_file).getroot()).get("annotation")
            except ParseError as exc:
                raise ValueError(f"{xml_file} is not a valid VOC annotation: {exc}") from None
            if not isinstance(annotation, dict):
                raise ValueError(f"{xml_file} is not a valid VOC annotation: no <annotation> element")
            height, width = _size(annotation, image_file)
            parsed.append((image_file, height, width, _objects(annotation, xml_file, height, width)))
        ids = category_ids({name for *_, objects in parsed for name, _ in objects})
        self.categories: Dict[int, str] = {i: n for n, i in sorted(ids.items(), key=lambda item: item[1])}
        self.has_boxes, self.has_masks = True, False
        self.entries: List[ImageEntry] = []
        # Compact per-image arrays: a Python object per box would dominate memory on large splits.
        self._labels: List[np.ndarray] = []
        self._boxes: List[np.ndarray] = []
        for index, (image_file, height, width, objects) in enumerate(parsed):
            labels = np.array([ids[n] for n, _ in objects], dtype=np.int64)
            self._labels.append(labels)
            self._boxes.append(np.array([b for _, b in objects], dtype=np.float32).reshape(-1, 4))
            stem = os.path.splitext(os.path.basename(image_file))[0]
            cats = tuple(sorted({int(c) for c in labels}))
            self.entries.append(ImageEntry(index, stem, image_file, height, width, cats))

    def image(self, entry: ImageEntry) -> Tensor:
        """The decoded image of ``entry``."""
        return read_image(entry.file)

    def truths(self, entry: ImageEntry) -> List[GroundTruth]:
        """Per category: the boxes of all its objects (no masks)."""
        labels, boxes = self._labels[entry.index], torch.from_numpy(self._boxes[entry.index])
        return [GroundTruth(c, boxes[torch.from_numpy(labels == c)].clone(), None) for c in entry.categories]
