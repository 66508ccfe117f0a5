"""SensitivityBBox reproduction (Ebrahimpour & Noelle): CorLoc on cluttered single-object scenes, plus speed.

    python benchmarks/bench_sensitivity_bbox.py [--quick] [--out-dir benchmarks/results]

Paper (ImageNet, 478 classes): learned linear map from sensitivity maps 82.76% CorLoc, constant centre box 12.34%.
Here: the trained zoo classifier ``scenes_vgg`` on ``scenes`` mode ``"single"`` (a digit among digit-like clutter
on real photos). Boxes are learned on the ``train`` digit split and evaluated on held-out digits (``test`` split),
with a separate validation set for every choice (feature set, ridge, blur, power, CAM threshold): the test set
only scores the chosen settings. All methods explain the ground-truth class, as in ImageNet localisation; the
predicted-class variant is reported too.

Rows of the main table (test set), each with CorLoc (IoU >= 0.5) and the mean box accuracy over IoU 0.3/0.5/0.7
(MaxBoxAccV2's average, for the one predicted box):

* learned linear map on our sensitivity maps with the paper's features (pooled grid), and with the feature set
  chosen on validation among the class-agnostic sets (the class default), and with per-class offsets;
* CAM threshold box on our sensitivity maps (no box training);
* CAM threshold box on Captum ``LayerGradCam`` (last conv block, up-sampled);
* the same learned linear maps fed Captum ``LayerGradCam`` maps (is the regressor or the map the limit?);
* the learned map on the activation-gradient maps (the authors' class-agnostic variant), alone and added;
* the constant centre box (mean training box size at the image centre), the paper's sanity baseline.

MaxBoxAccV2 proper (Choe et al., threshold sweep over the whole map) is reported for the maps themselves.
The centre/size analysis swaps in the true centre or size to show which one limits CorLoc.

Speed: ``predict_boxes`` (one forward + backward + the linear map) versus Captum ``Saliency`` on the same batch,
and fitting time per 1,000 training images.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from torch import Tensor

from _common import benchmark_parser, environment, parse_benchmark_args, time_interleaved, write_results
from captum_ext import SensitivityBBox, metrics, zoo
from captum_ext._utils.ridge import RidgeRegression
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext.attr._box_features import DEFAULT_FEATURES
from captum_ext.attr._box_fitting import order_and_clip
from captum_ext.datasets import scenes

PAPER = {"learned": 0.8276, "centre": 0.1234}
TARGET = 0.90
RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Candidate feature sets, compared on validation; the class-agnostic winner is the class default.
FEATURE_SETS: Dict[str, Tuple[str, ...]] = {
    "grid (paper)": ("grid",),
    "grid + moments": ("grid", "moments"),
    "grid + cam": ("grid", "cam"),
    "moments + cam": ("moments", "cam"),
    "grid + moments + cam": ("grid", "moments", "cam"),
    "grid + multiscale + moments + cam": ("grid", "multiscale", "moments", "cam"),
    "window": ("window",),
    "window + moments + cam": ("moments", "cam", "window"),
}
CLASS_SETS: Dict[str, Tuple[str, ...]] = {
    "grid + class": ("grid", "class"),
    "moments + cam + class": ("moments", "cam", "class"),
    "grid + moments + cam + class": ("grid", "moments", "cam", "class"),
    "window + class": ("window", "class"),
}
IOUS = (0.3, 0.5, 0.7)


def maps_in_batches(fn, images: Tensor, labels: Tensor, batch: int = 250) -> Tensor:
    return torch.cat([fn(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(images), batch)])


def corloc_of(boxes: Tensor, truth: Tensor) -> float:
    return metrics.corloc(boxes, truth)


def box_acc(boxes: Tensor, truth: Tensor) -> float:
    """Mean over IoU 0.3/0.5/0.7 of the share of boxes reaching it: MaxBoxAccV2's average for one fixed box."""
    iou = metrics.box_iou(boxes.double(), truth.double()).diagonal()
    return float(sum((iou >= d).double().mean() for d in IOUS) / len(IOUS))


def scores(boxes: Tensor, truth: Tensor) -> Dict[str, float]:
    return {"corloc": corloc_of(boxes, truth), "box_acc": box_acc(boxes, truth)}


def gaussian_blur_maps(maps: Tensor, sigma: float) -> Tensor:
    """Channel max, then the blur the CAM box uses (MaxBoxAccV2 of the map the CAM row thresholds)."""
    return gaussian_blur(maps.abs().amax(1, keepdim=True).float(), sigma)[:, 0]


def per_class(boxes: Tensor, truth: Tensor, labels: Tensor) -> Dict[int, float]:
    hits = metrics.corloc(boxes, truth, reduce=False)
    return {int(c): float(hits[labels == c].double().mean()) for c in labels.unique()}


def best_learned(train_maps: Tensor, train_boxes: Tensor, val_maps: Tensor, val_boxes: Tensor, model: Any,
                 sigmas=(0.0, 2.0, 4.0), powers=(1.0, 2.0, 4.0), ridges=(1e-3, 1e-2, 1e-1, 1.0),
                 features: Sequence[str] = ("grid",)) -> Tuple[Dict, List]:
    trials = []
    for sigma, power in itertools.product(sigmas, powers):
        sb = SensitivityBBox(model, sigma=sigma, power=power, features=features)
        for ridge in ridges:
            sb.fit_attributions(train_maps, train_boxes, ridge=ridge)
            trials.append({"sigma": sigma, "power": power, "ridge": ridge,
                           "val_corloc": corloc_of(sb.boxes_from_attributions(val_maps), val_boxes)})
    best = max(trials, key=lambda t: (t["val_corloc"], t["ridge"]))
    return best, trials


def ridge_on_validation(train_x: Tensor, train_boxes: Tensor, val_x: Tensor, val_boxes: Tensor,
                        size: int = 64) -> Tuple[float, float, RidgeRegression]:
    """Solve the ridge regression from features once and pick the penalty on validation: (ridge, CorLoc, fit)."""
    regression = RidgeRegression(train_x.shape[1], 4).accumulate(train_x, train_boxes.double() / size)
    trials = {}
    for ridge in RIDGES:
        weight, bias = regression.solution(ridge)
        trials[ridge] = corloc_of(order_and_clip((val_x @ weight + bias) * size, size, size).float(), val_boxes)
    best = max(sorted(trials), key=lambda r: (trials[r], r))
    return best, trials[best], regression.solve(best)


def select_features(sets: Dict[str, Tuple[str, ...]], maps: Dict[str, Tensor], data: Dict[str, Any], model: Any,
                    num_classes: int) -> Dict[str, Dict[str, Any]]:
    """Validation CorLoc and ridge of each feature set (blur 4, power 4), features computed once per split."""
    out = {}
    for name, features in sets.items():
        sb = SensitivityBBox(model, features=features, num_classes=num_classes)
        x = {split: sb.box_features(maps[split], data[split].labels) for split in ("train", "val")}
        ridge, val, _ = ridge_on_validation(x["train"], data["train"].boxes, x["val"], data["val"].boxes)
        out[name] = {"features": list(features), "ridge": ridge, "val_corloc": val}
    return out


def fitted(model: Any, features: Sequence[str], maps: Tensor, boxes: Tensor, labels: Tensor, ridge: float,
           num_classes: int, **settings: Any) -> SensitivityBBox:
    sb = SensitivityBBox(model, features=features, num_classes=num_classes, **settings)
    return sb.fit_attributions(maps, boxes, ridge=ridge, target=labels)


def best_cam(sb: SensitivityBBox, val_maps: Tensor, val_boxes: Tensor,
             thresholds=(0.2, 0.3, 0.4, 0.5, 0.6), sigmas=(0.0, 1.0, 2.0)) -> Dict[str, float]:
    trials = [{"threshold": t, "sigma": s,
               "val_corloc": corloc_of(sb.cam_boxes_from_attributions(val_maps, threshold=t, sigma=s), val_boxes)}
              for t, s in itertools.product(thresholds, sigmas)]
    return max(trials, key=lambda t: t["val_corloc"])


def centre_size(pred: Tensor, truth: Tensor, mean_size: Tensor) -> Dict[str, float]:
    """Which part limits CorLoc: swap in the true centre or the true size (or the mean training size)."""
    gt, pred = truth.double(), pred.double()
    c, s = (pred[:, :2] + pred[:, 2:]) / 2, pred[:, 2:] - pred[:, :2]
    cg, sg = (gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]
    error = (c - cg).norm(dim=1)

    def box(centre: Tensor, size: Tensor) -> Tensor:
        return torch.cat([centre - size / 2, centre + size / 2], 1).clamp(0, 64).float()

    mean = mean_size.double().expand_as(sg)
    return {
        "corloc": corloc_of(pred.float(), truth),
        "median_centre_error_px": float(error.median()), "p90_centre_error_px": float(error.quantile(0.9)),
        "predicted_centre_true_size": corloc_of(box(c, sg), truth),
        "true_centre_predicted_size": corloc_of(box(cg, s), truth),
        "true_centre_mean_size": corloc_of(box(cg, mean), truth),
        "predicted_centre_mean_size": corloc_of(box(c, mean), truth),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "600/200/300 images instead of 4000/1000/2000")
    parser.add_argument("--seed", type=int, default=2024)
    args = parse_benchmark_args(parser)
    n_train, n_val, n_test = (600, 200, 300) if args.quick else (4000, 1000, 2000)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    model = zoo.load("scenes_vgg").eval()
    train = scenes.make_scenes(n_train, split="train", seed=args.seed)
    val = scenes.make_scenes(n_val, split="test", seed=args.seed + 1)
    test = scenes.make_scenes(n_test, split="test", seed=args.seed + 2)
    x_train, x_val, x_test = (scenes.normalize(b.images) for b in (train, val, test))

    sb = SensitivityBBox(model)
    sb_act = SensitivityBBox(model, activation_layer=model.features[13])
    gradcam = LayerGradCam(model, model.features[13])  # rectified output of the last conv layer, 16×16
    num_classes = 10
    data = {"train": train, "val": val, "test": test}

    def sens(x: Tensor, y: Tensor) -> Tensor:
        return sb.attribute(x, target=y)

    def act(x: Tensor, y: Tensor) -> Tensor:
        return sb_act.attribute(x)

    def cam(x: Tensor, y: Tensor) -> Tensor:
        raw = gradcam.attribute(x, target=y, relu_attributions=True).detach()
        return LayerAttribution.interpolate(raw, tuple(x.shape[-2:]), interpolate_mode="bilinear")

    t0 = time.perf_counter()
    maps = {name: {split: maps_in_batches(fn, x, b.labels) for split, x, b in
                   (("train", x_train, train), ("val", x_val, val), ("test", x_test, test))}
            for name, fn in (("sensitivity", sens), ("gradcam", cam), ("activation", act))}
    print(f"maps in {time.perf_counter() - t0:.1f} s", flush=True)
    S, G, A = maps["sensitivity"], maps["gradcam"], maps["activation"]

    # --- paper features: blur, power and ridge on validation (as before feature sets) ---------------------------
    best, trials = best_learned(S["train"], train.boxes, S["val"], val.boxes, model)
    paper = fitted(model, ("grid",), S["train"], train.boxes, train.labels, best["ridge"], num_classes,
                   sigma=best["sigma"], power=best["power"])
    paper_boxes = paper.boxes_from_attributions(S["test"])

    # --- feature sets on validation (blur 4, power 4) ---------------------------------------------------------------
    t0 = time.perf_counter()
    agnostic = select_features(FEATURE_SETS, S, data, model, num_classes)
    with_class = select_features(CLASS_SETS, S, data, model, num_classes)
    chosen_name = max(agnostic, key=lambda k: agnostic[k]["val_corloc"])
    class_name = max(with_class, key=lambda k: with_class[k]["val_corloc"])
    print(f"feature sets in {time.perf_counter() - t0:.1f} s; chosen {chosen_name!r}", flush=True)
    chosen_features = tuple(agnostic[chosen_name]["features"])
    rich = fitted(model, chosen_features, S["train"], train.boxes, train.labels, agnostic[chosen_name]["ridge"],
                  num_classes)
    rich_boxes = rich.boxes_from_attributions(S["test"])
    default = SensitivityBBox(model).fit_attributions(S["train"], train.boxes)
    default_boxes = default.boxes_from_attributions(S["test"])
    class_features = tuple(with_class[class_name]["features"])
    classed = fitted(model, class_features, S["train"], train.boxes, train.labels, with_class[class_name]["ridge"],
                     num_classes)
    class_boxes = classed.boxes_from_attributions(S["test"], test.labels)
    predicted_class_boxes = rich.predict_boxes(x_test, target=None, batch_size=250)

    # --- the same regressors on Grad-CAM maps, and on the activation-gradient maps --------------------------------
    best_gc, _ = best_learned(G["train"], train.boxes, G["val"], val.boxes, model)
    gc_paper = fitted(model, ("grid",), G["train"], train.boxes, train.labels, best_gc["ridge"], num_classes,
                      sigma=best_gc["sigma"], power=best_gc["power"])
    gc_paper_boxes = gc_paper.boxes_from_attributions(G["test"])
    gc_sets = select_features({chosen_name: chosen_features, class_name: class_features}, G, data, model,
                              num_classes)
    gc_rich = fitted(model, chosen_features, G["train"], train.boxes, train.labels, gc_sets[chosen_name]["ridge"],
                     num_classes)
    gc_rich_boxes = gc_rich.boxes_from_attributions(G["test"])
    gc_class = fitted(model, class_features, G["train"], train.boxes, train.labels, gc_sets[class_name]["ridge"],
                      num_classes)
    gc_class_boxes = gc_class.boxes_from_attributions(G["test"], test.labels)
    act_sets = select_features({chosen_name: chosen_features}, A, data, model, num_classes)
    act_rich = fitted(model, chosen_features, A["train"], train.boxes, train.labels, act_sets[chosen_name]["ridge"],
                      num_classes)
    act_boxes = act_rich.boxes_from_attributions(A["test"])
    # Both maps' features side by side in one linear map (needs two backward passes per image).
    both_x = {split: torch.cat([rich.box_features(S[split]), act_rich.box_features(A[split])], 1)
              for split in ("train", "val", "test")}
    both_ridge, both_val, both_fit = ridge_on_validation(both_x["train"], train.boxes, both_x["val"], val.boxes)
    both_boxes = order_and_clip(both_fit.predict(both_x["test"]) * 64, 64, 64).float()

    # --- CAM threshold boxes (no training) ------------------------------------------------------------------------
    cam_sens = best_cam(sb, S["val"], val.boxes)
    cam_sens_boxes = sb.cam_boxes_from_attributions(S["test"], cam_sens["threshold"], cam_sens["sigma"])
    cam_gc = best_cam(sb, G["val"], val.boxes)
    cam_gc_boxes = sb.cam_boxes_from_attributions(G["test"], cam_gc["threshold"], cam_gc["sigma"])

    # --- constant centre box -------------------------------------------------------------------------------------
    size = (train.boxes[:, 2:] - train.boxes[:, :2]).mean(0)
    centre = torch.tensor([32.0, 32.0])
    centre_boxes = torch.cat([centre - size / 2, centre + size / 2]).expand(n_test, 4)

    boxes = {
        "learned linear map, sensitivity, paper features (validated blur/power)": paper_boxes,
        f"learned linear map, sensitivity, {chosen_name} (validated feature set)": rich_boxes,
        "learned linear map, sensitivity, every default (SensitivityBBox(model).fit)": default_boxes,
        f"learned linear map, sensitivity, {class_name}": class_boxes,
        f"learned linear map, sensitivity, {chosen_name}, predicted class": predicted_class_boxes,
        "CAM threshold box, sensitivity": cam_sens_boxes,
        "CAM threshold box, Captum LayerGradCam": cam_gc_boxes,
        "learned linear map, LayerGradCam maps, paper features": gc_paper_boxes,
        f"learned linear map, LayerGradCam maps, {chosen_name}": gc_rich_boxes,
        f"learned linear map, LayerGradCam maps, {class_name}": gc_class_boxes,
        f"learned linear map, activation-gradient maps, {chosen_name}": act_boxes,
        f"learned linear map, sensitivity + activation-gradient maps, {chosen_name} of each": both_boxes,
        "constant centre box": centre_boxes,
    }
    rows = {name: scores(b, test.boxes) for name, b in boxes.items()}
    validation = {"paper features (validated blur/power)": best["val_corloc"],
                  **{f"sensitivity, {k}": v["val_corloc"] for k, v in {**agnostic, **with_class}.items()},
                  **{f"LayerGradCam, {k}": v["val_corloc"] for k, v in gc_sets.items()},
                  f"activation-gradient, {chosen_name}": act_sets[chosen_name]["val_corloc"],
                  f"sensitivity + activation-gradient, {chosen_name}": both_val}
    map_scores = {
        "sensitivity (channel max)": metrics.maxboxacc_v2(S["test"].amax(1), test.boxes),
        f"sensitivity (channel max, blur {cam_sens['sigma']})":
            metrics.maxboxacc_v2(gaussian_blur_maps(S["test"], cam_sens["sigma"]), test.boxes),
        "Captum LayerGradCam": metrics.maxboxacc_v2(G["test"], test.boxes),
        "activation-gradient (channel max)": metrics.maxboxacc_v2(A["test"].amax(1), test.boxes),
    }
    accuracy = float((model(x_test).argmax(1) == test.labels).double().mean())
    classes = {
        "learned, paper features": per_class(paper_boxes, test.boxes, test.labels),
        f"learned, {chosen_name}": per_class(rich_boxes, test.boxes, test.labels),
        f"learned, {class_name}": per_class(class_boxes, test.boxes, test.labels),
        "cam_sensitivity": per_class(cam_sens_boxes, test.boxes, test.labels),
        "cam_gradcam": per_class(cam_gc_boxes, test.boxes, test.labels),
    }
    diagnostics = {
        "paper features": centre_size(paper_boxes, test.boxes, size),
        chosen_name: centre_size(rich_boxes, test.boxes, size),
        class_name: centre_size(class_boxes, test.boxes, size),
        f"LayerGradCam, {class_name}": centre_size(gc_class_boxes, test.boxes, size),
        "mean_box_size_px": size.tolist(),
    }

    # --- training-set size ----------------------------------------------------------------------------------------
    sizes = [s for s in (25, 50, 100, 200, 500, 1000, 2000, 4000) if s <= n_train]
    curve: Dict[str, Dict[int, float]] = {"default ridge (generalised cross-validation)": {},
                                          "ridge validated on 4000 images": {}}
    for k in sizes:
        for name, ridge in zip(curve, (None, agnostic[chosen_name]["ridge"])):
            reg = SensitivityBBox(model, features=chosen_features)
            reg.fit_attributions(S["train"][:k], train.boxes[:k], ridge=ridge)
            curve[name][k] = corloc_of(reg.boxes_from_attributions(S["test"]), test.boxes)

    # --- speed ----------------------------------------------------------------------------------------------------
    batch, labels = x_test[:64], test.labels[:64]
    saliency = Saliency(model)
    speed = time_interleaved({
        "captum_saliency": lambda: saliency.attribute(batch, target=labels, abs=True),
        "attribute": lambda: rich.attribute(batch, target=labels),
        "predict_boxes": lambda: rich.predict_boxes(batch, target=labels),
        "predict_boxes_paper_features": lambda: paper.predict_boxes(batch, target=labels),
    }, repeats=10)
    fit_start = time.perf_counter()
    SensitivityBBox(model).fit(x_train[:1000], train.boxes[:1000], target=train.labels[:1000], batch_size=250)
    fit_seconds = time.perf_counter() - fit_start

    vgg16 = torchvision.models.vgg16(weights=None).eval()
    big = torch.randn(8, 3, 224, 224)
    big_labels = torch.randint(0, 1000, (8,))
    big_sb = SensitivityBBox(vgg16).fit_attributions(torch.rand(8, 3, 224, 224), torch.tensor([[10.0, 10, 100, 100]] * 8))
    big_saliency = Saliency(vgg16)
    speed_vgg16 = time_interleaved({
        "captum_saliency": lambda: big_saliency.attribute(big, target=big_labels, abs=True),
        "predict_boxes": lambda: big_sb.predict_boxes(big, target=big_labels),
    }, repeats=5, warmup=1)

    record = {
        "environment": environment(),
        "seed": args.seed, "quick": args.quick, "n_train": n_train, "n_val": n_val, "n_test": n_test,
        "classifier_test_accuracy": accuracy,
        "paper": PAPER, "target": TARGET,
        "scores": rows,
        "validation_corloc": validation,
        "feature_sets_validation": {**agnostic, **with_class},
        "chosen_features": list(chosen_features), "class_features": list(class_features),
        "default_features": list(DEFAULT_FEATURES),
        "default_is_validation_choice": tuple(chosen_features) == tuple(DEFAULT_FEATURES),
        "map_maxboxacc_v2": map_scores,
        "chosen_settings": best, "chosen_settings_gradcam_regressor": best_gc,
        "cam_threshold_sensitivity": cam_sens, "cam_threshold_gradcam": cam_gc,
        "validation_trials": trials,
        "per_class_corloc": classes,
        "diagnostics": diagnostics,
        "training_size_curve": curve,
        "speed_scenes_vgg_batch64_s": speed,
        "speed_ratio_predict_boxes_vs_saliency": speed["predict_boxes"] / speed["captum_saliency"],
        "speed_ratio_attribute_vs_saliency": speed["attribute"] / speed["captum_saliency"],
        "speed_ratio_paper_features_vs_saliency": speed["predict_boxes_paper_features"] / speed["captum_saliency"],
        "speed_vgg16_224_batch8_s": speed_vgg16,
        "speed_ratio_vgg16": speed_vgg16["predict_boxes"] / speed_vgg16["captum_saliency"],
        "fit_seconds_per_1000_images": fit_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    write_results("sensitivity_bbox", record, to_markdown(record), args.out_dir)


def to_markdown(r: Dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        "# SensitivityBBox (Ebrahimpour & Noelle): CorLoc reproduction",
        "",
        "`python benchmarks/bench_sensitivity_bbox.py`" + (" --quick" if r["quick"] else "") + ". "
        f"Trained zoo classifier `scenes_vgg` (test accuracy {pct(r['classifier_test_accuracy'])}), single-object "
        f"cluttered scenes 64×64; {r['n_train']} train / {r['n_val']} validation / {r['n_test']} test images; "
        f"seed {r['seed']}. Paper (ImageNet): learned map {pct(PAPER['learned'])}, centre box "
        f"{pct(PAPER['centre'])}. Issue target: learned map ≥ {pct(TARGET)}. Every setting below was chosen on the "
        "validation images; the test images only score the choices.",
        "",
        "| method (test set, ground-truth class) | CorLoc | box accuracy, mean over IoU 0.3/0.5/0.7 |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {pct(v['corloc'])} | {pct(v['box_acc'])} |" for name, v in r["scores"].items()]
    s = r["chosen_settings"]
    lines += [
        "",
        "The box accuracy column averages IoU >= 0.3, 0.5, 0.7 for the one predicted box, as MaxBoxAccV2 averages "
        "them; MaxBoxAccV2 proper sweeps a threshold over the map and keeps any connected region, so it scores "
        "maps, not box predictors:",
        "",
        "| map (test set) | MaxBoxAccV2 |",
        "|---|---|",
    ]
    lines += [f"| {name} | {pct(v)} |" for name, v in r["map_maxboxacc_v2"].items()]
    lines += [
        "",
        "## Feature sets (validation CorLoc; blur 4, power 4, ridge chosen on validation)",
        "",
        "| map, features | validation CorLoc |",
        "|---|---|",
    ]
    lines += [f"| {name} | {pct(v)} |" for name, v in r["validation_corloc"].items()]
    lines += [
        "",
        f"Chosen class-agnostic set: `{r['chosen_features']}` (the class default is `{r['default_features']}`"
        + ("" if r["default_is_validation_choice"] else " — **differs from this run's choice**") + "). "
        f"With per-class offsets: `{r['class_features']}`. Paper features: sigma {s['sigma']}, power {s['power']}, "
        f"ridge {s['ridge']}. CAM thresholds: sensitivity {r['cam_threshold_sensitivity']['threshold']} (blur "
        f"{r['cam_threshold_sensitivity']['sigma']}), Grad-CAM {r['cam_threshold_gradcam']['threshold']} (blur "
        f"{r['cam_threshold_gradcam']['sigma']}).",
        "",
        "## What limits CorLoc: centre or size (test set)",
        "",
        "| learned map | CorLoc | median / 90th pct centre error | predicted centre + true size | "
        "true centre + predicted size | true centre + mean size | predicted centre + mean size |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in r["diagnostics"].items():
        if isinstance(d, dict):
            lines.append(f"| {name} | {pct(d['corloc'])} | {d['median_centre_error_px']:.2f} / "
                         f"{d['p90_centre_error_px']:.2f} px | {pct(d['predicted_centre_true_size'])} | "
                         f"{pct(d['true_centre_predicted_size'])} | {pct(d['true_centre_mean_size'])} | "
                         f"{pct(d['predicted_centre_mean_size'])} |")
    lines += [
        "",
        f"## CorLoc by training-set size (learned map, {r['chosen_features']})",
        "",
        "| training images | " + " | ".join(str(k) for k in next(iter(r["training_size_curve"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(r["training_size_curve"].values()))),
        *(f"| CorLoc, {name} | " + " | ".join(pct(v) for v in values.values()) + " |"
          for name, values in r["training_size_curve"].items()),
        "",
        "## CorLoc per class (test set)",
        "",
        "| method | " + " | ".join(str(c) for c in next(iter(r["per_class_corloc"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(r["per_class_corloc"].values()))),
    ]
    for name, values in r["per_class_corloc"].items():
        lines.append(f"| {name} | " + " | ".join(pct(v) for v in values.values()) + " |")
    sp, big = r["speed_scenes_vgg_batch64_s"], r["speed_vgg16_224_batch8_s"]
    lines += [
        "",
        "## Speed (median of interleaved runs, same batch; default features)",
        "",
        "| model, batch | Captum Saliency | SensitivityBBox.attribute | predict_boxes | predict_boxes / Saliency |",
        "|---|---|---|---|---|",
        f"| scenes_vgg 64×64, 64 | {sp['captum_saliency'] * 1e3:.1f} ms | {sp['attribute'] * 1e3:.1f} ms | "
        f"{sp['predict_boxes'] * 1e3:.1f} ms (paper features {sp['predict_boxes_paper_features'] * 1e3:.1f} ms) | "
        f"{r['speed_ratio_predict_boxes_vs_saliency']:.2f}× |",
        f"| VGG16 224×224, 8 | {big['captum_saliency'] * 1e3:.0f} ms | – | {big['predict_boxes'] * 1e3:.0f} ms | "
        f"{r['speed_ratio_vgg16']:.2f}× |",
        "",
        f"Fitting: {r['fit_seconds_per_1000_images']:.2f} s per 1,000 training images (scenes_vgg, 2 CPU cores "
        "unless stated in the environment record). Target for predict_boxes / Saliency: ≤ 1.1×.",
        "",
        f"Environment: {r['environment']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
