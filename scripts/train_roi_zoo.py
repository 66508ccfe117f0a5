"""Train the zoo's ROIAttentionResNet-18 (mask added after ``conv1``) on the ROI digit scenes and ship it.

    python scripts/train_roi_zoo.py                 # ≈ 5 min on 2 idle CPU cores, 20 on one busy thread
    python scripts/train_roi_zoo.py --out /tmp/roi  # try it without touching the shipped files

The settings default to the scratch regime of ``benchmarks/bench_roi_attention.py`` (6000 training scenes, 6
epochs, batch 64, lr 0.002, seed 0; held-out test split, seed 1). Training and scoring are
:func:`captum_ext.training.roi.train_and_record`; this script then stores the ``state_dict`` in float16 (half the
download, ~22 MB instead of ~45 MB), reloads it into a float32 model, scores that model on the same held-out scenes
and writes ``<out>/roi_attention_resnet18.pt`` and the record ``<out>/roi_attention_resnet18.json`` that
``captum_ext.zoo.info`` returns.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from captum_ext import __version__, zoo
from captum_ext.datasets import scenes
from captum_ext.metrics import BinnedAccuracy
from captum_ext.training import roi

NAME = "roi_attention_resnet18"


def binned(result: BinnedAccuracy) -> Dict[str, Any]:
    """Overall and per-ROI-size-bin accuracy, JSON-ready.

    Args:
        result (BinnedAccuracy): :func:`captum_ext.training.roi.evaluate` on the held-out scenes.

    Returns:
        dict: ``"accuracy"`` and ``"class_mean_accuracy"`` over all sizes, and ``"bins"``: one dict per non-empty
        bin with ``"roi_pixels"`` (``[lo, hi)`` ROI pixel counts), ``"n"`` and both accuracies.
    """
    edges = result.edges.tolist()
    return {
        "accuracy": result.overall_per_image, "class_mean_accuracy": result.overall_class_mean,
        "bins": [{"roi_pixels": [int(lo), int(hi)], "n": int(n), "accuracy": acc, "class_mean_accuracy": cm}
                 for lo, hi, n, acc, cm in zip(edges[:-1], edges[1:], result.counts.tolist(),
                                              result.per_image.tolist(), result.class_mean.tolist())
                 if n > 0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    entry = zoo.ZOO[NAME]
    with tempfile.TemporaryDirectory(prefix="roi_zoo_") as work:
        run = roi.train_and_record(work, depth=18, merge="first", mode="add", epochs=args.epochs,
                                   n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                                   batch_size=args.batch_size, lr=args.lr)
        state = torch.load(Path(work) / f"{run.record['variant']}.pt", map_location="cpu", weights_only=True)
    # Float16 halves the file; BatchNorm's integer counters stay as they are.
    half = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{NAME}.pt"
    torch.save(half, path)
    reloaded = entry.build()
    reloaded.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # cast back to float32
    test = scenes.make_scenes(args.n_test, mode="roi", split="test", seed=args.seed + 1)
    from_half = roi.evaluate(reloaded, test)
    rec = run.record
    record = {
        "name": NAME,
        "description": entry.description,
        "scene_mode": "roi",
        "architecture": {"depth": 18, "merge": "first", "mode": "add", "num_classes": scenes.NUM_CLASSES},
        "held_out": {"n": args.n_test, "split": "test", "seed": args.seed + 1,
                     "float16_weights": binned(from_half), "float32_before_cast": binned(run.result)},
        "training": {"n_train": args.n_train, "split": "train", "epochs": args.epochs, "batch_size": args.batch_size,
                     "lr": args.lr, "seed": args.seed, "optimizer": "AdamW + OneCycle",
                     "seconds": round(rec["train_seconds"], 1), "threads": torch.get_num_threads()},
        "history": [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(rec["loss"])],
        "weights": {"dtype": "float16", "bytes": path.stat().st_size},
        "versions": {"captum_ext": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "command": (f"python scripts/train_roi_zoo.py --epochs {args.epochs} --n-train {args.n_train} "
                    f"--n-test {args.n_test} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}"
                    + (f" --threads {args.threads}" if args.threads is not None else "")),
    }
    (args.out / f"{NAME}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{NAME}: held-out accuracy {run.result.overall_per_image:.4f} (float32), "
          f"{from_half.overall_per_image:.4f} (float16 weights) -> {path}", flush=True)


if __name__ == "__main__":
    main()
