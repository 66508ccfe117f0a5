"""SensitivityBBox: sensitivity maps and a learned linear map to bounding boxes (Ebrahimpour & Noelle, seed 004)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_ext import metrics
from captum_ext._utils.attribution import (
    TensorOrTuple,
    capture_output,
    check_batch_size,
    format_additional_args,
    format_inputs,
    format_output,
    hook_handles,
    preserved_module_state,
    run_forward,
    select_targets,
)
from captum_ext._utils.chunking import iter_batches
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext._utils.validation import check_boxes, check_in_choices, check_scalar

_STATE_VERSION = 1
_CHANNEL_REDUCTIONS = ("max", "mean", "sum")
_DEFAULT_RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
Batch = Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Any]]


def _per_image(target: Any, n: int) -> bool:
    """Whether ``target`` holds one entry per image (a list or 1-D tensor), checking that it holds ``n``."""
    per_image = isinstance(target, list) or (isinstance(target, Tensor) and target.dim() == 1)
    if per_image and len(target) != n:
        raise ValueError(f"`target` must hold one entry per image ({n}), got {len(target)}")
    return per_image


def _order_and_clip(boxes: Tensor, width: int, height: int) -> Tensor:
    """Sort each box's corners (x1 <= x2, y1 <= y2) and clip to the image."""
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2]).clamp(0, width)
    x2 = torch.maximum(boxes[:, 0], boxes[:, 2]).clamp(0, width)
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3]).clamp(0, height)
    y2 = torch.maximum(boxes[:, 1], boxes[:, 3]).clamp(0, height)
    return torch.stack([x1, y1, x2, y2], dim=1)


class SensitivityBBox(GradientAttribution):
    r"""Sensitivity maps ``|∂y_c/∂x|`` and a learned linear map from them to bounding boxes.

    Ebrahimpour & Noelle, *Weakly supervised object localization via sensitivity analysis*: a classifier that
    recognises an object knows where it is, and the gradient of the class score with respect to the pixels shows
    it. One backward pass gives the map; a linear map fitted on a few images with boxes turns maps into boxes.

    **The sensitivity map** (:meth:`attribute`) is the absolute gradient of the target class score with respect
    to each input element, exactly Captum's :class:`~captum.attr.Saliency`. With ``activation_layer`` set it is
    instead the gradient of the *sum of that layer's activations* — the authors' later, class-agnostic variant.

    **The box features** (choices the paper leaves open, documented here):

    1. reduce the colour channels of the first input's map with ``channel_reduction`` (default ``"max"``);
    2. blur with a Gaussian of ``sigma`` pixels (default 4) so single-pixel gradient spikes do not dominate;
    3. average-pool to a ``grid_size × grid_size`` grid (default 16), so any input size gives the same features;
    4. divide by the map's maximum, raise to ``power`` (default 4) to favour the strongest region over diffuse
       clutter, and divide by the sum, so the features form a distribution over the grid. A box centre is then a
       *linear* function of the features (the centroid), which is what makes a linear map work.

    **The linear map** (:meth:`fit`) is ridge regression from the features to the box corners divided by the
    image width/height, solved in closed form. :meth:`fit` accumulates ``XᵀX`` and ``Xᵀy`` batch by batch, so the
    training set need not fit in memory; :meth:`select_ridge` re-solves for several penalties from those statistics
    and keeps the best one on validation data. Predicted boxes are clipped to the image and always valid.

    The fitted state is plain tensors and numbers (:meth:`state_dict`), loadable with
    ``torch.load(..., weights_only=True)``.

    Args:
        forward_func (Callable or nn.Module): the classifier (in eval mode), returning ``N×K`` scores.
        grid_size (int, optional): side of the pooled feature grid. Default: 16.
        channel_reduction (str, optional): ``"max"``, ``"mean"`` or ``"sum"`` over the input channels of the map.
            Default: ``"max"``.
        sigma (float, optional): Gaussian blur of the map before pooling, in input pixels; 0 disables it.
            Default: 4.0 (with ``power`` 4 and ridge 0.1, chosen on validation scenes; see the benchmark).
        power (float, optional): exponent applied to the max-normalised pooled map. Default: 4.0.
        activation_layer (nn.Module, optional): if given, differentiate the summed output of this layer (e.g. the
            last conv block) instead of a class score; ``target`` is then ignored. Default: None.

    Example::

        >>> import torch
        >>> from captum_ext import SensitivityBBox, zoo
        >>> from captum_ext.datasets import scenes
        >>> model = zoo.load("scenes_vgg").eval()
        >>> train = scenes.make_scenes(64, split="train", seed=0)
        >>> sb = SensitivityBBox(model)
        >>> sens = sb.attribute(scenes.normalize(train.images[:4]), target=train.labels[:4])
        >>> sens.shape
        torch.Size([4, 3, 64, 64])
        >>> sb = sb.fit(scenes.normalize(train.images), train.boxes, target=train.labels)
        >>> test = scenes.make_scenes(4, split="test", seed=1)
        >>> sb.predict_boxes(scenes.normalize(test.images)).shape
        torch.Size([4, 4])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        grid_size: int = 16,
        channel_reduction: str = "max",
        sigma: float = 4.0,
        power: float = 4.0,
        activation_layer: Optional[nn.Module] = None,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be callable (an nn.Module or function), got "
                            f"{type(forward_func).__name__}")
        check_scalar(grid_size, "grid_size", low=1, integer=True)
        check_in_choices(channel_reduction, "channel_reduction", _CHANNEL_REDUCTIONS)
        if activation_layer is not None and not isinstance(activation_layer, nn.Module):
            raise TypeError(f"`activation_layer` must be an nn.Module, got {type(activation_layer).__name__}")
        super().__init__(forward_func)
        self.grid_size = grid_size
        self.channel_reduction = channel_reduction
        self.sigma = check_scalar(sigma, "sigma", low=0.0)
        self.power = check_scalar(power, "power", low=0.0, low_open=True)
        self.activation_layer = activation_layer
        self.ridge: Optional[float] = None
        self._stats: Optional[Dict[str, Tensor]] = None
        self._weight: Optional[Tensor] = None  # (grid²)×4, float64, CPU
        self._bias: Optional[Tensor] = None  # 4, float64, CPU

    # ----------------------------------------------------------------------------------------------------------------
    # Sensitivity maps
    # ----------------------------------------------------------------------------------------------------------------

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        abs: bool = True,
    ) -> TensorOrTuple:
        r"""Sensitivity of the target score to every input element.

        Args:
            inputs (Tensor or tuple of Tensor): ``N×C×H×W`` input batch (a tuple for multi-input models); the
                gradient is taken with respect to each.
            target (int, tuple, Tensor or list, optional): Captum's ``TargetType``. ``None`` (default) explains
                the predicted class of each example. Ignored when ``activation_layer`` was given.
            additional_forward_args (Any, optional): extra arguments passed to the model after the inputs.
            abs (bool, optional): return ``|gradient|`` (the paper's sensitivity, default) or the signed
                gradient.

        Returns:
            Tensor or tuple of Tensor: shaped like ``inputs``.

        Example::

            >>> import torch
            >>> from captum_ext import SensitivityBBox
            >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
            >>> sens = SensitivityBBox(model).attribute(torch.randn(2, 3, 2, 2), target=1)
            >>> torch.equal(sens, model[1].weight[1].abs().view(3, 2, 2).expand(2, 3, 2, 2))
            True
        """
        formatted, was_tuple = format_inputs(inputs)
        grads = self._gradients(formatted, target, format_additional_args(additional_forward_args))
        if abs:
            grads = tuple(g.abs() for g in grads)
        return format_output(grads, was_tuple)

    def _gradients(self, inputs: Tuple[Tensor, ...], target: Any, extra: Tuple[Any, ...]) -> Tuple[Tensor, ...]:
        with torch.enable_grad(), preserved_module_state(self.forward_func), hook_handles() as handles:
            leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
            captured = capture_output(handles, self.activation_layer) if self.activation_layer is not None else None
            output = run_forward(self.forward_func, leaves, extra)
            if captured is not None:
                if not captured:
                    raise ValueError("`activation_layer` was not called during the forward pass")
                scores = captured[-1].reshape(captured[-1].shape[0], -1).sum(dim=1)
            else:
                scores, _ = select_targets(output, target)
            # Examples are independent in eval mode, so the gradient of the sum gives each example's gradient.
            grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g.detach() for x, g in zip(inputs, grads))

    # ----------------------------------------------------------------------------------------------------------------
    # Box features and boxes from maps
    # ----------------------------------------------------------------------------------------------------------------

    def _reduce_channels(self, attributions: Tensor) -> Tensor:
        maps = attributions.abs()
        if self.channel_reduction == "max":
            return maps.amax(dim=1, keepdim=True)
        if self.channel_reduction == "mean":
            return maps.mean(dim=1, keepdim=True)
        return maps.sum(dim=1, keepdim=True)

    def box_features(self, attributions: Tensor) -> Tensor:
        r"""The features the linear map reads: ``N×grid_size²`` float64, each row a distribution (sums to 1).

        Args:
            attributions (Tensor): ``N×C×H×W`` sensitivity maps (e.g. from :meth:`attribute`).

        Returns:
            Tensor: ``N×grid_size²`` features. An all-zero map gives the uniform distribution.
        """
        attributions = self._check_attributions(attributions)
        maps = gaussian_blur(self._reduce_channels(attributions.to(torch.float32)), self.sigma)
        pooled = F.adaptive_avg_pool2d(maps, self.grid_size).flatten(1).to(torch.float64)
        peak = pooled.amax(dim=1, keepdim=True)
        sharpened = torch.where(peak > 0, pooled / peak.clamp_min(1e-300), torch.ones_like(pooled)) ** self.power
        return sharpened / sharpened.sum(dim=1, keepdim=True)

    @staticmethod
    def _check_attributions(attributions: Tensor) -> Tensor:
        if not isinstance(attributions, Tensor):
            raise TypeError(f"`attributions` must be a torch.Tensor, got {type(attributions).__name__}")
        if attributions.dim() != 4:
            raise ValueError(f"`attributions` must be N×C×H×W, got shape {tuple(attributions.shape)}")
        if not bool(torch.isfinite(attributions).all()):
            raise ValueError("`attributions` contains NaN or inf values")
        return attributions

    def boxes_from_attributions(self, attributions: Tensor) -> Tensor:
        r"""Apply the fitted linear map to sensitivity maps you already have.

        Args:
            attributions (Tensor): ``N×C×H×W`` maps from :meth:`attribute` (or any map of the same kind).

        Returns:
            Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)`` in input pixels, clipped to the image, with
            ``x1 <= x2`` and ``y1 <= y2``.

        Raises:
            RuntimeError: if the map has not been fitted (call :meth:`fit` or :meth:`load_state_dict`).
        """
        if self._weight is None or self._bias is None:
            raise RuntimeError("SensitivityBBox is not fitted: call fit(...) or load_state_dict(...) first")
        features = self.box_features(attributions)
        height, width = attributions.shape[-2:]
        normalised = features @ self._weight.to(features.device) + self._bias.to(features.device)
        scale = torch.tensor([width, height, width, height], dtype=torch.float64, device=features.device)
        return _order_and_clip(normalised * scale, width, height).to(torch.float32)

    def predict_boxes(
        self,
        inputs: Tensor,
        target: Any = None,
        additional_forward_args: Any = None,
        batch_size: Optional[int] = None,
    ) -> Tensor:
        r"""Boxes for new images: one backward pass for the map, then the fitted linear map.

        Args:
            inputs (Tensor): ``N×C×H×W`` images, preprocessed as the model expects.
            target (int, Tensor or list, optional): the class whose box to predict; ``None`` (default) uses the
                predicted class.
            additional_forward_args (Any, optional): extra model arguments.
            batch_size (int, optional): process this many images at a time (default: all at once).

        Returns:
            Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)`` in input pixels, valid and inside the image.

        Raises:
            RuntimeError: if called before :meth:`fit` / :meth:`load_state_dict`.

        Example::

            >>> import torch
            >>> from captum_ext import SensitivityBBox, zoo
            >>> from captum_ext.datasets import scenes
            >>> train, test = scenes.make_scenes(64, seed=0), scenes.make_scenes(3, split="test", seed=1)
            >>> sb = SensitivityBBox(zoo.load("scenes_vgg"))
            >>> sb = sb.fit(scenes.normalize(train.images), train.boxes, target=train.labels)
            >>> boxes = sb.predict_boxes(scenes.normalize(test.images), target=test.labels)
            >>> boxes.shape, bool((boxes[:, 2:] >= boxes[:, :2]).all())
            (torch.Size([3, 4]), True)
        """
        if self._weight is None:
            raise RuntimeError("SensitivityBBox is not fitted: call fit(...) or load_state_dict(...) first")
        images = self._single_input(inputs)
        return torch.cat([self.boxes_from_attributions(sens) for sens in
                          self._attribute_batches(images, target, additional_forward_args, batch_size)])

    def cam_boxes(
        self,
        inputs: Tensor,
        target: Any = None,
        additional_forward_args: Any = None,
        threshold: float = 0.5,
        sigma: Optional[float] = None,
    ) -> Tensor:
        r"""Boxes without any training: the CAM threshold heuristic on the (blurred) sensitivity map.

        The map is reduced over channels, blurred with ``sigma`` (default: the instance's ``sigma``), thresholded
        at ``threshold · max`` and boxed around its largest connected component
        (:func:`captum_ext.metrics.boxes_from_saliency`).

        Args:
            inputs (Tensor): ``N×C×H×W`` images.
            target (optional): as in :meth:`attribute`.
            additional_forward_args (Any, optional): extra model arguments.
            threshold (float, optional): fraction of each map's maximum, in ``[0, 1]``. Default: 0.5.
            sigma (float, optional): blur in pixels; ``None`` uses the instance's ``sigma``.

        Returns:
            Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)``.

        Example::

            >>> import torch
            >>> from captum_ext import SensitivityBBox, zoo
            >>> from captum_ext.datasets import scenes
            >>> batch = scenes.make_scenes(2, split="test", seed=1)
            >>> SensitivityBBox(zoo.load("scenes_vgg")).cam_boxes(scenes.normalize(batch.images)).shape
            torch.Size([2, 4])
        """
        images = self._single_input(inputs)
        sens = self.attribute(images, target=target, additional_forward_args=additional_forward_args)
        return self.cam_boxes_from_attributions(sens, threshold=threshold, sigma=sigma)

    def cam_boxes_from_attributions(self, attributions: Tensor, threshold: float = 0.5,
                                    sigma: Optional[float] = None) -> Tensor:
        """:meth:`cam_boxes` for maps you already have (``N×C×H×W``)."""
        attributions = self._check_attributions(attributions)
        blur = self.sigma if sigma is None else check_scalar(sigma, "sigma", low=0.0)
        maps = gaussian_blur(self._reduce_channels(attributions.to(torch.float32)), blur)
        return metrics.boxes_from_saliency(maps, threshold=threshold)

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
                           batch_size: Optional[int]) -> Iterator[Tensor]:
        n = images.shape[0]
        size = n if batch_size is None else check_batch_size(batch_size)
        per_image = _per_image(target, n)
        for part in iter_batches(n, size):
            yield self.attribute(images[part], target=target[part] if per_image else target,
                                 additional_forward_args=additional_forward_args)

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
            sens = self.attribute(images, target=batch_target, additional_forward_args=extra)
            height, width = images.shape[-2:]
            scale = torch.tensor([width, height, width, height], dtype=torch.float64)
            yield self.box_features(sens).cpu(), batch_boxes.to(torch.float64).cpu() / scale

    def fit(
        self,
        inputs: Union[Tensor, Iterable[Batch]],
        boxes: Optional[Tensor] = None,
        target: Any = None,
        additional_forward_args: Any = None,
        ridge: float = 0.1,
        batch_size: int = 128,
        show_progress: bool = False,
    ) -> "SensitivityBBox":
        r"""Learn the linear map from sensitivity maps to boxes (ridge regression, closed form).

        Any previous fit is discarded, so fitting twice on the same data gives the same map.

        Args:
            inputs (Tensor or iterable): ``N×C×H×W`` training images, or an iterable (e.g. a ``DataLoader``) of
                ``(images, boxes)`` or ``(images, boxes, target)`` batches for training sets larger than memory.
            boxes (Tensor, optional): ``N×4`` ground-truth boxes ``(x1, y1, x2, y2)`` in pixels (required with a
                tensor ``inputs``, ``None`` with an iterable).
            target (optional): the class each box belongs to (Captum ``TargetType``); ``None`` uses the predicted
                class. With box data, pass the true labels.
            additional_forward_args (Any, optional): extra model arguments.
            ridge (float, optional): the penalty, relative to the mean feature variance (so it does not depend on
                ``grid_size``). Default: 0.1.
            batch_size (int, optional): images per backward pass with a tensor ``inputs``. Default: 128.
            show_progress (bool, optional): show a progress bar. Default: False.

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
            >>> sb.fit(loader).ridge
            0.1
        """
        penalty = check_scalar(ridge, "ridge", low=0.0)
        batch_size = check_batch_size(batch_size)
        batches, total = self._batches(inputs, boxes, target, batch_size)
        pairs = self._accumulate(batches, target, additional_forward_args, total, show_progress, "SensitivityBBox.fit")
        return self._fit_pairs(pairs, penalty)

    def fit_attributions(self, attributions: Tensor, boxes: Tensor, ridge: float = 0.1) -> "SensitivityBBox":
        r"""Fit the linear map on sensitivity maps you already have (no model call).

        Useful to reuse maps across settings, or to put another method's maps (e.g. Captum's
        :class:`~captum.attr.GuidedBackprop`) through the same box regressor.

        Args:
            attributions (Tensor): ``N×C×H×W`` maps.
            boxes (Tensor): ``N×4`` ground-truth boxes in pixels.
            ridge (float, optional): as in :meth:`fit`. Default: 0.1.

        Returns:
            SensitivityBBox: ``self``, fitted.
        """
        penalty = check_scalar(ridge, "ridge", low=0.0)
        attributions = self._check_attributions(attributions)
        box_tensor = check_boxes(boxes, "boxes")
        if box_tensor.shape[0] != attributions.shape[0]:
            raise ValueError(f"`attributions` and `boxes` must have the same length, got {attributions.shape[0]} "
                             f"and {box_tensor.shape[0]}")
        height, width = attributions.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        pairs = iter([(self.box_features(attributions).cpu(), box_tensor.to(torch.float64).cpu() / scale)])
        return self._fit_pairs(pairs, penalty)

    def _fit_pairs(self, pairs: Iterator[Tuple[Tensor, Tensor]], penalty: float) -> "SensitivityBBox":
        dim = self.grid_size**2
        stats = {
            "count": torch.zeros((), dtype=torch.float64),
            "x_sum": torch.zeros(dim, dtype=torch.float64),
            "y_sum": torch.zeros(4, dtype=torch.float64),
            "xtx": torch.zeros(dim, dim, dtype=torch.float64),
            "xty": torch.zeros(dim, 4, dtype=torch.float64),
        }
        for features, targets in pairs:
            stats["count"] += features.shape[0]
            stats["x_sum"] += features.sum(dim=0)
            stats["y_sum"] += targets.sum(dim=0)
            stats["xtx"] += features.T @ features
            stats["xty"] += features.T @ targets
        if stats["count"] < 2:
            raise ValueError("`inputs` must hold at least two training images")
        self._stats = stats
        self._solve(penalty)
        return self

    def _solve(self, ridge: float) -> None:
        assert self._stats is not None
        weight, bias = self._solution(ridge)
        self._weight, self._bias, self.ridge = weight, bias, ridge

    def _solution(self, ridge: float) -> Tuple[Tensor, Tensor]:
        stats = self._stats
        assert stats is not None
        n = stats["count"]
        mean_x, mean_y = stats["x_sum"] / n, stats["y_sum"] / n
        # Centred statistics: the intercept is not penalised.
        cxx = stats["xtx"] - n * torch.outer(mean_x, mean_x)
        cxy = stats["xty"] - n * torch.outer(mean_x, mean_y)
        dim = cxx.shape[0]
        scale = (torch.trace(cxx) / dim).clamp_min(1e-300)
        regulariser = (ridge * scale + 1e-12 * scale) * torch.eye(dim, dtype=torch.float64)
        weight = torch.linalg.solve(cxx + regulariser, cxy)
        bias = mean_y - mean_x @ weight
        return weight, bias

    def select_ridge(
        self,
        inputs: Union[Tensor, Iterable[Batch]],
        boxes: Optional[Tensor] = None,
        target: Any = None,
        additional_forward_args: Any = None,
        candidates: Sequence[float] = _DEFAULT_RIDGE_GRID,
        batch_size: int = 128,
        show_progress: bool = False,
    ) -> Dict[float, float]:
        r"""Choose the ridge penalty on validation data and keep it (re-solves from the stored statistics).

        Args:
            inputs, boxes, target, additional_forward_args, batch_size, show_progress: validation data, as in
                :meth:`fit`.
            candidates (sequence of float, optional): penalties to try. Default: ``1e-4 … 1``.

        Returns:
            dict: validation CorLoc (IoU >= 0.5) for each candidate. The best one (ties: the larger penalty) is
            kept as :attr:`ridge`.

        Raises:
            RuntimeError: if called before :meth:`fit`.
        """
        if self._stats is None:
            raise RuntimeError("SensitivityBBox is not fitted: call fit(...) first; select_ridge re-solves it")
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
            weight, bias = self._solution(penalty)
            predicted = _order_and_clip(features @ weight + bias, 1, 1)
            scores[penalty] = metrics.corloc(predicted.float(), truth.float())
        best = max(sorted(scores), key=lambda p: (scores[p], p))
        self._solve(best)
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
        if self._stats is None or self._weight is None or self._bias is None or self.ridge is None:
            raise RuntimeError("SensitivityBBox is not fitted: nothing to save")
        state: Dict[str, Any] = {
            "version": _STATE_VERSION,
            "grid_size": self.grid_size,
            "channel_reduction": self.channel_reduction,
            "sigma": self.sigma,
            "power": self.power,
            "ridge": self.ridge,
            "weight": self._weight.clone(),
            "bias": self._bias.clone(),
        }
        state.update({f"stats.{k}": v.clone() for k, v in self._stats.items()})
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> "SensitivityBBox":
        """Restore a fitted map saved with :meth:`state_dict`; the feature settings must match this instance.

        Raises:
            ValueError: a missing key, another format version, or feature settings that differ.
        """
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be a dict from state_dict(), got {type(state).__name__}")
        required = ["version", "grid_size", "channel_reduction", "sigma", "power", "ridge", "weight", "bias"]
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"`state` is missing keys {missing}")
        if state["version"] != _STATE_VERSION:
            raise ValueError(f"`state` has format version {state['version']}, expected {_STATE_VERSION}")
        for key in ("grid_size", "channel_reduction", "sigma", "power"):
            if state[key] != getattr(self, key):
                raise ValueError(f"`state` was fitted with {key}={state[key]!r}, this instance has "
                                 f"{key}={getattr(self, key)!r}")
        dim = self.grid_size**2
        weight, bias = state["weight"], state["bias"]
        if not isinstance(weight, Tensor) or weight.shape != (dim, 4) or not isinstance(bias, Tensor) or \
                bias.shape != (4,):
            raise ValueError(f"`state` weight/bias must be {dim}×4 and 4 tensors")
        self._weight = weight.to(torch.float64).cpu().clone()
        self._bias = bias.to(torch.float64).cpu().clone()
        self.ridge = float(state["ridge"])
        stats = {k[len("stats."):]: v.to(torch.float64).cpu().clone() for k, v in state.items()
                 if k.startswith("stats.")}
        self._stats = stats or None
        return self

    @property
    def multiplies_by_inputs(self) -> bool:
        return False
