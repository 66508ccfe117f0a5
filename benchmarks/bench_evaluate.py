"""Dataset-scale evaluation benchmark: ``captum-ext evaluate`` against the bare method, processes, memory.

On scenes exported as a COCO dataset (PNG files and JSON annotations, read back through pycocotools):

1. **Driver overhead**: ``evaluate`` (reading, maps into Zarr, metrics, records) against the bare method on the
   same batches already in memory (target: at most 5 % more time), with the time split into its parts.
2. **Processes**: two processes of one thread each (``torchrun``, gloo) against one process of one thread
   (target: at least 1.8× the throughput).
3. **Memory**: peak resident memory of a whole run on a small and a 10× larger dataset (target: at most 1.1×).
4. **Plan**: measured per-image costs turned into the time and storage of a large run.

    python benchmarks/bench_evaluate.py [--quick] [--device cuda]
    python benchmarks/bench_evaluate.py --size 224 --model zoo:scenes_resnet --images 256 --overhead-only

At sizes other than 64 the Integrated Gradients run is left out (at 224² it would take most of an hour here);
its overhead is measured on the 64² scenes.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import torch

from _common import benchmark_parser, environment, parse_benchmark_args, write_results

MODEL = "zoo:scenes_vgg"
METHOD = "saliency"
BATCH = 32


def export(n: int, folder: Path, seed: int = 7, size: int = 64) -> str:
    """Scenes written as a COCO dataset; its ``class_map.json`` maps the category ids to the zoo's classes."""
    from captum_ext.datasets import export_coco, scenes

    batch = scenes.make_scenes(n, mode="single", split="test", seed=seed, size=size)
    annotations, images = export_coco(batch, folder)
    return f"coco:{annotations}:{images}"


def class_map_of(spec: str) -> Path:
    return Path(spec.split(":")[1]).parent / "class_map.json"


def run_cli(args: List[str], processes: int = 1, threads: int = 1) -> Dict[str, float]:
    """Wall time and the peak resident memory of the largest process of one ``captum-ext`` run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    # The peak is read from /proc/self/status (VmHWM): getrusage's ru_maxrss survives exec on Linux, so a child
    # forked from this (large) benchmark process would report this process's memory as its own.
    probe = ("import runpy, sys; sys.argv = ['captum_ext'] + sys.argv[1:]; "
             "code = 0\ntry:\n    runpy.run_module('captum_ext', run_name='__main__')\nexcept SystemExit as e:\n"
             "    code = e.code or 0\npeak = [l.split()[1] for l in open('/proc/self/status') if "
             "l.startswith('VmHWM')][0]\nprint('PEAK_RSS_KB', peak, file=sys.stderr)\nsys.exit(code)")
    command = [*launcher, "-c", probe, *args] if processes == 1 else \
        [*launcher, "--no-python", sys.executable, "-c", probe, *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    peaks = [int(line.split()[-1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return {"seconds": seconds, "peak_rss_mb": max(peaks) / 1024}


#: (method, localisation metrics) pairs whose overhead is measured: the cheapest method with every metric, with the
#: pointing game only, the driver alone (maps, table, accuracy; no localisation metric), and a method of realistic
#: cost.
OVERHEAD_RUNS = (("saliency", None), ("saliency", ("pointing_game",)), ("saliency", ()),
                 ("integrated_gradients", None))


def _metrics_label(metrics: Any) -> str:
    return "all" if metrics is None else ", ".join(metrics) or "none"


@contextmanager
def _timed(into: List[Tuple[float, float]]) -> Iterator[None]:
    """Appends (wall seconds, this process's CPU seconds over all its threads) of the block."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    yield
    into.append((time.perf_counter() - wall, _cpu_seconds() - cpu))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def overhead(spec: str, folder: Path, device: str, model_spec: str = MODEL, size: int = 64) -> Dict[str, Any]:
    """evaluate() against the bare method on the same batches, in this process, for each of OVERHEAD_RUNS."""
    from captum_ext.evaluation import evaluate
    from captum_ext.evaluation.data import open_dataset
    from captum_ext.evaluation.methods import build_method
    from captum_ext.evaluation.models import load_evaluation_model

    dataset = open_dataset(spec)
    class_map = json.loads(class_map_of(spec).read_text())
    loaded = load_evaluation_model(model_spec)
    model = loaded.model.to(device)
    start = time.perf_counter()
    samples = [dataset[i] for i in range(len(dataset))]
    read_seconds = time.perf_counter() - start
    batches = [(torch.stack([s.image for s in samples[i:i + BATCH]]).to(device),
                torch.tensor([class_map["ids"][str(s.truths[0].category)] for s in samples[i:i + BATCH]],
                             device=device))
               for i in range(0, len(samples), BATCH)]
    rows = []
    for method_name, metrics in OVERHEAD_RUNS:
        if method_name == "integrated_gradients" and size != 64:
            continue
        method = build_method(method_name, model)

        def bare() -> None:
            for images, targets in batches:
                method(images, targets)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        # A method of realistic cost runs long enough to need neither a warm-up nor repeats.
        repeats = 1 if method_name == "integrated_gradients" else 3
        if repeats > 1:
            bare()  # warm-up
        timings: Dict[str, List[Tuple[float, float]]] = {"bare": [], "evaluate": []}
        for repeat in range(repeats):
            with _timed(timings["bare"]):
                bare()
            with _timed(timings["evaluate"]):
                evaluate(loaded, method_name, dataset, folder / f"overhead-{method_name}-{metrics}-{repeat}",
                         batch_size=BATCH, device=device, class_map=class_map, show_progress=False, metrics=metrics)
        (bare_s, bare_cpu), (evaluate_s, evaluate_cpu) = min(timings["bare"]), min(timings["evaluate"])
        cores = os.cpu_count() or 1
        rows.append({"method": method_name, "metrics": _metrics_label(metrics),
                     "bare_seconds": bare_s, "evaluate_seconds": evaluate_s, "overhead": evaluate_s / bare_s - 1,
                     "images_per_second": len(dataset) / evaluate_s,
                     # Process CPU time (all threads): the driver's own work, and the overhead it must cost at
                     # least when every core is busy (the method already keeps them busy on the CPU).
                     "bare_cpu_seconds": bare_cpu, "evaluate_cpu_seconds": evaluate_cpu,
                     "overhead_floor": max(evaluate_cpu - bare_cpu, 0.0) / (cores * bare_s)})
    return {"images": len(dataset), "device": device, "read_seconds_single_pass": read_seconds, "runs": rows}


def main() -> None:
    parser = benchmark_parser(__doc__, "500 images (memory: 200 vs 2,000) instead of 2,000 (1,000 vs 10,000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-processes", action="store_true", help="only the overhead and memory parts")
    parser.add_argument("--overhead-only", action="store_true", help="only the overhead part")
    parser.add_argument("--memory-only", action="store_true",
                        help="re-measure the memory part and update the existing result file")
    parser.add_argument("--size", type=int, default=64, help="scene size in pixels (default 64)")
    parser.add_argument("--model", default=MODEL, help=f"the evaluated model (default {MODEL}; at sizes other "
                        "than 64 a model with global pooling, e.g. zoo:scenes_resnet)")
    parser.add_argument("--images", type=int, default=None, help="images of the overhead part (default 2,000; "
                        "500 with --quick)")
    args = parse_benchmark_args(parser)
    n = args.images or (500 if args.quick else 2000)
    small, large = (200, 2000) if args.quick else (1000, 10000)
    suffix = ("" if args.device == "cpu" else "_" + args.device.split(":")[0]) + \
        ("" if args.size == 64 else f"_{args.size}")
    existing = args.out_dir / f"evaluate{suffix}.json"
    # A partial run (--memory-only, --overhead-only) updates its part of an existing result file.
    partial = args.memory_only or (args.overhead_only and existing.is_file())
    record: Dict[str, Any] = json.loads(existing.read_text()) if partial else \
        {"environment": environment(), "model": args.model, "method": METHOD, "batch_size": BATCH, "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        spec = export(n if not args.memory_only else 1, tmp_path / "data", size=args.size)
        if not args.memory_only:
            print(f"overhead on {n} images ({args.device}) ...", flush=True)
            record["overhead"] = {**overhead(spec, tmp_path, args.device, args.model, args.size),
                                  "measured": environment()["date"]}
        common = ["evaluate", "--model", args.model, "--method", METHOD, "--data", spec, "--batch-size", str(BATCH),
                  "--class-map", str(class_map_of(spec)), "--no-progress", "--device", args.device]
        if not (args.skip_processes or args.memory_only or args.overhead_only):
            print("1 vs 2 processes ...", flush=True)
            one = run_cli([*common, "--out", str(tmp_path / "p1")], processes=1)
            two = run_cli([*common, "--out", str(tmp_path / "p2")], processes=2)
            same = json.loads((tmp_path / "p1" / "metrics.json").read_text())
            other = json.loads((tmp_path / "p2" / "metrics.json").read_text())
            loops = {name: [json.loads(f.read_text()) for f in (tmp_path / name / "progress").glob("timing-*.json")]
                     for name in ("p1", "p2")}
            loop_one = max(t["seconds"] for t in loops["p1"])
            loop_two = max(t["seconds"] for t in loops["p2"])  # the slower process ends the run
            record["processes"] = {"one_process_seconds": one["seconds"], "two_processes_seconds": two["seconds"],
                                   "speedup": one["seconds"] / two["seconds"], "one_process_loop_seconds": loop_one,
                                   "two_processes_loop_seconds": loop_two, "loop_speedup": loop_one / loop_two,
                                   "same_metrics": {k: v for k, v in same.items() if k != "settings"} ==
                                   {k: v for k, v in other.items() if k != "settings"}}
        memory = {}
        for size in (() if args.overhead_only else (small, large)):
            print(f"peak memory on {size} images ...", flush=True)
            data = export(size, tmp_path / f"mem{size}", seed=11, size=args.size)
            memory[str(size)] = run_cli(["evaluate", "--model", args.model, "--method", METHOD, "--data", data,
                                         "--class-map", str(class_map_of(data)), "--batch-size", str(BATCH),
                                         "--no-progress", "--device", args.device,
                                         "--out", str(tmp_path / f"mem-out{size}")], threads=2)
        if memory:
            record["memory"] = {**memory,
                                "ratio": memory[str(large)]["peak_rss_mb"] / memory[str(small)]["peak_rss_mb"]}
    record["plan"] = plan(record)
    write_results(f"evaluate{suffix}", record, markdown(record), args.out_dir)


def plan(record: Dict[str, Any]) -> Dict[str, Any]:
    """Time and storage of ImageNet val (50k images, 1 class each, 224², float16 maps) from measured costs."""
    runs = record["overhead"]["runs"]
    per_image = {f"{r['method']}/{r['metrics']}": r["evaluate_seconds"] / record["overhead"]["images"] for r in runs}
    pixels_measured = record.get("size", 64) ** 2
    scale = 224 * 224 / pixels_measured
    map_bytes = 224 * 224 * 2
    return {"seconds_per_image_measured": per_image, "pixel_scale_to_224": scale,
            "imagenet_val_maps_gb_uncompressed": 50_000 * map_bytes / 1e9,
            "coco_val_pairs": 36_000, "coco_val_maps_gb_uncompressed": 36_000 * 640 * 480 * 2 / 1e9}


def _floor(run: Dict[str, Any]) -> str:
    """The driver's extra CPU time, as the overhead it costs at least with every core busy."""
    if "overhead_floor" not in run:
        return ""
    extra = run["evaluate_cpu_seconds"] - run["bare_cpu_seconds"]
    if extra <= 0:  # idle threads spinning in the method's own run can outweigh the driver's work
        return " (the driver's own CPU time is within the method's run-to-run variation)"
    return f" (driver's own CPU work {extra:.2f} s: at least {100 * run['overhead_floor']:.1f} % on these cores)"


def markdown(record: Dict[str, Any]) -> str:
    o = record["overhead"]
    lines = ["# captum-ext evaluate: driver overhead, processes, memory", "",
             f"Model `{record.get('model', MODEL)}` ({record.get('size', 64)}×{record.get('size', 64)} scenes), "
             f"batch {BATCH}, device `{o['device']}`; "
             f"{record['environment']['cpu_count']} CPU cores, {record['environment']['cuda'] or 'no GPU'}. "
             f"{o['images']} images exported as COCO (PNG + JSON)."
             + (f" Overhead measured {o['measured']}." if "measured" in o else ""), "",
             "| measure | value | target |", "|---|---|---|"]
    for r in o["runs"]:
        lines += [f"| `{r['method']}`, localisation metrics: {r['metrics']} — bare method / `evaluate` | "
                  f"{r['bare_seconds']:.2f} s / {r['evaluate_seconds']:.2f} s ({r['images_per_second']:.0f} "
                  f"images/s): overhead {100 * r['overhead']:.1f} %{_floor(r)} | ≤ 5 % |"]
    by_metrics = {r["metrics"]: r for r in o["runs"] if r["method"] == METHOD}
    if "all" in by_metrics and "pointing_game" in by_metrics:
        ratio = by_metrics["all"]["evaluate_seconds"] / by_metrics["pointing_game"]["evaluate_seconds"]
        lines += [f"| `{METHOD}`: `evaluate` with all localisation metrics / with the pointing game only | "
                  f"{ratio:.2f}× | ≤ 1.3× |"]
    lines += [f"| reading and decoding the {o['images']} PNGs once | {o['read_seconds_single_pass']:.2f} s | |"]
    if "processes" in record:
        p = record["processes"]
        lines += [f"| 1 process × 1 thread: whole command / its batch loop | {p['one_process_seconds']:.1f} s / "
                  f"{p['one_process_loop_seconds']:.1f} s | |",
                  f"| 2 processes × 1 thread (torchrun, gloo): whole command / slower process's loop | "
                  f"{p['two_processes_seconds']:.1f} s / {p['two_processes_loop_seconds']:.1f} s | |",
                  f"| speed-up, batch loop (whole command, with start-up) | {p['loop_speedup']:.2f}× "
                  f"({p['speedup']:.2f}×); metrics identical: {p['same_metrics']} | ≥ 1.8× |"]
    if "memory" in record:
        m = record["memory"]
        sizes = [k for k in m if k != "ratio"]
        lines += [f"| peak RSS, {k} images | {m[k]['peak_rss_mb']:.0f} MB | |" for k in sizes]
        lines += [f"| peak RSS ratio ({sizes[-1]} / {sizes[0]}) | {m['ratio']:.2f} | ≤ 1.1 |"]
    lines += [""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
