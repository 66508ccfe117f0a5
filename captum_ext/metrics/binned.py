"""Classification accuracy binned by ROI size, class-mean and per-image (Eppel, *Classifying a specific image
region using CNNs with an ROI mask as input*, Tables 1-4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from captum_ext._utils.validation import check_same_length, check_scalar, check_tensor
from captum_ext.metrics._checks import TensorLike

__all__ = ["PAPER_ROI_BINS", "BinnedAccuracy", "binned_accuracy"]

#: Upper/lower ROI-size bin edges (pixels) of Eppel's Tables 1-4: ``[0, 1000), [1000, 2000), ... [500k, 1M)``.
PAPER_ROI_BINS: Tuple[int, ...] = (0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 500000, 1000000)


def _format_edge(edge: float) -> str:
    """A bin edge as written in the table: ``1000``, or ``2.5`` for a fractional edge."""
    return str(int(edge)) if float(edge).is_integer() else f"{edge:g}"


@dataclass
class BinnedAccuracy:
    """Classification accuracy binned by ROI size; returned by :func:`binned_accuracy`.

    Attributes:
        edges (numpy.ndarray): ``B+1`` bin edges; bin ``b`` is ``[edges[b], edges[b+1])``.
        counts (numpy.ndarray): ``B`` number of images per bin.
        per_image (numpy.ndarray): ``B`` accuracy over the bin's images (NaN for an empty bin).
        class_mean (numpy.ndarray): ``B`` mean over the classes present in the bin of each class's accuracy
            (every class weighted equally; NaN for an empty bin).
        overall_per_image (float): accuracy over all images.
        overall_class_mean (float): mean over all classes of each class's accuracy over all images.
    """

    edges: np.ndarray
    counts: np.ndarray
    per_image: np.ndarray
    class_mean: np.ndarray
    overall_per_image: float
    overall_class_mean: float

    def to_markdown(self, digits: int = 1, skip_empty: bool = False) -> str:
        """Markdown table in the layout of the paper's Tables 1-4 (accuracies in percent).

        Rows are the size ranges (``"0-1000"``, ...), then an ``all sizes`` row with the overall values; columns are
        the image count, the class-mean accuracy and the per-image accuracy. Empty bins show ``-``.

        Args:
            digits (int, optional): decimals of the percentages. Default: 1.
            skip_empty (bool, optional): leave out bins without images. Default: False.

        Returns:
            str: the table, one row per line.
        """

        def pct(value: float) -> str:
            return "-" if math.isnan(value) else f"{100.0 * value:.{digits}f}%"

        lines = [
            "| ROI size (px) | count | class-mean acc | per-image acc |",
            "|---|---:|---:|---:|",
        ]
        for b in range(len(self.counts)):
            if skip_empty and self.counts[b] == 0:
                continue
            size = f"{_format_edge(self.edges[b])}-{_format_edge(self.edges[b + 1])}"
            lines.append(
                f"| {size} | {int(self.counts[b])} | {pct(self.class_mean[b])} | {pct(self.per_image[b])} |"
            )
        lines.append(
            f"| all sizes | {int(self.counts.sum())} | {pct(self.overall_class_mean)} | "
            f"{pct(self.overall_per_image)} |"
        )
        return "\n".join(lines)


def binned_accuracy(
    predictions: TensorLike,
    labels: TensorLike,
    roi_sizes: TensorLike,
    bin_edges: Sequence[float] = PAPER_ROI_BINS,
    num_classes: Optional[int] = None,
) -> BinnedAccuracy:
    r"""Classification accuracy binned by ROI size, class-mean and per-image (Eppel, Tables 1-4).

    Each image falls into the bin ``[lo, hi)`` containing its ROI size. Per bin, the per-image accuracy is the share
    of correct predictions; the class-mean accuracy is the mean, over the classes present in the bin, of each
    class's accuracy within the bin (every class weighted equally, as in the paper's Tables 1-2).

    Args:
        predictions (Tensor): ``N`` predicted class ids, or ``N×C`` scores/logits (their argmax is used).
        labels (Tensor): ``N`` true class ids (``>= 0``).
        roi_sizes (Tensor): ``N`` ROI sizes (pixel counts, ``>= 0``), each inside ``[bin_edges[0], bin_edges[-1])``.
        bin_edges (sequence of float, optional): strictly increasing edges. Default: :data:`PAPER_ROI_BINS`.
        num_classes (int, optional): if given, ``labels`` and ``predictions`` must lie in ``[0, num_classes)``.

    Returns:
        BinnedAccuracy: per-bin counts and accuracies, overall accuracies, and ``to_markdown()``.

    Raises:
        TypeError: if ``predictions`` are not integer ids (or ``N×C`` scores), ``labels`` are not integers,
            ``roi_sizes`` are not numeric, or ``bin_edges`` are not numbers.
        ValueError: if the lengths differ, there is no image, a label is negative or ``>= num_classes``, the edges
            are not strictly increasing, or a ROI size lies outside ``[bin_edges[0], bin_edges[-1])``.

    Example::

        >>> result = binned_accuracy(predictions=[0, 1, 1, 0, 1], labels=[0, 1, 0, 0, 1],
        ...                          roi_sizes=[10, 500, 1500, 1200, 1800], bin_edges=(0, 1000, 2000))
        >>> result.counts
        array([2, 3])
        >>> print(result.to_markdown())
        | ROI size (px) | count | class-mean acc | per-image acc |
        |---|---:|---:|---:|
        | 0-1000 | 2 | 100.0% | 100.0% |
        | 1000-2000 | 3 | 75.0% | 66.7% |
        | all sizes | 5 | 83.3% | 80.0% |
    """
    preds = check_tensor(predictions, "predictions", ndim=(1, 2))
    label_t = check_tensor(labels, "labels", ndim=1)
    sizes_t = check_tensor(roi_sizes, "roi_sizes", ndim=1)
    check_same_length("predictions", preds, "labels", label_t)
    check_same_length("labels", label_t, "roi_sizes", sizes_t)
    if label_t.shape[0] == 0:
        raise ValueError("`labels` must hold at least one image")
    check_tensor(preds, "predictions", kind="real")
    if preds.dim() == 2:
        preds = preds.argmax(dim=1)
    elif preds.is_floating_point() or preds.dtype == torch.bool:
        raise TypeError(f"`predictions` must be integer class ids (or N×C scores), got {preds.dtype}")
    check_tensor(label_t, "labels", kind="int")
    check_tensor(sizes_t, "roi_sizes", kind="real")
    if sizes_t.dtype == torch.bool:
        raise TypeError("`roi_sizes` must have a numeric dtype, got torch.bool")
    if bool((label_t < 0).any()):
        raise ValueError("`labels` must be >= 0")
    if num_classes is not None:
        classes = int(check_scalar(num_classes, "num_classes", low=1, integer=True))
        if bool((label_t >= classes).any()):
            raise ValueError(f"`labels` must be < num_classes ({classes})")
        if bool(((preds < 0) | (preds >= classes)).any()):
            raise ValueError(f"`predictions` must lie in [0, num_classes) = [0, {classes})")

    try:
        edges_np = np.asarray(bin_edges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`bin_edges` must be a sequence of numbers: {err}") from None
    edges = check_tensor(edges_np, "bin_edges", ndim=1).numpy()
    if edges.shape[0] < 2 or not bool(np.all(np.diff(edges) > 0)):
        raise ValueError("`bin_edges` must hold at least two strictly increasing values")
    sizes = sizes_t.cpu().to(torch.float64).numpy()
    outside = (sizes < edges[0]) | (sizes >= edges[-1])
    if outside.any():
        raise ValueError(
            f"`roi_sizes` must lie in [{_format_edge(edges[0])}, {_format_edge(edges[-1])}); "
            f"{int(outside.sum())} value(s) outside, e.g. {sizes[outside][0]:g}"
        )

    correct = (preds.cpu().long() == label_t.cpu().long()).numpy().astype(np.float64)
    _, cls = np.unique(label_t.cpu().numpy(), return_inverse=True)
    cls = cls.ravel()
    n_bins, n_cls = edges.shape[0] - 1, int(cls.max()) + 1
    which = np.searchsorted(edges, sizes, side="right") - 1
    grid_n = np.zeros((n_bins, n_cls))
    grid_c = np.zeros((n_bins, n_cls))
    np.add.at(grid_n, (which, cls), 1.0)
    np.add.at(grid_c, (which, cls), correct)
    counts = grid_n.sum(axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.where(counts > 0, grid_c.sum(axis=1) / np.maximum(counts, 1), np.nan)
        class_acc = np.where(grid_n > 0, grid_c / np.maximum(grid_n, 1), np.nan)
        present = (grid_n > 0).sum(axis=1)
        class_mean = np.where(present > 0, np.nansum(class_acc, axis=1) / np.maximum(present, 1), np.nan)
    totals = grid_n.sum(axis=0)
    overall_class_mean = float(np.mean(grid_c.sum(axis=0)[totals > 0] / totals[totals > 0]))
    return BinnedAccuracy(
        edges=edges,
        counts=counts,
        per_image=per_image,
        class_mean=class_mean,
        overall_per_image=float(correct.mean()),
        overall_class_mean=overall_class_mean,
    )
