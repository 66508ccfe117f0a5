"""Annotated image datasets on disk (COCO, Pascal VOC, class folders) and the built-in scenes, read one way.

:func:`open_dataset` turns a *spec* string into an :class:`AnnotatedImages` dataset whose items are
:class:`Sample` s: an image and one :class:`~captum_ext.metrics.ground_truth.GroundTruth` per annotated class,
the unit that dataset-scale evaluation scores. Opening reads the annotations only (no pixel is decoded), so a
million-image dataset is listed in one pass and its :attr:`AnnotatedImages.entries` say which (image, class) pairs
exist before any worker starts; images are decoded in ``__getitem__``.

Specs:

``coco:ANNOTATIONS.json:IMAGES_DIR``
    A COCO instances file read by ``torchvision.datasets.CocoDetection`` (pycocotools). Category = the COCO
    category id; boxes from ``bbox`` (``[x, y, w, h]`` → ``(x, y, x + w, y + h)``, already the package's exclusive
    convention); mask = the union of the class's instance masks (``COCO.annToMask``), ``None`` when an instance
    of the class lacks a segmentation. Crowd annotations count: a crowd of people is where "person" lies.
``voc:ROOT[:YEAR:SPLIT]``
    A Pascal VOC tree read by ``torchvision.datasets.VOCDetection`` (defaults 2012, ``val``). VOC boxes are 1-based
    inclusive pixels: ``(xmin − 1, ymin − 1, xmax, ymax)`` gives the exclusive 0-based box. ``difficult`` objects
    are kept (they still show the class). Boxes only (``mask`` is ``None``). VOC names its classes, so the class
    list is fixed and never depends on which names happen to appear: the names of a class map (given, or
    ``ROOT/class_map.json``), ids ``1…K`` in class-index order; else, when every name is an integer (exported
    digits), ``int(name) + 1`` as :func:`captum_ext.datasets.export.export_coco` numbers them; else the 20 standard
    VOC classes as ``1``–``20`` in :data:`VOC_CLASSES` order (the indices of VOC's segmentation PNGs). An object
    whose name is not in the list is a bad annotation.
``folder:DIR``
    ``torchvision.datasets.ImageFolder``: class labels only; one truth per image with ``0×4`` boxes and no mask;
    category = the ImageFolder class index (sorted directory names).
``scenes:MODE:N[:train]``
    ``N`` held-out scenes of :func:`captum_ext.datasets.scenes.make_scenes` (``split="test"``, seed
    ``HELD_OUT_SEED`` of :mod:`captum_ext.training.scene_classifiers`), generated in memory. Category = the digit;
    per class, the boxes and union mask of its digits. With ``:train``, training scenes instead (``split="train"``,
    seed :data:`~captum_ext.evaluation._folders.FITTING_SEED`): what to fit a box map on, since ``evaluate`` scores
    the held-out ones.

Every annotation is checked when the dataset opens: a box of zero area, or reaching more than
:data:`~captum_ext.evaluation._annotations.EDGE_SLACK` pixels outside its image, refuses the dataset with an error
naming the image id, file and annotation (or, with ``skip_bad``, its (image, category) pair is left out and listed);
boxes within that slack are clipped to the image. A COCO image or category id used twice is refused.

Images are float32 ``3×H×W`` in ``[0, 1]`` (gray becomes RGB, alpha is dropped, 16-bit gray is scaled by 65535),
turned by a photo's EXIF orientation as viewers and annotation tools show it (COCO's sizes are of that view; a file
annotated on its stored pixels is refused by the size check, which says so). Paths in a spec are normalised
(``data/img/`` is ``data/img``).
An image whose annotation lists no objects is kept with an empty ``truths`` list, so every image of the dataset is
accounted for. :func:`default_class_map` maps category ids to model class indices by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from captum_ext._utils.images import EXIF_ORIENTATION, file_pixels_problem
from captum_ext.evaluation._annotations import resize_sample
from captum_ext.evaluation._fingerprints import file_state, hash_file
from captum_ext.metrics.ground_truth import GroundTruth

#: The 20 Pascal VOC classes in the standard (alphabetical) order; category id = position + 1.
VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

#: The spec forms :func:`open_dataset` accepts, shown in its error messages.
SPEC_FORMS: Tuple[str, ...] = (
    "coco:ANNOTATIONS.json:IMAGES_DIR", "voc:ROOT[:YEAR:SPLIT]", "folder:DIR", "scenes:MODE:N[:train]",
)


@dataclass(frozen=True)
class ImageEntry:
    """One image as listed by the annotation pass (no pixels decoded).

    Attributes:
        index (int): position in the dataset (``AnnotatedImages[index]``), stable across runs for resuming.
        image_id (int or str): the dataset's own id: COCO image id, VOC file stem, folder path relative to the
            root (``/``-separated), scene index.
        file (str or None): the image file (``None`` for generated scenes).
        height (int): annotated height in pixels (folders: from the image header; 0 if the header is unreadable).
        width (int): annotated width in pixels.
        categories (tuple of int): the sorted category ids annotated in the image (one truth each), possibly empty.
    """

    index: int
    image_id: Union[int, str]
    file: Optional[str]
    height: int
    width: int
    categories: Tuple[int, ...]


@dataclass
class Sample:
    """One decoded image with its ground truth, the item of :class:`AnnotatedImages`.

    Attributes:
        index (int): position in the dataset.
        image_id (int or str): the dataset's own id (see :class:`ImageEntry`).
        image (Tensor or None): ``3×H×W`` float32 in ``[0, 1]``; ``None`` when it could not be read (see ``error``).
        truths (list of GroundTruth): one per annotated class, sorted by category; boxes and masks in the
            pixels of ``image`` (after any resize). Empty for an image without annotated objects.
        error (str or None): why the image could not be read (``skip_bad=True`` only), naming the file.
        file_state (list or None): the image file's size, time and SHA-256 when read (a resumed run checks that
            the files of its finished batches are unchanged); ``None`` for an image held in memory.
    """

    index: int
    image_id: Union[int, str]
    image: Optional[Tensor]
    truths: List[GroundTruth] = field(default_factory=list)
    error: Optional[str] = None
    file_state: Optional[List[Any]] = None


class AnnotatedImages(Dataset):
    """A dataset of annotated images yielding :class:`Sample` s; build it with :func:`open_dataset`.

    Samples are dataclasses, which ``torch.utils.data.default_collate`` does not batch: load them with
    ``DataLoader(dataset, batch_size=B, collate_fn=list, num_workers=W)`` (lists of samples). The dataset pickles,
    so worker processes can be spawned as well as forked.

    Attributes:
        entries (list of ImageEntry): every image, in dataset order.
        categories (dict of int to str): category id → name.
        has_masks (bool): every annotated object has a pixel mask (truth masks are set).
        has_boxes (bool): objects have boxes (``False`` for class-label-only datasets).
        spec (str): the spec the dataset was opened from.
        resize (tuple of int or None): ``(H, W)`` every image and its truth is resized to, or ``None``.
        skip_bad (bool): an undecodable image gives a :class:`Sample` with ``error`` set instead of raising.
    """

    def __init__(self, source: object, spec: str, resize: Optional[Tuple[int, int]] = None,
                 skip_bad: bool = False) -> None:
        from captum_ext.evaluation._annotations import (
            bad_annotations_error, drop_pairs, empty_box_regions, masks_emptied_by_resize)

        self._source = source
        self.bad_annotations: List[Any] = list(getattr(source, "bad", []))
        region_boxes = getattr(source, "region_boxes", None)
        if region_boxes is not None:  # boxes without a pixel at the stored size: no metric could score the pair
            self.bad_annotations += empty_box_regions(source.entries, region_boxes, resize)
        if resize is not None:  # a thin mask can fall between the rows and columns a resize samples
            self.bad_annotations += masks_emptied_by_resize(source, resize)
        if self.bad_annotations and not skip_bad:
            raise bad_annotations_error(self.bad_annotations, spec)
        skipped: Dict[int, List[Optional[int]]] = {entry.index: [] for entry in source.entries}
        for bad in self.bad_annotations:
            skipped[bad.image_index].append(bad.category)
        # Pairs with a bad annotation are skipped as a whole: their truth would be incomplete.
        self.entries: List[ImageEntry] = [
            entry if not skipped[entry.index] else
            ImageEntry(entry.index, entry.image_id, entry.file, entry.height, entry.width,
                       drop_pairs(entry.categories, skipped[entry.index]))
            for entry in source.entries]
        self.categories: Dict[int, str] = source.categories
        self.has_masks: bool = source.has_masks
        self.has_boxes: bool = source.has_boxes
        self.carried_class_map: Optional[Any] = getattr(source, "carried_class_map", None)
        self.ids_are_classes: bool = bool(getattr(source, "ids_are_classes", False))
        self.spec = spec
        self.resize = resize
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"AnnotatedImages({self.spec!r}, {len(self)} images, {len(self.categories)} categories)"

    def stored_size(self, entry: ImageEntry) -> Tuple[int, int]:
        """``(height, width)`` of the image as this dataset yields it: the resize size, or the native one.

        Args:
            entry (ImageEntry): one of :attr:`entries`.

        Returns:
            tuple of int: the size of ``self[entry.index].image`` (and of its maps).
        """
        return tuple(self.resize) if self.resize is not None else (entry.height, entry.width)

    def fingerprint(self) -> Dict[str, str]:
        """SHA-256 digests of what the dataset's results depend on: the annotation files' bytes and the image list
        (ids, files, sizes, categories, resize). A resumed run compares them with the first run's.

        Returns:
            dict: ``{"annotations": hex, "images": hex}``.
        """
        import hashlib
        import json

        annotations = hashlib.sha256()
        for path in getattr(self._source, "annotation_files", []):
            annotations.update(os.fsencode(os.path.basename(path)))
            hash_file(annotations, path)
        listing = [[str(e.image_id), e.file, e.height, e.width, list(e.categories)] for e in self.entries]
        images = hashlib.sha256(json.dumps([listing, self.resize], default=str).encode("utf-8"))
        return {"annotations": annotations.hexdigest(), "images": images.hexdigest()}

    def __getitem__(self, index: int) -> Sample:
        """The image ``index`` with its truths; raises ``ValueError`` naming the file for an unreadable image
        (``FileNotFoundError`` for a missing one) unless ``skip_bad``."""
        entry = self.entries[index]
        image: Optional[Tensor] = None
        error: Optional[str] = None
        try:
            image = self._source.image(entry)
            if tuple(image.shape[-2:]) != (entry.height, entry.width):
                swapped = tuple(image.shape[-2:]) == (entry.width, entry.height)
                raise ValueError(f"image {entry.file} decodes to {image.shape[-2]}×{image.shape[-1]} pixels but "
                                 f"is annotated as {entry.height}×{entry.width}" + (
                                     " (sides swapped: images are read turned by their EXIF orientation, as viewers "
                                     "show them, and these annotations are of the stored pixels)" if swapped else ""))
        except (OSError, ValueError) as exc:
            if not self.skip_bad:
                raise type(exc)(f"{exc} (`skip_bad` leaves unreadable images out)") from None
            image, error = None, str(exc)
        try:
            truths = sorted((t for t in self._source.truths(entry) if t.category in entry.categories),
                            key=lambda t: t.category)
        except ValueError as exc:  # annotations that do not decode: the image is not scored, and named
            if not self.skip_bad:
                raise type(exc)(f"{exc} (`skip_bad` leaves such images out)") from None
            image, truths, error = None, [], error or str(exc)
        if self.resize is not None and (entry.height, entry.width) != tuple(self.resize):
            image, truths = resize_sample(image, truths, (entry.height, entry.width), self.resize)
        return Sample(entry.index, entry.image_id, image, truths, error, file_state(entry.file))


def read_image(path: Union[str, os.PathLike]) -> Tensor:
    """Decode an image file to ``3×H×W`` float32 in ``[0, 1]``: gray → RGB, alpha dropped, 16-bit scaled, and a
    photo's EXIF orientation applied (as viewers and annotation tools show it; COCO's sizes are of that view).

    Args:
        path (str or PathLike): the image file.

    Returns:
        Tensor: ``3×H×W`` float32 in ``[0, 1]``.

    Raises:
        FileNotFoundError: if the file does not exist (naming it).
        ValueError: if it does not decode (naming it and saying why).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            # As viewers and annotation tools show it, which is what boxes and masks were drawn on.
            # Turned only where the tag asks (exif_transpose copies even an upright image); a copy has no format.
            turned = opened.getexif().get(EXIF_ORIENTATION, 1) != 1
            img, file_format = (ImageOps.exif_transpose(opened) if turned else opened), opened.format
            img.load()
            # 16-bit gray ("I;16", or "I" from a PNG) and float gray ("F"): PIL's convert("RGB") would clip at 255
            # or round to 0 and 1. Other "I" files hold 32-bit integers of unknown range.
            gray, why = None, None
            if img.mode.startswith("I;16") or (img.mode == "I" and file_format == "PNG"):
                gray = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
            elif img.mode in ("I", "F"):
                gray = np.asarray(img)
                why = file_pixels_problem(gray)
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... for the many ways a file breaks
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None
    if why is not None:
        raise ValueError(f"cannot decode image {path}: it {why}")
    if gray is not None:
        return torch.from_numpy(np.array(gray, dtype=np.float32))[None].expand(3, -1, -1).contiguous()
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def default_class_map(categories: Mapping[int, str]) -> Dict[int, int]:
    """Map dataset category ids to model class indices by category *name*.

    - Names that are all non-negative integers (``"0"`` … ``"9"`` of the exported scenes, or of a ``folder:``
      dataset with digit directories): class index = ``int(name)``. So ``coco`` and ``voc`` exports (id = digit + 1)
      and ``scenes:`` (id = digit) all reach a zoo model's digit classes.
    - Names that are all standard VOC classes: class index = position in :data:`VOC_CLASSES` (``0``–``19``).

    Anything else (e.g. COCO's 80 names) needs an explicit map from the user.

    Args:
        categories (mapping of int to str): :attr:`AnnotatedImages.categories`.

    Returns:
        dict of int to int: category id → model class index.

    Raises:
        ValueError: if the names follow neither rule (listing a few of them).

    Example::

        >>> default_class_map({1: "0", 2: "1", 10: "9"})
        {1: 0, 2: 1, 10: 9}
        >>> default_class_map({15: "person"})
        {15: 14}
    """
    from captum_ext.evaluation.class_maps import _classes_by_name

    names = dict(categories)
    found = _classes_by_name(names)
    if found is not None:
        return found[1]
    shown = ", ".join(repr(n) for n in sorted(names.values())[:5])
    raise ValueError(f"no default class map for categories named {shown}{', ...' if len(names) > 5 else ''}: "
                     "names must all be integers or all VOC classes; pass an explicit category → class map")


def _is_count(name: str) -> bool:
    """``name`` is a canonical non-negative integer ("7", not "07" or "+7", which would collide)."""
    return name.isdigit() and str(int(name)) == name


def _spec_error(spec: object, why: str) -> ValueError:
    forms = "; ".join(SPEC_FORMS)
    return ValueError(f"malformed dataset spec {spec!r}: {why}. Accepted forms: {forms} "
                      "(MODE one of single, multi, roi; N a positive integer)")


def _check_resize(resize: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    if resize is None:
        return None
    ok = (isinstance(resize, (tuple, list)) and len(resize) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in resize))
    if not ok:
        raise ValueError(f"`resize` must be a (height, width) pair of positive integers, got {resize!r}")
    return int(resize[0]), int(resize[1])


def _normalised_spec(spec: str) -> str:
    """``spec`` with its paths normalised (``data/img/`` and ``./data//img`` are ``data/img``), so that a resumed run
    finds the same dataset however its folders were spelled."""
    kind, _, rest = spec.partition(":")
    if kind not in ("coco", "voc", "folder") or not rest:
        return spec
    parts = rest.split(":")
    paths = 2 if kind == "coco" else 1
    return ":".join([kind, *(os.path.normpath(p) if p else p for p in parts[:paths]), *parts[paths:]])


def _open_source(spec: str, class_map: Optional[Any] = None) -> object:
    """Parse ``spec`` and read its annotations (a VOC tree takes its class list from ``class_map``)."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if any(not p for p in parts):
        raise _spec_error(spec, "empty field")
    if kind == "coco":
        if len(parts) != 2:
            raise _spec_error(spec, "coco needs an annotation file and an image directory")
        from captum_ext.evaluation._coco import CocoSource

        return CocoSource(parts[0], parts[1])
    if kind == "voc":
        if len(parts) not in (1, 3):
            raise _spec_error(spec, "voc needs a root, optionally followed by both a year and a split")
        from captum_ext.evaluation._voc import VocSource

        return VocSource(parts[0], *(parts[1:] or ["2012", "val"]), class_map=class_map)
    if kind == "folder":
        if len(parts) != 1:
            raise _spec_error(spec, "folder needs one directory")
        from captum_ext.evaluation._folders import FolderSource

        return FolderSource(parts[0])
    if kind == "scenes":
        from captum_ext.datasets.scenes import MODES

        if len(parts) not in (2, 3) or parts[0] not in MODES or not _is_count(parts[1]) \
                or parts[2:] not in ([], ["train"]):
            raise _spec_error(spec, "scenes needs a mode and a scene count, optionally followed by 'train'")
        from captum_ext.evaluation._folders import SceneSource

        return SceneSource(parts[0], int(parts[1]), train=parts[2:] == ["train"])
    raise _spec_error(spec, f"unknown kind {kind!r}")


def open_dataset(spec: str, resize: Optional[Tuple[int, int]] = None, skip_bad: bool = False,
                 class_map: Optional[Any] = None) -> AnnotatedImages:
    """Open an annotated image dataset from a spec (see the module docstring for the forms and conventions).

    Args:
        spec (str): ``coco:ANNOTATIONS.json:IMAGES_DIR``, ``voc:ROOT[:YEAR:SPLIT]``, ``folder:DIR`` or
            ``scenes:MODE:N[:train]``.
        resize (tuple of int, optional): ``(H, W)`` to resize every image to (bilinear, antialiased), its boxes
            scaled and its masks resized (nearest) alike, so the truth stays on the same pixels. Default: native
            sizes (which may differ between images).
        skip_bad (bool): an image that does not decode gives a :class:`Sample` with ``image=None`` and ``error``
            set, for the caller to list, instead of raising; an (image, category) pair with a bad annotation (a box
            of zero area or reaching more than a pixel outside the image, a VOC class outside the class list) is
            left out and listed in :attr:`AnnotatedImages.bad_annotations`, instead of refusing the dataset.
        class_map (dict or ClassMap, optional): a class map (see :mod:`captum_ext.evaluation.class_maps`); a VOC
            tree takes its class list from it (it must be keyed by the names in the XML). Default: the map the
            dataset carries, if any.

    Returns:
        AnnotatedImages: the dataset; only the annotations have been read.

    Raises:
        TypeError: if ``spec`` is not a string.
        ValueError: for a malformed spec (showing the accepted forms), an annotation file that is not valid COCO
            JSON or a VOC annotation that is not valid XML (naming the file), a bad ``resize``, or a spec that
            yields no images, a COCO image id, category id or file name used twice, bad annotations (each named by
            image id, file and annotation: bad boxes or segmentations, and pairs whose boxes cover no pixel at the
            stored size or whose masks cover none there) unless ``skip_bad``. Indexing later raises ``ValueError``
            naming an image that does not decode (or is not its annotated size), unless ``skip_bad``.
        FileNotFoundError: for a missing annotation file, image directory, VOC tree, split list or annotation
            (naming the path).

    Example::

        >>> data = open_dataset("scenes:multi:4", resize=(32, 32))
        >>> sample = data[0]
        >>> sample.image.shape, [t.mask.shape for t in sample.truths][:1]
        (torch.Size([3, 32, 32]), [torch.Size([32, 32])])
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a string, got {type(spec).__name__}")
    from captum_ext.evaluation.class_maps import as_class_map

    size = _check_resize(resize)
    spec = _normalised_spec(spec)
    source = _open_source(spec, as_class_map(class_map))
    if not source.entries:
        raise ValueError(f"dataset spec {spec!r} yields no images")
    return AnnotatedImages(source, spec, resize=size, skip_bad=bool(skip_bad))
