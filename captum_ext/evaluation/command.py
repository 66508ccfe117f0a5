"""The ``captum-ext evaluate`` and ``captum-ext fit-boxes`` sub-commands (arguments only; the work is
:func:`captum_ext.evaluation.evaluate` and :func:`captum_ext.evaluation.fit_box_map`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from captum_ext.attr._box_features import FEATURE_BLOCKS
from captum_ext.evaluation.methods import METHODS
from captum_ext.evaluation.scoring import LOCALISATION_METRICS
from captum_ext.evaluation.models import MODEL_FORMS

DATA_FORMS = ("coco:ANNOTATIONS.json:IMAGES_DIR", "voc:ROOT[:YEAR:SPLIT]", "folder:DIR", "scenes:MODE:N")


def _class_map(path: Optional[Path]) -> Optional[Dict[str, int]]:
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"class map file {str(path)!r} does not exist")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"class map file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise ValueError(f"class map file {str(path)!r} must hold a JSON object of category id or name → class "
                         f"index (an integer)")
    return {str(k): int(v) for k, v in mapping.items()}


def _size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--resize must be N or HxW (positive integers), got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _model(args: argparse.Namespace) -> Any:
    from captum_ext.evaluation.models import load_evaluation_model

    return load_evaluation_model(args.model, args.weights)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``captum-ext evaluate`` from parsed arguments; rank 0 prints the metrics.

    Args:
        args (argparse.Namespace): the parsed ``evaluate`` arguments.

    Returns:
        int: the exit status, 0.
    """
    from captum_ext.evaluation.runner import evaluate

    summary = evaluate(_model(args), args.method, args.data, args.out, batch_size=args.batch_size,
                       tolerance=args.tolerance, class_map=_class_map(args.class_map), resume=args.resume,
                       device=args.device, resize=args.resize, layer=args.layer, box_map=args.box_map,
                       map_dtype=args.map_dtype, num_workers=args.workers, skip_bad=args.skip_bad,
                       show_progress=not args.no_progress, metrics=args.metrics)
    if _is_main():
        print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=2))
        print(f"results in {args.out}")
    return 0


def run_fit_boxes(args: argparse.Namespace) -> int:
    """Run ``captum-ext fit-boxes`` from parsed arguments.

    Args:
        args (argparse.Namespace): the parsed ``fit-boxes`` arguments.

    Returns:
        int: the exit status, 0.
    """
    from captum_ext.evaluation.box_fitting import fit_box_map

    state = fit_box_map(_model(args), args.data, args.out, batch_size=args.batch_size, ridge=args.ridge,
                        class_map=_class_map(args.class_map), device=args.device, resize=args.resize,
                        num_workers=args.workers, features=args.features)
    if _is_main():
        print(f"box map fitted on {int(state['stats.count'])} (image, class) pairs, written to {args.out}")
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(MODEL_FORMS)}")
    parser.add_argument("--weights", type=Path, default=None, help="state_dict file (torchvision or factory models)")
    parser.add_argument("--data", required=True, help=f"one of: {', '.join(DATA_FORMS)}")
    parser.add_argument("--class-map", type=Path, default=None,
                        help="JSON object: category id (as a string) or name → the model's class index")
    parser.add_argument("--resize", type=_size, default=None, help="resize images to N×N or HxW")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per process)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes reading images")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``evaluate`` and ``fit-boxes`` to the ``captum-ext`` sub-commands.

    Args:
        commands: the ``add_subparsers`` object of the ``captum-ext`` parser.
    """
    evaluate = commands.add_parser("evaluate", help="explain and score a whole annotated dataset (torchrun-ready)")
    _common(evaluate)
    evaluate.add_argument("--method", required=True, choices=METHODS)
    evaluate.add_argument("--out", type=Path, required=True, help="results folder")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels")
    evaluate.add_argument("--resume", action="store_true", help="continue the run in --out")
    evaluate.add_argument("--layer", default=None, help="grad_cam layer (dotted submodule name)")
    evaluate.add_argument("--box-map", type=Path, default=None, help="fit-boxes output (sensitivity method)")
    evaluate.add_argument("--map-dtype", default="float16", choices=("float16", "float32"))
    evaluate.add_argument("--skip-bad", action="store_true", help="list undecodable images instead of stopping")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("--metrics", nargs="*", default=None, choices=LOCALISATION_METRICS,
                          help="localisation metrics to compute (default: all the annotations support; none: "
                               "maps, table and accuracy only)")
    evaluate.set_defaults(run=run_evaluate)

    fit = commands.add_parser("fit-boxes", help="fit SensitivityBBox's box map on an annotated dataset")
    _common(fit)
    fit.add_argument("--out", type=Path, required=True, help="box map file to write (.pt)")
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--ridge", type=float, default=None,
                     help="ridge penalty (default: chosen by generalised cross-validation on the training data)")
    fit.add_argument("--features", nargs="+", default=None, choices=tuple(FEATURE_BLOCKS),
                     help="box feature blocks, recorded in the file (default: SensitivityBBox's default set; "
                          "'grid' alone is the paper's)")
    fit.set_defaults(run=run_fit_boxes)
