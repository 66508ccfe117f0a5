"""NodeBacktrack reproduction (Gandikota & Mishra) and speed/memory benchmark.

    python benchmarks/bench_node_backtrack.py [--quick] [--out-dir benchmarks/results]
    python benchmarks/bench_node_backtrack.py --speed-only [--device cuda] [--batch 8 64]

Reproduction. Paper: saliency F-measure 0.7 and IoU 0.6 on MSRA-B with VGG19. Here: the trained zoo VGG
(``scenes_vgg``) on held-out single-object cluttered scenes. For every method — NodeBacktrack's density, Captum
``Saliency``, ``GuidedBackprop`` and ``LayerGradCam`` (all explaining the true class) — the Gaussian blur of the
map and the mask threshold are chosen on a validation set (the paper also picked the best sigma and threshold),
then the test set gives: max-F (β² = 0.3), IoU of the thresholded map with the object mask, pointing game
(4 px tolerance), and the share of saliency energy inside the mask. The zoo ResNet is reported as well.

Speed and memory, same batch, one run: NodeBacktrack.attribute / Captum Saliency on torchvision VGG16 and
ResNet-50 (random weights; 224×224, batch 8), the vectorised walk versus a literal per-node Python loop
(``captum_ext.testing.backtrack_loop``) on the zoo VGG, and peak memory of NodeBacktrack / of a forward pass, each
measured as the peak resident-set growth of a fresh subprocess.

``--speed-only``: only the speed table of VGG16 and ResNet-50 (224², random weights) on ``--device`` at each
``--batch``: Saliency, the default rules and the two-channel rules, with the operations and host synchronisations
each ``attribute`` call dispatches and, on a GPU, peak memory against a forward with grad
(``node_backtrack_speed_<device>.json`` / ``.md``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Callable, Dict

import torch
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam, Saliency
from torch import Tensor, nn

import _node_backtrack_speed as device_speed
from _common import benchmark_parser, environment, parse_benchmark_args, time_interleaved, write_results
from captum_ext import NodeBacktrack, metrics, zoo
from captum_ext._utils.smoothing import gaussian_blur
from captum_ext.datasets import scenes

PAPER = {"max_f": 0.7, "iou": 0.6}
VARIANTS: Dict[str, Dict[str, Any]] = {
    "NodeBacktrack (defaults)": {},
    "NodeBacktrack, two-channel rules": NodeBacktrack.TWO_CHANNEL_RULES,
    "NodeBacktrack, dense rules": NodeBacktrack.DENSE_RULES,
}
# The rule at a linear layer fed by a flattened map (VGG's first FC layer), compared on the validation scenes.
SPATIAL_FC_CHOICES: Dict[str, Dict[str, Any]] = {
    "argmax": {"spatial_fc_rule": "argmax"},
    "positive": {"spatial_fc_rule": "positive"},
    **{f"top {n}": {"spatial_fc_rule": "top_n", "spatial_fc_top_n": n} for n in (5, 10, 20, 50)},
}
SIGMAS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def normalise(maps: Tensor) -> Tensor:
    low = maps.flatten(1).amin(1)[:, None, None, None]
    high = maps.flatten(1).amax(1)[:, None, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)


def method_maps(model: nn.Module, last_conv: nn.Module, x: Tensor, labels: Tensor) -> Dict[str, Tensor]:
    """Raw (unblurred) channel-reduced maps of every method, N×1×H×W."""
    maps: Dict[str, Tensor] = {}
    for name, rules in VARIANTS.items():
        maps[name] = NodeBacktrack(model, **rules).attribute(x, target=labels).sum(1, keepdim=True)
    maps["Captum Saliency"] = Saliency(model).attribute(x, target=labels, abs=True).amax(1, keepdim=True)
    maps["Captum GuidedBackprop"] = GuidedBackprop(model).attribute(x, target=labels).abs().amax(1, keepdim=True)
    cam = LayerGradCam(model, last_conv).attribute(x, target=labels, relu_attributions=True).detach()
    maps["Captum LayerGradCam"] = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return {k: v.detach() for k, v in maps.items()}


def scores(maps: Tensor, masks: Tensor, sigma: float, threshold: float) -> Dict[str, float]:
    smooth = normalise(gaussian_blur(maps, sigma))
    return {
        "max_f": metrics.saliency_fmeasure(smooth, masks).max_f,
        "iou": float(metrics.mask_iou(smooth >= threshold, masks).mean()),
        "pointing_game": metrics.pointing_game(smooth, masks, tolerance=4),
        "energy_in_mask": metrics.energy_pointing_game(smooth, masks),
    }


def reproduce(model_name: str, last_conv: Callable[[nn.Module], nn.Module], n_val: int, n_test: int,
              seed: int) -> Dict[str, Any]:
    model = zoo.load(model_name)
    val = scenes.make_scenes(n_val, split="test", seed=seed)
    test = scenes.make_scenes(n_test, split="test", seed=seed + 1)
    results: Dict[str, Any] = {}
    val_maps = method_maps(model, last_conv(model), scenes.normalize(val.images), val.labels)
    test_maps = method_maps(model, last_conv(model), scenes.normalize(test.images), test.labels)
    for name in val_maps:
        # Validation: sigma by max-F, then the threshold by IoU at that sigma.
        sigma = max(SIGMAS, key=lambda s: metrics.saliency_fmeasure(normalise(gaussian_blur(val_maps[name], s)),
                                                                     val.masks).max_f)
        smooth = normalise(gaussian_blur(val_maps[name], sigma))
        threshold = max(THRESHOLDS, key=lambda t: float(metrics.mask_iou(smooth >= t, val.masks).mean()))
        results[name] = {"sigma": sigma, "threshold": threshold, **scores(test_maps[name], test.masks, sigma,
                                                                          threshold)}
    results["object_share"] = float(test.masks.float().mean())
    return results


def spatial_fc_sweep(n_val: int, seed: int) -> Dict[str, Dict[str, float]]:
    """The spatial-FC rule on the zoo VGG's validation scenes: backtracked pixels per image, and max-F and
    energy in the object mask at the max-F-best blur."""
    model = zoo.load("scenes_vgg")
    val = scenes.make_scenes(n_val, split="test", seed=seed)
    x = scenes.normalize(val.images)
    rows = {}
    for name, rules in SPATIAL_FC_CHOICES.items():
        hits = NodeBacktrack(model, **rules).attribute(x, target=val.labels).sum(1, keepdim=True)
        by_sigma = {s: normalise(gaussian_blur(hits, s)) for s in SIGMAS if s > 0}
        sigma = max(by_sigma, key=lambda s: metrics.saliency_fmeasure(by_sigma[s], val.masks).max_f)
        rows[name] = {"pixels_per_image": float((hits > 0).flatten(1).sum(1).float().mean()), "sigma": sigma,
                      "max_f": metrics.saliency_fmeasure(by_sigma[sigma], val.masks).max_f,
                      "energy_in_mask": metrics.energy_pointing_game(by_sigma[sigma], val.masks)}
    return rows


_MEMORY_CHILD = r"""
import ctypes, gc, sys, torch, torchvision
from captum.attr import Saliency
from captum_ext import NodeBacktrack


def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])


torch.manual_seed(0)
name, what = sys.argv[1], sys.argv[2]
model = getattr(torchvision.models, name)(weights=None).eval()
x = torch.randn(8, 3, 224, 224)
target = torch.arange(8)
nb = NodeBacktrack(model)
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed pages back, so reuse does not hide growth
before = rss_kib("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
if what == "forward":
    with torch.no_grad():
        model(x)
elif what == "forward_grad":
    model(x.requires_grad_()).sum()
elif what == "saliency":
    Saliency(model).attribute(x, target=target)
else:
    nb.attribute(x, target=target)
print((rss_kib("VmHWM:") - before) / 1024.0)
"""


def peak_mib(model_name: str, what: str) -> float:
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, model_name, what], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def speed(model_name: str, repeats: int) -> Dict[str, float]:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    x = torch.randn(8, 3, 224, 224)
    target = torch.arange(8)
    nb = NodeBacktrack(model)
    dense = NodeBacktrack(model, **NodeBacktrack.DENSE_RULES)
    two = NodeBacktrack(model, **NodeBacktrack.TWO_CHANNEL_RULES)
    top10 = NodeBacktrack(model, spatial_fc_rule="top_n", spatial_fc_top_n=10)
    saliency = Saliency(model)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    timings = time_interleaved({
        "captum_saliency": lambda: saliency.attribute(x, target=target),
        "node_backtrack": lambda: nb.attribute(x, target=target),
        "forward_no_grad": forward,
    }, repeats=repeats, warmup=1)
    timings["ratio_vs_saliency"] = timings["node_backtrack"] / timings["captum_saliency"]
    both = time_interleaved({"captum_saliency": lambda: saliency.attribute(x, target=target),
                             "two_channel": lambda: two.attribute(x, target=target)}, repeats=repeats, warmup=1)
    timings["two_channel_rules"] = both["two_channel"]
    timings["two_channel_ratio_vs_saliency"] = both["two_channel"] / both["captum_saliency"]
    # The alternatives cost up to minutes per batch: one interleaved round, no warm-up beyond the runs above.
    other = time_interleaved({"captum_saliency": lambda: saliency.attribute(x, target=target),
                              "spatial_top10": lambda: top10.attribute(x, target=target),
                              "dense": lambda: dense.attribute(x, target=target)}, repeats=1, warmup=0)
    timings["spatial_top10_ratio_vs_saliency"] = other["spatial_top10"] / other["captum_saliency"]
    timings["dense_rules"] = other["dense"]
    timings["dense_ratio_vs_saliency"] = other["dense"] / other["captum_saliency"]
    return timings


def loop_speed(n_images: int) -> Dict[str, float]:
    from captum_ext.testing import backtrack_loop

    vgg = zoo.load("scenes_vgg")
    flat = nn.Sequential(*vgg.features, *vgg.classifier).eval()
    batch = scenes.make_scenes(n_images, split="test", seed=5)
    x = scenes.normalize(batch.images)
    nb = NodeBacktrack(flat)
    start = time.perf_counter()
    vectorised = nb.attribute(x, target=batch.labels)
    vec_seconds = time.perf_counter() - start
    start = time.perf_counter()
    looped = torch.cat([backtrack_loop(flat, x[i : i + 1], int(batch.labels[i])) for i in range(n_images)])
    loop_seconds = time.perf_counter() - start
    return {"images": n_images, "vectorised_s": vec_seconds, "loop_s": loop_seconds,
            "speedup": loop_seconds / vec_seconds, "identical_hits": bool(torch.equal(vectorised, looped))}


def main() -> None:
    parser = benchmark_parser(__doc__, "100/200 scenes, one timing repeat, no memory measurement")
    parser.add_argument("--seed", type=int, default=3030)
    parser.add_argument("--speed-only", action="store_true", help="only the speed table (see --device, --batch)")
    parser.add_argument("--device", default="cpu", help="device of the speed table (default: cpu)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8], help="batch sizes of the speed table")
    args = parse_benchmark_args(parser)
    if args.speed_only:
        device = torch.device(args.device)
        rows = device_speed.measure_all(device, args.batch, repeats=3 if args.quick else 5)
        write_results(f"node_backtrack_speed_{device.type}", {"environment": environment(), "rows": rows},
                      device_speed.to_markdown(rows, environment()), args.out_dir)
        return
    n_val, n_test = (100, 200) if args.quick else (500, 1000)
    started = time.perf_counter()
    record: Dict[str, Any] = {"environment": environment(), "quick": args.quick, "seed": args.seed,
                              "paper": PAPER, "n_val": n_val, "n_test": n_test}
    record["spatial_fc_validation"] = spatial_fc_sweep(n_val, args.seed)
    record["scenes_vgg"] = reproduce("scenes_vgg", lambda m: m.features[13], n_val, n_test, args.seed)
    record["scenes_resnet"] = reproduce("scenes_resnet", lambda m: m.layers[-1], n_val, n_test, args.seed)
    print(json.dumps(record["scenes_vgg"], indent=1))
    repeats = 1 if args.quick else 3
    record["speed"] = {name: speed(name, repeats) for name in ("vgg16", "resnet50")}
    record["loop_reference"] = loop_speed(1 if args.quick else 4)
    # memory needs one fresh process per measurement (8 of them): full runs only
    record["memory_mib"] = None if args.quick else {
        name: {what: peak_mib(name, what) for what in ("forward", "forward_grad", "saliency", "node_backtrack")}
        for name in ("vgg16", "resnet50")}
    record["total_seconds"] = time.perf_counter() - started
    write_results("node_backtrack", record, to_markdown(record), args.out_dir)


def to_markdown(r: Dict[str, Any]) -> str:
    lines = [
        "# NodeBacktrack (Gandikota & Mishra): saliency reproduction, speed and memory",
        "",
        f"Held-out single-object scenes, {r['n_val']} validation / {r['n_test']} test, seed {r['seed']}; every "
        "method explains the true class; blur sigma (by max-F) and mask threshold (by IoU) chosen per method on "
        f"validation. Paper (MSRA-B, VGG19): F-measure {PAPER['max_f']}, IoU {PAPER['iou']}. NodeBacktrack's "
        "two-channel rules: `NodeBacktrack.TWO_CHANNEL_RULES` (the two best channels per convolution node); dense "
        "rules: `NodeBacktrack.DENSE_RULES` (the five best channels per convolution node, every path counted).",
        "",
        "## The rule at VGG's spatial FC layer (zoo VGG, validation scenes; blur chosen by max-F)", "",
        "| rule | backtracked pixels per image | max-F | energy in mask | sigma |", "|---|---|---|---|---|",
    ]
    for name, row in r["spatial_fc_validation"].items():
        lines.append(f"| {name} | {row['pixels_per_image']:.1f} | {row['max_f']:.3f} | {row['energy_in_mask']:.3f} | "
                     f"{row['sigma']} |")
    lines.append("")
    for model in ("scenes_vgg", "scenes_resnet"):
        res = r[model]
        lines += [f"## {model} (object covers {100 * res['object_share']:.1f}% of the image)", "",
                  "| method | max-F (β²=0.3) | IoU | pointing game (4 px) | energy in mask | sigma | threshold |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in res.items():
            if name == "object_share":
                continue
            lines.append(f"| {name} | {row['max_f']:.3f} | {row['iou']:.3f} | {row['pointing_game']:.3f} | "
                         f"{row['energy_in_mask']:.3f} | {row['sigma']} | {row['threshold']} |")
        lines.append("")
    lines += ["## Speed (torchvision, random weights, 224×224, batch 8; median of interleaved runs)", "",
              "| model | Captum Saliency | NodeBacktrack | forward (no grad) | NodeBacktrack / Saliency | spatial FC "
              "top 10 / Saliency | two-channel rules | two-channel / Saliency | dense rules | dense / Saliency |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, t in r["speed"].items():
        lines.append(f"| {name} | {t['captum_saliency']:.2f} s | {t['node_backtrack']:.2f} s | "
                     f"{t['forward_no_grad']:.2f} s | {t['ratio_vs_saliency']:.2f}× | "
                     f"{t['spatial_top10_ratio_vs_saliency']:.2f}× | {t['two_channel_rules']:.2f} s | "
                     f"{t['two_channel_ratio_vs_saliency']:.2f}× | {t['dense_rules']:.1f} s | "
                     f"{t['dense_ratio_vs_saliency']:.1f}× |")
    loop = r["loop_reference"]
    lines += ["", f"Per-node Python loop (the paper's algorithms, literally) on scenes_vgg, {loop['images']} images: "
                  f"{loop['loop_s']:.1f} s against {loop['vectorised_s']:.3f} s vectorised — "
                  f"{loop['speedup']:.0f}× faster; identical hits: {loop['identical_hits']}.", ""]
    if r["memory_mib"] is None:
        lines += ["Peak memory: not measured in a quick run."]
    else:
        lines += ["## Peak memory (resident-set growth of a fresh process, MiB)", "",
                  "| model | forward (no grad) | forward (grad) | Captum Saliency | NodeBacktrack | NodeBacktrack / "
                  "forward (grad) |", "|---|---|---|---|---|---|"]
    for name, m in (r["memory_mib"] or {}).items():
        lines.append(f"| {name} | {m['forward']:.0f} | {m['forward_grad']:.0f} | {m['saliency']:.0f} | "
                     f"{m['node_backtrack']:.0f} | {m['node_backtrack'] / max(m['forward_grad'], 1e-9):.2f}× |")
    lines += ["", f"Environment: {r['environment']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
