"""The ground truth of one (image, class) pair, the unit that dataset-scale evaluation scores: one map per pair."""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


class GroundTruth(NamedTuple):
    """Where one annotated class lies in one image.

    Attributes:
        category (int): the dataset's category id (a COCO id, a VOC class index, a digit).
        boxes (Tensor): ``K×4`` float32 boxes ``(x1, y1, x2, y2)`` in the image's pixels, exclusive right/bottom
            edges (every instance of the class; ``0×4`` when the dataset has class labels only).
        mask (Tensor or None): ``H×W`` bool, the union of the class's instance masks, or ``None`` when the
            dataset has boxes only.
    """

    category: int
    boxes: Tensor
    mask: Optional[Tensor] = None
