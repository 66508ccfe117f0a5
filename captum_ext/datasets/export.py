"""Write generated scenes to disk in the COCO and Pascal VOC layouts, so dataset-scale tools can be tested on them.

Both exports carry every digit of a scene as one object instance (clutter pieces are not objects and are not
annotated); in ``"roi"`` mode that includes the digits beside the selected one. A digit whose mask is empty (fully
covered) would have no location and is left out.

Category convention, the same in both formats: digit ``d`` is the category named ``str(d)`` (``"0"`` … ``"9"``);
its COCO category id is ``d + 1``, because COCO ids start at 1 (0 is reserved for background by most detection
code). VOC stores only the name. :func:`captum_ext.evaluation.data.default_class_map` maps categories whose names
are digits back to model class indices by name, so ``"3"`` → class 3 of a zoo model whatever the id.

Box conventions: the package's boxes are ``(x1, y1, x2, y2)`` with exclusive right/bottom edges (see
:mod:`captum_ext._utils.boxes`). COCO's ``bbox = [x, y, w, h]`` is the same convention (``x = x1``,
``w = x2 − x1``), so it round-trips exactly and agrees with ``pycocotools.mask.toBbox`` of the segmentation. VOC
counts pixels from 1 with *inclusive* corners: a digit covering 0-based columns ``3..5`` (``x1 = 3, x2 = 6``) is
``xmin = 4, xmax = 6``, i.e. ``xmin = x1 + 1``, ``xmax = x2`` (and the same for y); reading back,
``x1 = xmin − 1``, ``x2 = xmax``. Scene boxes are whole pixels, so both directions are exact.
"""
from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from PIL import Image

from captum_ext.datasets._scene_compose import NUM_CLASSES
from captum_ext.datasets.scenes import SceneBatch

IMAGE_FORMATS: Tuple[str, ...] = ("png", "jpg")
#: JPEG quality of exported VOC (and ``image_format="jpg"`` COCO) images; with 4:4:4 chroma the small coloured
#: digits keep their edges (VOC readers insist on ``.jpg``, so PNG is not an option there).
JPEG_QUALITY = 95

PathLike = Union[str, os.PathLike]


def coco_categories() -> List[Dict[str, object]]:
    """The COCO ``categories`` of exported scenes: digit ``d`` has id ``d + 1`` and name ``str(d)``.

    Returns:
        list of dict: ten ``{"id", "name", "supercategory"}`` records, in digit order (all ten are listed even when
        a batch lacks some, so exports of different batches share one category table).
    """
    return [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(NUM_CLASSES)]


def _check_batch(batch: SceneBatch) -> None:
    if not isinstance(batch, SceneBatch):
        raise TypeError(f"`batch` must be a SceneBatch, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("`batch` holds no scenes: nothing to export")


def _uint8_images(batch: SceneBatch) -> np.ndarray:
    """``N×H×W×3`` uint8: the 8-bit value nearest each float, what an exact PNG round trip gives back."""
    return (batch.images * 255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _stems(count: int, prefix: str = "") -> List[str]:
    width = max(6, len(str(count - 1)))  # VOC-like six digits; wider only beyond a million scenes
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    """The image file's bytes (encoded in memory so existing files can be compared before anything is written)."""
    buffer = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_new(files: List[Tuple[Path, bytes]], name: str, where: Path, advice: str) -> None:
    """Write ``files``, or raise ``ValueError`` before writing any if one already exists with other content.

    Files that already hold exactly these bytes are left alone, so exporting the same batch again is a no-op;
    a file with other content belongs to another export (e.g. another split), which must not be replaced.
    """
    clashes = [path for path, data in files if path.exists() and (not path.is_file() or path.read_bytes() != data)]
    if clashes:
        shown = ", ".join(str(path.relative_to(where)) for path in clashes[:3])
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        if any(path.name == CLASS_MAP_FILE for path in clashes):  # keyed by ids (COCO) or by names (VOC)
            advice += f"; {CLASS_MAP_FILE} differs: a COCO and a VOC export cannot share a folder"
        raise ValueError(f"`{name}` {where} already holds {shown}{more} from another export, which this export "
                         f"would overwrite with different content: {advice}")
    for path, data in files:
        if not path.exists():
            path.write_bytes(data)


def _objects(batch: SceneBatch, i: int) -> List[Tuple[int, np.ndarray, List[float]]]:
    """``(digit, mask, [x1, y1, x2, y2])`` of every annotated, visible digit of scene ``i``."""
    found = []
    for k in range(batch.object_labels.shape[1]):
        digit = int(batch.object_labels[i, k])
        mask = batch.object_masks[i, k]
        if digit < 0 or not bool(mask.any()):
            continue
        found.append((digit, mask.numpy(), [float(v) for v in batch.object_boxes[i, k].tolist()]))
    return found


def export_coco(batch: SceneBatch, out_dir: PathLike, image_format: str = "png") -> Tuple[Path, Path]:
    """Write scenes as a COCO instances dataset: ``out_dir/annotations.json`` and ``out_dir/images/``.

    Images are ``000000.png``, ``000001.png``, … (image id = scene index + 1) holding each float image rounded to
    8 bits. Every visible digit is one annotation with ``bbox = [x, y, w, h]`` (exact, see the module docstring),
    ``area`` = its mask's pixel count, ``iscrowd = 0`` and its mask as a compressed RLE from
    ``pycocotools.mask.encode``. Categories follow :func:`coco_categories` (id = digit + 1, name = the digit).

    Args:
        batch (SceneBatch): scenes from :func:`captum_ext.datasets.scenes.make_scenes`, any mode.
        out_dir (str or PathLike): directory to write into (created if needed). It holds one dataset: files that
            already exist there must hold exactly what this export writes (exporting the same batch again is a
            no-op), else nothing is written and ``ValueError`` is raised.
        image_format (str): ``"png"`` (lossless, the default) or ``"jpg"``.

    Returns:
        tuple of Path: ``(annotation_file, images_dir)``, the two parts of the evaluator's
        ``coco:ANNOTATIONS.json:IMAGES_DIR`` spec. ``out_dir/class_map.json`` (:func:`write_class_map`) maps the
        category ids to the zoo models' classes.

    Raises:
        TypeError: if ``batch`` is not a :class:`SceneBatch`.
        ValueError: if ``batch`` is empty, ``image_format`` is not one of :data:`IMAGE_FORMATS`, or ``out_dir``
            already holds files of another export (``annotations.json``, images, ``class_map.json``) that this one
            would change.

    Example::

        >>> import tempfile
        >>> from captum_ext.datasets import export_coco, make_scenes
        >>> ann, images = export_coco(make_scenes(2, mode="multi", seed=0), tempfile.mkdtemp())
        >>> ann.name, sorted(p.name for p in images.iterdir())
        ('annotations.json', ['000000.png', '000001.png'])
    """
    from pycocotools import mask as mask_utils

    _check_batch(batch)
    fmt = "jpg" if image_format == "jpeg" else image_format
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {IMAGE_FORMATS}, got {image_format!r}")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    pixels = _uint8_images(batch)
    height, width = pixels.shape[1:3]
    images, annotations, files = [], [], []
    for i, stem in enumerate(_stems(len(batch))):
        file_name = f"{stem}.{fmt}"
        files.append((images_dir / file_name, _encoded(pixels[i], fmt)))
        images.append({"id": i + 1, "file_name": file_name, "width": int(width), "height": int(height)})
        for digit, mask, (x1, y1, x2, y2) in _objects(batch, i):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": digit + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            })
    document = {
        "info": {"description": f"captum_ext scenes, mode {batch.mode!r}", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    ann_file = out_dir / "annotations.json"
    files += [(ann_file, json.dumps(document).encode("utf-8")), (out_dir / CLASS_MAP_FILE, _class_map_bytes("ids"))]
    _write_new(files, "out_dir", out_dir, "export each batch into its own folder (one annotations.json per folder)")
    return ann_file, images_dir


#: Name of the class map the exports write beside their annotations; ``captum-ext evaluate`` finds it there.
CLASS_MAP_FILE = "class_map.json"


def write_class_map(path: PathLike, keys: str = "ids") -> Path:
    """Write the exports' class map to the zoo models' classes (the digit): keyed by category id
    (``{"ids": {"1": 0, …, "10": 9}}``, COCO's ids start at 1) or by name (``{"names": {"0": 0, …, "9": 9}}``,
    what VOC annotations carry). The explicit form leaves no doubt whether ``"1"`` is an id or a name.

    Args:
        path (str or PathLike): the JSON file to write.
        keys (str): ``"ids"`` or ``"names"``.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: ``keys`` is neither.
    """
    path = Path(path)
    path.write_bytes(_class_map_bytes(keys))
    return path


def _class_map_bytes(keys: str) -> bytes:
    if keys not in ("ids", "names"):
        raise ValueError(f"`keys` must be 'ids' or 'names', got {keys!r}")
    field = "id" if keys == "ids" else "name"
    classes = {str(c[field]): int(str(c["name"])) for c in coco_categories()}
    return json.dumps({keys: classes}).encode("utf-8")


def voc_base_dir(year: str, split: str) -> str:
    """Where ``torchvision.datasets.VOCDetection`` looks for a year's tree under its root.

    Usually ``VOCdevkit/VOC{year}``; torchvision keeps the 2011 release under ``TrainVal/VOCdevkit/VOC2011``.

    Args:
        year (str): ``"2007"`` … ``"2012"``.
        split (str): ``"train"``, ``"trainval"``, ``"val"``, or ``"test"`` (2007 only).

    Returns:
        str: the relative directory (with the platform's separator).

    Raises:
        ValueError: for a year or split that ``VOCDetection`` does not accept.
    """
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    years = [str(y) for y in range(2007, 2013)]
    if str(year) not in years:
        raise ValueError(f"VOC year must be one of {years}, got {year!r}")
    splits = ["train", "trainval", "val"] + (["test"] if str(year) == "2007" else [])
    if split not in splits:
        raise ValueError(f"VOC{year} split must be one of {splits}, got {split!r}")
    key = "2007-test" if str(year) == "2007" and split == "test" else str(year)
    return DATASET_YEAR_DICT[key]["base_dir"]


def _voc_xml(stem: str, year: str, height: int, width: int, objects: List[Tuple[int, np.ndarray, List[float]]]
             ) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{year}"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "captum_ext scenes"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for digit, _, (x1, y1, x2, y2) in objects:
        obj = ET.SubElement(root, "object")
        for tag, text in (("name", str(digit)), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = text
        box = ET.SubElement(obj, "bndbox")
        # Exclusive 0-based edges -> VOC's 1-based inclusive pixels: first pixel x1 is number x1 + 1, last pixel
        # x2 - 1 is number x2.
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(int(round(value)))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def export_voc(batch: SceneBatch, root: PathLike, year: str = "2012", split: str = "val", prefix: str = "") -> Path:
    """Write scenes as a Pascal VOC detection tree that ``torchvision.datasets.VOCDetection`` reads.

    Writes ``JPEGImages/{stem}.jpg`` (quality :data:`JPEG_QUALITY`, 4:4:4), ``Annotations/{stem}.xml`` (one
    ``<object>`` per visible digit, ``<name>`` = the digit, ``<bndbox>`` in VOC's 1-based inclusive pixels:
    ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2`` for the package's exclusive ``(x1, y1, x2, y2)``) and
    ``ImageSets/Main/{split}.txt`` (the stems ``{prefix}000000``, ``{prefix}000001``, …; an existing list of
    this split is replaced) under :func:`voc_base_dir` of ``root``. No segmentation is written (VOC's masks are a
    separate, optional part).

    Several splits share one root, as in VOC itself, when each has its own ``prefix``: e.g. ``prefix="train_"``
    and ``prefix="val_"`` give ``train_000000.jpg`` … and ``val_000000.jpg`` … side by side, and
    ``VOCDetection(root, image_set=...)`` reads each split through its list. Images and annotations of another
    export are never replaced: if a file to be written already exists with other content, nothing is written
    and ``ValueError`` names it; a file with exactly the same content is kept, so exporting the same batch again
    is a no-op.

    Args:
        batch (SceneBatch): scenes from :func:`captum_ext.datasets.scenes.make_scenes`, any mode.
        root (str or PathLike): the VOC root (the directory that holds ``VOCdevkit``); created if needed.
        year (str): ``"2007"`` … ``"2012"``, as ``VOCDetection`` accepts.
        split (str): ``"train"``, ``"trainval"``, ``"val"``, or ``"test"`` (2007 only).
        prefix (str): start of every file name and list entry (letters, digits, ``_``, ``.``, ``-``); give each
            split exported into the same root its own. Default: ``""`` (``000000``, ``000001``, …).

    Returns:
        Path: ``root``, to pass to ``VOCDetection(root, year=year, image_set=split)`` or as ``voc:ROOT:YEAR:SPLIT``;
        ``root/class_map.json`` maps the class names to the zoo models' classes (:func:`write_class_map`).

    Raises:
        TypeError: if ``batch`` is not a :class:`SceneBatch`.
        ValueError: if ``batch`` is empty, the year or split is not one ``VOCDetection`` accepts, ``prefix`` holds
            other characters, or ``root`` already holds images or annotations of another export under the same
            names (another split exported with the same ``prefix``).

    Example::

        >>> import tempfile
        >>> from torchvision.datasets import VOCDetection
        >>> from captum_ext.datasets import export_voc, make_scenes
        >>> root = export_voc(make_scenes(3, mode="single", seed=0), tempfile.mkdtemp())
        >>> len(VOCDetection(root, year="2012", image_set="val"))
        3
    """
    _check_batch(batch)
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.-]*", prefix):
        raise ValueError(f"`prefix` must be a string of letters, digits, '_', '.' or '-' (it starts file names and "
                         f"split-list lines), got {prefix!r}")
    year = str(year)
    base = Path(root) / voc_base_dir(year, split)
    pixels = _uint8_images(batch)
    height, width = pixels.shape[1:3]
    stems = _stems(len(batch), prefix)
    files = []
    for i, stem in enumerate(stems):
        xml = io.BytesIO()
        _voc_xml(stem, year, height, width, _objects(batch, i)).write(xml, encoding="utf-8", xml_declaration=False)
        files += [(base / "JPEGImages" / f"{stem}.jpg", _encoded(pixels[i], "jpg")),
                  (base / "Annotations" / f"{stem}.xml", xml.getvalue())]
    files.append((Path(root) / CLASS_MAP_FILE, _class_map_bytes("names")))  # VOC annotations carry names only
    for part in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        (base / part).mkdir(parents=True, exist_ok=True)
    _write_new(files, "root", Path(root),
               f"export each split under its own `prefix` (e.g. prefix={split + '_'!r}) or into another root")
    # The split list is this split's own index, not another export's file: it is replaced.
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    return Path(root)
