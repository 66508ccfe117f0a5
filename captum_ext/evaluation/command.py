"""What ``captum-ext evaluate`` and ``captum-ext fit-boxes`` run, from the parsed arguments (the arguments are
defined in :mod:`captum_ext._cli_parser`, which imports no torch; the work is
:func:`captum_ext.evaluation.evaluate` and :func:`captum_ext.evaluation.fit_box_map`)."""
from __future__ import annotations

import argparse
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, TypeVar

from captum_ext.evaluation.models import ModelFactoryError

T = TypeVar("T")

#: Messages of torch layers refusing an input smaller than their window (pooling, convolution, padding).
_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than actual input size",
              "Padding size should be less than the corresponding input dimension")
#: A fully connected layer after a flatten gets as many features as the image size gives: mat1 is N×got.
_LINEAR_MISMATCH = re.compile(r"mat1 and mat2 shapes cannot be multiplied \(\d+x(\d+) and (\d+)x\d+\)")


def _class_map(path: Optional[Path]) -> Any:
    if path is None:
        return None
    from captum_ext.evaluation.class_maps import read_class_map

    return read_class_map(path)


def _model(args: argparse.Namespace) -> Any:
    from captum_ext.evaluation.models import load_evaluation_model

    return load_evaluation_model(args.model, args.weights)


def _input_size(err: BaseException) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of the image batch the outermost ``nn.Module`` call of the failing traceback received."""
    from torch import Tensor, nn

    for frame, _ in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_name not in ("_wrapped_call_impl", "_call_impl"):
            continue
        inputs = frame.f_locals.get("args")
        if (isinstance(frame.f_locals.get("self"), nn.Module) and isinstance(inputs, tuple) and inputs
                and isinstance(inputs[0], Tensor) and inputs[0].dim() == 4):
            height, width = inputs[0].shape[-2:]
            return int(height), int(width)
    return None


def image_size_problem(err: RuntimeError, model: str, resize: Optional[Tuple[int, int]]) -> Optional[str]:
    """The one-line explanation of a model refusing the images' size, or ``None`` when ``err`` is not clearly that.

    Clearly that means: torch's message is a layer refusing an input smaller than its window, or a fully connected
    layer getting another number of features than it was built for (what a different image size gives a fixed-size
    head), and the error was raised inside a model call on a batch of images.

    Args:
        err (RuntimeError): what the run raised.
        model (str): the ``--model`` value, for the message.
        resize (tuple of int, optional): the ``--resize`` value, if given.

    Returns:
        str or None: the message, naming the image size and whether it is too small or too large.
    """
    if isinstance(err, ModelFactoryError):
        return None
    text = " ".join(str(err).split())
    mismatch = _LINEAR_MISMATCH.search(text)
    if mismatch is not None:
        got, needs = int(mismatch.group(1)), int(mismatch.group(2))
        verdict = "too small" if got < needs else "too large"
        detail = f"a fully connected layer needs {needs} features and got {got}"
    elif any(marker in text for marker in _TOO_SMALL):
        verdict, detail = "too small", text
    else:
        return None
    size = _input_size(err)
    if size is None:  # not raised by a model on images: some other shape problem, left as it is
        return None
    fits = f"are {verdict} for"
    if mismatch is not None and size[0] != size[1]:  # fewer features from 48x80 need not mean too small
        fits = "do not fit"
    given = f" (--resize {resize[0]}x{resize[1]})" if resize is not None else ""
    return (f"images of {size[0]}x{size[1]} pixels{given} {fits} the model {model!r}: {detail}; "
            f"give --resize a size the model accepts, e.g. the size it was trained on")


def _sized(run: Callable[[], T], args: argparse.Namespace) -> T:
    """``run()``, with a model's refusal of the image size turned into a ``ValueError`` that says so."""
    try:
        return run()
    except RuntimeError as err:
        problem = image_size_problem(err, args.model, args.resize)
        if problem is None:
            raise
        raise ValueError(problem) from err


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``captum-ext evaluate`` from parsed arguments (one method or several); rank 0 prints the metrics.

    Args:
        args (argparse.Namespace): the parsed ``evaluate`` arguments.

    Returns:
        int: the exit status, 0.

    Raises:
        ValueError: besides the library's errors, images whose size the model cannot take, and a run in which
            ``--skip-bad`` left out every pair (after its results are written).
    """
    from captum_ext.evaluation.runner import evaluate

    model, class_map = _model(args), _class_map(args.class_map)
    summary = _sized(lambda: evaluate(
        model, args.method, args.data, args.out, batch_size=args.batch_size, tolerance=args.tolerance,
        class_map=class_map, resume=args.resume, device=args.device, resize=args.resize, layer=args.layer,
        box_map=args.box_map, map_dtype=args.map_dtype, num_workers=args.workers, skip_bad=args.skip_bad,
        show_progress=not args.no_progress, metrics=args.metrics, faithfulness_steps=args.faithfulness_steps,
        faithfulness_baseline=args.baseline, perturbation_samples=args.perturbations,
        infidelity_noise=args.infidelity_noise, sensitivity_radius=args.sensitivity_radius), args)
    if _is_main():
        if "," in args.method:  # several methods: their metrics, and where the leaderboard is
            print(json.dumps({name: {k: v for k, v in one.items() if k not in ("settings", "class_map")}
                              for name, one in summary.items()}, indent=2))
            print(f"results in {args.out}: one folder per method; leaderboard.md, leaderboard.csv and index.html "
                  f"compare them")
        else:
            print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=2))
            print(f"results in {args.out}")
    first = next(iter(summary.values())) if "," in args.method else summary
    if not first["n_pairs"] and first["skipped"]:  # no number above means anything
        raise ValueError(f"nothing was scored: --skip-bad left out every image or pair ({len(first['skipped'])} "
                         f"listed in {args.out}'s metrics.json)")
    return 0


def run_fit_boxes(args: argparse.Namespace) -> int:
    """Run ``captum-ext fit-boxes`` from parsed arguments.

    Args:
        args (argparse.Namespace): the parsed ``fit-boxes`` arguments.

    Returns:
        int: the exit status, 0.

    Raises:
        ValueError: besides the library's errors, images whose size the model cannot take.
    """
    from captum_ext.evaluation.box_fitting import fit_box_map

    model, class_map = _model(args), _class_map(args.class_map)
    state = _sized(lambda: fit_box_map(
        model, args.data, args.out, batch_size=args.batch_size, ridge=args.ridge, class_map=class_map,
        device=args.device, resize=args.resize, num_workers=args.workers, features=args.features,
        skip_bad=args.skip_bad), args)
    if _is_main():
        print(f"box map fitted on {int(state['stats.count'])} (image, class) pairs, written to {args.out}")
    return 0


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"
