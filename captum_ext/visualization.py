"""Figures of the benchmark ground and attribution overlays, built on matplotlib and ``captum.attr.visualization``.

Captum's ``visualize_image_attr`` expects ``H×W×C`` numpy arrays and silently misreads a ``C×H×W`` array;
:func:`to_hwc` converts tensors safely and :func:`plot_attribution` always goes through it.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

from captum_ext._utils.figure_keys import LEGEND_ENTRIES, add_legend, attribution_colorbar
from captum_ext.datasets.ellipses import EllipseBatch
from captum_ext.datasets.scenes import SceneBatch

ArrayLike = Union[Tensor, np.ndarray]


def _numpy(value: ArrayLike, dtype: Optional[type] = None) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return np.asarray(value.detach().cpu().numpy() if isinstance(value, Tensor) else value, dtype=dtype)


def to_hwc(image: ArrayLike) -> np.ndarray:
    """One image as an ``H×W×C`` float numpy array (accepts ``C×H×W``/``1×C×H×W`` tensors or arrays, ``H×W``).

    Args:
        image (Tensor or numpy.ndarray): one image, channels first: ``C×H×W`` or ``1×C×H×W`` with ``C`` = 1 or 3,
            or a grayscale ``H×W``. Tensors may be on any device and may require grad (they are detached and
            moved to the CPU).

    Returns:
        numpy.ndarray: ``H×W×C`` float32 array, channels last (``H×W×1`` for an ``H×W`` input), as Captum's
        ``visualize_image_attr`` expects. Values are not rescaled.

    Raises:
        ValueError: if ``image`` is not 2-D or a single (possibly batched) 3-D image with 1 or 3 channels first.
    """
    return _hwc(image, "image")


def _hwc(value: ArrayLike, name: str) -> np.ndarray:
    """:func:`to_hwc`, with errors naming the argument ``value`` came from."""
    array = _numpy(value)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        return array[:, :, None].astype(np.float32)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"`{name}` must be C×H×W (C = 1 or 3) or H×W, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(1, 2, 0)).astype(np.float32)


_SIGNS: Tuple[str, ...] = ("absolute_value", "all", "positive", "negative")
#: Captum's ``visualize_image_attr`` methods; the last two show one sign only.
_METHODS: Tuple[str, ...] = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")


def _checked_map(attribution: ArrayLike, image: ArrayLike, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """The map and its image as ``H×W×C`` arrays, refusing what Captum would draw wrongly or fail on deep inside."""
    attr, shown = _hwc(attribution, name), to_hwc(image)
    if attr.shape[:2] != shown.shape[:2]:  # imshow would draw the map over only part of the image, silently
        raise ValueError(f"`{name}` is {attr.shape[0]}×{attr.shape[1]} but `image` is {shown.shape[0]}×"
                         f"{shown.shape[1]}: a map must have its image's height and width (upsample a layer map "
                         "first, e.g. with captum's LayerAttribution.interpolate)")
    finite = np.isfinite(attr)
    if not finite.all():  # Captum's outlier threshold is NaN then and its search for it fails with an IndexError
        raise ValueError(f"`{name}` holds NaN or inf ({int(finite.size - finite.sum())} of {finite.size} values); "
                         "a map must be finite to be scaled")
    return attr, shown


def _axis(ax: Optional["object"]) -> "object":
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.gca()


def draw_boxes(
    boxes: ArrayLike,
    ax: Optional["object"] = None,
    color: str = "red",
    linewidth: float = 1.2,
    labels: Optional[Sequence[str]] = None,
) -> "object":
    """Draw ``(x1, y1, x2, y2)`` boxes (exclusive right/bottom edges, pixel units) on an image axes.

    Box edges are drawn on pixel borders: a box ``(0, 0, 1, 1)`` outlines exactly the top-left pixel of an image
    shown with ``imshow``.

    Args:
        boxes: ``N×4`` or a single length-4 box.
        ax: matplotlib axes (default: the current axes).
        color: edge colour.
        linewidth: edge width in points.
        labels: optional text per box, written above its top-left corner.

    Returns:
        The axes.

    Example::

        >>> import matplotlib.pyplot as plt
        >>> ax = draw_boxes([[2, 2, 10, 8]], plt.figure().gca(), color="lime", labels=["digit"])
    """
    from matplotlib.patches import Rectangle

    ax = _axis(ax)
    array = _numpy(boxes, np.float64)
    array = array.reshape(-1, 4) if array.size else np.zeros((0, 4))
    if labels is not None and len(labels) != len(array):
        raise ValueError(f"`labels` must hold one entry per box ({len(array)}), got {len(labels)}")
    for k, (x1, y1, x2, y2) in enumerate(array.tolist()):
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=color, lw=linewidth))
        if labels is not None:
            ax.text(x1, y1 - 1.5, str(labels[k]), color=color, fontsize=8, fontweight="bold")
    return ax


def show_scene(batch: SceneBatch, index: int, ax: Optional["object"] = None, boxes: bool = True) -> "object":
    """Draw one scene with its ground truth: object-of-interest box (lime), other digits' boxes (yellow), the ROI
    mask outline in ``"roi"`` mode, and the label(s) as title.

    Args:
        batch: scenes from :func:`captum_ext.datasets.scenes.make_scenes`.
        index: which scene to draw.
        ax: matplotlib axes (default: the current axes).
        boxes: draw the digits' boxes.

    Returns:
        The axes.

    Example::

        >>> import matplotlib.pyplot as plt
        >>> from captum_ext.datasets import scenes
        >>> ax = show_scene(scenes.make_scenes(1, mode="multi"), 0, plt.figure().gca())
    """
    ax = _axis(ax)
    ax.imshow(to_hwc(batch.images[index]))
    if batch.mode == "roi":
        ax.contour(batch.masks[index, 0].numpy(), levels=[0.5], colors="white", linewidths=1.0)
    if boxes:
        for k, label in enumerate(batch.object_labels[index].tolist()):
            if label < 0:
                continue
            colour = "lime" if k == 0 or batch.mode == "multi" else "yellow"
            draw_boxes(batch.object_boxes[index, k], ax, colour, labels=[str(label)] if batch.mode == "multi" else None)
    present = batch.object_labels[index][batch.object_labels[index] >= 0].tolist()
    title = f"classes {sorted(present)}" if batch.mode == "multi" else f"label {int(batch.labels[index])}"
    if batch.mode == "roi":
        title += f", ROI {int(batch.roi_sizes[index])} px"
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def show_ellipses(batch: EllipseBatch, index: int, ax: Optional["object"] = None,
                  prediction: Optional[ArrayLike] = None) -> "object":
    """Draw one ellipse sample: image, mask outline (cyan), major axes (green) and the target as title / red cross.

    Args:
        batch: samples from :func:`captum_ext.datasets.ellipses.make_ellipses`.
        index: which sample to draw.
        ax: matplotlib axes (default: the current axes).
        prediction: an estimate to draw in blue, as in the paper's figures: an angle in degrees (dataset 1, drawn
            as an axis through the ellipse centre) or an ``(x, y)`` point (datasets 2 and 3).

    Returns:
        The axes.

    Example::

        >>> import matplotlib.pyplot as plt
        >>> from captum_ext.datasets import ellipses
        >>> ax = show_ellipses(ellipses.make_ellipses(1, dataset=2), 0, plt.figure().gca())
    """
    ax = _axis(ax)
    ax.imshow(batch.images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1, extent=(0, batch.size, batch.size, 0))
    ax.contour(
        np.arange(batch.size) + 0.5, np.arange(batch.size) + 0.5, batch.masks[index, 0].numpy(),
        levels=[0.5], colors="cyan", linewidths=0.8,
    )
    for (cx, cy), (a, _), theta in zip(batch.centers[index].tolist(), batch.semi_axes[index].tolist(),
                                       batch.angles[index].tolist()):
        dx, dy = a * np.cos(np.radians(theta)), -a * np.sin(np.radians(theta))
        ax.plot([cx - dx, cx + dx], [cy - dy, cy + dy], color="lime", lw=1)
    estimate = None if prediction is None else _numpy(prediction, np.float64).ravel()
    if batch.dataset == 1:
        title = f"θ = {float(batch.targets[index]):.0f}°"
        if estimate is not None:
            (cx, cy), (a, _) = batch.centers[index, 0].tolist(), batch.semi_axes[index, 0].tolist()
            dx, dy = 1.3 * a * np.cos(np.radians(estimate[0])), -1.3 * a * np.sin(np.radians(estimate[0]))
            ax.plot([cx - dx, cx + dx], [cy - dy, cy + dy], color="deepskyblue", lw=1, ls="--")
            title += f", est. {estimate[0]:.0f}°"
    else:
        x, y = batch.targets[index].tolist()
        ax.plot([x], [y], "r+", ms=8, mew=1.5)
        title = f"({x:.1f}, {y:.1f})"
        if estimate is not None:
            ax.plot([estimate[0]], [estimate[1]], "x", color="deepskyblue", ms=6, mew=1.5)
            title += f"\nest. ({estimate[0]:.1f}, {estimate[1]:.1f})"
    ax.set_title(title, fontsize=8)
    ax.set_xlim(0, batch.size)
    ax.set_ylim(batch.size, 0)
    ax.set_axis_off()
    return ax


def grid_figure(rows: int, cols: int, cell: float = 1.8, layout: Optional[str] = None) -> Tuple["object", np.ndarray]:
    """A ``rows×cols`` grid of axes.

    Args:
        rows, cols: grid shape.
        cell: side of one cell in inches.
        layout: matplotlib layout engine, e.g. ``"constrained"``: it keeps multi-line titles clear of the row above
            and makes room for :func:`attribution_colorbar` and :func:`add_legend`. Default: none.

    Returns:
        ``(figure, axes)`` with ``axes`` always a 2-D array.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.4), squeeze=False, layout=layout)
    return fig, axes


def plot_attribution(
    attribution: ArrayLike,
    image: ArrayLike,
    ax: "object",
    method: str = "blended_heat_map",
    sign: str = "absolute_value",
    title: Optional[str] = None,
    **kwargs: object,
) -> "object":
    """Overlay one attribution map on its image with Captum's ``visualize_image_attr`` (layouts handled).

    A map with nothing to show for ``sign`` (all zero, or e.g. no positive value with ``sign="positive"``), which
    Captum cannot scale, is drawn as the bare image with "(all-zero map)" or "(no positive attribution)" added to
    the title.

    Args:
        attribution: ``C×H×W``, ``1×H×W`` or ``H×W`` finite map with the image's height and width (upsample a
            layer-resolution map first).
        image: ``3×H×W`` image in [0, 1].
        ax: matplotlib axes to draw into.
        method: passed to ``visualize_image_attr``.
        sign: ``"absolute_value"`` (default), ``"all"``, ``"positive"`` or ``"negative"``, passed to
            ``visualize_image_attr``.
        title: axes title.

    Returns:
        The axes. Captum scales each map to its own 0-1 range; :func:`attribution_colorbar` draws that scale.

    Raises:
        ValueError: ``attribution`` and ``image`` differ in height or width, ``attribution`` holds NaN or inf,
            either has a layout :func:`to_hwc` does not take, an unknown ``sign`` or ``method``, or ``sign="all"``
            with a method that shows one sign (``masked_image``, ``alpha_scaling``).

    Example::

        >>> import matplotlib.pyplot as plt
        >>> import torch
        >>> ax = plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), plt.figure().gca(), title="map")
    """
    from captum.attr import visualization as viz

    attr, shown = _checked_map(attribution, image, "attribution")
    if sign not in _SIGNS:
        raise ValueError(f"`sign` must be one of {list(_SIGNS)}, got {sign!r}")
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {list(_METHODS)}, got {method!r}")
    if method in _METHODS[-2:] and sign == "all":  # Captum asserts here, with no word of which argument
        raise ValueError(f"`method` {method!r} shows one sign: pass sign='absolute_value', 'positive' or 'negative', "
                         f"not 'all'")
    combined = attr.sum(axis=2)  # what Captum scales: the channels summed, then the values of the chosen sign
    visible = combined > 0 if sign == "positive" else combined < 0 if sign == "negative" else combined != 0
    if not visible.any():  # Captum would divide by a zero scale: show the image and say why there is no map
        ax.imshow(shown)
        note = "all-zero map" if not attr.any() or sign not in ("positive", "negative") else f"no {sign} attribution"
        ax.set_title(f"{title or ''} ({note})".strip(), fontsize=8)
        ax.set_axis_off()
        return ax
    viz.visualize_image_attr(
        attr, shown, method=method, sign=sign, plt_fig_axis=(ax.figure, ax), use_pyplot=False, **kwargs,
    )
    if title:  # set here: Captum's title uses the default (large) font, unlike the scene and ellipse titles
        ax.set_title(title, fontsize=8)
    return ax


def plot_points(
    points: ArrayLike,
    image: ArrayLike,
    ax: "object",
    density: Optional[ArrayLike] = None,
    color: str = "red",
    size: float = 6.0,
    title: Optional[str] = None,
) -> "object":
    """Backtracked pixels (e.g. :meth:`captum_ext.NodeBacktrack.points_from_hits`) over their image, optionally on
    top of a density map blended with Captum's ``visualize_image_attr``.

    Args:
        points: ``K×2`` ``(y, x)`` or ``K×3`` ``(y, x, count)`` pixel coordinates; marker area grows with the count.
        image: ``C×H×W`` image in [0, 1].
        ax: matplotlib axes.
        density: optional ``1×H×W`` / ``H×W`` finite map, the image's height and width, drawn first as a
            blended heat map (:func:`plot_attribution`).
        color: marker colour.
        size: marker area for a count of 1.
        title: axes title.

    Returns:
        The axes.

    Raises:
        ValueError: bad ``points``; a ``density`` map of another height or width than ``image``, or with NaN or inf.

    Example::

        >>> import matplotlib.pyplot as plt
        >>> import torch
        >>> ax = plot_points(torch.tensor([[3.0, 4.0, 2.0]]), torch.rand(3, 8, 8), plt.figure().gca())
    """
    array = _numpy(points, np.float64)
    array = array.reshape(-1, array.shape[-1]) if array.size else np.zeros((0, 3))
    if array.shape[1] not in (2, 3):
        raise ValueError(f"`points` must be K×2 (y, x) or K×3 (y, x, count), got shape {array.shape}")
    if density is not None:
        _checked_map(density, image, "density")  # so that errors name this function's argument
        plot_attribution(density, image, ax, method="blended_heat_map", sign="absolute_value", title=title)
    else:
        ax.imshow(to_hwc(image))
        if title:
            ax.set_title(title, fontsize=8)
    counts = array[:, 2] if array.shape[1] == 3 else np.ones(len(array))
    ax.scatter(array[:, 1], array[:, 0], s=size * np.sqrt(counts), c=color, marker="o", linewidths=0)
    ax.set_axis_off()
    return ax


def _grid(indices: Sequence[int], cols: int, draw: Callable[[int, "object"], object]) -> "object":
    rows = (len(indices) + cols - 1) // cols
    fig, axes = grid_figure(rows, cols)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        draw(i, ax)
    fig.tight_layout()
    return fig


def scene_grid(batch: SceneBatch, indices: Sequence[int], cols: int = 8) -> "object":
    """Figure of several scenes with their ground truth (:func:`show_scene` per cell).

    Args:
        batch: scenes from :func:`captum_ext.datasets.scenes.make_scenes`.
        indices: which scenes to draw.
        cols: cells per row.

    Returns:
        The matplotlib figure.

    Example::

        >>> from captum_ext.datasets import scenes
        >>> fig = scene_grid(scenes.make_scenes(4, mode="roi"), range(4), cols=4)
    """
    return _grid(indices, cols, lambda i, ax: show_scene(batch, i, ax))


def ellipse_grid(batch: EllipseBatch, indices: Sequence[int], cols: int = 8) -> "object":
    """Figure of several ellipse samples with their ground truth (:func:`show_ellipses` per cell).

    Args:
        batch: samples from :func:`captum_ext.datasets.ellipses.make_ellipses`.
        indices: which samples to draw.
        cols: cells per row.

    Returns:
        The matplotlib figure.

    Example::

        >>> from captum_ext.datasets import ellipses
        >>> fig = ellipse_grid(ellipses.make_ellipses(4, dataset=1), range(4), cols=4)
    """
    return _grid(indices, cols, lambda i, ax: show_ellipses(batch, i, ax))


__all__ = ["LEGEND_ENTRIES", "add_legend", "attribution_colorbar", "draw_boxes", "ellipse_grid", "grid_figure",
           "plot_attribution", "plot_points", "scene_grid", "show_ellipses", "show_scene", "to_hwc"]
