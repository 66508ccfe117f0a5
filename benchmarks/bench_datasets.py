"""Generation speed of the benchmark ground: seconds for 10,000 samples of every dataset and scene mode.

    python benchmarks/bench_datasets.py [--n 10000] [--out benchmarks/results/datasets.json]

Each generator is warmed up first (one-off caches: photo bank, up-sampled digits), then timed once.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from captum_ext.datasets import ellipses, scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "datasets.json")
    args = parser.parse_args()
    rows = {}
    for dataset in (1, 2, 3):
        ellipses.make_ellipses(300, dataset=dataset, seed=99)
        start = time.perf_counter()
        ellipses.make_ellipses(args.n, dataset=dataset, seed=0)
        rows[f"ellipses_ds{dataset}"] = time.perf_counter() - start
    for mode in scenes.MODES:
        scenes.make_scenes(300, mode=mode, seed=99)
        start = time.perf_counter()
        scenes.make_scenes(args.n, mode=mode, seed=0)
        rows[f"scenes_{mode}"] = time.perf_counter() - start
    for name, seconds in rows.items():
        print(f"{name:<18} {args.n} samples in {seconds:6.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "n": args.n, "seconds": rows, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "load_average_at_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
