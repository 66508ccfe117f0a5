"""Closed-form ridge regression from sufficient statistics (``XᵀX``, ``Xᵀy``, sums, count).

The statistics add up over batches, so a training set larger than memory is fitted batch by batch, and statistics
gathered in several processes sum to those of one process. Several penalties are solved from the same statistics
without touching the data again.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

STATISTICS = ("count", "x_sum", "y_sum", "y_sq_sum", "xtx", "xty")


class RidgeRegression:
    """Ridge regression ``y ≈ x W + b`` in float64 on the CPU, the intercept unpenalised.

    Args:
        in_features (int): length of ``x``.
        out_features (int): length of ``y``.

    Example::

        >>> import torch
        >>> from captum_ext._utils.ridge import RidgeRegression
        >>> x = torch.rand(50, 3, dtype=torch.float64)
        >>> ridge = RidgeRegression(3, 1).accumulate(x, x @ torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64))
        >>> _ = ridge.solve(0.0)
        >>> torch.allclose(ridge.weight[:, 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        self.in_features = in_features
        self.out_features = out_features
        self.stats: Dict[str, Tensor] = {
            "count": torch.zeros((), dtype=torch.float64),
            "x_sum": torch.zeros(in_features, dtype=torch.float64),
            "y_sum": torch.zeros(out_features, dtype=torch.float64),
            "y_sq_sum": torch.zeros(out_features, dtype=torch.float64),
            "xtx": torch.zeros(in_features, in_features, dtype=torch.float64),
            "xty": torch.zeros(in_features, out_features, dtype=torch.float64),
        }
        self.weight: Optional[Tensor] = None  # in×out
        self.bias: Optional[Tensor] = None  # out
        self.penalty: Optional[float] = None

    def accumulate(self, features: Tensor, targets: Tensor) -> "RidgeRegression":
        """Add one batch (``B×in`` features, ``B×out`` targets) to the statistics; returns ``self``."""
        features = features.detach().to("cpu", torch.float64)
        targets = targets.detach().to("cpu", torch.float64)
        self.stats["count"] += features.shape[0]
        self.stats["x_sum"] += features.sum(dim=0)
        self.stats["y_sum"] += targets.sum(dim=0)
        self.stats["y_sq_sum"] += (targets * targets).sum(dim=0)
        self.stats["xtx"] += features.T @ features
        self.stats["xty"] += features.T @ targets
        return self

    def _centred(self) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        stats = self.stats
        n = stats["count"]
        mean_x, mean_y = stats["x_sum"] / n, stats["y_sum"] / n
        # Centred statistics: the intercept is not penalised.
        cxx = stats["xtx"] - n * torch.outer(mean_x, mean_x)
        cxy = stats["xty"] - n * torch.outer(mean_x, mean_y)
        return mean_x, mean_y, cxx, cxy, (torch.trace(cxx) / cxx.shape[0]).clamp_min(1e-300)

    @staticmethod
    def _absolute(penalty: float, scale: Tensor) -> Tensor:
        """The penalty added to ``XᵀX``'s diagonal: relative to the mean feature variance, plus a tiny floor."""
        return (penalty + 1e-12) * scale

    def solution(self, penalty: float) -> Tuple[Tensor, Tensor]:
        """``(W, b)`` for a penalty relative to the mean feature variance (so it does not depend on the number of
        features); the statistics are left unchanged."""
        mean_x, mean_y, cxx, cxy, scale = self._centred()
        regulariser = self._absolute(penalty, scale) * torch.eye(cxx.shape[0], dtype=torch.float64)
        weight = torch.linalg.solve(cxx + regulariser, cxy)
        return weight, mean_y - mean_x @ weight

    def gcv(self, penalties: Sequence[float]) -> Dict[float, float]:
        """Generalised cross-validation score of each penalty (Golub, Heath & Wahba, 1979), from the statistics
        alone: ``n · RSS / (n − df − 1)²``, with ``RSS`` the training residual sum of squares over all outputs and
        ``df = Σ λᵢ / (λᵢ + α)`` the fit's degrees of freedom (``λᵢ`` the eigenvalues of the centred ``XᵀX``; the
        ``1`` is the intercept). It approximates the leave-one-out error: lower is better.

        Args:
            penalties (sequence of float): penalties, relative as in :meth:`solution`.

        Returns:
            dict: the score of each penalty; ``inf`` when less than one residual degree of freedom is left
            (``n − df − 1 < 1``: the fit nearly interpolates, and the score is 0/0).
        """
        if "y_sq_sum" not in self.stats:
            raise RuntimeError("generalised cross-validation needs the targets' sum of squares, which statistics "
                               "saved by earlier versions lack: fit again")
        mean_x, mean_y, cxx, cxy, scale = self._centred()
        n = self.stats["count"]
        centred_yty = (self.stats["y_sq_sum"] - n * mean_y * mean_y).sum()
        eigenvalues, vectors = torch.linalg.eigh(cxx)
        eigenvalues = eigenvalues.clamp_min(0)
        projected = vectors.T @ cxy  # the targets' cross-products in the eigenbasis
        scores: Dict[float, float] = {}
        for penalty in penalties:
            alpha = self._absolute(penalty, scale)
            shrink = eigenvalues / (eigenvalues + alpha)
            # RSS = yᵀy − 2 tr(Wᵀ Xᵀy) + tr(Wᵀ XᵀX W), W = V diag(1/(λ+α)) Vᵀ Xᵀy, all in the eigenbasis.
            fitted = (projected**2 / (eigenvalues + alpha)[:, None]).sum(dim=1)
            rss = centred_yty - (2 * fitted - (shrink * fitted)).sum()
            remaining = n - shrink.sum() - 1
            scores[float(penalty)] = float(n * rss.clamp_min(0) / remaining**2) if remaining >= 1 else float("inf")
        return scores

    def solve(self, penalty: float) -> "RidgeRegression":
        """Solve for ``penalty`` and keep the solution; returns ``self``."""
        self.weight, self.bias = self.solution(penalty)
        self.penalty = float(penalty)
        return self

    def predict(self, features: Tensor) -> Tensor:
        """``features @ W + b`` in float64 on the features' device."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("the regression is not solved yet")
        return features.to(torch.float64) @ self.weight.to(features.device) + self.bias.to(features.device)


def synchronised(regression: RidgeRegression) -> RidgeRegression:
    """The regression with its statistics summed over every process of the ``torch.distributed`` group (through
    a torchmetrics ``Metric`` with sum states, as all of the project's cross-process sums); itself when running
    alone. Each process then holds the statistics of the whole dataset.

    Args:
        regression (RidgeRegression): this process's statistics.

    Returns:
        RidgeRegression: ``regression``, its statistics replaced by the sums.
    """
    import torch.distributed as dist
    from torchmetrics import Metric

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return regression

    class _Statistics(Metric):
        full_state_update = False

        def __init__(self) -> None:
            super().__init__()
            for name, value in regression.stats.items():
                self.add_state(name, default=torch.zeros_like(value), dist_reduce_fx="sum")

        def update(self, stats: Dict[str, Tensor]) -> None:  # type: ignore[override]
            for name, value in stats.items():
                setattr(self, name, getattr(self, name) + value)

        def compute(self) -> Dict[str, Tensor]:
            return {name: getattr(self, name).clone() for name in regression.stats}

    # gloo sums on the CPU; nccl needs the states on this process's GPU.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else \
        torch.device("cpu")
    metric = _Statistics().to(device)
    metric.update({k: v.to(device) for k, v in regression.stats.items()})
    regression.stats = {k: v.to("cpu", torch.float64) for k, v in metric.compute().items()}
    return regression
