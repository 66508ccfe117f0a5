"""The model's scores taken from the attribution method's own forward pass, so that the driver needs no second
forward for its predictions.

A gradient method (saliency, Guided Backprop, Grad-CAM) runs the model once on exactly the images it is given; a
forward hook keeps that output when the hooked call's input is the very tensor handed to the method. Where the
method never runs the model on that tensor (Integrated Gradients scales it first; a method may copy it), nothing
is kept and the driver runs its own forward, as before.
"""
from __future__ import annotations

from types import TracebackType
from typing import Any, Optional, Tuple, Type

from torch import Tensor, nn

from captum_ext.evaluation.methods import MapFunction

#: Methods whose forward pass on the given images is the model's plain forward (their hooks change gradients only).
PLAIN_FORWARD_METHODS = ("saliency", "guided_backprop", "grad_cam")


class ForwardTap:
    """Context manager: while open, :meth:`call` returns a method's result and the model's scores for its images.

    Args:
        model (nn.Module): the evaluated model (the hook is removed on exit, also after an exception).
        enabled (bool): whether to watch at all (``False``: :meth:`call` never returns scores).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(3, 2)
        >>> method = lambda images, targets: (model(images)[:, targets].sum(), None)
        >>> with ForwardTap(model, enabled=True) as tap:
        ...     result, scores = tap.call(method, torch.ones(4, 3), torch.tensor(0))
        >>> scores.shape, len(model._forward_hooks)
        (torch.Size([4, 2]), 0)
    """

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        self.model = model
        self.enabled = enabled
        self._handle: Optional[Any] = None
        self._watched: Optional[Tensor] = None
        self._scores: Optional[Tensor] = None

    def __enter__(self) -> "ForwardTap":
        if self.enabled:
            self._handle = self.model.register_forward_hook(self._keep)
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        if self._scores is None and args and args[0] is self._watched and isinstance(output, Tensor):
            self._scores = output.detach()

    def call(self, method: MapFunction, images: Tensor, targets: Tensor, watch: bool = True
             ) -> Tuple[Any, Optional[Tensor]]:
        """Run ``method(images, targets)``; also return the model's scores from its first forward on ``images``.

        Args:
            method (callable): the map function.
            images (Tensor): ``N×3×H×W`` images, passed to the method as they are.
            targets (Tensor): ``N`` target classes.
            watch (bool, optional): whether to keep the scores of this call (``False`` for a method whose forward
                is not the model's plain one). Default: True.

        Returns:
            tuple: ``(method's result, N×K scores or None)``: ``None`` when disabled, not watched, or when the
            method did not run the model on ``images`` itself.
        """
        self._watched, self._scores = (images if self._handle is not None and watch else None), None
        try:
            return method(images, targets), self._scores
        finally:
            self._watched, self._scores = None, None
