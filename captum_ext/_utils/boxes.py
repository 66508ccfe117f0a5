"""Box conventions shared by datasets and metrics, and the project's one box-IoU implementation.

Boxes are ``(x1, y1, x2, y2)`` floats in input pixels, as in ``torchvision.ops``, with *exclusive* right/bottom
edges: a mask covering columns 3..5 has ``x1 = 3, x2 = 6``. So a single pixel has area 1 and a full ``H×W`` image
is ``(0, 0, W, H)``; IoU of a mask's box with itself is always 1.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import masks_to_boxes as _tv_masks_to_boxes


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of ``N×H×W`` boolean masks; an empty mask gives ``(0, 0, 0, 0)``.

    Wraps :func:`torchvision.ops.masks_to_boxes` (inclusive max index) and converts to exclusive edges.

    Args:
        masks (Tensor): ``N×H×W`` masks (any dtype; non-zero = inside).

    Returns:
        Tensor: ``N×4`` float32 boxes on the masks' device.
    """
    masks = masks.bool()
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    nonempty = masks.flatten(1).any(dim=1)
    if bool(nonempty.any()):
        tight = _tv_masks_to_boxes(masks[nonempty]).to(torch.float32)
        tight[:, 2:] += 1.0
        boxes[nonempty] = tight
    return boxes


def boxes_to_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """``N×H×W`` boolean masks covering each box's pixels (pixel centres inside the box).

    Args:
        boxes (Tensor): ``N×4`` boxes ``(x1, y1, x2, y2)``.
        height (int): mask height ``H``.
        width (int): mask width ``W``.

    Returns:
        Tensor: ``N×H×W`` bool masks on the boxes' device.
    """
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5
    b = boxes.to(torch.float32)
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] < b[:, 2:3])
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] < b[:, 3:4])
    return inside_y[:, :, None] & inside_x[:, None, :]


def box_areas(boxes: Tensor) -> Tensor:
    """Areas ``(x2 − x1) · (y2 − y1)`` of ``N×4`` boxes (unchecked: corners must already be ordered).

    Args:
        boxes (Tensor): ``N×4`` floating boxes.

    Returns:
        Tensor: ``N`` areas, same dtype and device.
    """
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou_matrix(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``M×K`` IoU of two floating box sets of the same dtype (unchecked), with ``0 / 0`` reported as 0.

    torchvision returns NaN for two zero-area boxes (their union is empty); a degenerate box must never count as a
    localisation hit, so that case is 0. Every IoU in the package goes through here.

    Args:
        boxes1 (Tensor): ``M×4`` boxes ``(x1, y1, x2, y2)``.
        boxes2 (Tensor): ``K×4`` boxes, same dtype and device.

    Returns:
        Tensor: ``M×K`` IoUs in ``[0, 1]``.
    """
    return torch.nan_to_num(_tv_box_iou(boxes1, boxes2), nan=0.0)


def paired_box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """``M×K`` IoU of each box with its own ``K`` boxes: ``boxes`` is ``M×4``, ``others`` ``M×K×4``.

    The same float operations, element by element, as :func:`box_iou_matrix` (torchvision's ``box_iou``, ``0 / 0``
    reported as 0), so the values are identical; for many boxes each compared with a few of their own (component
    boxes with their map's ground truth) in one call.

    Args:
        boxes (Tensor): ``M×4`` boxes ``(x1, y1, x2, y2)``.
        others (Tensor): ``M×K×4`` boxes, same dtype and device.

    Returns:
        Tensor: ``M×K`` IoUs in ``[0, 1]``.

    Example::

        >>> import torch
        >>> boxes = torch.tensor([[0., 0., 2., 2.]])
        >>> paired_box_iou(boxes, torch.tensor([[[0., 0., 2., 2.], [1., 0., 3., 2.]]]))
        tensor([[1.0000, 0.3333]])
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[..., 2] - others[..., 0]) * (others[..., 3] - others[..., 1])
    top_left = torch.max(boxes[:, None, :2], others[..., :2])
    bottom_right = torch.min(boxes[:, None, 2:], others[..., 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    union = area[:, None] + other_area - inter
    return torch.nan_to_num(inter / union, nan=0.0)
