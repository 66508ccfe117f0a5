"""The ``captum-ext`` command.

    captum-ext demo [--out DIR]     figures of the benchmark ground, Captum Saliency and the captum_ext methods
                                    on the zoo models
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import torch


def _save(fig: "object", path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _ground_figures(out: Path, seed: int) -> List[Path]:
    from captum_ext.datasets import ellipses, scenes
    from captum_ext.visualization import grid_figure, show_ellipses, show_scene

    fig, axes = grid_figure(3, 8)
    for row, dataset in enumerate((1, 2, 3)):
        batch = ellipses.make_ellipses(8, dataset=dataset, seed=seed)
        for col in range(8):
            show_ellipses(batch, col, axes[row, col])
        axes[row, 0].text(-4, 16, f"ds{dataset}", fontsize=10, ha="right", va="center")
    fig.suptitle("Ellipse datasets (seed 000): ds1 inclination, ds2/ds3 major-axis intersection", fontsize=10)
    paths = [_save(fig, out / "ground_ellipses.png")]

    fig, axes = grid_figure(3, 8)
    for row, mode in enumerate(scenes.MODES):
        batch = scenes.make_scenes(8, mode=mode, split="test", seed=seed)
        for col in range(8):
            show_scene(batch, col, axes[row, col])
        axes[row, 0].text(-6, 32, mode, fontsize=10, ha="right", va="center")
    fig.suptitle("Digit scenes: single + clutter, multi-label, ROI with context plates", fontsize=10)
    paths.append(_save(fig, out / "ground_scenes.png"))
    return paths


def _saliency_figure(out: Path, seed: int) -> List[Path]:
    from captum.attr import Saliency

    from captum_ext import metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import grid_figure, plot_attribution, show_scene

    model = zoo.load("scenes_vgg")
    batch = scenes.make_scenes(200, mode="single", split="test", seed=seed)
    inputs = scenes.normalize(batch.images)
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == batch.labels).float().mean())
    with warnings.catch_warnings():  # Captum notes that it set requires_grad on the inputs (and restores it)
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        saliency = Saliency(model).attribute(inputs, target=batch.labels, abs=True).amax(dim=1, keepdim=True)
    pointing = metrics.pointing_game(saliency, batch.masks, tolerance=4)
    energy = metrics.energy_pointing_game(saliency, batch.masks)
    print(f"  scenes_vgg on 200 held-out scenes: accuracy {accuracy:.3f}; Captum Saliency pointing game "
          f"(4 px) {pointing:.3f}, energy in object mask {energy:.3f} "
          f"(object covers {float(batch.masks.float().mean()):.3f} of the image)")

    fig, axes = grid_figure(2, 6, cell=2.2)
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_attribution(saliency[col], batch.images[col], axes[1, col], title="Captum Saliency")
    fig.suptitle("Captum Saliency on the zoo VGG (target = true class)", fontsize=10)
    return [_save(fig, out / "saliency_scenes_vgg.png")]


def _sensitivity_bbox_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import SensitivityBBox, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import draw_boxes, grid_figure, plot_attribution, to_hwc

    model = zoo.load("scenes_vgg")
    train = scenes.make_scenes(600, mode="single", split="train", seed=seed + 1000)
    test = scenes.make_scenes(200, mode="single", split="test", seed=seed)
    x_test = scenes.normalize(test.images)
    sb = SensitivityBBox(model).fit(scenes.normalize(train.images), train.boxes, target=train.labels)
    sens = sb.attribute(x_test, target=test.labels)
    learned = sb.boxes_from_attributions(sens)
    cam = sb.cam_boxes_from_attributions(sens)
    size = (train.boxes[:, 2:] - train.boxes[:, :2]).mean(0)
    centre = torch.cat([32 - size / 2, 32 + size / 2]).expand(len(test.boxes), 4)
    print(f"  SensitivityBBox on the same scenes (box map fitted on 600 training scenes): CorLoc learned "
          f"{metrics.corloc(learned, test.boxes):.3f}, CAM threshold {metrics.corloc(cam, test.boxes):.3f}, "
          f"constant centre box {metrics.corloc(centre, test.boxes):.3f}")

    fig, axes = grid_figure(2, 6, cell=2.2)
    for col in range(6):
        axes[0, col].imshow(to_hwc(test.images[col]))
        draw_boxes(test.boxes[col], axes[0, col], color="lime")
        draw_boxes(learned[col], axes[0, col], color="red")
        axes[0, col].set_axis_off()
        plot_attribution(sens[col], test.images[col], axes[1, col], method="heat_map", title="sensitivity")
    fig.suptitle("SensitivityBBox: true box (lime), learned linear map (red)", fontsize=10)
    return [_save(fig, out / "sensitivity_bbox_scenes_vgg.png")]


def demo(out: Path, seed: int = 0) -> List[Path]:
    """Write the demo figures to ``out`` and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    paths = _ground_figures(out, seed) + _saliency_figure(out, seed) + _sensitivity_bbox_figure(out, seed)
    print(f"  done in {time.time() - start:.1f}s")
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="captum-ext", description="captum_ext command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="write demo figures (PNG) to a folder")
    demo_parser.add_argument("--out", type=Path, default=Path("captum_ext_demo"), help="output folder")
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"captum-ext demo -> {args.out.resolve()}")
        for path in demo(args.out, args.seed):
            print(f"  wrote {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
