"""NodeBacktrack's cost against Captum Saliency on one device: time, dispatched operations, host syncs, memory.

Used by ``bench_node_backtrack.py`` (``--device``, ``--batch``, ``--speed-only``). Time is the median of
interleaved runs after warm-up (each call synchronised on a GPU); operations and host synchronisations are counted
per ``attribute`` call with :func:`captum_ext.testing.count_ops` (on a GPU every operation is a kernel launch);
peak memory is measured on a GPU only (``torch.cuda.max_memory_allocated`` above the model and input).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from captum.attr import Saliency

from _common import time_interleaved
from captum_ext import NodeBacktrack
from captum_ext.testing import accelerator_code_paths, count_ops

RULE_SETS: Dict[str, Dict[str, Any]] = {"default": {}, "two_channel": NodeBacktrack.TWO_CHANNEL_RULES}


def _peak_mib(device: torch.device, call: Callable[[], Any]) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def measure(model_name: str, batch: int, device: torch.device, size: int = 224, repeats: int = 5
            ) -> Dict[str, Any]:
    """One row: seconds, ratios to Saliency, ops and syncs of each rule set; GPU peak memory on CUDA."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.arange(batch, device=device) % 1000
    saliency = Saliency(model)
    explainers = {name: NodeBacktrack(model, **rules) for name, rules in RULE_SETS.items()}
    calls = {"saliency": lambda: saliency.attribute(x, target=target)}
    calls.update({name: (lambda e=e: e.attribute(x, target=target)) for name, e in explainers.items()})
    seconds = time_interleaved(calls, repeats=repeats, warmup=2, device=device)
    row: Dict[str, Any] = {"model": model_name, "batch": batch, "size": size, "device": str(device),
                           "seconds": seconds}
    row["ratio_vs_saliency"] = {name: seconds[name] / seconds["saliency"] for name in explainers}
    row["ops"], row["syncs"] = {}, {}
    row["accelerator_path_ops"] = {}
    for name, explainer in explainers.items():
        with count_ops() as counts:
            explainer.attribute(x, target=target)
        row["ops"][name], row["syncs"][name] = counts.total, counts.syncs
        if device.type == "cpu":  # what the same call dispatches on a GPU
            with accelerator_code_paths(), count_ops() as counts:
                explainer.attribute(x, target=target)
            row["accelerator_path_ops"][name] = counts.total
    if device.type == "cuda":
        def forward_with_grad() -> None:
            model(x.clone().requires_grad_())[torch.arange(batch), target].sum()

        row["peak_mib"] = {"forward_grad": _peak_mib(device, forward_with_grad),
                           "saliency": _peak_mib(device, calls["saliency"]),
                           **{name: _peak_mib(device, calls[name]) for name in explainers}}
    return row


def measure_all(device: torch.device, batches: List[int], repeats: int) -> List[Dict[str, Any]]:
    rows = []
    for batch in batches:
        for model_name in ("vgg16", "resnet50"):
            rows.append(measure(model_name, batch, device, repeats=repeats))
            print(markdown_rows(rows[-1:])[-1], flush=True)
    return rows


def markdown_rows(rows: List[Dict[str, Any]]) -> List[str]:
    lines = ["| net, batch | device | Saliency | NodeBacktrack default | `TWO_CHANNEL_RULES` | ops (default / two) | "
             "GPU path ops (default / two) | host syncs (default / two) | peak memory / forward with grad "
             "(default / two) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, ratio = r["seconds"], r["ratio_vs_saliency"]
        memory = "not measured (CPU)"
        gpu = r.get("accelerator_path_ops") or r["ops"]
        gpu_path = f"{gpu['default']:,} / {gpu['two_channel']:,}"
        if "peak_mib" in r:
            m = r["peak_mib"]
            memory = (f"{m['default'] / m['forward_grad']:.2f}× / {m['two_channel'] / m['forward_grad']:.2f}× "
                      f"({m['forward_grad']:.0f} MiB)")
        lines.append(f"| {r['model']}, {r['batch']} | {r['device']} | {1000 * s['saliency']:.1f} ms | "
                     f"{1000 * s['default']:.1f} ms ({ratio['default']:.2f}×) | "
                     f"{1000 * s['two_channel']:.1f} ms ({ratio['two_channel']:.2f}×) | "
                     f"{r['ops']['default']:,} / {r['ops']['two_channel']:,} | {gpu_path} | "
                     f"{r['syncs']['default']} / {r['syncs']['two_channel']} | {memory} |")
    return lines


def to_markdown(rows: List[Dict[str, Any]], environment: Dict[str, Any]) -> str:
    return "\n".join([
        "# NodeBacktrack speed against Captum Saliency", "",
        "torchvision nets with random weights, 224², median of interleaved runs after warm-up; operations and host "
        "synchronisations counted per `attribute` call (`captum_ext.testing.count_ops`); on the CPU, the GPU path's "
        "operations are counted too (`captum_ext.testing.accelerator_code_paths`).", "",
        *markdown_rows(rows), "", f"Environment: {environment}", ""])
