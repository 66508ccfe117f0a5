"""The ``captum-ext`` argument parser, kept free of torch so that ``captum-ext --help`` answers at once.

The choices offered here are copies, as plain data, of the library's constants (importing the library would load
torch); ``tests/test_cli_errors.py`` checks that every copy equals its original. Each sub-command names its runner
as ``"module:function"``, which :func:`captum_ext.cli.main` imports only when that command runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, NoReturn, Optional, Sequence, Tuple

from captum_ext._version import __version__
from captum_ext.cli import BENCHMARKS  # light: captum_ext.cli imports the library only inside its runners

#: ``captum_ext.explain.METHODS``.
EXPLAIN_METHODS: Tuple[str, ...] = ("saliency", "node_backtrack", "class_diff", "sensitivity")
#: ``captum_ext.zoo.available(zoo.SCENE_CLASSIFIER)``.
SCENE_CLASSIFIERS: Tuple[str, ...] = ("scenes_resnet", "scenes_resnet_multilabel", "scenes_vgg",
                                      "scenes_vgg_multilabel")
#: ``captum_ext.zoo.ellipses.DATASETS``.
ELLIPSE_DATASETS: Tuple[int, ...] = (1, 2, 3)
#: ``MERGE_POINTS``, ``MODES``, ``HARD`` and ``DEPTHS`` of ``captum_ext.models.roi_attention_resnet``.
ROI_MERGE_POINTS: Tuple[str, ...] = ("first", "layer1", "layer2", "layer3", "layer4", "all")
ROI_MODES: Tuple[str, ...] = ("add", "mul")
ROI_HARD: Tuple[Optional[str], ...] = (None, "image", "first")
ROI_DEPTHS: Tuple[int, ...] = (18, 34, 50, 101, 152)
#: ``DEFAULT_EPOCHS``, ``DEFAULT_N_TRAIN`` and ``DEFAULT_N_TEST`` of ``captum_ext.training.roi``.
ROI_DEFAULTS: Dict[str, int] = {"epochs": 8, "n_train": 8000, "n_test": 2000}
#: One line per ``captum_ext.evaluation.methods.METHODS`` entry, in its order (``explain`` offers four of them).
EVALUATION_METHODS: Dict[str, str] = {
    "node_backtrack": "NodeBacktrack: density of the backtracked paths",
    "class_diff": "MultiLayerClassDiffSaliency: own class minus the others",
    "sensitivity": "SensitivityBBox's |dy/dx|; boxes too with --box-map",
    "saliency": "Captum Saliency: |gradient|, max over channels",
    "integrated_gradients": "Captum IntegratedGradients, 32 steps from black",
    "guided_backprop": "Captum GuidedBackprop, max over channels",
    "grad_cam": "Captum LayerGradCam, last conv (or --layer), upsampled",
}
#: ``captum_ext.evaluation.scoring.LOCALISATION_METRICS``.
LOCALISATION_METRICS: Tuple[str, ...] = ("pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap")
#: ``captum_ext.evaluation.scoring.FAITHFULNESS_METRICS`` and ``captum_ext.metrics.faithfulness.BASELINES``.
FAITHFULNESS_METRICS: Tuple[str, ...] = ("deletion", "insertion", "infidelity", "sensitivity_max", "road_morf",
                                         "road_lerf")
FAITHFULNESS_BASELINES: Tuple[str, ...] = ("zero", "blur", "mean")
#: The keys of ``captum_ext.attr._box_features.FEATURE_BLOCKS``.
FEATURE_BLOCKS: Tuple[str, ...] = ("grid", "multiscale", "moments", "cam", "window", "class")
#: ``captum_ext.evaluation.models.MODEL_FORMS``.
MODEL_FORMS: Tuple[str, ...] = ("zoo:NAME", "efficientnet_lite0", "torchvision:NAME (with weights)",
                                "PATH.py:FUNCTION")
DATA_FORMS: Tuple[str, ...] = ("coco:ANNOTATIONS.json:IMAGES_DIR", "voc:ROOT[:YEAR:SPLIT]", "folder:DIR",
                               "scenes:MODE:N[:train]")

DEBUG_HELP = "print the full traceback of an error (also: environment variable CAPTUM_EXT_DEBUG=1)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog (example, one line per method) as written and appends the default to the help of every
    option whose help does not already state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # None / False defaults mean "off" or "see the text"; repeating them would only add noise.
        if (not action.option_strings or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"


def _size(text: str) -> Tuple[int, int]:
    """``--resize`` values: ``N`` or ``HxW``, positive integers."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--resize must be N or HxW (positive integers), got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _method_names(text: str) -> str:
    """``evaluate --method`` values: one method, or several separated by commas (computed in one pass)."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in EVALUATION_METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(map(repr, unknown))}; choose from "
                                         f"{', '.join(EVALUATION_METHODS)}, or several separated by commas")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"--method names a method twice: {text!r}")
    return ",".join(names)


def _method_lines(names: Tuple[str, ...], **changed: str) -> str:
    """``methods (--method):`` and one line per method, for an epilog; ``changed`` replaces a method's line."""
    lines = {**EVALUATION_METHODS, **changed}
    return "methods (--method):\n" + "\n".join(f"  {name:<22}{lines[name]}" for name in names)


def _command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, summary: str,
             example: str, run: str, notes: str = "") -> argparse.ArgumentParser:
    """A sub-command with its one-line summary, ``notes`` and an example as epilog, ``--debug`` and its runner."""
    epilog = (f"{notes}\n\n" if notes else "") + f"example:\n  {example}"
    parser = commands.add_parser(name, help=summary, description=summary, epilog=epilog,
                                 formatter_class=HelpFormatter)
    # SUPPRESS: without the flag here, the top-level --debug value is kept instead of being reset to False.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    parser.set_defaults(run=run)
    return parser


def _add_evaluation_inputs(parser: argparse.ArgumentParser) -> None:
    """The model and data arguments ``evaluate`` and ``fit-boxes`` share."""
    parser.add_argument("--model", required=True, metavar="SPEC", help="one of: " + ", ".join(MODEL_FORMS))
    parser.add_argument("--weights", type=Path, default=None, metavar="PT",
                        help="state_dict file (torchvision or factory models)")
    parser.add_argument("--data", required=True, metavar="SPEC", help="one of: " + ", ".join(DATA_FORMS))
    parser.add_argument("--class-map", type=Path, default=None, metavar="JSON",
                        help='JSON: {"ids": {"1": 0, ...}} or {"names": {"cat": 0, ...}} (a plain object when its keys '
                             "read only one way) → the model's class index (default: the dataset's own "
                             "class_map.json, else digit category names, else class-folder indices; the resolved "
                             "map is printed)")
    parser.add_argument("--resize", type=_size, default=None, metavar="SIZE",
                        help="resize images to N×N or HxW (default: their stored size)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per process)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="DataLoader worker processes reading images; with 0 a thread reads them ahead of the "
                        "model")


def _add_evaluation_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    evaluate = _command(commands, "evaluate", "explain and score a whole annotated dataset (torchrun-ready)",
                        "captum-ext evaluate --model zoo:scenes_vgg --method node_backtrack \\\n"
                        "      --data scenes:multi:100 --out results/",
                        "captum_ext.evaluation.command:run_evaluate", _method_lines(tuple(EVALUATION_METHODS)))
    _add_evaluation_inputs(evaluate)
    evaluate.add_argument("--method", required=True, type=_method_names, metavar="METHOD[,METHOD...]",
                          help="the attribution method (one line each below), or several separated by commas: one "
                               "pass over the data, one folder per method in --out and a leaderboard of them")
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR", help="results folder")
    evaluate.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch")
    evaluate.add_argument("--tolerance", type=float, default=None, metavar="PX",
                          help="pointing-game tolerance in pixels (default: 15 px per 224 px of each image's longer "
                               "side)")
    evaluate.add_argument("--resume", action="store_true", help="continue the run in --out")
    evaluate.add_argument("--layer", default=None, metavar="NAME",
                          help="grad_cam layer, a dotted submodule name of the classifier, e.g. features.10 "
                               "(default: the last convolution)")
    evaluate.add_argument("--box-map", type=Path, default=None, metavar="PT",
                          help="fit-boxes output (sensitivity method)")
    evaluate.add_argument("--map-dtype", default="float16", choices=("float16", "float32"),
                          help="dtype of the stored maps")
    evaluate.add_argument("--skip-bad", action="store_true",
                          help="skip and list undecodable images and (image, class) pairs with bad boxes instead of "
                               "stopping")
    evaluate.add_argument("--no-progress", action="store_true",
                          help="quiet: no progress bar and no start-up lines (the resolved class map, which "
                               "metrics.json also records, and where a resumed run starts)")
    evaluate.add_argument("--metrics", nargs="*", default=None, choices=LOCALISATION_METRICS + FAITHFULNESS_METRICS,
                          metavar="METRIC",
                          help=f"metrics to compute: localisation ({', '.join(LOCALISATION_METRICS)}) and "
                               f"faithfulness ({', '.join(FAITHFULNESS_METRICS)}: deletion / insertion AUC, steps + 1 "
                               "forward passes per pair; Captum's infidelity and max-sensitivity, --perturbations "
                               "forward passes or method runs per pair; ROAD's MoRF / LeRF with noisy linear "
                               "imputation, 9 forward passes per pair) (default: every localisation metric the "
                               "annotations support; the flag alone: none, only maps, table and accuracy)")
    evaluate.add_argument("--faithfulness-steps", type=int, default=32, metavar="S",
                          help="steps of the deletion and insertion curves")
    evaluate.add_argument("--baseline", default=None, choices=FAITHFULNESS_BASELINES,
                          help="what deleted pixels become / insertion starts from (default: zero for deletion, "
                               "blur for insertion, as in RISE)")
    evaluate.add_argument("--perturbations", type=int, default=10, metavar="N",
                          help="perturbations per pair of infidelity and sensitivity_max (seeded by the batch)")
    evaluate.add_argument("--infidelity-noise", type=float, default=0.1, metavar="SIGMA",
                          help="standard deviation of infidelity's Gaussian perturbations (images in [0, 1])")
    evaluate.add_argument("--sensitivity-radius", type=float, default=0.02, metavar="R",
                          help="max-sensitivity's uniform perturbation bound per pixel")

    fit = _command(commands, "fit-boxes", "fit SensitivityBBox's box map on an annotated dataset",
                   "captum-ext fit-boxes --model zoo:scenes_vgg --data scenes:single:400:train --out boxes.pt",
                   "captum_ext.evaluation.command:run_fit_boxes")
    _add_evaluation_inputs(fit)
    fit.add_argument("--out", type=Path, required=True, metavar="PT", help="box map file to write (.pt)")
    fit.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch")
    fit.add_argument("--ridge", type=float, default=None, metavar="R",
                     help="ridge penalty (default: chosen by generalised cross-validation on the training data)")
    fit.add_argument("--features", nargs="+", default=None, choices=FEATURE_BLOCKS, metavar="BLOCK",
                     help=f"box feature blocks, of: {', '.join(FEATURE_BLOCKS)}; recorded in the file (default: "
                          "SensitivityBBox's default set; 'grid' alone is the paper's)")
    fit.add_argument("--skip-bad", action="store_true",
                     help="skip undecodable images and (image, class) pairs with bad boxes instead of stopping")


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, as the commands' own: argparse would print the whole
    usage block (many lines for ``evaluate``) above the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``captum-ext`` parser with every sub-command; builds without importing torch.

    Returns:
        argparse.ArgumentParser: parses into a namespace whose ``run`` is the runner's ``"module:function"``.
    """
    parser = OneLineErrorParser(
        prog="captum-ext", formatter_class=HelpFormatter,
        description="captum_ext command line: the captum_ext attribution methods on your images, datasets and "
                    "models.",
        epilog="An error prints one line (exit status 2); --debug or CAPTUM_EXT_DEBUG=1 prints its traceback.\n"
               "example:\n  captum-ext demo --out figures/\n"
               "Each command has its own --help, with an example.")
    parser.add_argument("--version", action="version", version=f"captum-ext {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(commands, "demo", "write demo figures (PNG) to a folder", "captum-ext demo --out figures/",
                    "captum_ext.cli:_demo")
    demo.add_argument("--out", type=Path, default=Path("captum_ext_demo"), metavar="DIR", help="output folder")
    demo.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the generated scenes")

    explain = _command(commands, "explain", "explain your own image with the captum_ext methods",
                       "captum-ext explain photo.jpg --model scenes_vgg --method node_backtrack",
                       "captum_ext.cli:_explain",
                       _method_lines(EXPLAIN_METHODS, sensitivity="SensitivityBBox's |dy/dx| and its box"))
    explain.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    explain.add_argument("--model", default="efficientnet_lite0", metavar="MODEL",
                         help=f"a zoo scene classifier ({', '.join(SCENE_CLASSIFIERS)}), 'efficientnet_lite0' "
                              "or 'torchvision:<name>' with --weights")
    explain.add_argument("--weights", type=Path, default=None, metavar="PT",
                         help="state_dict file for a torchvision model")
    explain.add_argument("--method", default="all", choices=("all",) + EXPLAIN_METHODS, metavar="METHOD",
                         help="all, or one of the methods below")
    explain.add_argument("--target", type=int, default=None, metavar="C",
                         help="class index (default: the top class)")
    explain.add_argument("--out", default=None, metavar="PNG",
                         help="figure to write (.png, or another suffix matplotlib writes; none: .png is added; a "
                              "folder, or a name ending in /: <image>_explained.png in it) (default: "
                              "<image>_explained.png beside the image; an existing file of that name is replaced only "
                              "when it is an earlier figure of the same image)")

    _add_evaluation_commands(commands)

    compare = _command(commands, "compare", "compare evaluate runs: leaderboard with bootstrap intervals, HTML report",
                       "captum-ext compare runs/saliency runs/node_backtrack --out report/",
                       "captum_ext.evaluation.compare:run_compare")
    compare.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="evaluate output folders")
    compare.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="folder for leaderboard.csv, leaderboard.md and index.html")
    compare.add_argument("--resamples", type=int, default=1000, metavar="B",
                         help="bootstrap resamples over images for the intervals")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    compare.add_argument("--gallery", type=int, default=6, metavar="N",
                         help="pairs shown across every method on the page (0: none)")
    compare.add_argument("--examples", type=int, default=2, metavar="N",
                         help="best and worst pairs per method and metric on the page (0: none)")

    bench = _command(commands, "bench", "run the benchmarks (from a clone) and write the reproduction report",
                     "captum-ext bench --quick --only datasets evaluate", "captum_ext.cli:_bench")
    bench.add_argument("--quick", action="store_true",
                       help="smaller data and fewer repeats (under 10 minutes on 2 CPU cores)")
    bench.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), default=None, metavar="NAME",
                       help="run only these benchmarks, of: " + ", ".join(BENCHMARKS))
    bench.add_argument("--bench-dir", type=Path, default=None, metavar="DIR",
                       help="the repository's benchmarks/ folder (default: ./benchmarks, else the one of the clone "
                            "the package is installed from in editable mode)")
    bench.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                       help="default: the benchmarks folder's results/ (the committed report of a clone), or "
                            "results/quick with --quick")

    roi = _command(commands, "train-roi", "train ROIAttentionResNet on the ROI digit scenes",
                   "captum-ext train-roi --merge layer3 --mode mul --epochs 2 --n-train 2000 --out roi/",
                   "captum_ext.cli:_train_roi")
    # No argparse default: with --hard (no mask branch) a given --merge or --mode would be silently ignored.
    roi.add_argument("--merge", default=None, choices=ROI_MERGE_POINTS,
                     help="where the mask branch joins (default: first)")
    roi.add_argument("--mode", default=None, choices=ROI_MODES, help="how the mask branch joins (default: add)")
    roi.add_argument("--hard", default=None, choices=[h for h in ROI_HARD if h is not None],
                     help="the paper's baselines without a mask branch: the image, or the conv1 output, "
                          "multiplied by the mask (default: the attention branch)")
    roi.add_argument("--depth", type=int, default=18, choices=ROI_DEPTHS, help="ResNet depth")
    roi.add_argument("--backbone", type=Path, default=None, metavar="PT",
                     help="state_dict of a torchvision ResNet to start from, e.g. pretrained (a head of another "
                          "class count, ImageNet's, is replaced by a new 10-class one)")
    roi.add_argument("--epochs", type=int, default=ROI_DEFAULTS["epochs"], metavar="N", help="training epochs")
    roi.add_argument("--n-train", type=int, default=ROI_DEFAULTS["n_train"], metavar="N", help="training scenes")
    roi.add_argument("--n-test", type=int, default=ROI_DEFAULTS["n_test"], metavar="N", help="test scenes")
    roi.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the scenes and the initialisation")
    roi.add_argument("--out", type=Path, default=Path("captum_ext_roi"), metavar="DIR", help="output folder")

    regressor = _command(commands, "train-regressor", "train SelfSupervisedAttentionRegressor on an ellipse dataset",
                         "captum-ext train-regressor --dataset 2 --epochs 5 --out regressor/",
                         "captum_ext.cli:_train_regressor")
    regressor.add_argument("--dataset", type=int, choices=ELLIPSE_DATASETS, required=True,
                           help="the paper's ellipse dataset")
    regressor.add_argument("--out", type=Path, default=Path("captum_ext_regressor"), metavar="DIR",
                           help="output folder")
    regressor.add_argument("--epochs", type=int, default=None, metavar="N",
                           help="default: the shipped weights' setting")
    regressor.add_argument("--n-train", type=int, default=None, metavar="N",
                           help="default: the paper's training-set size")
    regressor.add_argument("--n-test", type=int, default=None, metavar="N", help="default: the paper's test-set size")
    regressor.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the data and the initialisation")
    regressor.add_argument("--width", type=int, default=None, metavar="W",
                           help="regressor width (default: the model's)")
    regressor.add_argument("--no-attention", action="store_true",
                           help="ablation: train the regressor alone on the supervised term")
    return parser


def refuse_repeated_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Exit through the sub-command's parser error when an option is given twice: argparse keeps the last value
    silently, so ``--method saliency --method class_diff`` would run one method where two were meant.

    Args:
        parser (argparse.ArgumentParser): from :func:`build_parser`.
        argv (sequence of str): the arguments as given.

    Returns:
        None
    """
    tokens = list(argv[:argv.index("--")] if "--" in argv else argv)
    command_parser = next((choices[t] for action in parser._actions
                           if isinstance(action, argparse._SubParsersAction)
                           for choices in [action.choices] for t in tokens if t in choices), None)
    if command_parser is None:
        return
    for action in command_parser._actions:
        if not action.option_strings or action.dest in ("help", "debug"):
            continue
        given = [t.split("=", 1)[0] for t in tokens if t.split("=", 1)[0] in action.option_strings]
        if len(given) > 1:
            command_parser.error(f"{'/'.join(action.option_strings)} is given {len(given)} times: give it once "
                                 f"(the last one would silently replace the others)")
