"""ROIAttentionResNet reproduction (Eppel) on the ROI digit scenes, plus the forward-time ratio.

    python benchmarks/bench_roi_attention.py [--quick] [--fresh] [--out-dir benchmarks/results]
    python benchmarks/bench_roi_attention.py --finetune-epochs 10 --branch-lr-scale 10 \
        --variants "first/add" "hard image" --backbone pretrained_resnet18.pt --reuse-speed

Two regimes, each training the paper's six variants — soft attention merged after conv1 by addition
(``first/add``) and by multiplication (``first/mul``), at the third stage (``layer3/add``), at every stage
(``all/add``), and the hard baselines that black out the background of the normalised image (``hard image``) or of
the conv1 output (``hard first``) — with one identical budget (data, epochs, batch size, learning rate, seed):

* ``scratch``: a randomly initialised torchvision ResNet-18.
* ``pretrained``: the paper's regime. The paper fine-tunes an ImageNet-pretrained ResNet; here the same ResNet-18
  is first trained on whole-scene classification of ``"single"`` scenes (one digit among clutter, no mask) and
  every variant is fine-tuned from that backbone.
* ``pretrained_long`` (only with ``--finetune-epochs`` or ``--branch-lr-scale``): the pretrained regime with
  another fine-tune recipe — more epochs, and the new mask branch trained at a multiple of the backbone's learning
  rate (the usual treatment of layers added to a pretrained net). ``--variants`` limits it to some variants;
  ``--backbone`` keeps the pretrained backbone in a file (pretrained there if missing, reused otherwise).

Why ResNet-18: a ResNet-50 epoch on 2 CPU cores takes ~4× longer, and twelve runs must fit in about an hour.
Test scenes are held-out digit instances (``split="test"``). Accuracy is binned by ROI pixel count with
:data:`captum_ext.datasets.scenes.ROI_BINS_64`, class-mean and per-image, as in the paper's Tables 1-4.

Each finished run is cached as JSON under ``<out-dir>/roi_runs/`` and skipped on a re-run (``--fresh`` ignores the
cache), so an interrupted benchmark resumes where it stopped. The speed part times ROIAttentionResNet-50 (merge
first, and merge all for reference) against torchvision's resnet50 on the same 8×3×224×224 batch;
``--reuse-speed`` keeps the timing of the previous results file instead (e.g. when only adding runs on a busy
machine).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision

from _common import benchmark_parser, environment, parse_benchmark_args, time_interleaved, write_results
from captum_ext import ROIAttentionResNet
from captum_ext._utils.training import train_epochs
from captum_ext.datasets import scenes
from captum_ext.training import pretrain_on_digit_crops, roi

#: (label, merge, mode, hard) in the paper's Figure 3 / Tables order.
VARIANTS: Tuple[Tuple[str, str, str, Optional[str]], ...] = (
    ("first/add", "first", "add", None),
    ("first/mul", "first", "mul", None),
    ("layer3/add", "layer3", "add", None),
    ("all/add", "all", "add", None),
    ("hard image", "first", "add", "image"),
    ("hard first", "first", "add", "first"),
)
PAPER = {"first/add": 0.83, "hard image": 0.70}  # COCO, per-image accuracy over all sizes (paper Table 1)
TARGET_GAP = 0.10  # first-layer attention minus image blackout on the smallest-ROI bin


def settings(quick: bool) -> Dict[str, Any]:
    if quick:  # pretrained regime, first/add against image blackout only
        return {"n_pretrain": 1500, "crop_epochs": 1, "pretrain_epochs": 2, "n_train": 1500, "n_test": 600, "epochs": 2,
                "batch_size": 64, "lr_scratch": 2e-3, "lr_finetune": 1e-3, "seed": 0,
                "regimes": ["pretrained"], "variants": ["first/add", "hard image"], "speed_repeats": 5}
    return {"n_pretrain": 8000, "crop_epochs": 3, "pretrain_epochs": 4, "n_train": 6000, "n_test": 2000, "epochs": 6,
            "batch_size": 64, "lr_scratch": 2e-3, "lr_finetune": 1e-3, "seed": 0}  # every regime and variant


def pretrain_backbone(cfg: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """Train a ResNet-18 on whole-scene classification of ``"single"`` scenes; save its state_dict to ``path``.

    Two stages, as for the zoo nets: digit crops first (:func:`captum_ext.training.pretrain_on_digit_crops`),
    because from scratch on whole scenes the net sits at chance for tens of thousands of samples; then whole
    ``"single"`` scenes.
    """
    torch.manual_seed(cfg["seed"])
    net = torchvision.models.resnet18(weights=None, num_classes=scenes.NUM_CLASSES)
    train = scenes.make_scenes(cfg["n_pretrain"], mode="single", split="train", seed=cfg["seed"] + 10)
    test = scenes.make_scenes(1000, mode="single", split="test", seed=cfg["seed"] + 11)
    images = scenes.normalize(train.images)

    def scene_loss(index: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"total": F.cross_entropy(net(images[index]), train.labels[index])}

    start = time.perf_counter()
    crop_history = pretrain_on_digit_crops(net, train, epochs=cfg["crop_epochs"], batch_size=cfg["batch_size"],
                                           lr=cfg["lr_scratch"], seed=cfg["seed"], desc="pretrain: digit crops")
    history = train_epochs(net, len(train), scene_loss, cfg["pretrain_epochs"], batch_size=cfg["batch_size"],
                           lr=cfg["lr_scratch"], seed=cfg["seed"], desc="pretrain: single scenes")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((net(scenes.normalize(test.images)).argmax(1) == test.labels).float().mean())
    torch.save(net.state_dict(), path)
    return {"train_seconds": seconds, "single_scene_test_accuracy": accuracy, "crop_loss": crop_history,
            "loss": history}


def run_variant(label: str, merge: str, mode: str, hard: Optional[str], regime: str, cfg: Dict[str, Any],
                backbone_path: Optional[Path], train: scenes.SceneBatch, test: scenes.SceneBatch,
                recipe: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train and score one variant; ``recipe`` (``pretrained_long``) sets the epochs and the branch's lr scale."""
    torch.manual_seed(cfg["seed"])
    model = roi.build_model(18, merge, mode, hard, backbone_weights=backbone_path)
    start = time.perf_counter()
    lr = cfg["lr_scratch"] if regime == "scratch" else cfg["lr_finetune"]
    epochs = recipe["finetune_epochs"] if recipe else cfg["epochs"]
    # Hard baselines have no branch: they train at the backbone's single rate under any recipe.
    scale = recipe["branch_lr_scale"] if recipe and hard is None else 1.0
    history = roi.fit(model, train, epochs=epochs, batch_size=cfg["batch_size"], lr=lr, seed=cfg["seed"],
                      branch_lr_scale=scale)
    seconds = time.perf_counter() - start
    result = roi.evaluate(model, test)
    return {"variant": label, "regime": regime, "merge": merge, "mode": mode, "hard": hard, "lr": lr,
            "epochs": epochs, "branch_lr_scale": scale, "train_seconds": seconds,
            "torch_threads": torch.get_num_threads(), "loss": history,
            "overall_per_image": result.overall_per_image, "overall_class_mean": result.overall_class_mean,
            "edges": result.edges.tolist(), "counts": result.counts.tolist(),
            "per_image": result.per_image.tolist(), "class_mean": result.class_mean.tolist()}


def speed(repeats: int = 15) -> Dict[str, Any]:
    torch.manual_seed(0)
    images, masks = torch.randn(8, 3, 224, 224), (torch.rand(8, 1, 224, 224) > 0.5).float()
    plain = torchvision.models.resnet50(weights=None).eval()
    first = ROIAttentionResNet(depth=50, merge="first").eval()
    every = ROIAttentionResNet(depth=50, merge="all").eval()
    with torch.no_grad():
        times = time_interleaved({
            "torchvision resnet50": lambda: plain(images),
            "ROIAttentionResNet-50 first": lambda: first(images, masks),
            "ROIAttentionResNet-50 all": lambda: every(images, masks),
        }, repeats=repeats, warmup=3)
    base = times["torchvision resnet50"]
    return {"batch": list(images.shape), "seconds": times,
            "ratio_first": times["ROIAttentionResNet-50 first"] / base,
            "ratio_all": times["ROIAttentionResNet-50 all"] / base, "target_ratio": 1.03}


def backbone_for(path: Path, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The pretrained backbone at ``path`` and its record (``path`` with ``.json``): pretrained there if missing.

    Args:
        path (Path): the backbone's ``state_dict`` file; reused when it and a record with the same settings exist.
        cfg (dict): the benchmark settings (:func:`settings`).

    Returns:
        dict: the :func:`pretrain_backbone` record plus ``"settings"``.
    """
    record_path = path.with_suffix(".json")
    if path.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("settings") == cfg:
            return record
    record = {**pretrain_backbone(cfg, path), "settings": cfg}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "small data and 2 epochs (minutes, not an hour)")
    parser.add_argument("--fresh", action="store_true", help="ignore cached runs")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="add the pretrained_long regime, fine-tuning this many epochs (default: as the others)")
    parser.add_argument("--branch-lr-scale", type=float, default=1.0,
                        help="pretrained_long: peak lr of the mask branch as a multiple of the backbone's")
    parser.add_argument("--variants", nargs="+", default=None, choices=[v[0] for v in VARIANTS],
                        help="pretrained_long: the variants to train (default: all)")
    parser.add_argument("--backbone", type=Path, default=None,
                        help="pretrained_long: backbone file, pretrained there if missing (default: a temporary one)")
    parser.add_argument("--reuse-speed", action="store_true",
                        help="keep the forward-time result of the existing results file instead of timing again")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parse_benchmark_args(parser)
    if args.finetune_epochs is not None and args.finetune_epochs < 1:
        parser.error(f"--finetune-epochs must be >= 1, got {args.finetune_epochs}")
    if args.branch_lr_scale <= 0:
        parser.error(f"--branch-lr-scale must be positive, got {args.branch_lr_scale}")
    return args


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cfg = settings(args.quick)
    cache = args.out_dir / "roi_runs"
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_roi_"))
    recipe: Optional[Dict[str, Any]] = None
    if args.finetune_epochs is not None or args.branch_lr_scale != 1.0:
        recipe = {"finetune_epochs": args.finetune_epochs or cfg["epochs"], "branch_lr_scale": args.branch_lr_scale}

    train = scenes.make_scenes(cfg["n_train"], mode="roi", split="train", seed=cfg["seed"])
    test = scenes.make_scenes(cfg["n_test"], mode="roi", split="test", seed=cfg["seed"] + 1)
    runs: List[Dict[str, Any]] = []
    backbone_path = work / "pretrained_resnet18.pt"
    pretrain: Optional[Dict[str, Any]] = None
    long_backbone: Optional[Dict[str, Any]] = None
    regimes = list(cfg.get("regimes", ("pretrained", "scratch"))) + (["pretrained_long"] if recipe else [])
    for regime in regimes:
        wanted = cfg.get("variants", [v[0] for v in VARIANTS])
        if regime == "pretrained_long" and args.variants:
            wanted = [label for label in wanted if label in args.variants]
        for label, merge, mode, hard in VARIANTS:
            if label not in wanted:
                continue
            cached = cache / f"{regime}_{label.replace('/', '_').replace(' ', '_')}.json"
            if cached.exists() and not args.fresh:
                record = json.loads(cached.read_text())
                if record.get("settings") == cfg and record.get("recipe") == (recipe if regime == "pretrained_long"
                                                                                else None):
                    runs.append(record)
                    print(f"cached: {regime} {label} {record['overall_per_image']:.3f}")
                    continue
            if regime == "pretrained_long":
                if long_backbone is None:  # a separate file, or the one the pretrained regime shares
                    long_backbone = backbone_for(args.backbone or backbone_path, cfg)
                weights: Optional[Path] = args.backbone or backbone_path
            elif regime == "pretrained":
                if pretrain is None:
                    pretrain = backbone_for(backbone_path, cfg)
                    (cache / "pretrain.json").write_text(json.dumps(pretrain, indent=2) + "\n")
                weights = backbone_path
            else:
                weights = None
            record = run_variant(label, merge, mode, hard, regime, cfg, weights, train, test,
                                 recipe if regime == "pretrained_long" else None)
            record["settings"] = cfg
            if regime == "pretrained_long":
                record["recipe"], record["backbone"] = recipe, long_backbone
                record["command"] = shlex.join(["python", *sys.argv])
            cached.write_text(json.dumps(record, indent=2) + "\n")
            runs.append(record)
            print(f"{regime} {label}: {record['overall_per_image']:.3f} in {record['train_seconds']:.0f} s")
    if pretrain is None and (cache / "pretrain.json").exists():
        pretrain = json.loads((cache / "pretrain.json").read_text())
    long_runs = [run for run in runs if run["regime"] == "pretrained_long"]
    previous = args.out_dir / "roi_attention.json"
    if args.reuse_speed and previous.exists():
        old = json.loads(previous.read_text())
        # The timing keeps the machine record it was measured on.
        timing = {**old["speed"], "environment": old["speed"].get("environment", old["environment"])}
        timing["date"] = timing["environment"]["date"]
    else:
        timing = speed(cfg.get("speed_repeats", 30))
    record = {"environment": environment(), "quick": args.quick, "settings": cfg, "paper": PAPER,
              "target_gap_smallest_bin": TARGET_GAP, "pretrain": pretrain, "runs": runs,
              "recipe": recipe, "pretrain_long": long_runs[0]["backbone"] if long_runs else None,
              "speed": timing, "command": shlex.join(["python", *sys.argv]),
              "total_seconds": time.perf_counter() - started}
    write_results("roi_attention", record, to_markdown(record), args.out_dir)


def _pct(value: Optional[float]) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"  # an empty bin: null (NaN before)


def _long_recipe(r: Dict[str, Any], cfg: Dict[str, Any]) -> List[str]:
    """The paragraph introducing the pretrained_long table: its backbone and fine-tune recipe."""
    recipe, p = r["recipe"] or {}, r["pretrain_long"]
    runs = [run for run in r["runs"] if run["regime"] == "pretrained_long"]
    commands = [f"{run['variant']}: `{run['command']}`" for run in runs if run.get("command")]
    commands = ["Trained by " + "; ".join(commands) + ".", ""] if commands else []
    used = sorted({run["torch_threads"] for run in runs if "torch_threads" in run})
    threads = f"{'/'.join(map(str, used))} torch thread(s) per run" if used else "torch threads not recorded"
    backbone = (f"a backbone pretrained anew by the same procedure ({p['train_seconds'] / 60:.1f} min; single-scene "
                f"test accuracy {_pct(p['single_scene_test_accuracy'])}%)" if p else "the pretrained backbone")
    return [f"The pretrained regime with a longer fine-tune and a faster mask branch: {backbone}, fine-tuned "
            f"{recipe.get('finetune_epochs')} epochs per variant with a peak lr of {cfg['lr_finetune']} for the "
            f"backbone and {recipe.get('branch_lr_scale')}× that for the mask branch (hard baselines have no branch "
            f"and use the backbone's rate); same training and test scenes as above; {threads}.", ""] + commands


def to_markdown(r: Dict[str, Any]) -> str:
    cfg = r["settings"]
    lines = [
        "# ROIAttentionResNet (Eppel): ROI classification by ROI size",
        "",
        f"ResNet-18, ROI digit scenes 64×64 (context_prob 0.9), {cfg['n_train']} training / {cfg['n_test']} held-out "
        f"test scenes, {cfg['epochs']} epochs per variant, batch {cfg['batch_size']}, seed {cfg['seed']}. "
        "Accuracy in percent; `cm` = class-mean, `img` = per-image. Bins are ROI pixel counts.",
        "",
    ]
    if r["pretrain"]:
        p = r["pretrain"]
        lines += [f"Pretrained regime: the backbone was first trained {cfg['crop_epochs']} epochs on digit crops "
                  f"and {cfg['pretrain_epochs']} epochs on {cfg['n_pretrain']} whole `single` scenes "
                  f"({p['train_seconds'] / 60:.1f} min; single-scene test "
                  f"accuracy {_pct(p['single_scene_test_accuracy'])}%), then fine-tuned per variant at lr "
                  f"{cfg['lr_finetune']}; scratch runs use lr {cfg['lr_scratch']}.", ""]
    for regime in ("pretrained", "scratch", "pretrained_long"):
        runs = [run for run in r["runs"] if run["regime"] == regime]
        if not runs:
            continue
        edges, counts = runs[0]["edges"], runs[0]["counts"]
        bins = [f"{int(lo)}–{int(hi) - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
        lines += [f"## {regime}", ""]
        if regime == "pretrained_long":
            lines += _long_recipe(r, cfg)
        lines += ["| variant | all img | all cm | " + " | ".join(f"{b} px (n={c})" for b, c in zip(bins, counts))
                  + " | train time |",
                  "|---|---:|---:|" + "---:|" * len(bins) + "---:|"]
        for run in runs:
            cells = [f"{_pct(i)} / {_pct(c)}" for i, c in zip(run["per_image"], run["class_mean"])]
            lines.append(f"| {run['variant']} | **{_pct(run['overall_per_image'])}** | "
                         f"{_pct(run['overall_class_mean'])} | " + " | ".join(cells)
                         + f" | {run['train_seconds'] / 60:.1f} min |")
        by = {run["variant"]: run for run in runs}
        if "first/add" in by and "hard image" in by:
            gap = by["first/add"]["per_image"][0] - by["hard image"]["per_image"][0]
            gap_all = by["first/add"]["overall_per_image"] - by["hard image"]["overall_per_image"]
            lines += ["", f"Bin cells are `img / cm`. first/add − hard image: smallest bin {100 * gap:+.1f} points "
                          f"(target ≥ {100 * r['target_gap_smallest_bin']:.0f}), all sizes {100 * gap_all:+.1f} "
                          "points. Paper (COCO): first 83% vs image blackout 70%.", ""]
        else:
            lines += ["", "Bin cells are `img / cm`.", ""]
    s = r["speed"]
    lines += ["## Forward time", "",
              (f"Timed {s['date']}. " if "date" in s else "") +
              f"Batch {s['batch']}, eval mode, no grad, median of interleaved runs: torchvision resnet50 "
              f"{s['seconds']['torchvision resnet50'] * 1000:.0f} ms; ROIAttentionResNet-50 merge first "
              f"**{s['ratio_first']:.3f}×** (target ≤ {s['target_ratio']}×), merge all {s['ratio_all']:.3f}×.", "",
              *([f"Timing environment: {s['environment']}", ""] if "environment" in s else []),
              "Environment of this report's run (runs loaded from the cache were trained earlier): "
              f"{r['environment']}",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
