"""SelfSupervisedAttentionRegressor: CNN regression plus an attention map learned without labels (Li & Shimada,
*Discovery of image pixels highly contributing to CNN regression*)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_ext._utils.attribution import explained_model_errors
from captum_ext._utils.validation import check_finite, check_in_choices, check_scalar, is_tracing
from captum_ext.models._attention_nets import (  # noqa: F401 (re-exported)
    AttentionNet,
    CoordinateChannels,
    coordinate_grid,
    regressor_cnn,
)

NOISE_KINDS = ("gaussian", "uniform", "images")


class LossParts(NamedTuple):
    """The three terms of eq. 1 (already weighted) and their sum, each a scalar tensor (batch mean)."""

    total: Tensor
    supervised: Tensor  # a · ‖F(I) − P‖²
    noisy: Tensor  # b · ‖F(I′) − P‖²
    area: Tensor  # c · (Area(R) − S_R)²


class SelfSupervisedAttentionRegressor(nn.Module):
    r"""CNN regression with an attention map learned without any mask labels (Li & Shimada, *Discovery of image
    pixels highly contributing to CNN regression*).

    Two parts, as in the paper's Figure 2: a supervised regressor ``F`` (image → parameters) and an attention
    network giving ``W = sigmoid(·) ∈ [0, 1]`` per pixel, with ``R = 1 − W`` the "background". Training minimises
    eq. 1, per image:

    .. math::
        a\,\|F(I) - P\|^2 + b\,\|F(I') - P\|^2 + c\,(\mathrm{Area}(R) - S_R)^2, \qquad I' = I + R \odot N

    with ``N`` a fresh random noise image and ``Area(R)`` the mean of ``R``. The regressor must give the same answer
    when the background is disturbed, and only a fraction ``1 − S_R`` of the image may be protected, so ``W``
    learns to cover exactly the pixels the parameters depend on — the object.

    Noise kinds (``noise``): ``"gaussian"`` (``N ~ 𝒩(0, noise_scale²)``), ``"uniform"``
    (``N ~ U[-noise_scale, noise_scale]``), or ``"images"``: the background is *replaced* by another image of the
    batch, ``N = I_other − I`` (so ``I' = W ⊙ I + R ⊙ I_other``); ``noise_scale`` is unused then.

    Targets are compared in standardised units: :meth:`set_target_normalization` (called by the training helper
    with the training set's mean and standard deviation) stores ``mean`` and ``scale``, the network predicts
    ``(P − mean) / scale`` and :meth:`forward` returns parameters in the targets' own units. This only rescales the
    squared errors of eq. 1 per output.

    Args:
        out_features (int): number of regressed parameters (2 for an ``(x, y)`` point or ``(cos 2θ, sin 2θ)``).
        in_channels (int, optional): image channels. Default: 1.
        area_target (float, optional): ``S_R``, the background share of the image, in ``(0, 1)``. The paper uses
            0.95 for an object covering 5 % of the image. Default: 0.95.
        loss_weights (tuple of 3 floats, optional): ``(a, b, c)`` of eq. 1 (the paper gives no values). The area
            weight ``c = 10`` keeps the attention to its budget: with ``(1, 1, 1)`` (the default before) the
            attention of a dataset-1 model kept covering about a quarter of the image (IoU with the ellipse
            0.33). On the validation splits described under ``noise_scale``, fully trained with noise scale 1.0,
            ``c = 10`` gives IoU 0.72, 0.78, 0.64 on datasets 1, 2, 3 and ``c = 30`` 0.66, 0.73, 0.73: a
            stronger area term trims the rim around the two ellipses but also the single ellipse itself.
            Default: ``(1, 1, 10)``.
        noise (str, optional): ``"gaussian"``, ``"uniform"`` or ``"images"``. On the dataset-1 validation split
            described under ``noise_scale`` (4 epochs), ``"images"`` gave attention IoU 0.78 at 1.85° and
            ``"gaussian"`` (scale 1.0) 0.71 at 1.42°; on dataset 3, fully trained, ``"images"`` gave 0.52.
            Default: ``"gaussian"``.
        noise_scale (float, optional): standard deviation (gaussian) or half-width (uniform) of the noise, in
            image intensity units (images in ``[0, 1]``). Chosen on validation splits of the three ellipse datasets
            (1000 images each, seed 50, apart from training and test data), each model fully trained (8, 30, 12
            epochs on the paper's training sets), attention IoU (``W >= 0.5`` against the ellipse mask) on
            datasets 1, 2, 3: 0.60, 0.52, 0.70 with 0.5 (weaker noise lets a half-protected object through, so
            ``W`` stays near 0.5 on it); 0.72, 0.78, 0.64 with 1.0 (a rim around the two ellipses of dataset 3
            passes 0.5); 0.78, 0.76, 0.79 with 0.75, at errors 1.27°, 1.28 px, 1.24 px; and 0.21 on dataset 3
            with 1.5 (the attention spreads). Default: 0.75.
        width (int, optional): channel width of the regressor (the attention net uses half, so at least 2 unless
            ``attention_net`` is given). Default: 32.
        regressor (nn.Module, optional): your own ``F`` (``N×C×H×W → N×out_features``), replacing the default.
        attention_net (nn.Module, optional): your own attention network (``N×C×H×W → N×1×H×W`` logits).

    Example::

        >>> import torch
        >>> from captum_ext import SelfSupervisedAttentionRegressor
        >>> model = SelfSupervisedAttentionRegressor(out_features=2, in_channels=1, area_target=0.95)
        >>> images, targets = torch.rand(4, 1, 32, 32), torch.rand(4, 2)
        >>> params, attention = model(images)
        >>> params.shape, attention.shape
        (torch.Size([4, 2]), torch.Size([4, 1, 32, 32]))
        >>> parts = model.loss(images, targets, return_parts=True)
        >>> bool(torch.isclose(parts.total, parts.supervised + parts.noisy + parts.area))
        True
    """

    def __init__(
        self,
        out_features: int,
        in_channels: int = 1,
        area_target: float = 0.95,
        loss_weights: Sequence[float] = (1.0, 1.0, 10.0),
        noise: str = "gaussian",
        noise_scale: float = 0.75,
        width: int = 32,
        regressor: Optional[nn.Module] = None,
        attention_net: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        for name, value in (("out_features", out_features), ("in_channels", in_channels), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if attention_net is None and width < 2:  # the default attention net has width // 2 channels
            raise ValueError(f"`width` must be at least 2 (the attention net uses width // 2 channels), got {width}")
        self.area_target = check_scalar(area_target, "area_target", low=0.0, high=1.0, low_open=True,
                                        high_open=True)
        weights = tuple(loss_weights)
        if len(weights) != 3 or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                                        and math.isfinite(w) for w in weights):
            raise ValueError(f"`loss_weights` must be three finite non-negative numbers (a, b, c), got "
                             f"{loss_weights!r}")
        check_in_choices(noise, "noise", NOISE_KINDS)
        check_scalar(noise_scale, "noise_scale", low=0.0, low_open=True)
        self.out_features = out_features
        self.in_channels = in_channels
        self.loss_weights: Tuple[float, float, float] = tuple(float(w) for w in weights)  # type: ignore[assignment]
        self.noise = noise
        self.noise_scale = float(noise_scale)
        self.regressor = regressor if regressor is not None else regressor_cnn(in_channels, out_features, width)
        self.attention_net = attention_net if attention_net is not None else AttentionNet(in_channels, width // 2)
        self.register_buffer("target_mean", torch.zeros(out_features))
        self.register_buffer("target_scale", torch.ones(out_features))

    # ----------------------------------------------------------------------------------------------------------------

    def _check_images(self, images: Any, finite: bool = False) -> Tensor:
        # Shape checks cost nothing; the NaN scan (a device synchronisation) runs only where asked (the loss).
        # Everything is skipped while a graph is traced (torch.fx, TorchScript), which has no concrete values.
        if is_tracing():
            return images
        if not isinstance(images, Tensor):
            raise TypeError(f"`images` must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"`images` must be N×C×H×W, got shape {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            raise ValueError(f"`images` must have {self.in_channels} channel(s) (in_channels), got {images.shape[1]}")
        if not images.is_floating_point():
            raise TypeError(f"`images` must be a floating-point tensor, got {images.dtype}")
        if finite:
            check_finite(images, "images")
        return images

    def _check_targets(self, targets: Any, n: int) -> Tensor:
        if not isinstance(targets, Tensor):
            raise TypeError(f"`targets` must be a torch.Tensor, got {type(targets).__name__}")
        if targets.dim() == 1 and self.out_features == 1:
            targets = targets[:, None]
        if targets.dim() != 2 or targets.shape[1] != self.out_features:
            raise ValueError(f"`targets` must be N×{self.out_features} (out_features), got shape "
                             f"{tuple(targets.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"`targets` must hold one row per image ({n}), got {targets.shape[0]}")
        check_finite(targets, "targets")
        return targets

    def _run_regressor(self, images: Tensor, stacked: bool = False) -> Tensor:
        # A custom regressor is not otherwise held to N×out_features: an N×1 or 1-D output would be broadcast
        # silently against the out_features target mean and scale (and against the targets in the loss).
        with explained_model_errors((images,), "images"):  # too small for the pooling, another dtype, …
            output = self.regressor(images)
        if is_tracing():
            return output
        expected = (images.shape[0], self.out_features)
        if not isinstance(output, Tensor) or tuple(output.shape) != expected:
            got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
            n = expected[0]
            what = f"the loss's {n} clean and disturbed images (stacked)" if stacked else f"{n} images"
            raise ValueError(f"`regressor` must return N×{self.out_features} (out_features) outputs, here "
                             f"{n}×{self.out_features} for {what}, got {got}")
        return output

    def set_target_normalization(self, mean: Union[Tensor, Sequence[float]], scale: Union[Tensor, Sequence[float]]
                                 ) -> None:
        """Store the targets' mean and scale (standard deviation); see the class docstring.

        Args:
            mean (Tensor or sequence of float): ``out_features`` target means.
            scale (Tensor or sequence of float): ``out_features`` positive target standard deviations.

        Raises:
            ValueError: wrong lengths, a non-positive or non-finite scale or a non-finite mean.
        """
        mean_t = torch.as_tensor(mean, dtype=self.target_mean.dtype).reshape(-1)
        scale_t = torch.as_tensor(scale, dtype=self.target_scale.dtype).reshape(-1)
        if mean_t.numel() != self.out_features or scale_t.numel() != self.out_features:
            raise ValueError(f"`mean` and `scale` must hold {self.out_features} values (out_features)")
        if not bool(torch.isfinite(mean_t).all()):
            raise ValueError(f"`mean` must be finite, got {mean_t.tolist()}")
        # An infinite scale would turn every prediction into inf or NaN and every standardised error into 0.
        if not bool(((scale_t > 0) & torch.isfinite(scale_t)).all()):
            raise ValueError(f"`scale` must be positive and finite, got {scale_t.tolist()}")
        self.target_mean.copy_(mean_t)
        self.target_scale.copy_(scale_t)

    # ----------------------------------------------------------------------------------------------------------------

    def attention(self, images: Tensor) -> Tensor:
        """The attention map ``W``.

        Args:
            images (Tensor): ``N×C×H×W`` images.

        Returns:
            Tensor: ``N×1×H×W`` in ``[0, 1]`` (object ≈ 1).
        """
        with explained_model_errors((images,), "images"):
            logits = self.attention_net(self._check_images(images))
        if not is_tracing() and (logits.shape[0] != images.shape[0] or logits.shape[1:] != (1, *images.shape[-2:])):
            raise ValueError(f"`attention_net` must return N×1×H×W logits, got shape {tuple(logits.shape)}")
        return torch.sigmoid(logits)

    def regress(self, images: Tensor) -> Tensor:
        """The regression ``F(images)``, without the attention branch.

        Args:
            images (Tensor): ``N×C×H×W`` images.

        Returns:
            Tensor: ``N×out_features`` parameters in the targets' units.
        """
        standardised = self._run_regressor(self._check_images(images))
        return standardised * self.target_scale + self.target_mean

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """Parameters and attention.

        Args:
            images (Tensor): ``N×C×H×W`` images.

        Returns:
            tuple of Tensor: ``(params N×out_features, attention W N×1×H×W)``. This package's graph-walking
            methods (``NodeBacktrack``, ``MultiLayerClassDiffSaliency``) explain the first element; Captum's
            attribution methods need a forward function returning one tensor, so give them :meth:`regress`.

        Example::

            >>> import torch
            >>> from captum.attr import IntegratedGradients
            >>> from captum_ext import SelfSupervisedAttentionRegressor
            >>> model = SelfSupervisedAttentionRegressor(2, width=4).eval()
            >>> images = torch.rand(2, 1, 16, 16)
            >>> IntegratedGradients(model.regress).attribute(images, target=0, n_steps=4).shape
            torch.Size([2, 1, 16, 16])
        """
        return self.regress(images), self.attention(images)

    def make_noise(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """A noise image ``N`` for each image, of the configured kind (``"images"``: ``I_other − I``).

        Args:
            images (Tensor): ``N×C×H×W`` images.
            generator (torch.Generator, optional): random source.

        Returns:
            Tensor: noise shaped like ``images``.

        Raises:
            ValueError: ``noise="images"`` with fewer than two images.
        """
        if self.noise == "gaussian":
            return self.noise_scale * torch.randn(images.shape, generator=generator, device=images.device,
                                                  dtype=images.dtype)
        if self.noise == "uniform":
            unit = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            return self.noise_scale * (2.0 * unit - 1.0)
        if images.shape[0] < 2:
            raise ValueError('noise="images" needs a batch of at least two images')
        shift = int(torch.randint(1, images.shape[0], (1,), generator=generator))
        return torch.roll(images, shifts=shift, dims=0) - images

    def disturb(self, images: Tensor, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
                ) -> Tuple[Tensor, Tensor]:
        """Return ``(I′, R)``: the image with noise on its background, ``I′ = I + R ⊙ N``, and ``R = 1 − W``.

        Args:
            images (Tensor): ``N×C×H×W`` images.
            noise (Tensor, optional): the noise image ``N`` (default: :meth:`make_noise`).
            generator (torch.Generator, optional): random source for the default noise.

        Returns:
            tuple of Tensor: ``(I′, R)``, both shaped like ``images`` (``R``: ``N×1×H×W``).

        Example::

            >>> import torch
            >>> from captum_ext import SelfSupervisedAttentionRegressor
            >>> model = SelfSupervisedAttentionRegressor(2, width=8).eval()
            >>> disturbed, background = model.disturb(torch.rand(2, 1, 16, 16))
            >>> disturbed.shape, bool(((background >= 0) & (background <= 1)).all())
            (torch.Size([2, 1, 16, 16]), True)
        """
        images = self._check_images(images)
        noise = self.make_noise(images, generator) if noise is None else self._check_noise(noise, images)
        background = 1.0 - self.attention(images)
        return images + background * noise, background

    @staticmethod
    def _check_noise(noise: Any, images: Tensor, finite: bool = False) -> Tensor:
        if not isinstance(noise, Tensor) or noise.shape != images.shape:
            shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"`noise` must be a tensor shaped like `images` {tuple(images.shape)}, got {shape}")
        if finite:  # as for the images: the NaN scan (a device synchronisation) only where the loss is computed
            check_finite(noise, "noise")
        return noise

    def loss(self, images: Tensor, targets: Tensor, noise: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None, return_parts: bool = False
             ) -> Union[Tensor, LossParts]:
        r"""Eq. 1 averaged over the batch.

        Args:
            images (Tensor): ``N×C×H×W`` images.
            targets (Tensor): ``N×out_features`` true parameters ``P``.
            noise (Tensor, optional): the noise image ``N`` (default: :meth:`make_noise`).
            generator (torch.Generator, optional): random source for the default noise.
            return_parts (bool, optional): return :class:`LossParts` (total and the three weighted terms) instead
                of the total only. Default: False.

        Returns:
            Tensor or LossParts: the scalar loss (or its parts).

        Example::

            >>> import torch
            >>> from captum_ext import SelfSupervisedAttentionRegressor
            >>> model = SelfSupervisedAttentionRegressor(2, width=8)
            >>> parts = model.loss(torch.rand(4, 1, 16, 16), torch.rand(4, 2), return_parts=True)
            >>> parts.total.backward()
            >>> sorted(parts._fields)
            ['area', 'noisy', 'supervised', 'total']
        """
        images = self._check_images(images, finite=True)
        targets = self._check_targets(targets, images.shape[0]).to(images.dtype)
        if noise is not None:
            self._check_noise(noise, images, finite=True)
        disturbed, background = self.disturb(images, noise, generator)
        both = self._run_regressor(torch.cat([images, disturbed]), stacked=True)
        wanted = (targets - self.target_mean) / self.target_scale
        clean_pred, noisy_pred = both[: images.shape[0]], both[images.shape[0]:]
        a, b, c = self.loss_weights
        supervised = a * ((clean_pred - wanted) ** 2).sum(dim=1).mean()
        noisy = b * ((noisy_pred - wanted) ** 2).sum(dim=1).mean()
        area = c * ((background.flatten(1).mean(dim=1) - self.area_target) ** 2).mean()
        total = supervised + noisy + area
        return LossParts(total, supervised, noisy, area) if return_parts else total
