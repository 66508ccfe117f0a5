"""A plan for a large ``captum-ext evaluate`` run, from measured per-image costs.

Measures, on this machine: each method's seconds per image on a torchvision ResNet-50 at 224² (random weights:
the cost does not depend on them), the scoring cost per (image, class) pair at 224² (every localisation metric),
and the cost of writing one float16 map into the Zarr store. Then estimates the time and storage of ImageNet val
(50,000 images, one class each) and COCO val2017 (4,952 images with objects, 14,631 image-class pairs) for every
method on K GPUs, one process per GPU.

    python benchmarks/plan_large_run.py [--quick] [--device cuda]
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import torch

from _common import benchmark_parser, environment, parse_benchmark_args, write_results

METHODS = ("saliency", "integrated_gradients", "guided_backprop", "grad_cam", "sensitivity", "node_backtrack",
           "class_diff")
DATASETS = {"ImageNet val": {"images": 50_000, "pairs": 50_000},
            "COCO val2017": {"images": 4_952, "pairs": 14_631}}
GPUS = (1, 8, 64)
SIZE = 224


def method_costs(device: str, batch: int, repeats: int) -> Dict[str, float]:
    """Seconds per image of each method on ResNet-50 at 224²."""
    import torchvision

    from captum_ext.evaluation.methods import build_method

    model = torchvision.models.resnet50(weights=None).eval().to(device)
    layers = [model.layer2, model.layer3, model.layer4]
    images = torch.rand(batch, 3, SIZE, SIZE, device=device)
    targets = torch.randint(0, 1000, (batch,), device=device)
    costs = {}
    with torch.no_grad():  # the prediction pass evaluate makes once per image for its table and accuracy
        model(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        costs["prediction_forward"] = (time.perf_counter() - start) / (repeats * batch)
    for name in METHODS:
        method = build_method(name, model, layers=layers)  # class_diff reads ResNet stages (containers)
        method(images, targets)  # warm-up (and tracing for the graph methods)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            method(images, targets)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        costs[name] = (time.perf_counter() - start) / (repeats * batch)
        print(f"{name}: {1000 * costs[name]:.1f} ms/image", flush=True)
    return costs


def scoring_costs(pairs: int, device: str = "cpu") -> Dict[str, float]:
    """Seconds per pair of each localisation metric (on ``device``, where ``evaluate`` scores the maps) and of a
    Zarr map write, at 224²."""
    from captum_ext.evaluation.scoring import localisation_metrics
    from captum_ext.evaluation.store import MapStore
    from captum_ext.metrics import GroundTruth

    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(pairs, 1, SIZE, SIZE), 15, 1, 7)[:, 0]  # CAM-like maps
    truths = []
    for _ in range(pairs):
        x1, y1 = torch.randint(0, 120, (2,)).tolist()
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[y1:y1 + 80, x1:x1 + 90] = True
        truths.append(GroundTruth(0, torch.tensor([[x1, y1, x1 + 90, y1 + 80]], dtype=torch.float32), mask))
    costs = {}
    maps = list(smooth.to(device))
    for name, metric in localisation_metrics(1, 15.0, True, True).items():
        metric.statistics(maps[:2], truths[:2])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        metric.statistics(maps, truths)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        costs[name] = (time.perf_counter() - start) / pairs
    with tempfile.TemporaryDirectory() as tmp:
        store = MapStore(Path(tmp) / "maps.zarr")
        store.create([0] * pairs, [0] * pairs, [0] * pairs, [SIZE] * pairs, [SIZE] * pairs)
        start = time.perf_counter()
        store.write(list(range(pairs)), smooth.to(torch.float16))
        costs["zarr_write"] = (time.perf_counter() - start) / pairs
    return costs


def plan(methods: Dict[str, float], scoring: Dict[str, float], cpu_cores_per_gpu: int, device: str = "cuda"
         ) -> Dict[str, Any]:
    """Hours on K GPUs (one process each). The driver is a pipeline: the model's thread explains a batch while a
    scoring thread scores the one before and a writer thread stores the one before that, so a process runs at the
    pace of its slowest stage. On a GPU the metrics' kernels queue on the method's stream, so the model's and the
    scoring's device time add up (an upper bound: only their host-side time overlaps) while the Zarr writes run on
    the host beside them; on the CPU every stage shares the same cores, so everything adds up. Methods that run the
    plain model on the images give the predictions from their own forward; the others pay one more forward."""
    from captum_ext.evaluation._forward_tap import PLAIN_FORWARD_METHODS

    write = scoring.get("zarr_write", 0.0)
    score = sum(v for k, v in scoring.items() if k != "zarr_write")
    forward = methods["prediction_forward"]
    rows = {}
    for dataset, size in DATASETS.items():
        for name, seconds in methods.items():
            if name == "prediction_forward":
                continue
            device_work = size["images"] * (0.0 if name in PLAIN_FORWARD_METHODS else forward) + \
                size["pairs"] * (seconds + score)
            total = max(device_work, size["pairs"] * write) if device.startswith("cuda") else \
                device_work + size["pairs"] * write
            rows[f"{dataset} / {name}"] = {f"{k} GPUs": total / k / 3600 for k in GPUS}
    storage = {dataset: {"maps_gb_float16_uncompressed": size["pairs"] * SIZE * SIZE * 2 / 1e9}
               for dataset, size in DATASETS.items()}
    return {"hours": rows, "storage": storage, "scoring_seconds_per_pair": score, "write_seconds_per_pair": write,
            "cpu_cores_per_gpu": cpu_cores_per_gpu, "model": "pipelined: max(device work, Zarr writes) on a GPU"}


def main() -> None:
    parser = benchmark_parser(__doc__, "fewer repeats and pairs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replan", action="store_true", help="measure nothing: recompute the plan of the existing "
                        "result file for --device from the costs it recorded (when the driver's model changed)")
    args = parse_benchmark_args(parser)
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    if args.replan:
        record: Dict[str, Any] = json.loads((args.out_dir / f"large_run_plan{suffix}.json").read_text())
        record["replanned_on"] = environment()
    else:
        record = {"environment": environment(), "device": args.device, "size": SIZE}
        record["method_seconds_per_image"] = method_costs(args.device, 8 if args.quick else 32,
                                                          1 if args.quick else 3)
        record["scoring_seconds_per_pair"] = scoring_costs(8 if args.quick else 32, args.device)
    import os

    record["plan"] = plan(record["method_seconds_per_image"], record["scoring_seconds_per_pair"],
                          record["environment"]["cpu_count"] or os.cpu_count() or 1, args.device)
    write_results(f"large_run_plan{suffix}", record, markdown(record), args.out_dir)


def markdown(record: Dict[str, Any]) -> str:
    env = record["environment"]
    lines = ["# Plan for a large `captum-ext evaluate` run", "",
             f"Measured on {env['cuda'] or 'the CPU'} ({env['cpu_count']} CPU cores), torchvision ResNet-50 at "
             f"{SIZE}², device `{record['device']}`.", ""]
    if "replanned_on" in record:
        lines += [f"The costs are those measured on {env['date']}; the plan below was recomputed from them on "
                  f"{record['replanned_on']['date']} for the pipelined driver (`--replan`), without a new "
                  "measurement.", ""]
    lines += ["| method | ms per image |", "|---|---|"]
    lines += [f"| `{k}` | {1000 * v:.1f} |" for k, v in record["method_seconds_per_image"].items()]
    lines += ["", "(`prediction_forward`: the plain forward pass `evaluate` makes once per image for its "
              "predictions, except for methods whose own forward gives them: saliency, guided backprop, Grad-CAM.)"]
    lines += ["", f"| scoring, per pair (metrics on `{record['device']}`, Zarr write on the CPU) | ms |", "|---|---|"]
    lines += [f"| {k} | {1000 * v:.1f} |" for k, v in record["scoring_seconds_per_pair"].items()]
    unit = "GPU" if record["device"].startswith("cuda") else "process"
    header = " | ".join(f"hours on {k} {unit}{'s' if k > 1 else ''}" for k in GPUS)
    lines += ["", f"| dataset / method | {header} |", "|---|" + "---|" * len(GPUS)]
    for name, hours in record["plan"]["hours"].items():
        lines.append(f"| {name} | " + " | ".join(f"{h:.3g}" for h in hours.values()) + " |")
    lines += ["", "Hours: each process runs at the pace of its slowest pipeline stage; on a GPU the method, the "
              "predictions and the metrics share the device and add up, the Zarr writes overlap them on the host."]
    lines += ["", "Storage (float16 maps before compression, 224² each): " + "; ".join(
        f"{k}: {v['maps_gb_float16_uncompressed']:.1f} GB" for k, v in record["plan"]["storage"].items()) + ".", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
