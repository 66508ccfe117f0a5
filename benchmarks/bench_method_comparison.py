"""Which method to trust, on the scenes ground: the seven methods ``captum-ext evaluate`` offers, in one pass over
held-out multi-object scenes exported as COCO, with every localisation metric, deletion and insertion AUC,
Captum's infidelity and max-sensitivity and ROAD's MoRF and LeRF; the leaderboard (bootstrap intervals over images)
and what each method and each metric cost per pair on this machine (from the run's own timing records).

    python benchmarks/bench_method_comparison.py [--quick] [--images N] [--perturbations N] [--out-dir DIR]

The sanity check (cascading randomisation) of the same methods is ``benchmarks/bench_sanity_checks.py``.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from _common import benchmark_parser, environment, parse_benchmark_args, write_results

METRICS = ["pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap", "deletion", "insertion",
           "infidelity", "sensitivity_max", "road_morf", "road_lerf"]
#: The parts of a method's time in its timing record, in the order the cost table shows them.
PARTS = ["method", *[m for m in METRICS if m not in ("deletion", "insertion")][:7], "deletion_auc", "insertion_auc",
         "road_morf", "road_lerf"]


def main() -> None:
    parser = benchmark_parser(__doc__, "12 images and 3 perturbations")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--perturbations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=32, help="deletion / insertion steps")
    args = parse_benchmark_args(parser)
    images, perturbations = (12, 3) if args.quick else (args.images, args.perturbations)

    from captum_ext.datasets import export_coco, scenes
    from captum_ext.evaluation import METHODS, evaluate

    work = Path(tempfile.mkdtemp())
    annotations, folder = export_coco(scenes.make_scenes(images, mode="multi", split="test", seed=23), work / "coco")
    started = time.perf_counter()
    summaries = evaluate("zoo:scenes_vgg_multilabel", list(METHODS), f"coco:{annotations}:{folder}", work / "run",
                         batch_size=16, metrics=METRICS, faithfulness_steps=args.steps,
                         perturbation_samples=perturbations, show_progress=False)
    wall = time.perf_counter() - started
    costs: Dict[str, Dict[str, float]] = {}
    for method in METHODS:
        timing = json.loads((work / "run" / method / "progress" / "timing-rank0.json").read_text())
        costs[method] = {part: 1000 * seconds / timing["pairs"] for part, seconds in timing["seconds_by_part"].items()}
    pairs = summaries[METHODS[0]]["n_pairs"]
    record: Dict[str, Any] = {
        "environment": environment(), "model": "zoo:scenes_vgg_multilabel", "images": images, "pairs": pairs,
        "perturbations": perturbations, "steps": args.steps, "wall_seconds": wall,
        "metrics": {m: {k: v for k, v in s.items() if k not in ("settings", "class_map", "skipped")}
                    for m, s in summaries.items()},
        "ms_per_pair": costs}
    board = (work / "run" / "leaderboard.md").read_text()
    cost_head = "| method | " + " | ".join(PARTS) + " |"
    cost_rows = [cost_head, "|---|" + "---|" * len(PARTS)]
    for method in METHODS:
        cost_rows.append(f"| {method} | " + " | ".join(f"{costs[method].get(part, float('nan')):.1f}"
                                                        for part in PARTS) + " |")
    lines = [
        "# Which method to trust: seven methods on the scenes ground", "",
        f"Zoo `scenes_vgg_multilabel`, {images} held-out multi-object 64×64 scenes exported as COCO ({pairs} (image, "
        f"class) pairs), one `evaluate` pass for all seven methods; deletion / insertion in {args.steps} steps "
        f"(RISE's baselines), infidelity and max-sensitivity with {perturbations} perturbations per pair (Gaussian "
        "σ = 0.1 and uniform ±0.02, seeded by the batch), ROAD's MoRF / LeRF over 10–90 % removed with noisy linear "
        "imputation. Values with 95 % bootstrap intervals over images; "
        "MaxBoxAccV2 and PxAP pool the whole dataset and have none. SensitivityBBox without a box map gives the same "
        "map as saliency.", "",
        board, "",
        "## Cost per pair (ms, this machine, one process)", "",
        "Each method's maps (`method`) and each metric, from the run's timing records; max-sensitivity reruns the "
        f"method {perturbations + 1} times per pair. The first method's first batch also pays for compiling the "
        f"metrics' Numba kernels (CorLoc, MaxBoxAccV2, PxAP). Whole pass: {wall:.0f} s.", "",
        "\n".join(cost_rows), ""]
    write_results("method_comparison", record, "\n".join(lines), args.out_dir)


if __name__ == "__main__":
    main()
