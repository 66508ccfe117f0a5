"""The ``captum-ext`` command: parses the arguments and calls the library.

    captum-ext demo [--out DIR]     figures of the benchmark ground, Captum Saliency and the captum_ext methods
                                    on the zoo models (:func:`captum_ext.demo.demo`)
    captum-ext train-regressor --dataset {1,2,3} [--out DIR] [--epochs E] [--n-train N] [--seed S]
                                    train SelfSupervisedAttentionRegressor on an ellipse dataset
                                    (:func:`captum_ext.training.ellipse_regression.train_and_record`)
    captum-ext train-roi [--merge first] [--mode add] [--hard image|first] [--depth 18] [--backbone PT] [--out DIR]
                                    train ROIAttentionResNet on the ROI scenes, report accuracy by ROI size
                                    (:func:`captum_ext.training.roi.train_and_record`)
    captum-ext explain IMAGE [--model efficientnet_lite0|ZOO_NAME|torchvision:NAME --weights PT] [--method all]
                                    explain your own image with the captum_ext methods (and Captum Saliency)
    captum-ext bench [--quick] [--only NAME ...] [--out-dir DIR]
                                    run the benchmarks (from a source checkout) and write the reproduction report
    captum-ext evaluate --model M --method METHOD --data DATA --out DIR [--resume] [--device cuda] ...
                                    explain and score a whole annotated dataset; under
                                    ``torchrun --nproc_per_node=K -m captum_ext evaluate ...`` in K processes
                                    (:func:`captum_ext.evaluation.evaluate`)
    captum-ext fit-boxes --model M --data DATA --out BOXES.pt
                                    fit SensitivityBBox's box map for ``evaluate --box-map``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from captum_ext import zoo
from captum_ext.demo import demo, save_figure
from captum_ext.explain import METHODS
from captum_ext.models.roi_attention_resnet import DEPTHS, HARD, MERGE_POINTS, MODES
from captum_ext.training import roi
from captum_ext.zoo.ellipses import DATASETS

__all__ = ["BENCHMARKS", "bench", "demo", "find_benchmarks", "main"]


def _train_roi(args: argparse.Namespace) -> int:
    run = roi.train_and_record(args.out, depth=args.depth, merge=args.merge, mode=args.mode, hard=args.hard,
                               backbone_weights=args.backbone, epochs=args.epochs, n_train=args.n_train,
                               n_test=args.n_test, seed=args.seed)
    result = run.result
    print(f"{run.record['variant']}: test accuracy {result.overall_per_image:.3f} "
          f"(class mean {result.overall_class_mean:.3f})")
    print(result.to_markdown())
    return 0


def _train_regressor(args: argparse.Namespace) -> int:
    from captum_ext.training.ellipse_regression import train_and_record

    kwargs = {} if args.width is None else {"width": args.width}
    record = train_and_record(args.dataset, args.out, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                              seed=args.seed, attention=not args.no_attention, **kwargs)
    test = record["test"]
    print(f"dataset {args.dataset}: {record['n_train']} training images, {record['epochs']} epochs in "
          f"{record['train_seconds']:.0f} s; test ({record['n_test']} images) mean error "
          f"{test['mean_error']:.2f} {record['unit']}, attention IoU {test['attention_iou']:.3f}; "
          f"wrote {args.out.resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    print(f"captum-ext demo -> {args.out.resolve()}")
    for path in demo(args.out, args.seed):
        print(f"  wrote {path.resolve()}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from captum_ext import explain

    methods = list(METHODS) if args.method == "all" else [args.method]
    loaded = explain.load_model(args.model, args.weights)
    result = explain.explain(explain.read_image(args.image), loaded, methods, target=args.target)
    out = args.out or args.image.with_name(f"{args.image.stem}_explained.png")
    save_figure(explain.figure(result, loaded, methods), out)
    print(f"{loaded.name}: " + ", ".join(f"{name} {score:.3f}" for name, score in result["top"]))
    print(f"explained class {result['target']} ({loaded.class_names[result['target']]}) with {', '.join(methods)}")
    print(f"wrote {out.resolve()}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    return bench(args.quick, args.only, args.bench_dir, args.out_dir)


#: benchmark name → script, in the order ``captum-ext bench`` runs them (cheapest first).
BENCHMARKS = {
    "datasets": "bench_datasets.py",
    "node_backtrack": "bench_node_backtrack.py",
    "sensitivity_bbox": "bench_sensitivity_bbox.py",
    "class_diff_saliency": "bench_class_diff_saliency.py",
    "attention_regressor": "bench_attention_regressor.py",
    "roi_attention": "bench_roi_attention.py",
    "evaluate": "bench_evaluate.py",
}


def find_benchmarks(bench_dir: Optional[Path] = None) -> Path:
    """The ``benchmarks/`` folder of a source checkout: ``bench_dir``, ``./benchmarks``, or next to the package.

    Args:
        bench_dir (Path, optional): the folder to use. Default: search ``./benchmarks``, then the folder beside an
            editable install of the package.

    Returns:
        Path: the resolved folder, which holds ``report.py`` and the ``bench_*.py`` scripts.

    Raises:
        FileNotFoundError: none of them holds ``report.py`` (the benchmarks ship with the repository, not the wheel).
    """
    import captum_ext

    candidates = ([bench_dir] if bench_dir is not None else
                  [Path.cwd() / "benchmarks", Path(captum_ext.__file__).resolve().parents[1] / "benchmarks"])
    for candidate in candidates:
        if (candidate / "report.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no benchmarks folder (with report.py) at {', '.join(str(c) for c in candidates)}; the benchmark scripts "
        "live in the source repository: run from a clone, or pass --bench-dir")


def bench(quick: bool = False, only: Optional[List[str]] = None, bench_dir: Optional[Path] = None,
          out_dir: Optional[Path] = None) -> int:
    """Run the benchmark scripts one after another, then write the Markdown report; returns the exit status.

    Each script runs in its own process with this interpreter (``--quick`` passed through), writes
    ``<out-dir>/<name>.json`` and ``.md``; ``report.py`` then writes ``<out-dir>/REPORT.md`` and the plots. A log of
    what ran, for how long and with which exit status goes to ``<out-dir>/bench_run.json``.

    Args:
        quick (bool, optional): pass ``--quick`` to every script (under 10 minutes in all on 2 CPU cores).
            Default: False.
        only (list of str, optional): names from :data:`BENCHMARKS` to run. Default: all of them.
        bench_dir (Path, optional): see :func:`find_benchmarks`.
        out_dir (Path, optional): where results go. Default: ``benchmarks/results`` (``results/quick`` with
            ``quick``).

    Returns:
        int: 0 if every script and the report succeeded, else 1.

    Raises:
        FileNotFoundError: no benchmarks folder (see :func:`find_benchmarks`).
        ValueError: an unknown name in ``only``.
    """
    import json
    import os
    import subprocess

    folder = find_benchmarks(bench_dir)
    names = list(BENCHMARKS) if not only else only
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    results = Path(out_dir).resolve() if out_dir is not None else folder / "results" / ("quick" if quick else "")
    results.mkdir(parents=True, exist_ok=True)
    log = []
    started = time.time()
    for step, name in enumerate(names, start=1):
        command = [sys.executable, str(folder / BENCHMARKS[name]), "--out-dir", str(results)]
        if quick:
            command.append("--quick")
        print(f"[{step}/{len(names)}] {name}: {' '.join(command[1:])}", flush=True)
        begin = time.time()
        status = subprocess.run(command, cwd=folder, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        log.append({"benchmark": name, "seconds": round(time.time() - begin, 1), "exit_status": status})
        print(f"[{step}/{len(names)}] {name}: {'done' if status == 0 else f'FAILED ({status})'} in "
              f"{time.time() - begin:.0f}s (total {time.time() - started:.0f}s)", flush=True)
    report = subprocess.run([sys.executable, str(folder / "report.py"), "--results-dir", str(results)], cwd=folder)
    (results / "bench_run.json").write_text(json.dumps(
        {"quick": quick, "total_seconds": round(time.time() - started, 1), "runs": log}, indent=2) + "\n")
    print(f"report: {results / 'REPORT.md'}")
    failed = [entry["benchmark"] for entry in log if entry["exit_status"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed or report.returncode != 0 else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captum-ext", description="captum_ext command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="write demo figures (PNG) to a folder")
    demo_parser.add_argument("--out", type=Path, default=Path("captum_ext_demo"), help="output folder")
    demo_parser.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    demo_parser.set_defaults(run=_demo)

    train_parser = commands.add_parser("train-regressor",
                                       help="train SelfSupervisedAttentionRegressor on an ellipse dataset")
    train_parser.add_argument("--dataset", type=int, choices=DATASETS, required=True)
    train_parser.add_argument("--out", type=Path, default=Path("captum_ext_regressor"), help="output folder")
    train_parser.add_argument("--epochs", type=int, default=None, help="default: the shipped weights' setting")
    train_parser.add_argument("--n-train", type=int, default=None, help="default: the paper's training-set size")
    train_parser.add_argument("--n-test", type=int, default=None, help="default: the paper's test-set size")
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--width", type=int, default=None, help="regressor width (default: the model's)")
    train_parser.add_argument("--no-attention", action="store_true",
                              help="ablation: train the regressor alone on the supervised term")
    train_parser.set_defaults(run=_train_regressor)

    roi_parser = commands.add_parser("train-roi", help="train ROIAttentionResNet on the ROI digit scenes")
    roi_parser.add_argument("--merge", default="first", choices=MERGE_POINTS)
    roi_parser.add_argument("--mode", default="add", choices=MODES)
    roi_parser.add_argument("--hard", default=None, choices=[h for h in HARD if h is not None])
    roi_parser.add_argument("--depth", type=int, default=18, choices=DEPTHS)
    roi_parser.add_argument("--backbone", type=Path, default=None,
                            help="state_dict of a torchvision ResNet (10 classes) to start from, e.g. pretrained")
    roi_parser.add_argument("--epochs", type=int, default=roi.DEFAULT_EPOCHS)
    roi_parser.add_argument("--n-train", type=int, default=roi.DEFAULT_N_TRAIN)
    roi_parser.add_argument("--n-test", type=int, default=roi.DEFAULT_N_TEST)
    roi_parser.add_argument("--seed", type=int, default=0)
    roi_parser.add_argument("--out", type=Path, default=Path("captum_ext_roi"), help="output folder")
    roi_parser.set_defaults(run=_train_roi)

    bench_parser = commands.add_parser("bench", help="run the benchmarks and write the reproduction report")
    bench_parser.add_argument("--quick", action="store_true",
                              help="smaller data and fewer repeats (under 10 minutes on 2 CPU cores)")
    bench_parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None,
                              help="run only these benchmarks")
    bench_parser.add_argument("--bench-dir", type=Path, default=None,
                              help="the repository's benchmarks/ folder (default: ./benchmarks)")
    bench_parser.add_argument("--out-dir", type=Path, default=None,
                              help="default: benchmarks/results, or benchmarks/results/quick with --quick")
    bench_parser.set_defaults(run=_bench)

    explain_parser = commands.add_parser("explain", help="explain your own image with a captum_ext method")
    explain_parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    explain_parser.add_argument(
        "--model", default="efficientnet_lite0",
        help=f"a zoo scene classifier ({', '.join(zoo.available(zoo.SCENE_CLASSIFIER))}), 'efficientnet_lite0' "
             "(default) or 'torchvision:<name>' with --weights")
    explain_parser.add_argument("--weights", type=Path, default=None, help="state_dict file for a torchvision model")
    explain_parser.add_argument("--method", default="all", choices=("all",) + METHODS)
    explain_parser.add_argument("--target", type=int, default=None, help="class index (default: the top class)")
    explain_parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <image>_explained.png)")
    explain_parser.set_defaults(run=_explain)

    from captum_ext.evaluation.command import add_commands

    add_commands(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``captum-ext`` command.

    Args:
        argv (list of str, optional): the arguments. Default: ``sys.argv[1:]``.

    Returns:
        int: the exit status.
    """
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
