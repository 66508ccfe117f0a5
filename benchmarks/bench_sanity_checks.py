"""Sanity checks (Adebayo et al., NeurIPS 2018) of every method on the zoo's scene VGG: cascading randomisation
of its layers from the output down, the maps compared with the trained model's (Spearman rank correlation of the
absolute and of the signed maps, SSIM of the absolute maps). A method that explains the model decorrelates as the
layers go; Guided Backprop is known not to.

    python benchmarks/bench_sanity_checks.py [--quick] [--out-dir DIR]
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from _common import benchmark_parser, environment, parse_benchmark_args, write_results


def methods(model: torch.nn.Module) -> Dict[str, Callable]:
    """``explain(model, images, targets)`` for Captum's baselines and the captum_ext methods (signed maps where the
    method has a sign)."""
    from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox
    from captum_ext.evaluation.methods import last_conv_layer

    def needs_grad(x: torch.Tensor) -> torch.Tensor:
        return x.clone().requires_grad_()

    def class_diff(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        layers = [m.features[i] for i in (5, 7, 10)]  # the layers the scene VGG's benchmark reads
        return MultiLayerClassDiffSaliency(m, layers).attribute(x, target=t.tolist())

    def grad_cam(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Signed (no ReLU), at the image's size as the evaluation driver stores it.
        cams = LayerGradCam(m, last_conv_layer(m)).attribute(x, target=t)
        return LayerAttribution.interpolate(cams, tuple(x.shape[-2:]), interpolate_mode="bilinear")

    return {
        "gradient (Saliency, signed)": lambda m, x, t: Saliency(m).attribute(needs_grad(x), target=t, abs=False),
        "Guided Backprop": lambda m, x, t: GuidedBackprop(m).attribute(needs_grad(x), target=t),
        "Integrated Gradients": lambda m, x, t: IntegratedGradients(m).attribute(x, target=t, n_steps=16),
        "NodeBacktrack": lambda m, x, t: NodeBacktrack(m).attribute(x, target=t),
        "SensitivityBBox": lambda m, x, t: SensitivityBBox(m).attribute(x, target=t),
        "MultiLayerClassDiffSaliency": class_diff,
        "Grad-CAM": grad_cam,
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "8 scenes instead of 32")
    args = parse_benchmark_args(parser)
    from captum_ext import zoo
    from captum_ext.datasets import scenes
    from captum_ext.metrics import cascading_randomization

    warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations.*")
    model = zoo.load("scenes_vgg")
    batch = scenes.make_scenes(8 if args.quick else 32, mode="single", split="test", seed=1)
    images, targets = scenes.normalize(batch.images), batch.labels
    record: Dict[str, Any] = {"environment": environment(), "model": "zoo:scenes_vgg", "images": len(targets),
                              "methods": {}}
    lines = ["# Sanity checks: cascading model randomisation", "",
             f"Zoo `scenes_vgg`, {len(targets)} held-out single-digit scenes, the true class explained. Layers are "
             "re-initialised from the output down, cumulatively; each row compares the maps after that step with "
             "the trained model's maps (means over the images). Values near 1 all the way down mean the maps do not "
             "depend on what the model learned.", "", "![sanity checks](plots/sanity_checks.png)", ""]
    tables: List[str] = []
    for name, explain in methods(model).items():
        start = time.perf_counter()
        result = cascading_randomization(model, explain, images, targets)
        seconds = time.perf_counter() - start
        record["methods"][name] = {"layers": result.layers, "seconds": seconds,
                                   **{key: getattr(result, key).mean(dim=1).tolist()
                                      for key in ("spearman_abs", "spearman_signed", "ssim")}}
        tables += [f"## {name}", "", result.to_markdown(), ""]
        print(f"{name}: {seconds:.1f} s", flush=True)
    lines += side_by_side(record) + tables
    plot(record, args.out_dir / "plots" / "sanity_checks.png")
    write_results("sanity_checks", record, "\n".join(lines), args.out_dir)


def side_by_side(record: Dict[str, Any]) -> List[str]:
    """Every method's Spearman correlation of the absolute maps per step, in one table, and what it shows."""
    methods = record["methods"]
    layers = next(iter(methods.values()))["layers"]
    lines = ["## All methods: Spearman rank correlation of the absolute maps with the trained model's", "",
             "| randomised down to | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for step, layer in enumerate(layers):
        lines.append(f"| `{layer}` | " + " | ".join(f"{m['spearman_abs'][step]:.3f}" for m in methods.values()) + " |")
    classifier = max(i for i, layer in enumerate(layers) if not layer.startswith("features"))
    kept = sorted(methods, key=lambda name: -methods[name]["spearman_abs"][classifier])
    lines += ["", f"With only the classifier randomised (down to `{layers[classifier]}`), the maps keep these rank "
              "correlations with the trained model's: " + ", ".join(
                  f"{name} {methods[name]['spearman_abs'][classifier]:.2f}" for name in kept)
              + ". With every layer randomised: " + ", ".join(
                  f"{name} {methods[name]['spearman_abs'][-1]:.2f}" for name in kept) + ".", "",
              "SSIM counts pixels that are zero in both maps as agreement, so it stays high for sparse maps: "
              "NodeBacktrack's hit maps are zero on all but a few pixels, and its SSIM is best read beside its "
              "rank correlation. Integrated Gradients multiplies the gradient by the input, which keeps the "
              "image's structure in the map whatever the weights.", ""]
    return lines


def plot(record: Dict[str, Any], path: Path) -> None:
    """The cascading-randomisation curves of every method (Spearman of the absolute maps, and SSIM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    for name, m in record["methods"].items():
        for axis, key in zip(axes, ("spearman_abs", "ssim")):
            axis.plot(range(len(m["layers"])), m[key], marker="o", markersize=3, label=name)
    for axis, title in zip(axes, ("Spearman rank correlation (absolute maps)", "SSIM (absolute maps)")):
        layers = next(iter(record["methods"].values()))["layers"]
        axis.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        axis.set_xlabel("randomised down to (cumulative, from the output)")
        axis.set_ylim(-0.1, 1.0)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
    # SensitivityBBox without a box map is the gradient's absolute value: its curve lies on the gradient's.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
