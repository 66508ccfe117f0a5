"""Ellipse regression datasets of Li & Shimada, *Discovery of image pixels highly contributing to CNN regression*.

Three synthetic grounds with exact ground truth, used to train and evaluate
:class:`captum_ext.SelfSupervisedAttentionRegressor`:

1. **one ellipse + circle distractors** — target: the ellipse's inclination in degrees;
2. **two ellipses + point noise** — target: the ``(x, y)`` intersection of the two major-axis lines;
3. **two ellipses + real-object clutter** (patches of the scikit-image photographs bundled in its wheel,
   see :mod:`captum_ext.datasets._photos`) — same target as 2.

Conventions (shared with :mod:`captum_ext._utils.boxes`)
--------------------------------------------------------
* Images are ``N×1×H×W`` float32 grayscale in ``[0, 1]``, ``H = W = size`` (32 by default, as in the paper).
* **Continuous pixel coordinates**: ``x`` runs along columns, ``y`` along rows (downwards); pixel ``(row i,
  column j)`` covers ``[j, j + 1) × [i, i + 1)``, so its centre is ``(j + 0.5, i + 0.5)`` and the whole image is
  ``[0, W] × [0, H]`` — the same frame as the ``(x1, y1, x2, y2)`` boxes. Centres and intersection targets are
  given in this frame (to get array indices of the pixel containing a point: ``floor(y), floor(x)``).
* **Rasterisation**: a pixel belongs to an ellipse (or circle) iff its *centre* lies inside it (``<= 1`` in the
  normalised quadratic form). Masks are exactly these pixels; there is no anti-aliasing, so every ellipse pixel
  has the ellipse's flat intensity (plus the global Gaussian noise).
* **Angles** ``θ`` are in degrees in ``[0, 180)``: the angle of the major axis measured *counter-clockwise from
  the +x (column) axis as the image is displayed* (rows pointing down). ``θ = 0`` is a horizontal ellipse,
  ``θ = 90`` a vertical one, ``θ = 45`` rises to the upper right. In array coordinates the major-axis direction
  is ``(dx, dy) = (cos θ, -sin θ)``. An axis is 180°-periodic: regress :func:`angle_to_cos_sin` (``cos 2θ,
  sin 2θ``), not θ, and score with :func:`angular_error`.

Sizes and intensities (at ``size = 32``; lengths scale with ``size / 32``)
--------------------------------------------------------------------------
* Ellipses: semi-axes ``b ∈ [2, 3.2]`` px, ``a ∈ [max(5, 1.6 b), 8]`` px (so ``a / b >= 1.6`` and the inclination
  is well defined); area ``π a b`` ≈ 5 % of the image per ellipse (dataset 1: ≈ 5 % object area, so the paper's
  ``S_R ≈ 0.95``; datasets 2 and 3: two ellipses, ≈ 10 %, ``S_R ≈ 0.90``; see :data:`OBJECT_FRACTION`). Every
  ellipse lies entirely inside the image with a 1 px margin. Each shape gets its own flat intensity.
* Shapes never touch: between an ellipse and any other shape (circle or second ellipse) there are at least
  :data:`GAP` = 2 background pixels (Chebyshev distance > 2 between their pixels); circles keep at least one
  background pixel between each other.
* Dataset 1: background level ``U[0, 0.1]``; ellipse and 2–4 circle distractors (radius ``U[1.5, 3]`` px) each
  ``U[0.6, 1]`` — the same distribution, so only shape tells the ellipse from the circles.
* Datasets 2 and 3: the two major axes differ by at least 20° and cross inside the image, at least 1 px from its
  border (ellipse pairs are resampled otherwise). The target is computed from the stored (float32) centres and
  angles, see :func:`intersect_major_axes`.
* Dataset 2: background ``U[0, 0.1]``; ellipses ``U[0.6, 1]``; point noise: each pixel *outside* the ellipses is
  independently lit with probability ``U[0.05, 0.10]`` (per image) at intensity ``U[0.5, 1]`` (per point). Points
  are kept off the ellipses so the ellipse pixels (the mask) stay exact and unbroken.
* Dataset 3: a grayscale photo crop at low contrast (``U[0, 0.1] + U[0.1, 0.25] × photo``); then 4–8
  rectangular patches of ``U{5..10} × U{5..10}`` px cut from the photos scaled so their shorter side is 1–1.6×
  the image (so a patch shows an object part), contrast-stretched to ``[0, 1)`` and mapped to
  ``U[0, 0.1] + U[0.45, 0.75] × patch`` (at most 0.85), pasted anywhere, also under the ellipses; finally the two
  ellipses on top at ``U[0.7, 1]``, so they stay visible as flat bright shapes. Clutter may touch the ellipses
  but never covers them; the mask is exact.
* All datasets: additive Gaussian noise ``σ = 0.02`` on every pixel, then clipping to ``[0, 1]``.

Determinism: samples are generated in fixed chunks (256 samples at ``size <= 32``, about 2**18 pixels per chunk
for larger images), chunk ``c`` from
``numpy.random.default_rng([seed, dataset, c])``; so the same ``(seed, dataset, size)`` always gives the same
data, and ``make_ellipses(500, ...)`` is exactly the first 500 samples of ``make_ellipses(1000, ...)``. Use a
*different* seed for test sets than for training sets (the examples use ``seed=0`` for training and ``seed=1``
for testing); :data:`PAPER_SPLITS` holds the paper's train / test sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from captum_ext._utils.validation import as_tensor, check_in_choices
from captum_ext.datasets import _ellipse_render
from captum_ext.datasets._ellipse_raster import intersect
from captum_ext.datasets._ellipse_render import chunk_size, render_chunk

__all__ = [
    "EllipseBatch",
    "EllipseDataset",
    "GAP",
    "OBJECT_FRACTION",
    "PAPER_SPLITS",
    "angle_to_cos_sin",
    "angular_error",
    "cos_sin_to_angle",
    "intersect_major_axes",
    "make_ellipses",
]

#: The paper's (train, test) sizes per dataset: 8000/3000 (ds1, ds3), 3000/100 (ds2).
PAPER_SPLITS: Dict[int, Tuple[int, int]] = {1: (8000, 3000), 2: (3000, 100), 3: (8000, 3000)}

#: Approximate mean share of image pixels covered by the ellipse mask (at ``size=32``); ``S_R = 1 - fraction``.
OBJECT_FRACTION: Dict[int, float] = {1: 0.05, 2: 0.10, 3: 0.10}

#: Minimum number of background pixels between an ellipse and any other shape (Chebyshev distance > GAP).
GAP: int = _ellipse_render.GAP  # defined where the shapes are placed

_DATASETS = (1, 2, 3)
_MIN_SIZE = 16


# ----------------------------------------------------------------------------------------------------------------
# public containers
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EllipseBatch:
    """A generated batch of one of the three ellipse datasets (all tensors on CPU).

    Attributes:
        images: ``N×1×H×W`` float32 in ``[0, 1]``.
        masks: ``N×1×H×W`` bool, exactly the pixels of the ellipse(s) (pixel centres inside).
        targets: dataset 1: ``N`` float32 inclinations in degrees in ``[0, 180)``; datasets 2 and 3: ``N×2`` float32
            ``(x, y)`` intersection of the two major-axis lines, continuous pixel coordinates (module docstring).
        centers: ``N×K×2`` float32 ellipse centres ``(x, y)``, ``K = 1`` (dataset 1) or ``2``.
        semi_axes: ``N×K×2`` float32 ``(a, b)``, semi-major then semi-minor axis in pixels.
        angles: ``N×K`` float32 major-axis inclinations in degrees in ``[0, 180)``.
        dataset: 1, 2 or 3.
    """

    images: Tensor
    masks: Tensor
    targets: Tensor
    centers: Tensor
    semi_axes: Tensor
    angles: Tensor
    dataset: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Image side length in pixels."""
        return int(self.images.shape[-1])


# ----------------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------------
def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {int(value)}")
    return int(value)


def _check_dataset(dataset: object) -> int:
    if isinstance(dataset, (bool, np.bool_)) or not isinstance(dataset, (int, np.integer)):
        raise TypeError(f"`dataset` must be an int in {list(_DATASETS)}, got {type(dataset).__name__}")
    check_in_choices(int(dataset), "dataset", _DATASETS)
    return int(dataset)


def intersect_major_axes(centers: Union[Tensor, np.ndarray], angles: Union[Tensor, np.ndarray]) -> Tensor:
    """Intersection of the major-axis lines of two ellipses.

    Args:
        centers: ``N×2×2`` centres ``(x, y)`` of the two ellipses (continuous pixel coordinates).
        angles: ``N×2`` major-axis inclinations in degrees (counter-clockwise as displayed, rows pointing down).

    Returns:
        ``N×2`` float64 tensor ``(x, y)`` (``inf``/``nan`` for parallel axes).

    Example::

        >>> batch = make_ellipses(4, dataset=2, seed=0)
        >>> torch.allclose(intersect_major_axes(batch.centers, batch.angles).float(), batch.targets)
        True
    """
    c = as_tensor(centers, "centers").to(torch.float64)
    t = as_tensor(angles, "angles").to(torch.float64)
    if c.dim() != 3 or c.shape[1:] != (2, 2):
        raise ValueError(f"`centers` must be N×2×2, got shape {tuple(c.shape)}")
    if t.shape != c.shape[:2]:
        raise ValueError(f"`angles` must be N×2 matching `centers`, got shape {tuple(t.shape)}")
    out = intersect(c[:, 0, 0].numpy(), c[:, 0, 1].numpy(), t[:, 0].numpy(),
                     c[:, 1, 0].numpy(), c[:, 1, 1].numpy(), t[:, 1].numpy())
    return torch.from_numpy(np.stack(out, axis=1))


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def make_ellipses(n: int, dataset: int = 1, seed: int = 0, size: int = 32) -> EllipseBatch:
    r"""Generate ``n`` samples of one of the three ellipse datasets of Li & Shimada.

    Generation is vectorised over fixed chunks of samples, chunk ``c`` drawn from
    ``numpy.random.default_rng([seed, dataset, c])``: the output depends only on ``(n, dataset, seed, size)`` and
    a smaller ``n`` gives an exact prefix of a larger one. 10,000 samples take 1–2 s on one CPU core.

    Args:
        n (int): number of samples, ``>= 1``.
        dataset (int, optional): 1 (one ellipse + circle distractors, target = inclination), 2 (two ellipses +
            point noise, target = intersection of the major axes) or 3 (two ellipses + real-object clutter,
            same target). Default: 1
        seed (int, optional): non-negative seed. Use a different seed for a test set than for its training set.
            Default: 0
        size (int, optional): image side in pixels, ``>= 16``; shape sizes scale with ``size / 32``.
            Default: 32

    Returns:
        EllipseBatch: images ``N×1×H×W`` float32 in ``[0, 1]``, masks ``N×1×H×W`` bool (ellipse pixels), targets
        (dataset 1: ``N`` degrees in ``[0, 180)``; datasets 2, 3: ``N×2`` ``(x, y)``), centers ``N×K×2``,
        semi_axes ``N×K×2``, angles ``N×K`` (``K = 1`` or ``2``). Coordinates and angles follow the module
        conventions: ``x`` = column, ``y`` = row (down), pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``; θ
        counter-clockwise from +x as displayed.

    Raises:
        TypeError: if ``n``, ``dataset``, ``seed`` or ``size`` is not an int.
        ValueError: if ``n < 1``, ``dataset`` not in {1, 2, 3}, ``seed < 0`` or ``size < 16``.

    Example::

        >>> from captum_ext.datasets import ellipses
        >>> n_train, n_test = ellipses.PAPER_SPLITS[1]
        >>> train = ellipses.make_ellipses(n_train, dataset=1, seed=0)
        >>> test = ellipses.make_ellipses(n_test, dataset=1, seed=1)  # different seed for the test set
        >>> train.images.shape, train.targets.shape
        (torch.Size([8000, 1, 32, 32]), torch.Size([8000]))
    """
    n = _check_int(n, "n", 1)
    dataset = _check_dataset(dataset)
    seed = _check_int(seed, "seed", 0)
    size = _check_int(size, "size", _MIN_SIZE)

    chunk = chunk_size(size)
    parts = []
    for c in range(-(-n // chunk)):
        out = render_chunk(seed, dataset, c, chunk, size)
        take = min(chunk, n - c * chunk)
        parts.append([np.asarray(x)[:take] for x in out])
    images, masks, targets, centers, semi_axes, angles = (np.concatenate(p, axis=0) for p in zip(*parts))
    np.clip(images, 0.0, 1.0, out=images)
    return EllipseBatch(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)[:, None]),
        masks=torch.from_numpy(np.ascontiguousarray(masks)[:, None]),
        targets=torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)),
        centers=torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32)),
        semi_axes=torch.from_numpy(np.ascontiguousarray(semi_axes, dtype=np.float32)),
        angles=torch.from_numpy(np.ascontiguousarray(angles, dtype=np.float32)),
        dataset=dataset,
    )


class EllipseDataset(Dataset):
    r"""``torch.utils.data.Dataset`` over :func:`make_ellipses` (all samples generated once, in memory).

    Items are ``(image, target, mask)``: ``image`` ``1×H×W`` float32, ``mask`` ``1×H×W`` bool and ``target``
    float32 of shape ``(1,)`` (dataset 1, ``angle_encoding="degrees"``), ``(2,)`` ``(cos 2θ, sin 2θ)``
    (dataset 1, ``angle_encoding="cos_sin"``) or ``(2,)`` ``(x, y)`` pixels (datasets 2 and 3), so the default
    collate gives ``N×out_features`` targets.

    Args:
        n (int): number of samples, ``>= 1``.
        dataset (int, optional): 1, 2 or 3 (see :func:`make_ellipses`). Default: 1
        seed (int, optional): non-negative seed; use a different one for the test set. Default: 0
        size (int, optional): image side, ``>= 16``. Default: 32
        angle_encoding (str, optional): ``"degrees"`` or ``"cos_sin"`` (dataset 1 only; the 180°-periodic
            encoding recommended for regression). Default: ``"degrees"``

    Attributes:
        batch (EllipseBatch): the generated data with all ground truth.
        targets (Tensor): the encoded targets, ``N×1`` or ``N×2``.

    Example::

        >>> from torch.utils.data import DataLoader
        >>> from captum_ext.datasets import ellipses
        >>> train = ellipses.EllipseDataset(8000, dataset=1, seed=0, angle_encoding="cos_sin")
        >>> test = ellipses.EllipseDataset(3000, dataset=1, seed=1, angle_encoding="cos_sin")
        >>> image, target, mask = next(iter(DataLoader(train, batch_size=64)))
        >>> image.shape, target.shape, mask.shape
        (torch.Size([64, 1, 32, 32]), torch.Size([64, 2]), torch.Size([64, 1, 32, 32]))
    """

    def __init__(self, n: int, dataset: int = 1, seed: int = 0, size: int = 32,
                 angle_encoding: str = "degrees") -> None:
        check_in_choices(angle_encoding, "angle_encoding", ("degrees", "cos_sin"))
        dataset = _check_dataset(dataset)
        if dataset != 1 and angle_encoding != "degrees":
            raise ValueError(f"`angle_encoding` applies to dataset 1 only (dataset {dataset} targets are (x, y))")
        self.batch = make_ellipses(n, dataset=dataset, seed=seed, size=size)
        self.angle_encoding = angle_encoding
        if dataset == 1:
            degrees = self.batch.targets
            self.targets = angle_to_cos_sin(degrees) if angle_encoding == "cos_sin" else degrees[:, None]
        else:
            self.targets = self.batch.targets
        self.targets = self.targets.contiguous()

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor, Tensor]:
        return self.batch.images[index], self.targets[index], self.batch.masks[index]


def _float_tensor(value: Union[Tensor, np.ndarray, Sequence[float], float], name: str) -> Tensor:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be numeric, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        tensor = torch.tensor(float(value), dtype=torch.float32)
    else:
        tensor = as_tensor(value, name)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must be real-valued, got {tensor.dtype}")
    return tensor if tensor.is_floating_point() else tensor.to(torch.float32)


def angle_to_cos_sin(degrees: Union[Tensor, np.ndarray, Sequence[float], float]) -> Tensor:
    r"""Encode 180°-periodic axis angles as ``(cos 2θ, sin 2θ)``, continuous across 0°/180°.

    Args:
        degrees (Tensor, array, sequence or float): angles in degrees, any shape ``(...)``.

    Returns:
        Tensor: ``(..., 2)`` floating tensor (the input's float dtype, float32 otherwise).

    Example::

        >>> angle_to_cos_sin(torch.tensor([0.0, 45.0, 90.0])).round(decimals=4)
        tensor([[ 1.,  0.],
                [-0.,  1.],
                [-1., -0.]])
    """
    theta = torch.deg2rad(_float_tensor(degrees, "degrees") * 2.0)
    return torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def cos_sin_to_angle(encoded: Union[Tensor, np.ndarray, Sequence]) -> Tensor:
    r"""Decode ``(cos 2θ, sin 2θ)`` (need not be unit length, e.g. a network's output) to θ in ``[0, 180)`` degrees.

    Args:
        encoded (Tensor, array or sequence): ``(..., 2)`` values.

    Returns:
        Tensor: ``(...)`` angles in degrees in ``[0, 180)``.

    Example::

        >>> cos_sin_to_angle(angle_to_cos_sin(torch.tensor([10.0, 170.0])))
        tensor([ 10., 170.])
    """
    t = _float_tensor(encoded, "encoded")
    if t.dim() == 0 or t.shape[-1] != 2:
        raise ValueError(f"`encoded` must have last dimension 2, got shape {tuple(t.shape)}")
    deg = torch.rad2deg(torch.atan2(t[..., 1], t[..., 0])) / 2.0
    deg = torch.remainder(deg, 180.0)
    return torch.where(deg >= 180.0, deg - 180.0, deg)


def angular_error(pred_deg: Union[Tensor, np.ndarray, Sequence[float], float],
                  true_deg: Union[Tensor, np.ndarray, Sequence[float], float]) -> Tensor:
    r"""Absolute difference of axis angles modulo 180°, in ``[0, 90]`` degrees (element-wise, broadcasting).

    Args:
        pred_deg: predicted angles in degrees (any real values).
        true_deg: true angles in degrees, broadcastable with ``pred_deg``.

    Returns:
        Tensor: periodic errors in degrees in ``[0, 90]``; the paper's metric is its mean (13° on dataset 1).

    Example::

        >>> angular_error(torch.tensor([179.0, 95.0]), torch.tensor([1.0, -85.0]))
        tensor([2., 0.])
    """
    p, t = _float_tensor(pred_deg, "pred_deg"), _float_tensor(true_deg, "true_deg")
    dtype = torch.promote_types(p.dtype, t.dtype)
    diff = torch.remainder(p.to(dtype) - t.to(dtype), 180.0)
    return torch.minimum(diff, 180.0 - diff).clamp(0.0, 90.0)
