"""SensitivityBBox's box learning: fitting the linear map from sensitivity features to boxes over tensors or
streams of batches, choosing the ridge penalty, and saving/loading the fitted map. Kept apart from the attribution
(sensitivity maps, box features), which lives in :mod:`captum_ext.attr.sensitivity_bbox`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_ext import metrics
from captum_ext._utils.attribution import check_batch_size, format_inputs
from captum_ext._utils.chunking import iter_batches
from captum_ext._utils.ridge import RidgeRegression, synchronised
from captum_ext._utils.validation import check_boxes, check_scalar
from captum_ext.attr._box_map_state import FEATURE_SETTINGS, box_map_state, load_box_map_state

if TYPE_CHECKING:  # the class this mixin completes; its methods return it
    from captum_ext.attr.sensitivity_bbox import SensitivityBBox

Batch = Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Any]]


def _per_image(target: Any, n: int) -> bool:
    """Whether ``target`` holds one entry per image (a list or 1-D tensor), checking that it holds ``n``."""
    if isinstance(target, Tensor) and target.numel() == 1:
        return False  # Captum's rule, as in ``attribute``: a one-element tensor applies to every image
    per_image = isinstance(target, list) or (isinstance(target, Tensor) and target.dim() == 1)
    if per_image and len(target) != n:
        raise ValueError(f"`target` must hold one entry per image ({n}), got {len(target)}")
    return per_image


def order_and_clip(boxes: Tensor, width: int, height: int) -> Tensor:
    """Sort each box's corners (x1 <= x2, y1 <= y2) and clip to the image."""
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2]).clamp(0, width)
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2]).clamp(0, width)
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3]).clamp(0, height)
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3]).clamp(0, height)
    return torch.stack([x1, y1, x2, y2], dim=1)


class BoxMapFitting:
    """Fitting, choosing and persisting SensitivityBBox's linear box map (a mixin of
    :class:`captum_ext.SensitivityBBox`, which provides ``attribute``, ``box_features`` and the settings)."""

    grid_size: int
    features: Tuple[str, ...]
    num_classes: Optional[int]
    _regression: Optional[RidgeRegression]
    _has_statistics: bool
    #: The penalties :meth:`fit` chooses among by default and :meth:`select_ridge` tries.
    RIDGE_CANDIDATES: Tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

    @property
    def ridge(self) -> Optional[float]:
        """The ridge penalty of the fitted map (``None`` before :meth:`fit`)."""
        return None if self._regression is None else self._regression.penalty

    def _fitted(self) -> RidgeRegression:
        if self._regression is None or self._regression.weight is None:
            raise RuntimeError("SensitivityBBox is not fitted: call fit(...) or load_state_dict(...) first")
        return self._regression

    # ----------------------------------------------------------------------------------------------------------------
    # Fitting the linear map
    # ----------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _single_input(inputs: Any) -> Tensor:
        if isinstance(inputs, tuple):
            raise TypeError("box prediction takes a single image tensor; pass other model inputs through "
                            "`additional_forward_args`")
        (images,), _ = format_inputs(inputs)
        return images

    def _attribute_batches(self, images: Tensor, target: Any, additional_forward_args: Any,
                           batch_size: Optional[int]) -> Iterator[Tuple[Tensor, Optional[Tensor]]]:
        """Yield ``(sensitivity, explained classes)`` per batch."""
        n = images.shape[0]
        size = n if batch_size is None else check_batch_size(batch_size)
        per_image = _per_image(target, n)
        for part in iter_batches(n, size):
            yield self._sensitivity_and_classes(images[part], target[part] if per_image else target,
                                                additional_forward_args)

    def _batches(self, inputs: Any, boxes: Any, target: Any, batch_size: int) -> Tuple[Iterable[Batch], Optional[int]]:
        if isinstance(inputs, tuple) and inputs and all(isinstance(t, Tensor) for t in inputs):
            self._single_input(inputs)  # raises: a tuple of tensors is multi-input, not a stream of batches
        if isinstance(inputs, Tensor):
            if boxes is None:
                raise ValueError("`boxes` is required when `inputs` is a tensor")
            images = self._single_input(inputs)
            box_tensor = check_boxes(boxes, "boxes")
            if box_tensor.shape[0] != images.shape[0]:
                raise ValueError(f"`inputs` and `boxes` must have the same length, got {images.shape[0]} and "
                                 f"{box_tensor.shape[0]}")
            n = images.shape[0]
            per_image = _per_image(target, n)

            def sliced() -> Iterator[Batch]:
                for part in iter_batches(n, batch_size):
                    yield images[part], box_tensor[part], target[part] if per_image else target

            return sliced(), (n + batch_size - 1) // batch_size
        if boxes is not None:
            raise ValueError("`boxes` must be None when `inputs` is an iterable of (images, boxes[, target]) batches")
        if not isinstance(inputs, Iterable):
            raise TypeError(f"`inputs` must be a tensor or an iterable of batches, got {type(inputs).__name__}")
        length = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]
        return inputs, length

    def _accumulate(self, batches: Iterable[Batch], target: Any, extra: Any, total: Optional[int],
                    show_progress: bool, desc: str) -> Iterator[Tuple[Tensor, Tensor]]:
        """Yield ``(features, normalised_boxes)`` per batch, both float64."""
        for item in tqdm(batches, total=total, disable=not show_progress, desc=desc):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError("each batch must be (images, boxes) or (images, boxes, target)")
            images = self._single_input(item[0])
            batch_boxes = check_boxes(item[1], "boxes")
            if batch_boxes.shape[0] != images.shape[0]:
                raise ValueError(f"a batch has {images.shape[0]} images but {batch_boxes.shape[0]} boxes")
            batch_target = item[2] if len(item) == 3 else target
            sens, classes = self._sensitivity_and_classes(images, batch_target, extra)
            height, width = images.shape[-2:]
            scale = torch.tensor([width, height, width, height], dtype=torch.float64)
            yield self.box_features(sens, classes).cpu(), batch_boxes.to(torch.float64).cpu() / scale

    def fit(
        self,
        inputs: Union[Tensor, Iterable[Batch]],
        boxes: Optional[Tensor] = None,
        target: Any = None,
        additional_forward_args: Any = None,
        ridge: Optional[float] = None,
        batch_size: int = 128,
        show_progress: bool = False,
        synchronize: Optional[bool] = None,
    ) -> "SensitivityBBox":
        r"""Learn the linear map from sensitivity maps to boxes (ridge regression, closed form).

        Any previous fit is discarded, so fitting twice on the same data gives the same map. Under ``torchrun``
        (``torch.distributed`` initialised), give each process its own shard of the data: the sufficient
        statistics ``XᵀX`` and ``Xᵀy`` are summed over the processes (through torchmetrics) before solving, so
        every process ends with the map a single process would fit on all the data.

        Args:
            inputs (Tensor or iterable): ``N×C×H×W`` training images, or an iterable (e.g. a ``DataLoader``) of
                ``(images, boxes)`` or ``(images, boxes, target)`` batches for training sets larger than memory.
            boxes (Tensor, optional): ``N×4`` ground-truth boxes ``(x1, y1, x2, y2)`` in pixels (required with a
                tensor ``inputs``, ``None`` with an iterable).
            target (optional): the class each box belongs to (Captum ``TargetType``); ``None`` uses the predicted
                class. With box data, pass the true labels.
            additional_forward_args (Any, optional): extra model arguments.
            ridge (float, optional): the penalty, relative to the mean feature variance (so it does not depend on
                ``grid_size``). Default: ``None``, chosen among ``1e-6 … 1`` by generalised cross-validation on the
                training statistics (no validation data needed; see :meth:`select_ridge` to choose on validation
                boxes instead). On the benchmark's validation scenes it matched the best validated penalty for the
                default features with 1,000 or 4,000 training images (CorLoc 87.9 % and 89.7 %) and, where a fixed
                penalty of 1e-5 overfits, kept 50 and 200 images at 66.7 % and 83.2 % (against 19.2 % and 78.9 %).
            batch_size (int, optional): images per backward pass with a tensor ``inputs``. Default: 128.
            show_progress (bool, optional): show a progress bar. Default: False.
            synchronize (bool, optional): sum the statistics over the processes of the ``torch.distributed`` group.
                Default: ``None``, whenever such a group with more than one process exists.

        Returns:
            SensitivityBBox: ``self``, fitted.

        Example::

            >>> import torch
            >>> from captum_ext import SensitivityBBox, zoo
            >>> from captum_ext.datasets import scenes
            >>> train = scenes.make_scenes(64, split="train", seed=0)
            >>> sb = SensitivityBBox(zoo.load("scenes_vgg"))
            >>> sb = sb.fit(scenes.normalize(train.images), train.boxes, target=train.labels, batch_size=32)
            >>> loader = [(scenes.normalize(train.images[i : i + 32]), train.boxes[i : i + 32],
            ...            train.labels[i : i + 32]) for i in (0, 32)]   # e.g. a DataLoader
            >>> sb.fit(loader).ridge in sb.RIDGE_CANDIDATES   # chosen by generalised cross-validation
            True
        """
        penalty = None if ridge is None else check_scalar(ridge, "ridge", low=0.0)
        batch_size = check_batch_size(batch_size)
        batches, total = self._batches(inputs, boxes, target, batch_size)
        pairs = self._accumulate(batches, target, additional_forward_args, total, show_progress, "SensitivityBBox.fit")
        return self._fit_pairs(pairs, penalty, synchronize=synchronize is not False)

    def fit_attributions(self, attributions: Tensor, boxes: Tensor, ridge: Optional[float] = None,
                         target: Any = None) -> "SensitivityBBox":
        r"""Fit the linear map on sensitivity maps you already have (no model call).

        Useful to reuse maps across settings, or to put another method's maps (e.g. Captum's
        :class:`~captum.attr.GuidedBackprop`) through the same box regressor.

        Args:
            attributions (Tensor): ``N×C×H×W`` maps.
            boxes (Tensor): ``N×4`` ground-truth boxes in pixels.
            ridge (float, optional): as in :meth:`fit`. Default: ``None``, chosen by generalised cross-validation.
            target (int, Tensor or list, optional): the class each map explains; required only with the
                ``"class"`` features. Default: None.

        Returns:
            SensitivityBBox: ``self``, fitted.
        """
        penalty = None if ridge is None else check_scalar(ridge, "ridge", low=0.0)
        attributions = self._check_attributions(attributions)
        box_tensor = check_boxes(boxes, "boxes")
        if box_tensor.shape[0] != attributions.shape[0]:
            raise ValueError(f"`attributions` and `boxes` must have the same length, got {attributions.shape[0]} "
                             f"and {box_tensor.shape[0]}")
        height, width = attributions.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        pairs = iter([(self.box_features(attributions, target).cpu(), box_tensor.to(torch.float64).cpu() / scale)])
        return self._fit_pairs(pairs, penalty, source="attributions")

    def _fit_pairs(self, pairs: Iterator[Tuple[Tensor, Tensor]], penalty: Optional[float], synchronize: bool = False,
                   source: str = "inputs") -> "SensitivityBBox":
        regression = RidgeRegression(self.feature_dim, 4)
        for features, targets in pairs:
            regression.accumulate(features, targets)
        if synchronize:
            synchronised(regression)  # a no-op without a process group
        if regression.stats["count"] < 2:
            raise ValueError(f"`{source}` must hold at least two training images")
        if penalty is None:
            scores = regression.gcv(self.RIDGE_CANDIDATES)
            penalty = min(sorted(scores, reverse=True), key=lambda p: scores[p])  # ties: the larger penalty
        self._regression, self._has_statistics = regression.solve(penalty), True
        return self

    def select_ridge(
        self,
        inputs: Union[Tensor, Iterable[Batch]],
        boxes: Optional[Tensor] = None,
        target: Any = None,
        additional_forward_args: Any = None,
        candidates: Optional[Sequence[float]] = None,
        batch_size: int = 128,
        show_progress: bool = False,
    ) -> Dict[float, float]:
        r"""Choose the ridge penalty on validation data and keep it (re-solves from the stored statistics).

        Args:
            inputs, boxes, target, additional_forward_args, batch_size, show_progress: validation data, as in
                :meth:`fit`.
            candidates (sequence of float, optional): penalties to try. Default: :attr:`RIDGE_CANDIDATES`,
                ``1e-6 … 1``.

        Returns:
            dict: validation CorLoc (IoU >= 0.5) for each candidate. The best one (ties: the larger penalty) is
            kept as :attr:`ridge`.

        Raises:
            RuntimeError: if called before :meth:`fit`.
        """
        if self._regression is None or not self._has_statistics:
            raise RuntimeError("SensitivityBBox is not fitted: call fit(...) first; select_ridge re-solves it")
        candidates = self.RIDGE_CANDIDATES if candidates is None else candidates
        if len(candidates) == 0:
            raise ValueError("`candidates` must hold at least one ridge penalty")
        penalties = [check_scalar(c, "candidates", low=0.0) for c in candidates]
        batch_size = check_batch_size(batch_size)
        batches, total = self._batches(inputs, boxes, target, batch_size)
        parts = list(self._accumulate(batches, target, additional_forward_args, total, show_progress,
                                      "SensitivityBBox.select_ridge"))
        features = torch.cat([f for f, _ in parts])
        truth = torch.cat([t for _, t in parts])
        scores: Dict[float, float] = {}
        for penalty in penalties:
            weight, bias = self._regression.solution(penalty)
            predicted = order_and_clip(features @ weight + bias, 1, 1)
            scores[penalty] = metrics.corloc(predicted.float(), truth.float())
        best = max(sorted(scores), key=lambda p: (scores[p], p))
        self._regression.solve(best)
        return scores

    # ----------------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ----------------------------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """The fitted map and its statistics as plain tensors and numbers (safe for ``weights_only=True``).

        Example::

            >>> import io, torch
            >>> from captum_ext import SensitivityBBox
            >>> sb = SensitivityBBox(lambda x: (x ** 2).flatten(1).sum(1), grid_size=2)
            >>> sb = sb.fit(torch.rand(8, 1, 4, 4), torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 8))
            >>> buffer = io.BytesIO(); torch.save(sb.state_dict(), buffer); _ = buffer.seek(0)
            >>> restored = SensitivityBBox(sb.forward_func, grid_size=2)
            >>> restored = restored.load_state_dict(torch.load(buffer, weights_only=True))
            >>> restored.ridge == sb.ridge
            True
        """
        return box_map_state(self._settings(), self._fitted())

    def load_state_dict(self, state: Dict[str, Any]) -> "SensitivityBBox":
        """Restore a fitted map saved with :meth:`state_dict`, with the feature set it was fitted on.

        The blur, grid and channel settings must match this instance; the feature set (``features``,
        ``num_classes``) is taken from ``state`` (files saved before feature sets existed hold the paper's
        ``("grid",)`` features).

        Args:
            state (dict): the output of :meth:`state_dict` (e.g. read with ``torch.load(..., weights_only=True)``).

        Returns:
            SensitivityBBox: ``self``, fitted.

        Raises:
            TypeError: ``state`` is not a dict.
            ValueError: a missing key, another format version, or feature settings that differ.
        """
        self._regression, self.features, self.num_classes = load_box_map_state(state, self._settings())
        self._has_statistics = any(str(k).startswith("stats.") for k in state)
        return self

    def _settings(self) -> Dict[str, Any]:
        return {key: getattr(self, key) for key in (*FEATURE_SETTINGS, "features", "num_classes")}
