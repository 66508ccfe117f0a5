"""The checked ``(map, ground truth)`` pairs of the streaming metrics, held as batches of one map size.

A batch of pairs is checked and stacked into size groups in a fixed number of tensor operations and host
synchronisations per group, whatever the number of pairs. On a GPU every operation is a kernel launch and every
check that reads a value waits for the device, so checking pair by pair would cost more than the metrics
themselves. Inputs the batched checks do not take as they are (numpy arrays, 0/1 masks that are not boolean, a
tensor on another device than its group's) and batches whose values fail a batched check go through the per-pair
checks, which accept the same inputs as before and raise the error that names the first offending pair.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_ext._utils.boxes import box_areas, boxes_to_masks
from captum_ext._utils.validation import check_scalar, check_tensor
from captum_ext.metrics._checks import check_box_batch, without_grad
from captum_ext.metrics._components import padded_boxes
from captum_ext.metrics.ground_truth import GroundTruth

#: Pixels of box masks drawn at once (boxes × height × width, booleans) when a group's regions are drawn.
DRAW_ELEMENTS = 1 << 26


class SizeGroup(NamedTuple):
    """The pairs of one map size: their positions in the batch, the stacked maps and their masks."""

    index: List[int]
    maps: Tensor  # n×H×W, on the maps' device
    masks: Optional[Tensor]  # n×H×W bool on the maps' device, False where a pair has no mask; None if none has one
    has_mask: List[bool]


class Pairs(NamedTuple):
    """Checked ``update`` arguments: ``count`` pairs in :class:`SizeGroup` batches, the truths (categories as ints,
    boxes checked), every pair's boxes as float64 CPU tensors, and ``N×4`` float64 predicted boxes (or ``None``)."""

    count: int
    truths: List[GroundTruth]
    boxes: List[Tensor]
    predicted: Optional[Tensor]
    groups: List[SizeGroup]


def check_pairs(maps: Sequence[Tensor], truths: Sequence[GroundTruth], predicted_boxes: Optional[Tensor]) -> Pairs:
    """Check the arguments of ``update`` / ``statistics`` (see :class:`Pairs`); ``N = 0`` is allowed.

    Args:
        maps (sequence of Tensor or Tensor): ``N`` maps ``H_i×W_i`` (or ``1×H_i×W_i``), or one ``N×H×W`` batch.
        truths (sequence of GroundTruth): their ground truths.
        predicted_boxes (Tensor, optional): ``N×4`` boxes, or ``None``.

    Returns:
        Pairs: the checked pairs.
    """
    batch = None
    if isinstance(maps, Tensor):
        if maps.dim() == 3 or (maps.dim() == 4 and maps.shape[1] == 1):
            batch = maps.reshape(maps.shape[0], *maps.shape[-2:]).contiguous()  # one size: the batch is the group
        maps = list(maps if batch is None else batch)
    if not isinstance(maps, (list, tuple)):
        raise TypeError(f"`maps` must be a sequence of H×W tensors, got {type(maps).__name__}")
    if not isinstance(truths, (list, tuple)) or isinstance(truths, GroundTruth):  # one GroundTruth is a tuple too
        raise TypeError(f"`truths` must be a sequence of GroundTruth, got {type(truths).__name__}")
    if len(maps) != len(truths):
        raise ValueError(f"`maps` and `truths` must have the same length, got {len(maps)} and {len(truths)}")
    checked = _batched_checks(maps, truths, batch)
    if checked is None:  # the per-pair checks raise the error naming the first offending pair
        plain = [_check_map(m, f"maps[{i}]") for i, m in enumerate(maps)]
        gts = [_check_truth(t, f"truths[{i}]", plain[i]) for i, t in enumerate(truths)]
        flat = torch.cat([t.boxes.to(torch.float64).cpu() for t in gts]) if gts else torch.zeros(0, 4)
        groups = _stack_groups(plain, gts, None)
        if groups is None:
            raise ValueError("`maps` of one size must lie on one device")
        checked = groups, gts, flat
    groups, gts, flat = checked
    flat = without_grad(flat)
    predicted = None
    if predicted_boxes is not None:
        predicted = check_box_batch(predicted_boxes, "predicted_boxes").to(device="cpu", dtype=torch.float64)
        if predicted.shape[0] != len(maps):
            raise ValueError(f"`predicted_boxes` must have one row per pair ({len(maps)}), got {predicted.shape[0]}")
    lengths = [len(t.boxes) for t in gts]
    boxes = list(flat.to(device="cpu", dtype=torch.float64).split(lengths)) if gts else []
    return Pairs(len(maps), gts, boxes, predicted, groups)


def _batched_checks(maps: Sequence[Any], truths: Sequence[Any], batch: Optional[Tensor]
                    ) -> Optional[Tuple[List[SizeGroup], List[GroundTruth], Tensor]]:
    """The pairs checked a size group at a time: ``(groups, truths, all boxes)``, or ``None`` where an input needs
    the per-pair checks (an unusual type, or a value that fails: they then name the pair)."""
    plain: List[Tensor] = []
    for value in maps:
        if not isinstance(value, Tensor) or value.is_meta or value.is_complex() or value.numel() == 0:
            return None
        if value.dim() == 3 and value.shape[0] == 1:
            value = value[0]
        elif value.dim() != 2:
            return None
        plain.append(value)
    gts: List[GroundTruth] = []
    for value, sal in zip(truths, plain):
        if not isinstance(value, GroundTruth) or type(value.category) is not int:
            return None
        boxes, mask = value.boxes, value.mask
        if (not isinstance(boxes, Tensor) or boxes.is_meta or boxes.dim() != 2 or boxes.shape[1] != 4
                or boxes.dtype == torch.bool or boxes.is_complex()):
            return None
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.is_meta
                                 or mask.shape != sal.shape):
            return None
        gts.append(GroundTruth(value.category, boxes if boxes.is_floating_point() else boxes.to(torch.float32), mask))
    if len({b.boxes.device for b in gts}) > 1:
        return None
    groups = _stack_groups(plain, gts, batch)
    if groups is None:
        return None
    for group in groups:
        # A finite sum settles the common case in one cheap reduction (as check_finite does for one map); NaN / inf
        # or an overflowing sum sends the batch to the per-map checks, which tell which map is wrong, if any.
        if group.maps.is_floating_point() and not bool(torch.isfinite(group.maps.sum(dtype=_sum_type(group.maps)))):
            return None
    flat = torch.cat([t.boxes for t in gts]) if gts else torch.zeros(0, 4)
    if len(flat):
        wrong = (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1]) | ~torch.isfinite(flat).all(dim=1)
        if bool(wrong.any()):
            return None
    return groups, gts, flat


def _sum_type(maps: Tensor) -> torch.dtype:
    """float64 for float64 maps, else float32: a half-precision batch's sum would overflow at 65,504."""
    return torch.float64 if maps.dtype == torch.float64 else torch.float32


def _stack_groups(maps: List[Tensor], truths: List[GroundTruth], batch: Optional[Tensor]
                  ) -> Optional[List[SizeGroup]]:
    """The pairs stacked by map size (first-seen order), with their masks on the maps' device; ``None`` when a
    group's maps or masks lie on several devices."""
    by_size: Dict[Tuple[int, ...], List[int]] = {}
    for i, sal in enumerate(maps):
        by_size.setdefault(tuple(sal.shape), []).append(i)
    groups = []
    for index in by_size.values():
        if batch is not None:
            stacked = batch
        else:
            if len({maps[i].device for i in index}) > 1:
                return None
            stacked = torch.stack([maps[i] for i in index])
        stacked = without_grad(stacked)
        has_mask = [truths[i].mask is not None for i in index]
        masks = None
        if any(has_mask):
            given = [truths[i].mask for i in index if truths[i].mask is not None]
            if len({m.device for m in given}) > 1:
                return None
            masks = torch.stack(given).to(stacked.device)
            if not all(has_mask):
                rows = torch.tensor([j for j, has in enumerate(has_mask) if has], device=stacked.device)
                masks = torch.zeros(stacked.shape, dtype=torch.bool, device=stacked.device).index_copy_(0, rows, masks)
        groups.append(SizeGroup(index, stacked, masks, has_mask))
    return groups


def _check_map(value: Any, name: str) -> Tensor:
    """An ``H×W`` (or ``1×H×W``) real, finite, non-empty map, returned ``H×W``."""
    sal = check_tensor(value, name, ndim=(2, 3), kind="real")
    if sal.dim() == 3:
        if sal.shape[0] != 1:
            raise ValueError(f"`{name}` must be H×W or 1×H×W, got shape {tuple(sal.shape)}")
        sal = sal[0]
    if sal.numel() == 0:
        raise ValueError(f"`{name}` must be a non-empty H×W map, got shape {tuple(sal.shape)}")
    return sal


def _check_truth(truth: Any, name: str, sal: Tensor) -> GroundTruth:
    """A :class:`GroundTruth` whose boxes are checked (``K×4``, ``K >= 0``) and whose mask, if any, is an ``H×W``
    bool tensor of the map's shape on the map's device."""
    if not isinstance(truth, GroundTruth):
        raise TypeError(f"`{name}` must be a captum_ext.metrics.ground_truth.GroundTruth, got {type(truth).__name__}")
    category = int(check_scalar(truth.category, f"{name}.category", integer=True))
    boxes = check_box_batch(truth.boxes, f"{name}.boxes")
    mask = truth.mask
    if mask is not None:
        mask = check_tensor(mask, f"{name}.mask", ndim=2, kind="real")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"`{name}.mask` must be boolean or contain only 0 and 1")
            mask = mask != 0
        if mask.shape != sal.shape:
            raise ValueError(
                f"`{name}.mask` must have its map's shape {tuple(sal.shape)}, got {tuple(mask.shape)}"
            )
        mask = mask.to(sal.device)
    return GroundTruth(category, boxes, mask)


def regions(pairs: Pairs) -> List[Tensor]:
    """Each size group's ground-truth regions as an ``n×H×W`` bool tensor on its maps' device: a pair's mask, else
    the pixels of its boxes (pixel centres inside a box).

    Args:
        pairs (Pairs): checked pairs.

    Returns:
        list of Tensor: one per group of ``pairs.groups``.

    Raises:
        ValueError: naming ``truths`` and listing the pairs whose region has no pixel (the package's
            empty-ground-truth rule).
    """
    out, empty = [], []
    for group in pairs.groups:
        if group.masks is not None and all(group.has_mask):
            region = group.masks
        else:
            drawn = draw_boxes([pairs.boxes[i] for i in group.index], *group.maps.shape[1:], group.maps.device)
            region = drawn if group.masks is None else torch.where(
                torch.tensor(group.has_mask, device=drawn.device).view(-1, 1, 1), group.masks, drawn)
        out.append(region)
        empty += unfilled(region, group.index)
    if empty:
        raise ValueError(
            "`truths` must give every pair at least one foreground pixel (its mask, or its boxes when it has no "
            f"mask); empty at index(es) {sorted(empty)}"
        )
    return out


def unfilled(regions: Tensor, index: Sequence[int]) -> List[int]:
    """The entries of ``index`` whose ``H×W`` region in the ``n×H×W`` ``regions`` has no pixel (one host read).

    Args:
        regions (Tensor): ``n×H×W`` bool.
        index (sequence of int): the pairs' positions in the batch.

    Returns:
        list of int: the positions of the empty regions.
    """
    filled = regions.flatten(1).any(dim=1)
    if bool(filled.all()):
        return []
    return [index[j] for j in (~filled).nonzero().flatten().tolist()]


def draw_boxes(boxes: Sequence[Tensor], height: int, width: int, device: torch.device) -> Tensor:
    """``n×H×W`` bool: the union of each pair's box masks (:func:`~captum_ext._utils.boxes.boxes_to_masks`), drawn
    for all pairs at once, a bounded number of boxes per pair at a time.

    Args:
        boxes (sequence of Tensor): ``n`` tensors ``K_i×4``.
        height (int): ``H``.
        width (int): ``W``.
        device (torch.device): where the masks are made.

    Returns:
        Tensor: ``n×H×W`` bool on ``device``.
    """
    padded, _ = padded_boxes(boxes, device)  # padding boxes (0, 0, 0, 0) cover no pixel centre
    n, most, _ = padded.shape
    step = max(1, DRAW_ELEMENTS // max(1, n * height * width))
    region = torch.zeros(n, height, width, dtype=torch.bool, device=device)
    for start in range(0, most, step):
        part = padded[:, start:start + step]
        drawn = boxes_to_masks(part.reshape(-1, 4), height, width).view(n, part.shape[1], height, width)
        region |= drawn.any(dim=1)
    return region


def require_boxes(pairs: Pairs) -> None:
    """Raise ``ValueError`` naming ``truths`` and listing the pairs without a ground-truth box of positive area, or
    without one that overlaps the pair's map.

    Args:
        pairs (Pairs): checked pairs.
    """
    if not pairs.count:
        return
    flat = torch.cat(pairs.boxes)
    owner = torch.repeat_interleave(torch.arange(pairs.count), torch.tensor([len(b) for b in pairs.boxes]))
    # Areas in each box's own dtype, as the metrics compute them: a float16 box of area 2⁻²⁶ has none there.
    codes: Dict[torch.dtype, int] = {}
    dtype_of_box = torch.tensor([codes.setdefault(t.boxes.dtype, len(codes)) for t in pairs.truths])[owner]
    positive_box = torch.zeros(len(flat), dtype=torch.bool)
    for dtype, code in codes.items():  # the float64 values convert back to their own dtype exactly
        rows = dtype_of_box == code
        positive_box[rows] = box_areas(flat[rows].to(dtype)) > 0
    # Boxes wholly outside their map are usually in another coordinate frame (the image's, for a smaller map).
    limits = torch.zeros(pairs.count, 4, dtype=torch.float64)
    for group in pairs.groups:
        height, width = group.maps.shape[-2:]
        limits[group.index] = torch.tensor([width, height, width, height], dtype=torch.float64)
    inside_box = box_areas(torch.minimum(flat.clamp_min(0), limits[owner])) > 0
    counts = torch.zeros(2, pairs.count, dtype=torch.int64)
    counts[0].index_add_(0, owner, positive_box.long())
    counts[1].index_add_(0, owner, (positive_box & inside_box).long())
    flagged = (counts == 0).nonzero()  # one read for both rules
    if len(flagged):
        bare = flagged[flagged[:, 0] == 0, 1].tolist()
        if bare:
            raise ValueError(f"`truths` must give every pair a box of positive area; none at index(es) {bare}")
        raise ValueError(f"`truths` must give every pair a box overlapping its map (boxes in map pixels); none at "
                         f"index(es) {flagged[:, 1].tolist()}")
