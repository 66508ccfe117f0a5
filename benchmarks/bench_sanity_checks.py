"""Sanity checks (Adebayo et al., NeurIPS 2018) of every method on the zoo's scene VGG: cascading randomisation
of its layers from the output down, the maps compared with the trained model's (Spearman rank correlation of the
absolute and of the signed maps, SSIM of the absolute maps). A method that explains the model decorrelates as the
layers go; Guided Backprop is known not to.

    python benchmarks/bench_sanity_checks.py [--quick] [--out-dir DIR]
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Dict

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
             "depend on what the model learned.", ""]
    for name, explain in methods(model).items():
        start = time.perf_counter()
        result = cascading_randomization(model, explain, images, targets)
        seconds = time.perf_counter() - start
        record["methods"][name] = {"layers": result.layers, "seconds": seconds,
                                   **{key: getattr(result, key).mean(dim=1).tolist()
                                      for key in ("spearman_abs", "spearman_signed", "ssim")}}
        lines += [f"## {name}", "", result.to_markdown(), ""]
        print(f"{name}: {seconds:.1f} s", flush=True)
    write_results("sanity_checks", record, "\n".join(lines), args.out_dir)


if __name__ == "__main__":
    main()
