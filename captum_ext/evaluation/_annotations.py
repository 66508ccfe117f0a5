"""Checks every dataset source applies to its annotations when it opens, so that a bad box is found before any
work starts and is named by image id, file and annotation, never by a position inside a batch; and the resize rules
that the loader applies and the checks follow."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # annotations only: this module imports torch where it draws
    from torch import Tensor

    from captum_ext.metrics.ground_truth import GroundTruth

#: How far (pixels) a box may reach past the image edge and still be taken, clipped to the image: annotation tools
#: and format conversions leave boxes a fraction of a pixel outside; anything further is an annotation error.
EDGE_SLACK = 1.0

#: How many bad annotations an error message lists before it counts the rest.
LISTED = 5


@dataclass(frozen=True)
class BadAnnotation:
    """One annotation a dataset cannot score.

    Attributes:
        image_id (int or str): the dataset's id of the image.
        file (str or None): the image file.
        annotation (str): which annotation (``"annotation 17"`` for COCO, ``"object 2 in FILE.xml"`` for VOC).
        category (int or None): its category id, when known (the pair ``(image, category)`` is what is skipped).
        why (str): what is wrong with it.
        image_index (int): the image's position in the dataset.
    """

    image_id: Union[int, str]
    file: Optional[str]
    annotation: str
    category: Optional[int]
    why: str
    image_index: int

    def __str__(self) -> str:
        return f"image {self.image_id!r} ({self.file}), {self.annotation}: {self.why}"


def box_problem(box: Sequence[float], height: int, width: int) -> Optional[str]:
    """Why an ``(x1, y1, x2, y2)`` box (exclusive right/bottom edges) cannot be scored on a ``height×width``
    image, or ``None`` when it can (after :func:`clip_box`).

    Args:
        box (sequence of float): ``(x1, y1, x2, y2)`` in pixels.
        height (int): the image's height.
        width (int): the image's width.

    Returns:
        str or None: the reason (zero area, outside the image), or ``None``.

    Example::

        >>> box_problem((2, 3, 2, 9), 64, 64)
        'box (2, 3, 2, 9) has zero area'
        >>> box_problem((10, 0, 80, 5), 64, 64)
        'box (10, 0, 80, 5) reaches outside the 64×64 image'
        >>> box_problem((10, 0, 64.5, 5), 64, 64) is None
        True
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = "(" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + ")"
    if not all(v == v and abs(v) != float("inf") for v in (x1, y1, x2, y2)):
        return f"box {shown} is not finite"
    if x2 <= x1 or y2 <= y1:
        return f"box {shown} has zero area" if (x2 == x1 or y2 == y1) else f"box {shown} has negative size"
    if height and width and (x1 < -EDGE_SLACK or y1 < -EDGE_SLACK or x2 > width + EDGE_SLACK
                             or y2 > height + EDGE_SLACK):
        return f"box {shown} reaches outside the {height}×{width} image"
    return None


def clip_box(box: Sequence[float], height: int, width: int) -> List[float]:
    """The box clipped to the image (a box :func:`box_problem` accepts reaches at most :data:`EDGE_SLACK` out).

    Args:
        box (sequence of float): ``(x1, y1, x2, y2)``.
        height (int): the image's height (0: unknown, no clipping).
        width (int): the image's width (0: unknown, no clipping).

    Returns:
        list of float: the clipped box.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (height and width):
        return [x1, y1, x2, y2]
    return [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width),
            min(max(y2, 0.0), height)]


def bad_annotations_error(bad: Sequence[BadAnnotation], where: str) -> ValueError:
    """The error that refuses a dataset with bad annotations: the first few named, the rest counted.

    Args:
        bad (sequence of BadAnnotation): every bad annotation found.
        where (str): the dataset (its annotation file or root).

    Returns:
        ValueError: to raise.
    """
    listed = "; ".join(str(b) for b in bad[:LISTED])
    more = f"; and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    return ValueError(f"{where}: {len(bad)} annotation(s) cannot be scored: {listed}{more}. Fix them, or pass "
                      f"`skip_bad` to skip those (image, class) pairs and list them")


def drop_pairs(categories: Tuple[int, ...], bad_categories: Sequence[Optional[int]]) -> Tuple[int, ...]:
    """The categories of an image once the pairs with bad annotations are skipped.

    Args:
        categories (tuple of int): the image's annotated categories.
        bad_categories (sequence of int or None): the categories of its bad annotations.

    Returns:
        tuple of int: the categories that stay.
    """
    skipped = set(bad_categories)
    return tuple(c for c in categories if c not in skipped)


def resize_factors(native: Tuple[int, int], size: Tuple[int, int]) -> Tuple[float, float]:
    """``(sx, sy)``, how the loader scales box coordinates from a ``native`` ``(H, W)`` image to ``size``; ``(1, 1)``
    for an image of unknown size (0), which has no boxes.

    Args:
        native (tuple of int): the image's ``(H, W)``.
        size (tuple of int): the stored ``(H, W)``.

    Returns:
        tuple of float: the factors (the loader multiplies float32 boxes by them as float32).

    Example::

        >>> resize_factors((64, 32), (16, 16))
        (0.5, 0.25)
    """
    (h, w), (new_h, new_w) = native, size
    return (new_w / w, new_h / h) if h and w else (1.0, 1.0)


@functools.lru_cache(maxsize=64)
def sampled_indices(native: int, size: int) -> np.ndarray:
    """The source rows (or columns) a nearest-exact resize from ``native`` to ``size`` pixels reads: the loader
    resizes masks by taking them, so a check that reads the same pixels sees what the loader keeps.

    Args:
        native (int): the image's height (or width).
        size (int): the stored height (or width).

    Returns:
        numpy.ndarray: ``size`` int64 indices into ``range(native)``.

    Example::

        >>> sampled_indices(64, 16)[:4].tolist()
        [2, 6, 10, 14]
    """
    import torch
    import torch.nn.functional as F

    grid = torch.arange(native, dtype=torch.float32)[None, None, :, None]  # torch's own rounding of the positions
    return F.interpolate(grid, size=(size, 1), mode="nearest-exact")[0, 0, :, 0].long().numpy()


def boxes_without_pixels(boxes: np.ndarray, scales: Optional[np.ndarray], heights: np.ndarray, widths: np.ndarray
                         ) -> np.ndarray:
    """Which boxes cover no pixel centre of their image as the driver stores it: each ``float32`` box scaled by
    its image's ``float32`` resize factors (as the loader does), then tested the way ground-truth regions are drawn
    (a pixel belongs to a box when its centre ``(j + 0.5, i + 0.5)`` lies in ``[x1, x2) × [y1, y2)``).

    Args:
        boxes (numpy.ndarray): ``K×4`` float32 clipped boxes ``(x1, y1, x2, y2)`` at the images' native sizes.
        scales (numpy.ndarray or None): ``K×2`` float32 factors ``(sx, sy)`` for boxes whose image is resized
            (1 elsewhere), or ``None`` when nothing is resized.
        heights (numpy.ndarray): ``K`` stored image heights.
        widths (numpy.ndarray): ``K`` stored image widths.

    Returns:
        numpy.ndarray: ``K`` bools, True for a box without a pixel.

    Example::

        >>> boxes = np.array([[10.6, 10.6, 11.4, 11.4], [10.0, 10.0, 10.6, 10.6]], dtype=np.float32)
        >>> boxes_without_pixels(boxes, None, np.array([32, 32]), np.array([32, 32])).tolist()
        [True, False]
    """
    scaled = boxes.astype(np.float32)
    if scales is not None:
        scaled = scaled * np.concatenate([scales, scales], axis=1).astype(np.float32)
    exact = scaled.astype(np.float64)  # float32 values and half-integers compare exactly in float64
    first_x = np.maximum(np.ceil(exact[:, 0] - 0.5), 0.0)
    first_y = np.maximum(np.ceil(exact[:, 1] - 0.5), 0.0)
    covers = (first_x < widths) & (first_x + 0.5 < exact[:, 2]) & (first_y < heights) & (first_y + 0.5 < exact[:, 3])
    return ~covers


def empty_box_regions(entries: Sequence[Any], region_boxes: Any, resize: Optional[Tuple[int, int]]
                      ) -> List[BadAnnotation]:
    """The (image, category) pairs whose ground-truth region is their boxes and whose boxes cover no pixel of the
    image as stored (at ``resize`` when set): every metric would reject them, so they are refused when the dataset
    opens, not when their batch is scored.

    Args:
        entries (sequence of ImageEntry): the source's images.
        region_boxes (tuple): ``(image_index, category, boxes, labels)`` from the source: ``K`` ints, ``K`` ints,
            ``K×4`` float32 clipped boxes and ``K`` annotation names, for the boxes of pairs without a mask.
        resize (tuple of int or None): ``(H, W)`` every image is resized to, or ``None``.

    Returns:
        list of BadAnnotation: one per such pair.
    """
    index, category, boxes, labels = region_boxes
    if len(index) == 0:
        return []
    native = np.array([[entries[i].height, entries[i].width] for i in index], dtype=np.int64)
    stored = np.broadcast_to(np.array(resize, dtype=np.int64), native.shape) if resize is not None else native
    scales = None
    if resize is not None:
        moved = (native != stored).any(axis=1) & (native > 0).all(axis=1)  # the loader's rule: 0 means unknown
        scales = np.ones((len(index), 2), dtype=np.float32)
        for k in np.flatnonzero(moved):
            scales[k] = resize_factors(tuple(native[k]), tuple(stored[k]))
    empty = boxes_without_pixels(boxes, scales, stored[:, 0], stored[:, 1])
    pairs: Dict[Tuple[int, int], List[int]] = {}
    for k, pair in enumerate(zip(index.tolist(), category.tolist())):
        pairs.setdefault(pair, []).append(k)
    bad = []
    for (image_index, cat), rows in pairs.items():
        if empty[rows].all():
            entry = entries[image_index]
            height, width = stored[rows[0]]
            how = f"once resized to {height}×{width}" if resize is not None else f"of the {height}×{width} image"
            names = ", ".join(str(labels[k]) for k in rows)
            bad.append(BadAnnotation(entry.image_id, entry.file, names, cat,
                                     f"category {cat}'s box(es) cover no pixel centre {how}", image_index))
    return bad


def masks_emptied_by_resize(source: Any, resize: Tuple[int, int]) -> List[BadAnnotation]:
    """The (image, category) pairs whose masks cover pixels at the image's own size but none once resized: a thin
    stroke can fall between the rows and columns that the loader's nearest-exact resize samples.

    Args:
        source (object): the dataset source, with ``entries``, ``masked_pairs`` (image index → categories whose
            region is their masks) and ``mask_union(entry, category)``.
        resize (tuple of int): ``(H, W)`` every image is resized to.

    Returns:
        list of BadAnnotation: one per such pair.
    """
    bad = []
    for index, categories in getattr(source, "masked_pairs", {}).items():
        entry = source.entries[index]
        if (entry.height, entry.width) == tuple(resize):
            continue
        kept = np.ix_(sampled_indices(entry.height, resize[0]), sampled_indices(entry.width, resize[1]))
        for category in categories:
            if not source.mask_union(entry, category)[kept].any():
                bad.append(BadAnnotation(entry.image_id, entry.file, f"the masks of category {category}", category,
                                         f"they cover no pixel once resized to {resize[0]}×{resize[1]}", index))
    return bad


def resize_sample(image: Optional["Tensor"], truths: List["GroundTruth"], native: Tuple[int, int],
                  size: Tuple[int, int]) -> Tuple[Optional["Tensor"], List["GroundTruth"]]:
    """Resize a loaded image (bilinear, antialiased), its boxes (scaled) and masks (nearest-exact) together, by the
    rules above, which the dataset's checks apply when it opens.

    Args:
        image (Tensor, optional): ``3×H×W`` at the native size (``None``: it did not decode).
        truths (list of GroundTruth): its truths at the native size.
        native (tuple): ``(H, W)``.
        size (tuple): the size to load at, ``(h, w)``.

    Returns:
        tuple: ``(image, truths)`` at ``size``.
    """
    import torch
    import torch.nn.functional as F

    from captum_ext.metrics.ground_truth import GroundTruth

    if image is not None:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        image = image[0].clamp_(0.0, 1.0)
    sx, sy = resize_factors(native, size)  # size 0: an unreadable folder image, no boxes
    scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    resized = []
    for truth in truths:
        mask = truth.mask
        if mask is not None:
            # Nearest-exact sampling reads pixel centres, the rule box scaling follows; plain "nearest" would shift
            # masks up-left by up to a pixel when downsampling.
            rows, columns = (torch.from_numpy(sampled_indices(n, k)).to(mask.device) for n, k in zip(native, size))
            mask = mask[rows][:, columns]
        resized.append(GroundTruth(truth.category, truth.boxes * scale, mask))
    return image, resized
