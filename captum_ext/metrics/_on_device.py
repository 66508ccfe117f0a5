"""The localisation metrics' per-pair quantities computed on the maps' own device, for maps that live on a GPU.

Each function gives exactly what its host counterpart gives (the SciPy-based code in :mod:`~captum_ext.metrics.wsol`,
:mod:`~captum_ext.metrics.cam` and :mod:`~captum_ext.metrics.pointing`, which stays the reference and the CPU path):
the same float64 normalisation and thresholds, the same components (see :mod:`~captum_ext.metrics._components`),
the same IoU arithmetic and the same tie rules. Batches of planes are labelled together, a bounded number of planes
at a time, so the host waits a few times per batch instead of once per map and threshold.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from captum_ext._utils.boxes import paired_box_iou
from captum_ext._utils.maps import minmax_normalise
from captum_ext.metrics._components import (
    component_boxes,
    component_sizes,
    first_per_plane,
    label_components,
    nearest_squared_distance,
    padded_boxes,
)
from captum_ext.metrics.pointing import _first_peak

#: Pixels (planes × height × width) labelled together: about 150 bytes per pixel at the peak (edge lists,
#: pointers, boxes), so 2²⁵ pixels (a third of a batch of 64 maps of 224² at 100 thresholds) take about 5 GB.
#: Larger chunks are barely faster (H200: 2.8 ms per pair at 2²⁵, 2.3 ms at 2²⁸).
PLANE_PIXELS = 1 << 25


def iou_curves(saliency: Tensor, gt_boxes: Sequence[Tensor], thresholds: Tensor) -> Tensor:
    """``N×T`` float64: per map and threshold τ, the best IoU between a component box of ``{map >= τ}`` (maps
    min-max normalised) and one of the map's ground-truth boxes; 0 for an empty region.

    Args:
        saliency (Tensor): checked ``N×H×W`` maps.
        gt_boxes (sequence of Tensor): ``N`` checked ``K_i×4`` boxes, ``K_i >= 1``.
        thresholds (Tensor): ``T`` float64 sweep.

    Returns:
        Tensor: ``N×T`` float64 on the maps' device.
    """
    n, height, width = saliency.shape
    device = saliency.device
    sweep = thresholds.to(device=device, dtype=torch.float64)
    steps = len(sweep)
    out = torch.zeros(n, steps, dtype=torch.float64, device=device)
    gt_padded, gt_valid = padded_boxes(gt_boxes, device)
    per_chunk = max(1, PLANE_PIXELS // max(1, steps * height * width))
    for start in range(0, n, per_chunk):
        maps = minmax_normalise(saliency[start:start + per_chunk])
        count = len(maps)
        regions = (maps.unsqueeze(1) >= sweep.view(1, -1, 1, 1)).view(count * steps, height, width)
        plane, _, boxes = component_boxes(label_components(regions))
        # Every component against its own map's ground-truth boxes at once (padded; a padding box counts as IoU 0,
        # which never beats a real one), with the IoU function's own arithmetic: the host path's exact values.
        owner = torch.div(plane, steps, rounding_mode="floor") + start
        iou = paired_box_iou(boxes, gt_padded.index_select(0, owner)).mul_(gt_valid.index_select(0, owner))
        best = torch.zeros(count * steps, dtype=torch.float64, device=device)
        best.scatter_reduce_(0, plane, iou.amax(dim=1), reduce="amax")
        out[start:start + count] = best.view(count, steps)
    return out


def cam_boxes(saliency: Tensor, fraction: float) -> Tensor:
    """The CAM box of each map: the tight box of the largest 8-connected component of ``{S >= fraction · max S}``
    (ties: the component whose first pixel comes first in row-major order); the full image when ``max S <= 0``.

    Args:
        saliency (Tensor): checked ``N×H×W`` maps.
        fraction (float): the threshold as a fraction of each map's maximum.

    Returns:
        Tensor: ``N×4`` float32 boxes on the maps' device.
    """
    n, height, width = saliency.shape
    values = saliency.to(torch.float64)
    peak = values.flatten(1).amax(dim=1)
    keep = values >= (fraction * peak).view(-1, 1, 1)
    labels = label_components(keep)
    plane, root, boxes = component_boxes(labels)
    chosen = first_per_plane(plane, component_sizes(labels, plane, root), n)
    full = torch.tensor([0.0, 0.0, width, height], dtype=torch.float64, device=saliency.device)
    picked = boxes[chosen.clamp_min(0)] if len(boxes) else full.expand(n, 4)
    result = torch.where(((peak <= 0) | (chosen < 0)).view(-1, 1), full.expand(n, 4), picked)
    return result.to(torch.float32)


def pointing_hits(saliency: Tensor, regions: Tensor, tolerance: float) -> Tensor:
    """Whether each map's first maximum (row-major) lies within ``tolerance`` pixels (Euclidean) of its region.

    Args:
        saliency (Tensor): checked ``N×H×W`` maps.
        regions (Tensor): ``N×H×W`` bool, each with at least one pixel.
        tolerance (float): the radius in pixels.

    Returns:
        Tensor: ``N`` bool on the maps' device.
    """
    peak = _first_peak(saliency)
    # The host path's Euclidean distance transform gives sqrt of the integer squared distance in float64.
    distance = nearest_squared_distance(peak, regions.to(saliency.device)).to(torch.float64).sqrt()
    return distance <= tolerance
