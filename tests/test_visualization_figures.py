"""Colour scales, legends and the demo's overview sheet (figure helpers of captum_ext.visualization and demo)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_ext.demo import _overview_sheet  # noqa: E402
from captum_ext.visualization import (  # noqa: E402
    LEGEND_ENTRIES, add_legend, attribution_colorbar, grid_figure, plot_attribution,
)


@pytest.mark.parametrize("sign, cmap, limits", [("absolute_value", "Blues", (0.0, 1.0)),
                                                ("positive", "Greens", (0.0, 1.0)),
                                                ("all", "RdWhGn", (-1.0, 1.0))])
def test_colour_scale_matches_captums_map_and_range(sign, cmap, limits):
    fig, axes = grid_figure(1, 2, layout="constrained")
    for ax in axes[0]:
        plot_attribution(torch.rand(1, 8, 8) - 0.3, torch.rand(3, 8, 8), ax, method="heat_map", sign=sign)
    bar = attribution_colorbar(axes[0], sign=sign)
    assert bar.cmap.name == cmap and bar.mappable.get_clim() == limits
    assert "scaled per map" in bar.ax.get_ylabel()
    plt.close(fig)


def test_colour_scale_for_plain_maps_and_blended_overlays():
    fig, axes = grid_figure(1, 2)
    gray = attribution_colorbar(axes[0], cmap="gray", label="attention W")
    assert gray.cmap.name == "gray" and gray.mappable.get_clim() == (0.0, 1.0)
    assert gray.ax.get_ylabel() == "attention W"
    assert attribution_colorbar(axes[0], blended=True).alpha == 0.5  # as Captum's half-opacity overlay
    plt.close(fig)


def test_legend_names_every_mark_in_order_and_refuses_unknown_ones():
    fig, _ = grid_figure(1, 1, layout="constrained")
    legend = add_legend(fig, ["object box", "backtracked", "roi"])
    assert [t.get_text() for t in legend.get_texts()] == [LEGEND_ENTRIES[k][0] for k in
                                                          ("object box", "backtracked", "roi")]
    with pytest.raises(KeyError):
        add_legend(fig, ["no such mark"])
    plt.close(fig)
    fig, _ = grid_figure(1, 1)  # without a layout engine the legend sits inside the figure's bottom edge
    assert add_legend(fig, list(LEGEND_ENTRIES), ncol=3) is not None
    plt.close(fig)


def test_attribution_titles_use_the_small_font_of_the_other_panels():
    fig, ax = plt.subplots()
    plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), ax, title="map")
    assert ax.get_title() == "map" and ax.title.get_fontsize() == 8
    plt.close(fig)


def test_overview_sheet_packs_figures_at_their_own_size_in_two_columns(tmp_path):
    # (width, height) in pixels; columns are as wide as the widest figure up to 1200 px
    sizes = {"ground_x": (50, 50), "a": (1200, 200), "b": (600, 100), "c": (900, 400), "wide": (1700, 50)}
    paths = []
    for name, (width, height) in sizes.items():
        paths.append(tmp_path / f"{name}.png")
        mpimg.imsave(paths[-1], np.random.default_rng(0).random((height, width, 3)))
    [sheet] = _overview_sheet(tmp_path, paths)
    height, width = mpimg.imread(sheet).shape[:2]
    # two 1200-px columns, a 40-px gap and 30-px margins; the ground figure is left out
    assert width == 2 * 1200 + 40 + 2 * 30
    # a goes left, b right, c into the then shorter right column, and the wide figure (over 1.3 columns) spans
    # both below them: each under a 34-px heading and followed by a 40-px gap, after a 70-px title band, with a
    # 30-px margin at the bottom instead of the last gap
    assert abs(height - (70 + 34 + 100 + 40 + 34 + 400 + 40 + 34 + 50 + 30)) <= 1
