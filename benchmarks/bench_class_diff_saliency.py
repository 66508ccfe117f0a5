"""MultiLayerClassDiffSaliency reproduction (Shimoda & Yanai) and speed benchmark.

    python benchmarks/bench_class_diff_saliency.py [--quick] [--out-dir benchmarks/results]

Reproduction. Paper: maps of different classes in one image become distinct once the other candidates' maps are
subtracted. Here: the trained fully convolutional multi-label zoo net ``scenes_vgg_multilabel`` on held-out
multi-digit scenes; every (image, present class) pair is explained separately, and scored against *that class's*
mask: energy pointing game (share of the map's mass inside the mask) and pointing game (4 px), overall and as the
mean over classes. Methods: (a) plain input gradients (Captum ``Saliency``), (b) Captum ``GuidedBackprop``,
(c) Captum ``LayerGradCam`` (last conv), (d) ours without subtraction, (e) ours with subtraction, (f) ours with
subtraction at scales 1, 1.2, 1.4, 1.6. Ours uses the six conv layers after the first pooling (the analogue of
VGG-16's conv3_1 … conv5_3), derivatives w.r.t. the layer inputs (the authors' code) and automatic candidates
(sigmoid ≥ 0.5, at least 4).

Speed, same images, one run: ours versus a straightforward loop of Captum primitives — per scale × per class,
``LayerGradientXActivation(multiply_by_inputs=False)`` on a copy of the model whose ReLUs are guided — on VGG16
(random weights, 224×224, batch 2), 9 layers (conv3_1 … conv5_3) × 3 candidates × 4 scales; and ours relative to
one Captum ``Saliency`` call. K classes need K backward passes in both; counting FLOPs alone the ratio would be
``(F + K·B) / (K·F + K·B)`` (F, B the forward and backward cost; 0.78 for B = 2F, K = 3). It is reported next to
the measurement: one batched backward over K candidates also runs more efficiently than K small ones.
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any, Dict

import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam, LayerGradientXActivation, Saliency
from torch import Tensor, nn

from _common import benchmark_parser, environment, parse_benchmark_args, time_interleaved, write_results
from captum_ext import MultiLayerClassDiffSaliency, metrics, zoo
from captum_ext._utils.guided import guided_relu
from captum_ext.datasets import scenes

TARGET = {"ours_subtracted_energy": 0.75, "plain_gradient_energy_at_most": 0.55}


def explained_pairs(batch: scenes.SceneBatch) -> Dict[str, Any]:
    """One row per (image, present class), with the masks of the image's other classes."""
    image, slot = (batch.object_labels >= 0).nonzero(as_tuple=True)
    classes = batch.object_labels[image, slot]
    masks = torch.stack([batch.object_masks[i, k] for i, k in zip(image.tolist(), slot.tolist())])
    others = []
    for i, k in zip(image.tolist(), slot.tolist()):
        present = [j for j in range(batch.object_labels.shape[1]) if batch.object_labels[i, j] >= 0 and j != k]
        others.append(torch.stack([batch.object_masks[i, j] for j in present]).reshape(len(present),
                                                                                      *masks.shape[-2:]))
    return {"image": image, "class": classes, "mask": masks, "others": others}


def reduce(maps: Tensor) -> Tensor:
    return maps.detach().abs().amax(dim=1, keepdim=True)


def reproduce(n_images: int, seed: int) -> Dict[str, Any]:
    model = zoo.load("scenes_vgg_multilabel")
    batch = scenes.make_scenes(n_images, mode="multi", split="test", seed=seed)
    pairs = explained_pairs(batch)
    x = scenes.normalize(batch.images)[pairs["image"]]
    labels = pairs["class"]
    masks = pairs["mask"]
    layers = [model.features[i] for i in (5, 7, 10, 12, 15, 17)]
    ours = MultiLayerClassDiffSaliency(model, layers)
    gradcam = LayerGradCam(model, model.features[18])

    def in_chunks(fn) -> Tensor:  # bounded memory: the batched backward holds K copies of every layer
        return torch.cat([fn(x[i : i + 100], labels[i : i + 100]) for i in range(0, len(labels), 100)])

    def cam(xs: Tensor, ys: Tensor) -> Tensor:
        raw = gradcam.attribute(xs, target=ys, relu_attributions=True).detach()
        return LayerAttribution.interpolate(raw, (64, 64), interpolate_mode="bilinear")

    maps: Dict[str, Tensor] = {}
    maps["(a) input gradient (Captum Saliency)"] = in_chunks(lambda xs, ys: reduce(Saliency(model).attribute(
        xs, target=ys)))
    maps["(b) Captum GuidedBackprop"] = in_chunks(lambda xs, ys: reduce(GuidedBackprop(model).attribute(
        xs, target=ys)))
    maps["(c) Captum LayerGradCam"] = in_chunks(cam)
    for name, kwargs in (("(d) ours, no subtraction", {"subtract": False}),
                         ("(e) ours, subtraction", {"subtract": True}),
                         ("(f) ours, subtraction, 4 scales", {"subtract": True, "scales": (1.0, 1.2, 1.4, 1.6)})):
        maps[name] = in_chunks(lambda xs, ys, kw=kwargs: ours.attribute(xs, target=ys.tolist(),
                                                                        attribute_to_layer_input=True, **kw))
    rows = {}
    for name, m in maps.items():
        distinct = metrics.class_distinctness(m, masks, pairs["others"])
        rows[name] = {
            "other_to_own_median": distinct.median_ratio,
            "other_to_own_pooled": distinct.pooled_ratio,
            "own_object_first": distinct.own_first,
            "energy": metrics.energy_pointing_game(m, masks),
            "pointing_game": metrics.pointing_game(m, masks, tolerance=4),
            "pointing_game_class_mean": metrics.pointing_game(m, masks, tolerance=4, labels=labels),
        }
    return {"pairs": int(len(labels)), "images": n_images, "mask_share": float(masks.float().mean()),
            "rows": rows}


class _GuidedReLUModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return guided_relu(x)


def guided_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, _GuidedReLUModule())
    return clone.eval()


def speed(repeats: int) -> Dict[str, Any]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(2, 3, 224, 224)
    layer_ids = (10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv3_1 … conv5_3
    layers = [model.features[i] for i in layer_ids]
    scales = (1.0, 1.2, 1.4, 1.6)
    classes = [[1, 2, 3], [4, 5, 6]]
    ours = MultiLayerClassDiffSaliency(model, layers, multi_label=False)
    guided = guided_copy(model)
    baseline = LayerGradientXActivation(guided, [guided.features[i] for i in layer_ids], multiply_by_inputs=False)
    saliency = Saliency(model)

    def loop() -> None:
        for s in scales:
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            for k in range(3):
                target = [c[k] for c in classes]
                grads = baseline.attribute(xs, target=target)
                [F.interpolate(g.abs().amax(1, keepdim=True), size=(224, 224), mode="bilinear") for g in grads]

    def ours_call() -> None:
        ours.attribute(x, target=[1, 4], candidates=classes, scales=scales)

    def forward_only() -> None:
        with torch.no_grad():
            for s in scales:
                model(x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))

    timings = time_interleaved({"ours": ours_call, "captum_loop": loop,
                                "captum_saliency": lambda: saliency.attribute(x, target=[1, 4]),
                                "forwards_all_scales": forward_only}, repeats=repeats, warmup=1)
    # FLOP-count ratio: B ≈ 2 F for a conv net; both need K backward passes per scale.
    k = 3
    timings["floor_ratio_B_eq_2F"] = (1 + k * 2) / (k + k * 2)
    timings["ratio_vs_loop"] = timings["ours"] / timings["captum_loop"]
    timings["ratio_vs_saliency"] = timings["ours"] / timings["captum_saliency"]
    return timings


def main() -> None:
    parser = benchmark_parser(__doc__, "80 scenes, 1 timing repeat")
    parser.add_argument("--seed", type=int, default=4040)
    parser.add_argument("--reproduction-only", action="store_true",
                        help="re-measure the maps' scores and keep the speed part of the existing result file")
    args = parse_benchmark_args(parser)
    started = time.perf_counter()
    record: Dict[str, Any] = {"environment": environment(), "quick": args.quick, "seed": args.seed,
                              "target": TARGET}
    record["reproduction"] = reproduce(80 if args.quick else 500, args.seed)
    if args.reproduction_only:
        earlier = json.loads((args.out_dir / "class_diff_saliency.json").read_text())
        record["speed_vgg16"] = earlier["speed_vgg16"]
        record["speed_environment"] = earlier.get("speed_environment", earlier["environment"])
    else:
        record["speed_vgg16"] = speed(1 if args.quick else 3)
    record["total_seconds"] = time.perf_counter() - started
    write_results("class_diff_saliency", record, to_markdown(record), args.out_dir)


def to_markdown(r: Dict[str, Any]) -> str:
    rep = r["reproduction"]
    lines = [
        "# MultiLayerClassDiffSaliency (Shimoda & Yanai): distinct class maps and speed",
        "",
        f"{rep['images']} held-out multi-digit scenes, {rep['pairs']} (image, present class) pairs, seed {r['seed']}; "
        f"each class's mask covers {100 * rep['mask_share']:.1f}% of the image on average.",
        "",
        "The paper's claim is *distinct* class maps: the map of class c should not light up the objects of the "
        "other classes present. Distinctness (`metrics.class_distinctness`): the map's mass on the other classes' "
        "objects divided by its mass on its own object (median over pairs, and pooled over all pairs; lower is more "
        "distinct), and the share of pairs whose own object gets more mass than any other class's object. Energy in "
        "the own mask is kept for reference (multi-layer tanh-normalised maps are broad even when distinct).",
        "",
        "| method | other / own mass, median | other / own, pooled | own object first | energy in own mask | "
        "pointing game (4 px) | pointing game, class mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rep["rows"].items():
        lines.append(f"| {name} | {row['other_to_own_median']:.3f} | {row['other_to_own_pooled']:.3f} | "
                     f"{row['own_object_first']:.3f} | {row['energy']:.3f} | {row['pointing_game']:.3f} | "
                     f"{row['pointing_game_class_mean']:.3f} |")
    sp = r["speed_vgg16"]
    lines += [
        "",
        "## Speed (VGG16, random weights, 224×224, batch 2; 9 layers × 3 candidates × 4 scales)",
        "",
        "| ours | Captum loop | ours / loop | FLOP-count ratio (B = 2F) | one Captum Saliency | ours / Saliency |",
        "|---|---|---|---|---|---|",
        f"| {sp['ours']:.2f} s | {sp['captum_loop']:.2f} s | {sp['ratio_vs_loop']:.2f}× | "
        f"{sp['floor_ratio_B_eq_2F']:.2f}× | {sp['captum_saliency']:.2f} s | {sp['ratio_vs_saliency']:.1f}× |",
        "",
        f"Environment: {r['environment']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
