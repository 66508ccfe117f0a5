"""Figures, attribution overlays (layout-safe) and the `captum-ext demo` command."""
import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_ext import cli  # noqa: E402
from captum_ext.datasets import ellipses, scenes  # noqa: E402
from captum_ext.visualization import ellipse_grid, plot_attribution, scene_grid, to_hwc  # noqa: E402


def test_to_hwc_layouts():
    chw = torch.arange(3 * 4 * 5, dtype=torch.float32).view(3, 4, 5)
    hwc = to_hwc(chw)
    assert hwc.shape == (4, 5, 3) and hwc[1, 2, 0] == chw[0, 1, 2] and hwc[1, 2, 2] == chw[2, 1, 2]
    assert to_hwc(chw[None]).shape == (4, 5, 3)
    assert to_hwc(np.zeros((4, 5))).shape == (4, 5, 1)
    with pytest.raises(ValueError, match="`image`"):
        to_hwc(torch.zeros(4, 5, 3))  # channels-last input is refused, not misread
    with pytest.raises(ValueError, match="`image`"):
        to_hwc(torch.zeros(2, 3, 4, 5))


def test_plot_attribution_and_grids():
    batch = scenes.make_scenes(3, mode="roi", seed=1)
    fig, ax = plt.subplots()
    plot_attribution(batch.masks[0].float(), batch.images[0], ax, title="mask")
    plot_attribution(torch.zeros(1, 64, 64), batch.images[0], ax)  # all-zero map must not crash
    plt.close(fig)
    plt.close(scene_grid(batch, [0, 1, 2], cols=2))
    plt.close(ellipse_grid(ellipses.make_ellipses(3, dataset=2, seed=1), [0, 1, 2]))


def test_demo_writes_pngs(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["attention_regressor_ellipses.png", "class_diff_saliency_scenes_vgg_multilabel.png",
                       "ground_ellipses.png", "ground_scenes.png",
                       "node_backtrack_scenes_vgg.png", "overview_all_methods.png", "photo_efficientnet_lite0.png",
                       "roi_attention_scenes.png", "saliency_scenes_vgg.png", "sensitivity_bbox_scenes_vgg.png"]
    assert all((tmp_path / name).stat().st_size > 10_000 for name in written)
    assert str(tmp_path.resolve()) in capsys.readouterr().out


def test_draw_boxes_outlines_pixel_borders():
    import matplotlib.pyplot as plt
    import pytest
    import torch

    from captum_ext.visualization import draw_boxes

    fig = plt.figure()
    ax = draw_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 3.0, 6.0, 5.0]]), fig.gca(), labels=["a", "b"])
    rects = [p.get_bbox().bounds for p in ax.patches]
    assert rects == [(-0.5, -0.5, 1.0, 1.0), (1.5, 2.5, 4.0, 2.0)]
    assert [t.get_text() for t in ax.texts] == ["a", "b"]
    with pytest.raises(ValueError, match="labels"):
        draw_boxes([[0, 0, 1, 1]], fig.gca(), labels=["a", "b"])
    plt.close(fig)


def test_plot_points_draws_one_marker_per_point():
    import matplotlib.pyplot as plt
    import pytest
    import torch

    from captum_ext.visualization import plot_points

    fig = plt.figure()
    ax = plot_points(torch.tensor([[1.0, 2.0, 1.0], [3.0, 0.0, 4.0]]), torch.rand(3, 5, 5), fig.gca(),
                     density=torch.rand(1, 5, 5))
    offsets = ax.collections[-1].get_offsets()
    assert offsets.tolist() == [[2.0, 1.0], [0.0, 3.0]]  # (x, y) for matplotlib
    with pytest.raises(ValueError, match="points"):
        plot_points(torch.zeros(2, 4), torch.rand(3, 5, 5), fig.gca())
    plt.close(fig)


def test_train_roi_command_writes_weights_and_binned_results(tmp_path, capsys):
    import json

    from captum_ext.training import roi

    assert cli.main(["train-roi", "--depth", "18", "--epochs", "1", "--n-train", "32", "--n-test", "32",
                     "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "roi_first_add.json").read_text())
    assert record["n_test"] == 32 and sum(record["counts"]) == 32 and record["variant"] == "roi_first_add"
    assert (tmp_path / "roi_first_add.pt").exists()
    printed = capsys.readouterr().out
    assert "roi_first_add: test accuracy" in printed and f"{record['overall_per_image']:.3f}" in printed
    # the command is a thin caller: the library function gives the same run
    run = roi.train_and_record(tmp_path / "direct", epochs=1, n_train=32, n_test=32, show_progress=False)
    assert run.record["final_loss"] == record["final_loss"]
    # Empty bins are NaN in Python and null in the JSON record (standard JSON has no NaN).
    written = [float("nan") if value is None else value for value in record["per_image"]]
    assert run.record["per_image"] == pytest.approx(written, nan_ok=True)


@pytest.mark.parametrize("argv", [["train-roi", "--merge", "layer5"], ["train-roi", "--depth", "20"],
                                  ["train-roi", "--hard", "none"], ["train-regressor", "--dataset", "4"]])
def test_training_commands_refuse_choices_the_library_does_not_have(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_demo_module_holds_the_figures():
    from captum_ext import demo

    assert cli.demo is demo.demo  # `captum_ext.cli.demo` keeps working
    assert "Li & Shimada" in Path(demo.__file__).read_text() and "seed 000" not in Path(demo.__file__).read_text()
