"""Chunked per-image evaluation shared by the saliency metrics, so memory stays bounded for large batches."""
from __future__ import annotations

from typing import Callable, List, Tuple, Union

import torch
from torch import Tensor

from captum_ext._utils.chunking import budget_chunks
from captum_ext.metrics._checks import TensorLike, check_masks, check_maps, check_nonempty_masks, check_pair

# Largest number of float64 pixel values materialised at once by the chunked metrics (32 MiB). Read at call time,
# so tests can shrink it to exercise the chunk boundaries.
CHUNK_ELEMENTS = 1 << 22


def chunks(n: int, pixels: int) -> List[slice]:
    """Slices over ``n`` images holding at most :data:`CHUNK_ELEMENTS` pixels each (at least one image)."""
    return budget_chunks(n, pixels, CHUNK_ELEMENTS)


def checked_saliency_and_masks(saliency: TensorLike, masks: TensorLike) -> Tuple[Tensor, Tensor]:
    """Validate a (saliency, ground-truth masks) pair, empty masks included; both come back ``N×H×W``."""
    sal = check_maps(saliency, "saliency")
    gt = check_masks(masks, "masks")
    check_pair(sal, "saliency", gt, "masks")
    check_nonempty_masks(gt, "masks")
    return sal, gt


def per_image(saliency: TensorLike, masks: TensorLike, score: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Check a (saliency, masks) pair and apply ``score`` to flattened ``N×HW`` chunks; float64 ``N`` result."""
    sal, gt = checked_saliency_and_masks(saliency, masks)
    sal, gt = sal.flatten(1), gt.flatten(1)
    out = torch.empty(sal.shape[0], dtype=torch.float64, device=sal.device)
    for part in chunks(sal.shape[0], sal.shape[1]):
        out[part] = score(sal[part], gt[part])
    return out


def reduce_mean(values: Tensor, reduce: bool) -> Union[float, Tensor]:
    """The mean as a float with ``reduce``, else the per-image values unchanged."""
    return float(values.mean()) if reduce else values
