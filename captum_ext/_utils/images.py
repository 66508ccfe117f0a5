"""Image helpers shared by the EfficientNet loader, ``captum-ext explain`` and the scene datasets: any array or
tensor layout to an ``N×3×H×W`` float batch in [0, 1], antialiased resizing, shorter-side resize + centre crop, and
the project's one per-channel standardisation (:func:`normalize`, :func:`denormalize`)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext._utils.validation import check_finite


def _to_float(tensor: Tensor) -> Tensor:
    """Integer images are scaled by their dtype's maximum; floats are assumed to be in [0, 1]."""
    if tensor.dtype == torch.bool:
        return tensor.float()
    if not tensor.is_floating_point():
        if tensor.is_complex():
            raise TypeError("`image` must be real-valued, got a complex array")
        return tensor.float() / float(torch.iinfo(tensor.dtype).max)
    return tensor.float()


#: The EXIF tag saying how a photo's stored pixels turn into the displayed image (1: as stored).
EXIF_ORIENTATION = 0x0112


def displayed_size(image: Any) -> Tuple[int, int]:
    """``(height, width)`` of an opened PIL image as viewers and annotation tools show it: its EXIF orientation
    applied (5–8 swap the sides), read from the header alone.

    Args:
        image (PIL.Image.Image): an opened image (its pixels need not be decoded).

    Returns:
        tuple of int: the displayed height and width.
    """
    turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    return (image.width, image.height) if turned else (image.height, image.width)


def displayed_pixels(path: str, pixels: np.ndarray) -> np.ndarray:
    """``pixels`` decoded from the file ``path`` by a reader that ignores EXIF orientation and reads CMYK as four
    channels, as displayed: such a file is decoded again with PIL, its orientation applied (``exif_transpose``) and
    CMYK converted to RGB (its C, M, Y read as R, G, B show a colour negative).

    Args:
        path (str): the image file.
        pixels (numpy.ndarray): its stored pixels.

    Returns:
        numpy.ndarray: the displayed pixels (``pixels`` itself for a file without an orientation to apply).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        if image.getexif().get(EXIF_ORIENTATION, 1) == 1 and image.mode != "CMYK":
            return pixels
        shown = ImageOps.exif_transpose(image)
        return np.array(shown.convert("RGB") if shown.mode == "CMYK" else shown)


def file_pixels_problem(pixels: np.ndarray) -> Optional[str]:
    """Why an image file's decoded pixels have no known scaling to [0, 1], or ``None``.

    8- and 16-bit unsigned integers (and bools) scale by their type's maximum, and floats must already lie in
    [0, 1]. A float file holding 0–255, or 32-bit integers (whose range is anybody's guess), would otherwise be read
    as a confident, wrong picture.

    Args:
        pixels (numpy.ndarray): the decoded pixels.

    Returns:
        str or None: the reason, to follow the file's name in an error.
    """
    if pixels.dtype == np.bool_ or pixels.dtype in (np.uint8, np.uint16):
        return None
    if pixels.dtype.kind == "f":
        if not np.isfinite(pixels).all():
            return "holds NaN or inf pixels"
        low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
        if low < 0.0 or high > 1.0:
            return (f"holds float pixels in [{low:g}, {high:g}], not in [0, 1]: scale them to [0, 1], or save the "
                    f"image with 8- or 16-bit integers")
        return None
    return (f"holds {pixels.dtype.itemsize * 8}-bit {'signed ' if pixels.dtype.kind == 'i' else ''}integer pixels, "
            f"whose range is unknown: save the image with 8- or 16-bit unsigned integers")


def as_image_batch(image: Any) -> Tensor:
    """Return ``image`` as an ``N×3×H×W`` float32 tensor in [0, 1] (unless floats outside [0, 1] were given)."""
    if isinstance(image, Tensor):
        tensor = image.detach()
        if tensor.ndim == 3:
            tensor = tensor[None]
        elif tensor.ndim != 4:
            raise ValueError(
                f"`image` tensor must be C×H×W or N×C×H×W (channels first), got shape {tuple(tensor.shape)}"
            )
        channel_axis = 1
    else:
        array = np.asarray(image)  # also accepts PIL images and nested lists
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"`image` must be a numeric array or tensor, got dtype {array.dtype}")
        if array.ndim == 2:  # H×W grayscale
            array = array[:, :, None]
        if array.ndim == 3:
            array = array[None]
        elif array.ndim != 4:
            raise ValueError(
                f"`image` array must be H×W, H×W×C or N×H×W×C (channels last), got shape {array.shape}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
        channel_axis = 3
    channels = tensor.shape[1]
    if channels == 4:  # drop alpha
        tensor = tensor[:, :3]
    elif channels == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    elif channels != 3:
        raise ValueError(
            f"`image` must have 1, 3 or 4 channels (axis {channel_axis}), got {channels}; "
            "numpy arrays are channels-last, tensors channels-first"
        )
    if tensor.shape[0] == 0 or tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise ValueError(f"`image` must be non-empty, got shape {tuple(tensor.shape)}")
    tensor = _to_float(tensor)
    check_finite(tensor, "image")
    return tensor


def resize(batch: Tensor, out_hw: Tuple[int, int]) -> Tensor:
    """Bilinear, antialiased resize of ``N×C×H×W`` to ``out_hw`` (a no-op at that size)."""
    if tuple(batch.shape[-2:]) == tuple(out_hw):
        return batch
    return F.interpolate(batch, size=out_hw, mode="bilinear", align_corners=False, antialias=True)


def resize_shorter_and_crop(batch: Tensor, shorter: int, size: int) -> Tensor:
    """Resize the shorter side to ``shorter`` (aspect kept), then take the centre ``size×size`` crop."""
    h, w = batch.shape[-2:]
    if h <= w:
        out_hw = (shorter, max(shorter, int(shorter * w / h)))
    else:
        out_hw = (max(shorter, int(shorter * h / w)), shorter)
    batch = resize(batch, out_hw)
    top = int(round((out_hw[0] - size) / 2.0))
    left = int(round((out_hw[1] - size) / 2.0))
    return batch[:, :, top:top + size, left:left + size]


def _channel_stats(batch: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tuple[Tensor, Tensor]:
    """``mean`` and ``std`` as ``1×C×1×1`` tensors on the batch's device and dtype."""
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(shape)
    s = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(shape)
    return m, s


def normalize(batch: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(batch − mean) / std`` of an ``N×C×H×W`` batch, contiguous, on the batch's device and dtype.

    Args:
        batch (Tensor): ``N×C×H×W`` (or ``C×H×W``) floating images.
        mean (sequence of float): ``C`` channel means.
        std (sequence of float): ``C`` channel standard deviations.

    Returns:
        Tensor: the standardised batch (``N×C×H×W``).
    """
    m, s = _channel_stats(batch, mean, std)
    return ((batch - m) / s).contiguous()


def denormalize(batch: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Inverse of :func:`normalize`: per-channel ``batch · std + mean``, on the batch's device and dtype.

    Args:
        batch (Tensor): ``N×C×H×W`` (or ``C×H×W``) standardised images.
        mean (sequence of float): ``C`` channel means.
        std (sequence of float): ``C`` channel standard deviations.

    Returns:
        Tensor: the images in their original range (not clipped), ``N×C×H×W``.
    """
    m, s = _channel_stats(batch, mean, std)
    return (batch * s + m).contiguous()
