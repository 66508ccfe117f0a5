"""Input checks shared by the metric functions; each raises a ``TypeError`` / ``ValueError`` naming the argument."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from captum_ext._utils.attribution import check_examples_independent
from captum_ext._utils.validation import as_tensor, check_boxes, check_finite, check_same_length, check_tensor, \
    require_values

TensorLike = Union[Tensor, np.ndarray, Sequence]

#: Score CPU maps with the accelerators' tensor path too (read at call time). The tests set it to count, on the CPU,
#: the operations and host synchronisations that path dispatches on a GPU, and to compare its values with the CPU
#: path's.
FORCE_DEVICE_PATH = False


def device_path(maps: Tensor) -> bool:
    """Whether ``maps`` are scored by the batched tensor path, on their own device: maps on an accelerator (the CPU
    has SciPy and compiled loops), or any maps while :data:`FORCE_DEVICE_PATH` is set."""
    return FORCE_DEVICE_PATH or maps.device.type != "cpu"


def check_maps(value: TensorLike, name: str) -> Tensor:
    """Check an ``N×H×W`` / ``N×1×H×W`` real map batch and return it as ``N×H×W`` (dtype unchanged)."""
    maps = check_tensor(value, name, ndim=(3, 4), kind="real")
    if maps.dim() == 4:
        if maps.shape[1] != 1:
            raise ValueError(f"`{name}` must be N×H×W or N×1×H×W, got shape {tuple(maps.shape)}")
        maps = maps[:, 0]
    if maps.numel() == 0:
        raise ValueError(f"`{name}` must hold at least one non-empty image, got shape {tuple(maps.shape)}")
    return without_grad(maps)


def without_grad(value: Tensor) -> Tensor:
    """``value`` detached where it requires grad (a metric reads values; the host paths convert them to NumPy)."""
    return value.detach() if value.requires_grad else value


def check_masks(value: TensorLike, name: str) -> Tensor:
    """Check an ``N×H×W`` / ``N×1×H×W`` mask batch (bool, or only 0/1) and return it as ``N×H×W`` bool."""
    masks = check_maps(value, name)
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError(f"`{name}` must be boolean or contain only 0 and 1")
        masks = masks != 0
    return masks


def check_nonempty_masks(masks: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the image indices whose ground-truth mask has no pixel.

    This is the package's one rule for empty ground truth: a score against an empty region is undefined (recall
    has no denominator, the pointing game has no target, energy inside nothing is trivially 0), and silently
    scoring such an image 0 or 1 would bias the batch mean. So every metric rejects it.
    """
    empty = ~masks.flatten(1).any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            f"`{name}` must hold at least one foreground pixel per image; empty at image index(es) "
            f"{empty.nonzero().flatten().tolist()}"
        )


def check_pair(saliency: Tensor, name_s: str, masks: Tensor, name_m: str) -> None:
    """Raise unless the two ``N×H×W`` batches have the same ``N`` and ``H×W``."""
    check_same_length(name_s, saliency, name_m, masks)
    if saliency.shape[1:] != masks.shape[1:]:
        raise ValueError(
            f"`{name_s}` and `{name_m}` must have the same H×W, got {tuple(saliency.shape[1:])} "
            f"and {tuple(masks.shape[1:])}"
        )


def check_labels(value: TensorLike, name: str, n: int) -> Tensor:
    """Check a 1-D integer label vector of length ``n``."""
    labels = check_tensor(value, name, ndim=1, kind="int")
    if labels.shape[0] != n:
        raise ValueError(f"`{name}` must have one entry per image ({n}), got {labels.shape[0]}")
    return labels


def check_box_batch(value: TensorLike, name: str) -> Tensor:
    """:func:`~captum_ext._utils.validation.check_boxes`, but a bool tensor is a ``TypeError`` (``True`` is not a
    coordinate, and silently reading it as 1.0 would hide a mask passed where boxes belong)."""
    boxes = as_tensor(value, name)
    if boxes.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold numeric box coordinates, got dtype torch.bool")
    return without_grad(check_boxes(boxes, name))


def check_images(value: TensorLike, name: str) -> Tensor:
    """Check an ``N×C×H×W`` real image batch with finite values (one host sync) and return it as a tensor.

    Raises:
        TypeError: not a tensor / array, or complex.
        ValueError: not 4-D, a meta tensor, or NaN / inf values.
    """
    images = as_tensor(value, name)
    require_values(images, name)
    if images.dim() != 4:
        raise ValueError(f"`{name}` must be N×C×H×W, got shape {tuple(images.shape)}")
    if images.is_complex():
        raise TypeError(f"`{name}` must have a real dtype, got {images.dtype}")
    check_finite(images, name)
    return images


def check_same_device(value: Tensor, name: str, other: Tensor, other_name: str) -> None:
    """Raise ``ValueError`` naming both arguments and their devices unless ``value`` lies on ``other``'s device.

    Args:
        value (Tensor): the tensor to check.
        name (str): its argument name.
        other (Tensor): the tensor it is computed with.
        other_name (str): that one's argument name.

    Returns:
        None
    """
    if value.device != other.device:
        raise ValueError(f"`{name}` are on {value.device} but `{other_name}` on {other.device}; put them on one "
                         "device")


def check_image_maps(value: TensorLike, name: str, images: Tensor) -> Tensor:
    """Check ``N×H×W`` / ``N×1×H×W`` finite maps, one per image of the ``N×C×H×W`` ``images`` with exactly their
    ``H×W`` and on their device, and return them as ``N×H×W``. The shape is compared, not the element count, so maps
    with H and W swapped (or flattened) are refused instead of being read in the wrong pixel order.

    Raises:
        TypeError: not a tensor / array, or complex.
        ValueError: maps on another device than ``images`` (arrays and sequences are on the CPU), of the wrong
            shape, or holding NaN / inf.
    """
    maps = as_tensor(value, name)
    # Before any value is read: maps elsewhere than the images otherwise fail deep inside the metric with a bare
    # torch device error (or, where a metric copies them over, are silently moved, unlike in the other metrics).
    check_same_device(maps, name, images, "images")
    maps = check_maps(maps, name)
    n, _, height, width = images.shape
    if tuple(maps.shape) != (n, height, width):
        raise ValueError(f"`{name}` must hold one H×W map per image of `images`, N×H×W = {n}×{height}×{width} (or "
                         f"N×1×H×W), got {'×'.join(map(str, maps.shape))}")
    return maps


def ranking_values(maps: Tensor) -> Tensor:
    """``maps`` in a dtype that keeps their order: float64 for float64 and 64-bit integer maps (float32 would turn
    values closer than its precision, or integers above 2**24, into ties broken by position), float32 otherwise."""
    return maps.to(torch.float64) if maps.dtype in (torch.float64, torch.int64, torch.int32) else maps.float()


def check_targets(value: TensorLike, name: str, n: int) -> Tensor:
    """Check one integer class index per image: a 1-D integer tensor / array or a list / tuple of ints of length
    ``n``; returned as a tensor (dtype and device unchanged). The range is checked by :func:`check_target_range`
    once the number of classes is known.

    Raises:
        TypeError: not a tensor, array or sequence of ints (floats and bools included).
        ValueError: not 1-D of length ``n``.
    """
    targets = as_tensor(value, name)
    require_values(targets, name)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold one integer class index per image, got dtype {targets.dtype}")
    if tuple(targets.shape) != (n,):
        raise ValueError(f"`{name}` must hold one integer class index per image ({n}), got shape "
                         f"{tuple(targets.shape)}")
    return targets


def check_target_range(targets: Tensor, scores: Tensor, name: str = "targets") -> None:
    """Raise ``ValueError`` unless ``scores`` are ``B×K`` class scores and every target lies in ``[0, K)``; one host
    sync, so callers run it on their first forward only (every later one has the same ``K``)."""
    if scores.dim() != 2:
        raise ValueError(f"`model` must return B×K class scores, got shape {tuple(scores.shape)}")
    classes = scores.shape[1]
    outside = (targets < 0) | (targets >= classes)
    if bool(outside.any()):
        raise ValueError(f"`{name}` must be class indices in [0, {classes}) for the model's {classes} classes, got "
                         f"{targets[outside].unique().tolist()}")


def check_scores_independent(model: object, per_forward: int) -> None:
    """Refuse a model whose BatchNorm normalises with each batch's statistics when ``per_forward > 1`` images share
    a forward pass: every score would depend on the other images of the pass (and so on ``batch_size``).

    Args:
        model (object): the scored model, or a callable bound to it.
        per_forward (int): images per forward pass.

    Raises:
        ValueError: such a model with ``per_forward > 1``.
    """
    check_examples_independent(model, per_forward, what="scores",
                               remedy="pass batch_size=1 to score one image per forward pass")
