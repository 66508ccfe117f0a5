"""Generation speed of the benchmark ground: seconds per 10,000 samples of every dataset and scene mode.

    python benchmarks/bench_datasets.py [--quick] [--n 10000] [--out-dir benchmarks/results]

Each generator is warmed up first (one-off caches: photo bank, up-sampled digits), then timed once on ``--n``
samples (1,000 with ``--quick``); the table reports seconds scaled to 10,000 samples.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict

from _common import benchmark_parser, environment, parse_benchmark_args, write_results
from captum_ext.datasets import ellipses, scenes


def main() -> None:
    parser = benchmark_parser(__doc__, "1,000 samples per generator")
    parser.add_argument("--n", type=int, default=None, help="samples per generator (default 10,000)")
    args = parse_benchmark_args(parser)
    n: int = args.n or (1_000 if args.quick else 10_000)
    rows: Dict[str, float] = {}
    for dataset in (1, 2, 3):
        ellipses.make_ellipses(300, dataset=dataset, seed=99)
        start = time.perf_counter()
        ellipses.make_ellipses(n, dataset=dataset, seed=0)
        rows[f"ellipses_ds{dataset}"] = time.perf_counter() - start
    for mode in scenes.MODES:
        scenes.make_scenes(300, mode=mode, seed=99)
        start = time.perf_counter()
        scenes.make_scenes(n, mode=mode, seed=0)
        rows[f"scenes_{mode}"] = time.perf_counter() - start
    record: Dict[str, Any] = {"environment": environment(), "quick": args.quick, "n": n, "seconds": rows,
                              "load_average_at_end": os.getloadavg()}
    write_results("datasets", record, to_markdown(record), args.out_dir)


def to_markdown(r: Dict[str, Any], per: int = 10_000) -> str:
    lines = ["# Benchmark ground: generation speed", "",
             f"Measured on {r['n']} samples per generator after a warm-up, scaled to {per:,}.", "",
             f"| generator | seconds per {per:,} |", "|---|---:|"]
    for name, seconds in r["seconds"].items():
        lines.append(f"| {name} | {seconds * per / r['n']:.1f} |")
    return "\n".join(lines + ["", f"Environment: {r['environment']}", ""])


if __name__ == "__main__":
    main()
