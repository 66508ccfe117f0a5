"""Cost of the localisation metrics per (image, class) pair, on the maps' device, and their exactness across
devices.

Maps: 224² by default, half saliency-like (absolute Gaussian noise under a faint blob: many small components at
every threshold) and half CAM-like (a smooth blob, few components), with masks and one to three boxes per pair.
Each metric's ``statistics`` is timed on the CPU (the SciPy path, with the threads this process has) and, with
``--device cuda``, on the GPU (batched component labelling in tensor operations); on the GPU run the state deltas
and per-pair values of both devices are compared and must be equal.

    python benchmarks/bench_localisation_metrics.py [--device cuda] [--size 224] [--batch 64] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, time_interleaved  # noqa: E402

from captum_ext.metrics import (  # noqa: E402
    CorLocMetric,
    EnergyPointingGameMetric,
    MaxBoxAccV2Metric,
    PointingGameMetric,
    PxAPMetric,
)
from captum_ext.metrics.ground_truth import GroundTruth  # noqa: E402


def pairs(n: int, size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps: List[torch.Tensor] = []
    truths: List[GroundTruth] = []
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=generator).tolist()
        blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (size / 10) ** 2))
        noise = torch.randn(size, size, generator=generator).abs()
        raw = blob * 3 + noise if i % 2 == 0 else blob + 0.05 * noise
        maps.append((raw / raw.max()).to(torch.float16).to(torch.float32))  # stored as the driver stores them
        half = size // 8
        box = torch.tensor([[cx - half, cy - half, cx + half, cy + half]], dtype=torch.float32)
        extra = torch.randint(0, size - half, (i % 3, 2), generator=generator).float()
        boxes = torch.cat([box, torch.cat([extra, extra + half], 1)]).clamp(0, size)
        mask = torch.zeros(size, size, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.long().tolist():
            mask[y1:y2, x1:x2] = True
        truths.append(GroundTruth(i % 10, boxes, mask))
    return maps, truths


def metrics() -> Dict[str, object]:
    return {"pointing_game": PointingGameMetric(10), "energy_pointing_game": EnergyPointingGameMetric(),
            "corloc": CorLocMetric(), "maxboxacc_v2": MaxBoxAccV2Metric(), "pxap": PxAPMetric()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8 pairs, 2 repeats")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    batch, repeats = (8, 2) if args.quick else (args.batch, args.repeats)
    maps, truths = pairs(batch, args.size)
    device = torch.device(args.device)
    chosen = metrics()
    result = {"environment": environment(), "size": args.size, "pairs": batch, "per_pair_ms": {}, "equal": {}}
    for name, metric in chosen.items():
        calls = {"cpu": lambda m=metric: m.statistics(maps, truths)}
        if device.type != "cpu":
            moved = [m.to(device) for m in maps]
            calls[device.type] = lambda m=metric: metric.statistics(moved, truths)
            here, there = calls["cpu"](), calls[device.type]()
            same = all(torch.equal(here[0][k].cpu(), there[0][k].cpu()) for k in here[0]) and all(
                torch.equal(here[1][k].cpu(), there[1][k].cpu()) for k in here[1])
            result["equal"][name] = same
        seconds = time_interleaved(calls, repeats=repeats, warmup=1, device=device)
        result["per_pair_ms"][name] = {where: 1000 * s / batch for where, s in seconds.items()}
        print(name, json.dumps(result["per_pair_ms"][name]), "equal" if result["equal"].get(name, True) else
              "DIFFERENT", flush=True)
    for where in result["per_pair_ms"]["pxap"]:
        total = sum(v[where] for v in result["per_pair_ms"].values())
        print(f"all localisation metrics on {where}: {total:.2f} ms per pair", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
        args.out.with_suffix(".md").write_text(markdown(result, args))


def markdown(result: Dict[str, object], args: argparse.Namespace) -> str:
    """The measured costs as a Markdown table, one column per device."""
    devices = list(result["per_pair_ms"]["pxap"])
    threads = result["environment"]["torch_threads"]
    lines = ["# Localisation metrics per pair", "",
             f"`OMP_NUM_THREADS={threads} python benchmarks/bench_localisation_metrics.py --device {args.device} --size {args.size} --batch "
             f"{args.batch} --repeats {args.repeats}` ({result['pairs']} pairs of {args.size}² maps, half "
             f"saliency-like noise under a blob, half smooth CAM-like blobs; masks and 1–3 boxes per pair; "
             f"{threads} CPU thread(s)). Each metric's `statistics`, ms per pair, median of the repeats after a "
             f"warm-up.", "", "| metric | " + " | ".join(devices) + " |", "|---|" + "---|" * len(devices)]
    for name, cost in result["per_pair_ms"].items():
        lines.append(f"| {name} | " + " | ".join(f"{cost[d]:.2f}" for d in devices) + " |")
    totals = [sum(v[d] for v in result["per_pair_ms"].values()) for d in devices]
    lines.append("| **all five** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
