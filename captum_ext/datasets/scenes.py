"""Cluttered scenes of real handwritten digits on real photographs, with exact per-object ground truth.

Every scene is a random crop of a real photograph or texture bundled with scikit-image, with real handwritten
digits from scikit-learn's ``load_digits`` (1,797 digits by 43 writers, 8×8) up-sampled to varied sizes, coloured
to contrast with what lies under them, and alpha-composited on top. Each digit's pixel mask (alpha >= 0.5), class
and box are recorded exactly, so localisation and saliency metrics need no annotation guesswork.

Three modes:

``"single"``
    One digit, the object of interest, plus 3–6 *clutter* pieces: digits whose four quadrants were shuffled and
    rotated, so they share the digits' strokes, colours and sizes but show no class. Label = the digit's class.
    For classification, localisation (CorLoc), pointing game and saliency F-measure.
``"multi"``
    Two or three digits of *different* classes plus 0–2 clutter pieces; ``targets`` is the multi-hot label.
    For class-distinct saliency (each class's own object mask is known).
``"roi"``
    The selected digit plus up to three others where they fit, each on a coloured *context plate* (a rectangle
    around the digit, outside its mask). The ROI mask selects the first digit and the label is its class. Its size
    is log-uniform from barely legible (≈ 5 px) to large (≈ 40 px at 64×64), so ROI pixel counts span two orders
    of magnitude. The plate colour is the class's palette colour with probability ``context_prob`` (default 0.9)
    and a random other class's colour otherwise: the background around a region genuinely carries class
    information, as context does in COCO (boats on water). A method that blacks out everything outside the mask
    loses that cue, which matters most for small regions where the digit itself is hard to read — the situation
    Eppel's ROI classifier studies. Set ``context_prob=0.1`` (chance) to make context uninformative for an ablation.

Splits: digits with index ``i % 4 == 3`` form the ``"test"`` split, the rest ``"train"``, so held-out scenes show
digit instances no model saw in training (backgrounds are shared, as photos are scenery, not labels). Use a
different ``seed`` for validation and test sets too.

Models trained on scenes expect inputs standardised with :data:`SCENE_MEAN` / :data:`SCENE_STD`
(:func:`normalize`); masks, boxes and saliency maps are all in pixel coordinates of the ``size×size`` image.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from captum_ext._utils import images as _images
from captum_ext._utils.boxes import masks_to_boxes
from captum_ext._utils.validation import check_in_choices, check_scalar
from captum_ext.datasets import _scene_compose
from captum_ext.datasets._scene_compose import NUM_CLASSES

MODES: Tuple[str, ...] = ("single", "multi", "roi")
SPLITS: Tuple[str, ...] = ("train", "test", "all")

#: Per-channel means of ``"single"`` training scenes (64×64, seed 0, 4,000 scenes) as the first generator drew them,
#: kept fixed because the models in :mod:`captum_ext.zoo` were trained on ``(image - SCENE_MEAN) / SCENE_STD``.
SCENE_MEAN: Tuple[float, float, float] = (0.4841, 0.4291, 0.4107)
#: Per-channel standard deviations of the same scenes, the divisor of :func:`normalize`.
SCENE_STD: Tuple[float, float, float] = (0.2729, 0.2540, 0.2592)

#: ROI-size bin edges (pixel counts) for 64×64 ``"roi"`` scenes: doubling bins like the paper's Table 1,
#: scaled to our image size. Use with :func:`captum_ext.metrics.binned_accuracy`.
ROI_BINS_64: Tuple[int, ...] = (0, 25, 50, 100, 200, 400, 800, 4097)

#: Context-plate colour of each class in ``"roi"`` mode (hues 36° apart), ``10×3`` float32 RGB in [0, 1].
CONTEXT_PALETTE: np.ndarray = _scene_compose.CONTEXT_PALETTE  # defined where the plates are painted

#: Default ``(min, max)`` number of clutter pieces per scene in each mode.
DEFAULT_CLUTTER: Dict[str, Tuple[int, int]] = {"single": (3, 6), "multi": (0, 2), "roi": (0, 0)}

_CHUNK = 256  # scenes per independently seeded chunk: n scenes are a prefix of n + k scenes


def _scene_position(index: object, length: int) -> Optional[int]:
    """``index`` as a position in ``[0, length)`` when it is one integer, ``None`` for slices and sequences."""
    if isinstance(index, (Tensor, np.ndarray)):
        if index.ndim != 0:
            return None  # index tensors and masks select several scenes
        if index.dtype in (torch.bool, np.bool_):
            raise TypeError("SceneBatch index must be an integer, slice or index sequence, got a bool tensor")
    if isinstance(index, (bool, np.bool_)):
        raise TypeError(f"SceneBatch index must be an integer, slice or index sequence, got bool {index!r}")
    if isinstance(index, (slice, list, tuple)):
        return None
    try:
        position = operator.index(index)  # int, NumPy integers, 0-d integer tensors and arrays
    except TypeError:
        return None  # let tensor indexing accept or reject anything else, as before
    if not -length <= position < length:
        raise IndexError(f"SceneBatch index {position} is out of range for a batch of {length} scenes")
    return position + length if position < 0 else position


@dataclass
class SceneBatch:
    """A batch of scenes with exact ground truth (all tensors on CPU).

    Attributes:
        images: ``N×3×H×W`` float32 in [0, 1] (not normalised; see :func:`normalize`).
        labels: ``N`` int64 class of the object of interest (``"single"``, ``"roi"``); in ``"multi"`` mode the
            class of the first (largest) digit.
        targets: ``N×10`` float32 multi-hot of the digit classes present (``"single"``/``"multi"``) or one-hot of
            the label (``"roi"``).
        masks: ``N×1×H×W`` bool pixel mask of the object of interest (``"single"``, ``"roi"``: the ROI mask);
            union of all digits in ``"multi"`` mode.
        boxes: ``N×4`` float32 ``(x1, y1, x2, y2)`` box of ``masks`` (exclusive right/bottom edges).
        roi_sizes: ``N`` int64 pixel count of ``masks``.
        object_labels: ``N×K`` int64 class of every digit, ``-1`` for padding.
        object_masks: ``N×K×H×W`` bool pixel mask of every digit.
        object_boxes: ``N×K×4`` float32 box of every digit (zeros for padding).
        object_sources: ``N×K`` int64 index of every digit in scikit-learn's ``load_digits()`` (``-1`` padding).
        mode: the scene mode.
    """

    images: Tensor
    labels: Tensor
    targets: Tensor
    masks: Tensor
    boxes: Tensor
    roi_sizes: Tensor
    object_labels: Tensor
    object_masks: Tensor
    object_boxes: Tensor
    object_sources: Tensor
    mode: str = field(default="single")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: object) -> "SceneBatch":
        """Index or slice every tensor field at once; always a batch (of one scene for an integer index).

        An integer (``int``, NumPy integer, 0-d integer tensor) counts from the end when negative and raises
        ``IndexError`` outside ``[-len, len)``; slices, index sequences and boolean masks select several scenes; a
        bare bool raises ``TypeError``.
        """
        position = _scene_position(index, len(self))
        if position is not None:
            index = slice(position, position + 1)  # keep the batch dimension
        elif isinstance(index, tuple):
            index = list(index)  # a tuple would index several tensor dimensions, not several scenes
        values = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "mode"}
        return SceneBatch(mode=self.mode, **values)

    def _classes(self, classes: Optional[Tensor]) -> Tensor:
        """``classes`` (default ``labels``) as an ``N`` vector, one class per scene."""
        classes = self.labels if classes is None else torch.as_tensor(classes).reshape(-1)
        if classes.shape[0] != len(self):
            raise ValueError(f"`classes` must have {len(self)} entries, got {classes.shape[0]}")
        return classes

    def class_masks(self, classes: Optional[Tensor] = None) -> Tensor:
        """Per scene, the union of the masks of every digit of one class (e.g. for class-distinct saliency).

        Args:
            classes (Tensor, optional): ``N`` class ids, one per scene (any shape with ``N`` elements). Default:
                ``labels``.

        Returns:
            Tensor: ``N×H×W`` bool; empty for a scene without a digit of its class (which the metrics reject as
            ground truth).

        Raises:
            ValueError: if ``classes`` does not hold one entry per scene.
        """
        classes = self._classes(classes)
        match = self.object_labels == classes[:, None]
        return (self.object_masks & match[:, :, None, None]).any(dim=1)

    def class_boxes(self, classes: Optional[Tensor] = None) -> List[Tensor]:
        """Per scene, the boxes of every digit of one class (the ``gt_boxes`` of :func:`captum_ext.metrics.corloc`).

        Args:
            classes (Tensor, optional): ``N`` class ids, one per scene. Default: ``labels``.

        Returns:
            list of Tensor: ``N`` float32 tensors shaped ``M_i×4`` (``M_i = 0`` for a scene without that class).

        Raises:
            ValueError: if ``classes`` does not hold one entry per scene.
        """
        classes = self._classes(classes)
        return [self.object_boxes[i][self.object_labels[i] == classes[i]] for i in range(len(self))]


def _check_clutter(clutter: object, mode: str) -> Tuple[int, int]:
    """``clutter`` as a ``(min, max)`` pair of ints (the mode's default for ``None``), or an error naming it."""
    if clutter is None:
        return DEFAULT_CLUTTER[mode]
    expected = "a (min, max) pair of integers with 0 <= min <= max"
    if isinstance(clutter, (str, bytes)) or not hasattr(clutter, "__len__") or not hasattr(clutter, "__iter__"):
        raise TypeError(f"`clutter` must be {expected}, got {type(clutter).__name__} {clutter!r}")
    values = list(clutter)
    integers = all(isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in values)
    if len(values) != 2 or not integers or not 0 <= values[0] <= values[1]:
        raise ValueError(f"`clutter` must be {expected}, got {clutter!r}")
    pair = (int(values[0]), int(values[1]))
    if mode == "roi" and pair != DEFAULT_CLUTTER["roi"]:
        # ROI scenes place no clutter pieces; accepting a count there would silently do nothing.
        raise ValueError(f"`clutter` applies to modes 'single' and 'multi' only, got {clutter!r} with mode 'roi'")
    return pair


def make_scenes(
    n: int,
    mode: str = "single",
    split: str = "train",
    seed: int = 0,
    size: int = 64,
    context_prob: Optional[float] = None,
    clutter: Optional[Tuple[int, int]] = None,
) -> SceneBatch:
    r"""Generate ``n`` scenes deterministically from ``seed``.

    Args:
        n: number of scenes (>= 1).
        mode: ``"single"``, ``"multi"`` or ``"roi"`` (see the module docstring).
        split: which digit instances to draw from: ``"train"``, ``"test"`` (held-out digits) or ``"all"``.
        seed: random seed; the same arguments always give the same scenes, and the first ``n`` scenes of a
            larger request are identical to a request for ``n``.
        size: image side in pixels (>= 32); object sizes scale with it.
        context_prob: ``"roi"`` mode only: probability that a digit's context plate shows its own class colour.
            Default: 0.9. The other modes have no plates, so a value there is refused rather than ignored.
        clutter: ``(min, max)`` number of clutter pieces per scene (``"single"``/``"multi"``); default
            :data:`DEFAULT_CLUTTER` of the mode. Fewer pieces make easier scenes (e.g. for a training curriculum).
            ``"roi"`` scenes have no clutter, so there only ``None`` or ``(0, 0)`` is accepted.

    Returns:
        :class:`SceneBatch` with images and exact ground truth.

    Raises:
        TypeError: if ``context_prob`` is not a real number or ``clutter`` is not a pair.
        ValueError: if ``n``, ``size`` or ``seed`` is not an integer in range (bools are refused), ``mode`` or
            ``split`` is unknown, ``context_prob`` is outside ``[0, 1]`` or given outside ``"roi"`` mode, or
            ``clutter`` is not ``(min, max)`` integers with ``0 <= min <= max`` (or is not ``(0, 0)`` in ``"roi"``
            mode).

    Example::

        >>> from captum_ext.datasets import scenes
        >>> batch = scenes.make_scenes(8, mode="single", split="test", seed=1)
        >>> batch.images.shape, batch.labels.shape, batch.boxes.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8]), torch.Size([8, 4]))
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}")
    check_in_choices(mode, "mode", MODES)
    check_in_choices(split, "split", SPLITS)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"`size` must be an integer >= 32, got {size!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    # A string or bool would pass float(); the probability must be a real number in [0, 1].
    if context_prob is not None and mode != "roi":
        raise ValueError(f"`context_prob` applies to mode 'roi' only ({mode!r} scenes have no context plates)")
    context_prob = check_scalar(0.9 if context_prob is None else context_prob, "context_prob", low=0.0, high=1.0)
    clutter = _check_clutter(clutter, mode)

    parts = [
        _scene_compose.render_chunk(
            mode, split, int(seed), c, min(_CHUNK, n - c * _CHUNK), int(size), context_prob, clutter
        )
        for c in range((n + _CHUNK - 1) // _CHUNK)
    ]
    images = torch.from_numpy(np.concatenate([p["images"] for p in parts])).permute(0, 3, 1, 2).contiguous()
    object_labels = torch.from_numpy(np.concatenate([p["object_labels"] for p in parts]))
    object_masks = torch.from_numpy(np.concatenate([p["object_masks"] for p in parts]))
    object_sources = torch.from_numpy(np.concatenate([p["object_sources"] for p in parts]))
    count, max_objects = object_labels.shape
    object_boxes = masks_to_boxes(object_masks.flatten(0, 1)).view(count, max_objects, 4)

    labels = object_labels[:, 0].clone()
    if mode == "multi":
        masks = object_masks.any(dim=1, keepdim=True)
        targets = torch.zeros(count, NUM_CLASSES)
        present = object_labels >= 0
        targets[torch.arange(count)[:, None].expand_as(object_labels)[present], object_labels[present]] = 1.0
    else:
        masks = object_masks[:, :1].clone()
        targets = F.one_hot(labels, NUM_CLASSES).float()
    return SceneBatch(
        images=images.clamp_(0.0, 1.0),
        labels=labels,
        targets=targets,
        masks=masks,
        boxes=masks_to_boxes(masks[:, 0]),
        roi_sizes=masks.flatten(1).sum(dim=1),
        object_labels=object_labels,
        object_masks=object_masks,
        object_boxes=object_boxes,
        object_sources=object_sources,
        mode=mode,
    )


def normalize(images: Tensor) -> Tensor:
    """Standardise ``N×3×H×W`` scene images in [0, 1] with :data:`SCENE_MEAN` / :data:`SCENE_STD`.

    Args:
        images (Tensor): ``N×3×H×W`` floating-point RGB images in ``[0, 1]`` (e.g. ``SceneBatch.images``), on any
            device.

    Returns:
        Tensor: ``(images − SCENE_MEAN) / SCENE_STD`` per channel, same shape, dtype and device (what the zoo
        models expect).
    """
    return _images.normalize(images, SCENE_MEAN, SCENE_STD)


def denormalize(images: Tensor) -> Tensor:
    """Inverse of :func:`normalize`.

    Args:
        images (Tensor): ``N×3×H×W`` floating-point images standardised with :func:`normalize`, on any device.

    Returns:
        Tensor: ``images · SCENE_STD + SCENE_MEAN`` per channel, same shape, dtype and device (back in ``[0, 1]``
        for normalised scenes; not clipped).
    """
    return _images.denormalize(images, SCENE_MEAN, SCENE_STD)


def digit_crops(batch: SceneBatch, side: int = 32, jitter: float = 4.0,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Normalised ``side×side`` crops centred on each scene's object of interest, for curriculum pretraining.

    Trained on whole 64×64 scenes from scratch, a CNN sits at chance for tens of thousands of samples: it must find
    the digit among clutter before any gradient tells it what a digit is. A first stage on these crops teaches it
    to read digits, after which scene training takes off at once (``scripts/train_zoo.py``).

    Args:
        batch: scenes of any mode; the crop follows ``batch.boxes`` (the object of interest).
        side: crop side in pixels (bilinear ``roi_align``; parts outside the image are zero before normalising).
        jitter: the centre moves uniformly by up to ±``jitter`` pixels per axis.
        generator: random generator for the jitter.

    Returns:
        Tensor: ``N×3×side×side``, normalised with :func:`normalize`.

    Example::

        >>> import torch
        >>> from captum_ext.datasets import scenes
        >>> batch = scenes.make_scenes(4, mode="single", seed=0)
        >>> scenes.digit_crops(batch, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 32, 32])
    """
    from torchvision.ops import roi_align

    if not isinstance(batch, SceneBatch):
        raise TypeError(f"`batch` must be a SceneBatch, got {type(batch).__name__}")
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"`side` must be a positive int, got {side!r}")
    offsets = (torch.rand(len(batch), 2, generator=generator) * 2 - 1) * float(jitter)
    centres = (batch.boxes[:, :2] + batch.boxes[:, 2:]) / 2 + offsets
    rois = torch.cat([torch.arange(len(batch))[:, None].float(), centres - side / 2, centres + side / 2], dim=1)
    return normalize(roi_align(batch.images, rois, output_size=(side, side), aligned=True))


_standardise = normalize  # the Dataset's `normalize` flag shadows the function name


class SceneDataset(Dataset):
    """Torch ``Dataset`` over :func:`make_scenes` (generated once, in memory).

    Each item is a dict of tensors: ``image`` (3×H×W, normalised when ``normalize=True``), ``label``, ``target``
    (10 floats), ``mask`` (1×H×W bool), ``box`` (4 floats) and ``roi_size``.

    Args:
        n, mode, split, seed, size, context_prob: as :func:`make_scenes`.
        normalize: standardise images with :data:`SCENE_MEAN` / :data:`SCENE_STD` (what the zoo models expect).

    Example::

        >>> from torch.utils.data import DataLoader
        >>> loader = DataLoader(SceneDataset(64, mode="roi", seed=3), batch_size=16)
        >>> batch = next(iter(loader))
        >>> batch["image"].shape, batch["mask"].shape
        (torch.Size([16, 3, 64, 64]), torch.Size([16, 1, 64, 64]))
    """

    def __init__(
        self, n: int, mode: str = "single", split: str = "train", seed: int = 0, size: int = 64,
        context_prob: Optional[float] = None, normalize: bool = True,
    ) -> None:
        self.scenes = make_scenes(n, mode=mode, split=split, seed=seed, size=size, context_prob=context_prob)
        self.inputs = _standardise(self.scenes.images) if normalize else self.scenes.images

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        s = self.scenes
        return {
            "image": self.inputs[index],
            "label": s.labels[index],
            "target": s.targets[index],
            "mask": s.masks[index],
            "box": s.boxes[index],
            "roi_size": s.roi_sizes[index],
        }
