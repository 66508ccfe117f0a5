"""Checks every dataset source applies to its annotations when it opens, so that a bad box is found before any
work starts and is named by image id, file and annotation, never by a position inside a batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

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
                      f"skip_bad=True (--skip-bad) to skip those (image, class) pairs and list them")


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
