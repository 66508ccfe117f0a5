"""Keys of the package's figures: one colour scale for a group of attribution maps (Captum's scaling) and a legend
of the marks the figures draw. Re-exported by :mod:`captum_ext.visualization`."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


#: Colour map and value range Captum's ``visualize_image_attr`` uses for each ``sign``.
SIGN_COLOURS = {"absolute_value": ("Blues", 0.0, 1.0), "positive": ("Greens", 0.0, 1.0),
                "negative": ("Reds", 0.0, 1.0), "all": (None, -1.0, 1.0)}

#: Label of :func:`attribution_colorbar`: how Captum scales a map before colouring it.
SCALE_LABEL = "attribution, scaled per map\n(top 2 % of its mass at 1)"


def attribution_colorbar(axes: Sequence["object"], sign: str = "absolute_value", blended: bool = False,
                         label: Optional[str] = None, cmap: Optional[str] = None) -> "object":
    """One colour scale for a row (or any group) of maps drawn by :func:`~captum_ext.visualization.plot_attribution` or :func:`~captum_ext.visualization.plot_points`.

    Captum's ``visualize_image_attr`` divides each map by the value at which the map's sorted values reach 98 % of
    its mass and clips at 1 (``outlier_perc=2``), so every map shares this 0-1 scale, not its raw units.

    Args:
        axes: the maps' axes; the bar is drawn to their right.
        sign: the ``sign`` the maps were drawn with (sets Captum's colour map and range).
        blended: the maps were ``blended_heat_map`` overlays (drawn at half opacity, so is the bar).
        label: the bar's label (default: "attribution, scaled per map (top 2 % of its mass at 1)").
        cmap: another colour map (e.g. ``"gray"`` for maps drawn with ``imshow``); range 0-1.

    Returns:
        The matplotlib colorbar.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    axes = list(np.asarray(axes, dtype=object).ravel())
    default, vmin, vmax = SIGN_COLOURS[sign]
    if cmap is not None:
        vmin, vmax = 0.0, 1.0
    elif default is None:  # Captum's diverging map for sign="all"
        cmap = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
    mappable = ScalarMappable(Normalize(vmin, vmax), cmap or default)
    bar = axes[0].figure.colorbar(mappable, ax=axes, shrink=0.9, aspect=12, pad=0.02, alpha=0.5 if blended else None)
    bar.set_label(SCALE_LABEL if label is None else label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return bar


#: Marks used by the figures, for :func:`add_legend`: name → (label, kind, style).
#:
#: :meta hide-value:
LEGEND_ENTRIES = {
    "object box": ("object's box (ground truth)", "box", {"edgecolor": "lime"}),
    "digit boxes": ("digits' boxes with their class (ground truth)", "box", {"edgecolor": "lime"}),
    "other boxes": ("other digits' boxes", "box", {"edgecolor": "yellow", "facecolor": "0.45"}),
    "roi": ("ROI outline (white)", "line", {"color": "white", "lw": 1.5, "outline": "0.35"}),
    "learned box": ("learned box", "box", {"edgecolor": "red"}),
    "backtracked": ("backtracked pixel (area grows with its hits)", "line",
                    {"marker": "o", "color": "red", "ls": "none", "ms": 4}),
    "mask": ("ellipse mask outline", "line", {"color": "cyan"}),
    "major axes": ("true major axes", "line", {"color": "lime"}),
    "target": ("true intersection point", "line", {"marker": "+", "color": "red", "ls": "none", "mew": 1.5}),
    "estimated axis": ("estimated inclination (θ)", "line", {"color": "deepskyblue", "ls": "--"}),
    "estimated point": ("estimated point", "line", {"marker": "x", "color": "deepskyblue", "ls": "none", "mew": 1.5}),
}


def add_legend(fig: "object", entries: Sequence[str], ncol: Optional[int] = None) -> "object":
    """A legend below the figure for the marks the figure uses (keys of :data:`LEGEND_ENTRIES`).

    Args:
        fig: the figure (with ``layout="constrained"`` the legend gets its own space below the axes).
        entries: which marks, e.g. ``["object box", "backtracked"]``: ``"object box"``, ``"digit boxes"``,
            ``"other boxes"``, ``"roi"``, ``"learned box"``, ``"backtracked"``, ``"mask"``, ``"major axes"``,
            ``"target"``, ``"estimated axis"``, ``"estimated point"``.
        ncol: legend columns (default: all in one row).

    Returns:
        The matplotlib legend.
    """
    from matplotlib import patheffects
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for name in entries:
        label, kind, style = LEGEND_ENTRIES[name]
        if kind == "box":
            handles.append(Patch(facecolor=style.get("facecolor", "none"), edgecolor=style["edgecolor"], lw=1.2,
                                 label=label))
        else:
            style = dict(style)
            outline = style.pop("outline", None)  # a dark edge, for a white line on the white legend
            effects = [patheffects.withStroke(linewidth=3.5, foreground=outline)] if outline else None
            handles.append(Line2D([], [], label=label, path_effects=effects, **style))
    constrained = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)  # only it places "outside" legends
    return fig.legend(handles=handles, loc="outside lower center" if constrained else "lower center",
                      ncol=ncol or len(handles), fontsize=8, frameon=False)
