"""Helpers shared by the benchmark scripts: environment record, timing, result files."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

RESULTS = Path(__file__).parent / "results"


def environment() -> Dict[str, Any]:
    """Machine and library versions, recorded next to every result."""
    import captum
    import torchvision

    import captum_ext

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": captum.__version__,
        "captum_ext": captum_ext.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(calls: Dict[str, Callable[[], Any]], repeats: int = 10, warmup: int = 2,
                     device: torch.device = torch.device("cpu")) -> Dict[str, float]:
    """Median wall-clock seconds of each call, measured in alternation so load changes hit all of them alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def results_dir(out_dir: Optional[Path], quick: bool) -> Path:
    """Where a benchmark writes: ``out_dir`` if given, else ``results/`` (full runs) or ``results/quick/``, so a
    quick run never overwrites the committed full results."""
    if out_dir is not None:
        return out_dir
    return RESULTS / "quick" if quick else RESULTS


def benchmark_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--quick`` and ``--out-dir``; scripts add their own options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: benchmarks/results, or benchmarks/results/quick with --quick")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and resolve ``out_dir`` with :func:`results_dir`."""
    args = parser.parse_args()
    args.out_dir = results_dir(args.out_dir, args.quick)
    return args


def write_results(name: str, record: Dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> None:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    print(f"wrote {out_dir / (name + '.json')} and {name}.md")
