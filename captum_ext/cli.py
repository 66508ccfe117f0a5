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

The parser (:mod:`captum_ext._cli_parser`) and this module import no torch, so ``--help`` is immediate; a command
imports what it needs when it runs. :func:`main` turns a user error into one line ``captum-ext: error: …`` (exit
status 2), Ctrl-C into ``captum-ext: interrupted`` (130), and keeps the traceback of an error raised by your own
model file (exit status 1); ``--debug`` or ``CAPTUM_EXT_DEBUG=1`` shows every traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["BENCHMARKS", "bench", "demo", "find_benchmarks", "main"]

#: Exit status of a user error (as argparse's own), of a model factory that raised, and of Ctrl-C (128 + SIGINT).
USAGE_ERROR, FACTORY_ERROR, INTERRUPTED = 2, 1, 130
#: Set to 1 (or true / yes) to get tracebacks, as ``--debug`` does.
DEBUG_VARIABLE = "CAPTUM_EXT_DEBUG"


def __getattr__(name: str) -> Any:
    # `captum_ext.cli.demo` / `save_figure` keep working without the command line importing torch up front.
    if name in ("demo", "save_figure"):
        return getattr(importlib.import_module("captum_ext.demo"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train_roi(args: argparse.Namespace) -> int:
    from captum_ext.training import roi

    if args.hard is not None and (args.merge or args.mode):
        raise ValueError(f"--hard {args.hard} trains a baseline without a mask branch: --merge and --mode have no "
                         f"effect there; leave them out")
    run = roi.train_and_record(args.out, depth=args.depth, merge=args.merge or "first", mode=args.mode or "add",
                               hard=args.hard, backbone_weights=args.backbone, epochs=args.epochs,
                               n_train=args.n_train, n_test=args.n_test, seed=args.seed)
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
    epochs = f"{record['epochs']} epoch{'s' if record['epochs'] != 1 else ''}"
    # Without attention the model has no attention map: its IoU would describe an untrained branch.
    attention = "" if args.no_attention else f", attention IoU {test['attention_iou']:.3f}"
    print(f"dataset {args.dataset}: {record['n_train']} training images, {epochs} in "
          f"{record['train_seconds']:.0f} s; test ({record['n_test']} images) mean error "
          f"{test['mean_error']:.2f} {record['unit']}{attention}; wrote {args.out.resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from captum_ext.demo import demo

    print(f"captum-ext demo -> {args.out.resolve()}")
    for path in demo(args.out, args.seed):
        print(f"  wrote {path.resolve()}")
    return 0


def _explain_out(image: Path, given: Optional[str]) -> Path:
    """Where ``explain`` writes its figure: ``--out`` as given (a suffix-less name gets ``.png``), or
    ``<image>_explained.png`` beside the image or in the ``--out`` folder (a trailing slash names a new one). A file
    chosen by that default name is replaced only when it is an earlier figure of the same image."""
    from matplotlib.backend_bases import FigureCanvasBase

    from captum_ext.demo import check_replaceable_figures

    default_name = f"{image.stem}_explained.png"
    folder = given is not None and (given.endswith(("/", os.sep)) or Path(given).is_dir())
    if given is None or folder:
        out = image.with_name(default_name) if given is None else Path(given) / default_name
        check_replaceable_figures([out], "--out", source=image.name)
    else:
        out = Path(given)
        out = out if out.suffix else out.with_suffix(".png")  # what matplotlib writes: say so, and check that name
    writable = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in writable:
        raise ValueError(f"--out {str(out)!r}: matplotlib writes no '{out.suffix}' figures; use one of "
                         f"{', '.join('.' + k for k in sorted(writable))}")
    if out.exists() and out.resolve() == image.resolve():
        raise ValueError(f"--out {str(out)!r} is the explained image itself: the figure would replace it")
    if folder:
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from captum_ext import explain
    from captum_ext.demo import save_figure

    methods = list(explain.METHODS) if args.method == "all" else [args.method]
    loaded = explain.load_model(args.model, args.weights)
    result = explain.explain(explain.read_image(args.image), loaded, methods, target=args.target)
    out = _explain_out(args.image, args.out)
    save_figure(explain.figure(result, loaded, methods), out, source=args.image.name)
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
        ValueError: an unknown name in ``only``, or ``out_dir`` names a file.
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
    if results.exists() and not results.is_dir():
        raise ValueError(f"`out_dir` {str(results)!r} is a file, not a folder")
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


def _debug_from_environment() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def _runner(reference: str) -> Callable[[argparse.Namespace], int]:
    """The function named ``"module:function"``: importing it here is what keeps ``--help`` free of torch."""
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)


def _is_factory_error(err: BaseException) -> bool:
    # Only a run that loaded captum_ext.evaluation.models can raise its ModelFactoryError; looking the class up
    # in sys.modules avoids importing torch just to test for it.
    models = sys.modules.get("captum_ext.evaluation.models")
    return models is not None and isinstance(err, models.ModelFactoryError)


#: Library parameters whose command-line option has another name (``evaluate(num_workers=...)`` is ``--workers``).
OPTION_OF_PARAMETER = {"num_workers": "workers", "perturbation_samples": "perturbations",
                       "faithfulness_baseline": "baseline", "backbone_weights": "backbone"}


def _one_line(err: BaseException, options: List[argparse.Action], args: Optional[argparse.Namespace] = None) -> str:
    """The error's message on one line, the library's `name` of a parameter written as its ``--option``, and a
    file error of a path given on the command line prefixed with that path's option."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:  # a DataLoader worker's error, traceback and all
        said = [line for line in text.strip().splitlines() if line.startswith(f"{type(err).__name__}: ")]
        text = said[-1][len(type(err).__name__) + 2:] if said else text
    text = " ".join(text.split()) or type(err).__name__
    for parameter, dest in OPTION_OF_PARAMETER.items():
        text = text.replace(f"`{parameter}`", f"`{dest}`")
    for action in options:
        if action.option_strings:
            text = text.replace(f"`{action.dest}`", action.option_strings[-1])
    filename = getattr(err, "filename", None) if isinstance(err, OSError) else None
    if filename is not None and args is not None:
        for action in options:
            value = getattr(args, action.dest, None)
            if action.option_strings and value is not None and str(value) == str(filename):
                return f"{action.option_strings[-1]} {filename}: {err.strerror or text}"
    return text


def _command_options(parser: argparse.ArgumentParser, command: str) -> List[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return list(action.choices[command]._actions)
    return []


#: Modules a command imports whose import-time notices an ignore filter cannot silence (numcodecs, under zarr,
#: installs its own "once" filter for its crc32c deprecation ahead of the caller's).
QUIET_IMPORTS = {"evaluate": ("zarr",), "fit-boxes": ("zarr",)}


def _format_warning(message: Any, category: type, filename: str, lineno: int, line: Optional[str] = None) -> str:
    """Our own notices as one line, like the errors; other libraries' warnings keep Python's format."""
    if "captum_ext" in Path(filename).parts and category is UserWarning:
        return f"captum-ext: warning: {message}\n"
    return _PYTHON_FORMAT_WARNING(message, category, filename, lineno, line)


_PYTHON_FORMAT_WARNING = warnings.formatwarning  # the format before main() sets its own


def _import_quietly(modules: Sequence[str]) -> None:
    """Import ``modules`` now, discarding the warnings their import prints (later imports find them loaded)."""
    for name in modules:
        with warnings.catch_warnings(record=True):
            try:
                importlib.import_module(name)
            except ImportError:  # reported by the command itself, with its own message
                pass


def command() -> None:
    """The ``captum-ext`` program: runs :func:`main` and exits with its status. After an interrupt has been reported,
    a further Ctrl-C while the interpreter shuts down is ignored, so the exit status stays 130.

    Raises:
        SystemExit: always, with :func:`main`'s status.
    """
    status = main()
    if status == INTERRUPTED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


def _peer_stopped(err: BaseException) -> bool:
    """Whether ``err`` is this process of a torchrun run losing its peers: another process stopped (on its own
    error, printed by it) while this one waited for it in a collective operation."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    # gloo says so in these words; nccl aborts the communicator. Other distributed errors (a rendezvous that
    # cannot be reached, say) are this process's own and keep their message.
    return isinstance(err, RuntimeError) and any(sign in str(err) for sign in (
        "Connection closed by peer", "Connection reset by peer", "communicator was aborted"))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``captum-ext`` command: parse, run the command, turn errors into one line.

    A user error (``ValueError``, ``TypeError`` or ``OSError`` such as a missing file, raised while the command
    runs) prints ``captum-ext: error: <message>`` on stderr and returns 2, like argparse's own errors (which exit
    with 2 through ``SystemExit``). Ctrl-C prints ``captum-ext: interrupted`` and returns 130. An error raised by
    your model file (``--model PATH.py:FUNCTION``: importing it or calling the function) prints its traceback and
    the error line and returns 1. With ``--debug`` or ``CAPTUM_EXT_DEBUG=1`` every error propagates with its
    traceback. Under torchrun, a process whose peers stopped on an error prints one line saying so and returns 1.
    Other exceptions (bugs) propagate unchanged.

    Args:
        argv (list of str, optional): the arguments. Default: ``sys.argv[1:]``.

    Returns:
        int: the exit status: 0 on success, 1 when a benchmark, your model factory or another process of the run
        failed, 2 on a user error, 130 when interrupted.
    """
    from captum_ext._cli_parser import build_parser, refuse_repeated_options

    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_repeated_options(parser, sys.argv[1:] if argv is None else argv)
    debug = args.debug or _debug_from_environment()
    python_format = warnings.formatwarning
    if not debug and not sys.warnoptions:
        # Libraries' deprecation notices are meant for their developers: a command's user sees its result or one
        # error line (``-W`` or --debug shows them).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.formatwarning = _format_warning
        _import_quietly(QUIET_IMPORTS.get(args.command, ()))
    try:
        return _runner(args.run)(args)
    except KeyboardInterrupt:
        if argv is None and threading.current_thread() is threading.main_thread():
            # The program's own run: a further Ctrl-C from here on (a user pressing it again while the run's
            # clean-up and the interpreter's shutdown finish) would kill it with no status; it has been heard.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if debug:
            raise
        print("captum-ext: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        if not debug and _peer_stopped(err):  # the process that stopped printed the reason; a traceback here hides it
            print("captum-ext: error: another process of this run stopped (its error is printed above or below); "
                  "this one stops too", file=sys.stderr)
            return FACTORY_ERROR
        factory = _is_factory_error(err)
        if debug or not (factory or isinstance(err, (ValueError, TypeError, OSError))):
            raise
        if factory:  # the user's own code failed: its traceback is what they need to fix it
            traceback.print_exception(err)
        print(f"captum-ext: error: {_one_line(err, _command_options(parser, args.command), args)}", file=sys.stderr)
        return FACTORY_ERROR if factory else USAGE_ERROR
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
