"""SensitivityBBox: sensitivity maps and a learned linear map to bounding boxes (Ebrahimpour & Noelle).

The box learning (fitting, ridge choice, saving) lives in :mod:`captum_ext.attr._box_fitting`."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext import metrics
from captum_ext._utils.attribution import (
    TensorOrTuple,
    capture_output,
    cast_like,
    check_examples_independent,
    eval_mode,
    explained_model_errors,
    gradient_leaf,
    gradients_enabled,
    format_additional_args,
    format_inputs,
    format_output,
    hook_handles,
    select_targets,
    to_model_dtype,
)
from captum_ext._utils.ridge import RidgeRegression
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext._utils.validation import check_finite, check_in_choices, check_scalar
from captum_ext.attr._box_features import DEFAULT_FEATURES, box_feature_matrix, check_features, feature_count
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

    **The box features** (choices the paper leaves open, documented here). The colour channels of the first
    input's map are reduced with ``channel_reduction`` (default ``"max"``) and the map is blurred with a Gaussian of
    ``sigma`` pixels (default 4) so single-pixel gradient spikes do not dominate. ``features`` then selects blocks
    of numbers, concatenated in this order whatever order they are given in:

    * ``"grid"`` — the paper's features: average-pool to ``grid_size × grid_size`` (default 16), divide by the
      maximum, raise to ``power`` (default 4) to favour the strongest region over diffuse clutter, and divide by the
      sum: a distribution over the grid, whose centroid (a box centre) is a *linear* function of it;
    * ``"multiscale"`` — the same distribution on 4×4 and 8×8 grids;
    * ``"moments"`` — the map's mass centroid, standard deviations, variances and covariance under the weights
      ``(map / max)^p``, p = 1, 2, 4, 8: centre and extent directly, from the whole map to its peak;
    * ``"cam"`` — the CAM-threshold boxes (largest connected region above ``t · max``, t = 0.2 … 0.6) on the map
      blurred by ``sigma / 2``, in fractions of the image size: region edges, which a linear map of a pooled
      distribution cannot read;
    * ``"window"`` — the same moments (p = 1, 2) and CAM boxes, but of the map inside square windows around its
      peak (the maximum of the map blurred by a tenth of the image side; windows of half-side 1/8, 3/16 and 1/4 of
      the side), plus the peak itself: sensitive clutter away from the object no longer pulls the box;
    * ``"class"`` — the one-hot explained class (needs ``num_classes``): a per-class box offset, for classes whose
      box sits differently around the sensitive pixels. It departs from the paper's class-agnostic map.

    The default ``"window"`` is the best class-agnostic set on validation scenes of the benchmark
    (``benchmarks/bench_sensitivity_bbox.py``): CorLoc 89.7 %, against 85.0 % for ``("moments", "cam")`` and
    77.7 % for the paper's ``"grid"``, which ``features="grid"`` selects.

    **The linear map** (:meth:`fit`) is ridge regression from the features to the box corners divided by the
    image width/height, solved in closed form. :meth:`fit` accumulates ``XᵀX`` and ``Xᵀy`` batch by batch, so the
    training set need not fit in memory; the penalty is chosen by generalised cross-validation on those statistics
    unless given, and :meth:`select_ridge` re-solves for several penalties and keeps the best one on validation
    data. Predicted boxes are clipped to the image and always valid.

    The fitted state is plain tensors and numbers (:meth:`state_dict`), loadable with
    ``torch.load(..., weights_only=True)``.

    Args:
        forward_func (Callable or nn.Module): the classifier (in eval mode), returning ``N×K`` scores.
        grid_size (int, optional): side of the pooled grid of the ``"grid"`` features. Default: 16.
        channel_reduction (str, optional): ``"max"``, ``"mean"`` or ``"sum"`` over the input channels of the map.
            Default: ``"max"``.
        sigma (float, optional): Gaussian blur of the map before pooling, in input pixels; 0 disables it.
            Default: 4.0 (with ``power`` 4, chosen on validation scenes for the paper's features; see the benchmark).
        power (float, optional): exponent applied to the max-normalised pooled map (``"grid"``, ``"multiscale"``).
            Default: 4.0.
        activation_layer (nn.Module, optional): if given, differentiate the summed output of this layer (e.g. the
            last conv block; called once per forward pass) instead of a class score; ``target`` is then ignored.
            Default: None.
        features (str or sequence of str, optional): the feature blocks above (a saved map records them and
            :meth:`load_state_dict` restores them). Default: ``("window",)``.
        num_classes (int, optional): the number of classes, required with the ``"class"`` block. Default: None.

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
        >>> SensitivityBBox(model, features="grid").feature_dim   # the paper's features: the 16×16 grid
        256
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        grid_size: int = 16,
        channel_reduction: str = "max",
        sigma: float = 4.0,
        power: float = 4.0,
        activation_layer: Optional[nn.Module] = None,
        features: Union[str, Sequence[str]] = DEFAULT_FEATURES,
        num_classes: Optional[int] = None,
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
        self.features = check_features(features, num_classes)
        self.num_classes = num_classes if "class" in self.features else None
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

        The arguments are Captum :class:`~captum.attr.Saliency`'s, in its order. A model given as a module or a
        bound method of one runs in eval mode (restored afterwards), so BatchNorm statistics are never updated and
        maps do not depend on the batch (a BatchNorm without running statistics would mix the batch's images: such
        a model is refused for batches). A plain function (``lambda x: model(x)``) is called as it is: put its model
        in eval mode yourself.

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

    def _sensitivity_and_classes(self, images: Tensor, target: Any, additional_forward_args: Any
                                 ) -> Tuple[Tensor, Optional[Tensor]]:
        """:meth:`attribute` of one image tensor, with the class each map explains (for the ``"class"`` features)."""
        (grads,), classes = self._gradients_and_classes((images,), target,
                                                        format_additional_args(additional_forward_args))
        return grads.abs(), classes

    def _gradients(self, inputs: Tuple[Tensor, ...], target: Any, extra: Tuple[Any, ...]) -> Tuple[Tensor, ...]:
        return self._gradients_and_classes(inputs, target, extra)[0]

    def _gradients_and_classes(self, inputs: Tuple[Tensor, ...], target: Any, extra: Tuple[Any, ...]
                               ) -> Tuple[Tuple[Tensor, ...], Optional[Tensor]]:
        """The gradients and the class of each example (``target``, or the predicted class; ``None`` when the
        activation variant's model output has no class axis), read from the same forward pass."""
        classes: Optional[Tensor] = None
        # The summed scores' gradient is each example's own only when examples do not mix in the forward pass.
        check_examples_independent(self.forward_func, inputs[0].shape[0])
        with gradients_enabled(), eval_mode(self.forward_func), hook_handles() as handles:
            leaves = tuple(gradient_leaf(x) for x in to_model_dtype(inputs, self.forward_func))
            captured = capture_output(handles, self.activation_layer) if self.activation_layer is not None else None
            # A compiled model ignores hooks added after it was compiled: the layer is read from its eager module.
            compiled = getattr(self.forward_func, "_orig_mod", None) if captured is not None else None
            forward = compiled if isinstance(compiled, nn.Module) else self.forward_func
            with explained_model_errors(inputs):
                output = forward(*leaves, *extra)
            if captured is None and not isinstance(output, Tensor):  # with a layer, any output (a tuple) will do
                raise TypeError(f"the model must return a tensor of scores, got a {type(output).__name__}; explain "
                                f"one output through a function or bound method (e.g. `model.regress`)")
            if captured is not None:
                if len(captured) != 1:  # the sum would hold one call's output only
                    raise ValueError(f"`activation_layer` ({type(self.activation_layer).__name__}) must be called "
                                     f"exactly once in the forward pass, but was called {len(captured)} times")
                scores = captured[-1].reshape(captured[-1].shape[0], -1).sum(dim=1)
                if isinstance(output, Tensor) and output.dim() == 2:
                    # The map ignores the target, but the box belongs to it (the predicted class when None).
                    _, classes = select_targets(output.detach(), target)
            else:
                scores, classes = select_targets(output, target)
            # Examples are independent in eval mode, so the gradient of the sum gives each example's gradient.
            grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        grads = tuple(torch.zeros_like(x) if g is None else cast_like(g.detach(), x) for x, g in zip(inputs, grads))
        return grads, classes

    # ----------------------------------------------------------------------------------------------------------------
    # Box features and boxes from maps
    # ----------------------------------------------------------------------------------------------------------------

    def _reduce_channels(self, attributions: Tensor) -> Tensor:
        """``N×1×H×W`` float32 maps, each scaled to a maximum of 1 in the attributions' own dtype first: every box
        feature ignores a map's scale, and float64 maps beyond float32's range must not overflow or vanish."""
        maps = attributions.abs()
        if self.channel_reduction == "max":
            maps = maps.amax(dim=1, keepdim=True)
        elif self.channel_reduction == "mean":
            maps = maps.mean(dim=1, keepdim=True)
        else:
            maps = maps.sum(dim=1, keepdim=True)
        peak = maps.amax(dim=(1, 2, 3), keepdim=True)
        return (maps / torch.where(peak > 0, peak, torch.ones_like(peak))).to(torch.float32)  # zero maps stay zero

    @property
    def feature_dim(self) -> int:
        """Length of the feature vector the linear map reads (depends on ``features``, ``grid_size``, classes)."""
        return feature_count(self.features, self.grid_size, self.num_classes)

    def box_features(self, attributions: Tensor, target: Any = None) -> Tensor:
        r"""The features the linear map reads: the blocks of ``features`` concatenated, ``N×feature_dim`` float64.

        With ``features="grid"`` (the paper's) each row is a distribution over the pooled grid (sums to 1).

        Args:
            attributions (Tensor): ``N×C×H×W`` sensitivity maps (e.g. from :meth:`attribute`).
            target (int, Tensor or list, optional): the explained class of each map; needed only by the
                ``"class"`` block. Default: None.

        Returns:
            Tensor: ``N×feature_dim`` features. An all-zero map gives the uniform distribution / full-image boxes.

        Raises:
            ValueError: a malformed map, or ``"class"`` features without a valid ``target``.

        Example::

            >>> import torch
            >>> from captum_ext import SensitivityBBox
            >>> sb = SensitivityBBox(lambda x: x.sum((1, 2, 3)), sigma=0.0, features=("moments", "cam"))
            >>> maps = torch.zeros(1, 1, 4, 4); maps[0, 0, 1:3, 2:4] = 1.0
            >>> f = sb.box_features(maps)
            >>> f[0, :2].tolist(), (f[0, -4:] * 4).tolist()   # centroid; box at threshold 0.6, in pixels
            ([0.75, 0.5], [2.0, 1.0, 4.0, 3.0])
        """
        attributions = self._check_attributions(attributions)
        maps = self._reduce_channels(attributions)
        return box_feature_matrix(maps, self.features, self.grid_size, self.sigma, self.power,
                                  num_classes=self.num_classes, classes=target if "class" in self.features else None)

    @staticmethod
    def _check_attributions(attributions: Tensor) -> Tensor:
        if not isinstance(attributions, Tensor):
            raise TypeError(f"`attributions` must be a torch.Tensor, got {type(attributions).__name__}")
        if attributions.dim() != 4:
            raise ValueError(f"`attributions` must be N×C×H×W, got shape {tuple(attributions.shape)}")
        check_finite(attributions, "attributions")
        return attributions

    def boxes_from_attributions(self, attributions: Tensor, target: Any = None) -> Tensor:
        r"""Apply the fitted linear map to sensitivity maps you already have.

        Args:
            attributions (Tensor): ``N×C×H×W`` maps from :meth:`attribute` (or any map of the same kind).
            target (int, Tensor or list, optional): the class each map explains; required only with the
                ``"class"`` features. Default: None.

        Returns:
            Tensor: ``N×4`` float32 boxes ``(x1, y1, x2, y2)`` in input pixels, clipped to the image, with
            ``x1 <= x2`` and ``y1 <= y2``.

        Raises:
            RuntimeError: if the map has not been fitted (call :meth:`fit` or :meth:`load_state_dict`).
        """
        regression = self._fitted()
        features = self.box_features(attributions, target)
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
        return torch.cat([self.boxes_from_attributions(sens, classes) for sens, classes in
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
        maps = gaussian_blur(self._reduce_channels(attributions), blur)
        return metrics.boxes_from_saliency(maps, threshold=threshold)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False
