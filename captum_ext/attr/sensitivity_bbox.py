"""SensitivityBBox: sensitivity maps and a learned linear map to bounding boxes (Ebrahimpour & Noelle).

The box learning (fitting, ridge choice, saving) lives in :mod:`captum_ext.attr._box_fitting`."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext import metrics
from captum_ext._utils.attribution import (
    TensorOrTuple,
    capture_output,
    eval_mode,
    explained_model_errors,
    format_additional_args,
    format_inputs,
    format_output,
    hook_handles,
    run_forward,
    select_targets,
    to_model_dtype,
)
from captum_ext._utils.ridge import RidgeRegression
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext._utils.validation import check_in_choices, check_scalar
from captum_ext.attr._box_fitting import BoxMapFitting, order_and_clip

_CHANNEL_REDUCTIONS = ("max", "mean", "sum")


class SensitivityBBox(BoxMapFitting, GradientAttribution):
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
        self._regression: Optional[RidgeRegression] = None  # features → normalised box corners
        self._has_statistics = False  # select_ridge re-solves from them; a loaded state may lack them

    # ----------------------------------------------------------------------------------------------------------------
    # Sensitivity maps
    # ----------------------------------------------------------------------------------------------------------------

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        abs: bool = True,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        r"""Sensitivity of the target score to every input element.

        The arguments are Captum :class:`~captum.attr.Saliency`'s, in its order. The model runs in eval mode
        (restored afterwards), so BatchNorm statistics are never updated and maps do not depend on the batch.

        Args:
            inputs (Tensor or tuple of Tensor): ``N×C×H×W`` input batch (a tuple for multi-input models); the
                gradient is taken with respect to each.
            target (int, tuple, Tensor or list, optional): Captum's ``TargetType``. ``None`` (default) explains
                the predicted class of each example. Ignored when ``activation_layer`` was given.
            abs (bool, optional): return ``|gradient|`` (the paper's sensitivity, default) or the signed
                gradient.
            additional_forward_args (Any, optional): extra arguments passed to the model after the inputs.

        Returns:
            Tensor or tuple of Tensor: shaped like ``inputs``, in their dtype (inputs in another floating dtype
            than the model's are cast to it for the forward pass).

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
        with torch.enable_grad(), eval_mode(self.forward_func), hook_handles() as handles:
            leaves = tuple(x.detach().requires_grad_(True) for x in to_model_dtype(inputs, self.forward_func))
            captured = capture_output(handles, self.activation_layer) if self.activation_layer is not None else None
            with explained_model_errors(inputs):
                output = run_forward(self.forward_func, leaves, extra)
            if isinstance(output, (tuple, list)) and output and captured is None:
                raise TypeError(f"the model must return a tensor of scores, got a {type(output).__name__}; explain "
                                f"one output through a function or bound method (e.g. `model.regress`)")
            if captured is not None:
                if not captured:
                    raise ValueError("`activation_layer` was not called during the forward pass")
                scores = captured[-1].reshape(captured[-1].shape[0], -1).sum(dim=1)
            else:
                scores, _ = select_targets(output, target)
            # Examples are independent in eval mode, so the gradient of the sum gives each example's gradient.
            grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g.detach().to(x.dtype) for x, g in zip(inputs, grads))

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
        regression = self._fitted()
        features = self.box_features(attributions)
        height, width = attributions.shape[-2:]
        normalised = regression.predict(features)
        scale = torch.tensor([width, height, width, height], dtype=torch.float64, device=features.device)
        return order_and_clip(normalised * scale, width, height).to(torch.float32)

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
        self._fitted()
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
        """:meth:`cam_boxes` for maps you already have.

        Args:
            attributions (Tensor): ``N×C×H×W`` sensitivity maps.
            threshold (float, optional): fraction of each map's maximum, in ``[0, 1]``. Default: 0.5.
            sigma (float, optional): blur in pixels; ``None`` uses the instance's ``sigma``.

        Returns:
            Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)``.
        """
        attributions = self._check_attributions(attributions)
        blur = self.sigma if sigma is None else check_scalar(sigma, "sigma", low=0.0)
        maps = gaussian_blur(self._reduce_channels(attributions.to(torch.float32)), blur)
        return metrics.boxes_from_saliency(maps, threshold=threshold)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False
