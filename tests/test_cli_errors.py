"""The `captum-ext` command's user errors end in one line (exit status 2), Ctrl-C in 130, a failing model factory
keeps its traceback (exit status 1), --debug / CAPTUM_EXT_DEBUG=1 show tracebacks; the parser imports no torch,
its choices equal the library's, and the help shows defaults, an example per command and a line per method."""
import json
import os
import signal
import subprocess
import warnings
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from captum_ext import _cli_parser, cli

COMMANDS = ("demo", "explain", "evaluate", "fit-boxes", "compare", "bench", "train-roi", "train-regressor")
EVALUATE = ["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency", "--data", "scenes:single:2",
            "--no-progress"]


def one_error_line(stderr: str) -> str:
    """The only line of ``stderr``, checked to be a ``captum-ext: error:`` line."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("captum-ext: error: "), lines[0]
    return lines[0]


def user_files(folder: Path) -> None:
    """A bad-JSON class map, a class map missing categories, and model files: a factory importing a module
    beside it, one raising, one whose import fails."""
    (folder / "bad.json").write_text("{not json")
    (folder / "partial.json").write_text(json.dumps({"0": 0}))
    (folder / "captum_ext_test_sibling_layers.py").write_text(textwrap.dedent("""\
        from torch import nn

        def head():
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        """))
    (folder / "net.py").write_text(textwrap.dedent("""\
        from torch import nn

        import captum_ext_test_sibling_layers

        def build():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), captum_ext_test_sibling_layers.head())

        def broken():
            raise RuntimeError("boom in the user's build")
        """))
    (folder / "orphan.py").write_text("import captum_ext_test_no_such_sibling\n\ndef build():\n    return None\n")
    (folder / "corrupt.pt").write_bytes(b"not a pickle")
    torch.save([torch.zeros(2)], folder / "list.pt")


#: argv (``{d}``: the test's folder) → what the one error line must contain.
USER_ERRORS = {
    "missing-model-file": (["--model", "{d}/missing.py:build"], "missing.py"),
    "missing-coco-annotations": (["--data", "coco:{d}/none.json:{d}/images"], "none.json"),
    "bad-json-class-map": (["--class-map", "{d}/bad.json"], "not valid JSON"),
    "category-without-class": (["--class-map", "{d}/partial.json"], "partial.json': categories without a class"),
    "batch-size-0": (["--batch-size", "0"], "--batch-size"),
    "cuda-without-gpu": (["--device", "cuda"], "cuda"),
    "image-too-small": (["--resize", "8"], "images of 8x8 pixels (--resize 8x8) are too small for the model"),
    "image-of-another-shape": (["--resize", "48x80"], "images of 48x80 pixels (--resize 48x80) do not fit the model"),
    "box-map-without-sensitivity": (["--box-map", "{d}/no.pt"], "--box-map is for the sensitivity method only"),
    "negative-workers": (["--workers", "-1"], "--workers must be >= 0, got -1"),
    "not-a-device": (["--device", "tpu"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    # Before: pickle's own words ("Unsupported operand 103") and "'list' object has no attribute …", naming nothing.
    "corrupt-weights": (["--model", "{d}/net.py:build", "--weights", "{d}/corrupt.pt"],
                        "corrupt.pt' is not a readable weights file (expected a state dict or checkpoint of the model "
                        "from"),
    "weights-holding-a-list": (["--model", "{d}/net.py:build", "--weights", "{d}/list.pt"],
                               "list.pt' holds a list, not a state dict"),
}


def user_error_argv(case: str, folder: Path) -> list:
    extra, _ = USER_ERRORS[case]
    argv = EVALUATE + ["--out", str(folder / f"out_{case}")]
    for option, value in zip(extra[::2], extra[1::2]):
        if option in argv:  # replace the default --model / --data
            argv[argv.index(option) + 1] = value.format(d=folder)
        else:
            argv += [option, value.format(d=folder)]
    return argv


def skip_cuda_case(case: str) -> None:
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is no error here")


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_print_one_line_and_return_2(case, tmp_path, capsys):
    skip_cuda_case(case)
    user_files(tmp_path)
    assert cli.main(user_error_argv(case, tmp_path)) == cli.USAGE_ERROR == 2
    assert USER_ERRORS[case][1] in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_from_the_installed_command(case, tmp_path):
    skip_cuda_case(case)
    user_files(tmp_path)
    done = subprocess.run([sys.executable, "-m", "captum_ext", *user_error_argv(case, tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert USER_ERRORS[case][1] in one_error_line(done.stderr)


def test_a_file_error_names_the_option_that_gave_the_path(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the results folder should go")
    assert cli.main(EVALUATE + ["--out", str(tmp_path / "taken")]) == 2
    assert one_error_line(capsys.readouterr().err) == \
        f"captum-ext: error: --out {str(tmp_path / 'taken')!r} is a file, not a folder"
    assert cli.main(EVALUATE + ["--out", str(tmp_path / "taken" / "sub")]) == 2
    assert one_error_line(capsys.readouterr().err) == \
        f"captum-ext: error: --out {tmp_path / 'taken' / 'sub'}: Not a directory"
    argv = EVALUATE + ["--out", str(tmp_path / "out"), "--weights", str(tmp_path / "no.pt")]
    argv[argv.index("--model") + 1] = "torchvision:resnet18"
    assert cli.main(argv) == 2
    assert one_error_line(capsys.readouterr().err) == \
        f"captum-ext: error: --weights {tmp_path / 'no.pt'}: No such file or directory"


def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path):
    command = subprocess.Popen([sys.executable, "-m", "captum_ext", "demo", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert command.stdout.readline().startswith("captum-ext demo ->")  # the command is running: interrupt it
    # A SIGINT that lands inside a finaliser is reported by Python as "Exception ignored" and lost (a CI run saw
    # the demo finish with status 0): press Ctrl-C again until the command stops, as a user would.
    err = ""
    for _ in range(240):
        command.send_signal(signal.SIGINT)
        try:
            out, err = command.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            continue
    assert command.returncode == cli.INTERRUPTED == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "captum-ext: interrupted"


def test_ctrl_c_through_main_and_with_debug(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_demo", interrupted)
    assert cli.main(["demo"]) == 130
    assert capsys.readouterr().err == "captum-ext: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--debug", "demo"])


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch, capsys):
    argv = EVALUATE + ["--out", str(tmp_path / "out"), "--batch-size", "0"]
    with pytest.raises(ValueError, match="`batch_size`"):  # the library's own exception, unchanged
        cli.main(["--debug", *argv])
    with pytest.raises(ValueError, match="`batch_size`"):  # also accepted after the command
        cli.main([*argv, "--debug"])
    monkeypatch.setenv("CAPTUM_EXT_DEBUG", "1")
    with pytest.raises(ValueError, match="`batch_size`"):
        cli.main(argv)
    monkeypatch.setenv("CAPTUM_EXT_DEBUG", "0")
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("captum-ext: error: --batch-size")
    done = subprocess.run([sys.executable, "-m", "captum_ext", *argv], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CAPTUM_EXT_DEBUG": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ValueError: `batch_size`")


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch):
    def buggy(args):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(cli, "_demo", buggy)
    with pytest.raises(RuntimeError, match="an internal bug"):
        cli.main(["demo"])


def test_a_failing_model_factory_keeps_its_traceback(tmp_path, capsys):
    user_files(tmp_path)
    for factory, cause in ((f"{tmp_path}/net.py:broken", "boom in the user's build"),
                           (f"{tmp_path}/orphan.py:build", "captum_ext_test_no_such_sibling")):
        argv = EVALUATE + ["--out", str(tmp_path / "out")]
        argv[argv.index("--model") + 1] = factory
        assert cli.main(argv) == cli.FACTORY_ERROR == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and cause in err
        assert str(tmp_path / factory.split("/")[-1].split(":")[0]) in err  # the user's file is in the traceback
        assert err.strip().splitlines()[-1].startswith("captum-ext: error: ") and cause in err.splitlines()[-1]
    done = subprocess.run([sys.executable, "-m", "captum_ext", *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("captum-ext: error: importing")


def test_a_factory_imports_a_module_beside_it_and_sys_path_is_restored(tmp_path):
    from captum_ext.evaluation.models import ModelFactoryError, load_evaluation_model

    user_files(tmp_path)
    before = list(sys.path)
    try:
        loaded = load_evaluation_model(f"{tmp_path}/net.py:build")
        assert loaded.model(torch.rand(2, 3, 16, 16)).shape == (2, 10) and loaded.class_names[-1] == "9"
        assert sys.path == before
        with pytest.raises(ModelFactoryError, match="boom") as raised:
            load_evaluation_model(f"{tmp_path}/net.py:broken")
        assert isinstance(raised.value, RuntimeError) and isinstance(raised.value.__cause__, RuntimeError)
        with pytest.raises(ModelFactoryError) as raised:
            load_evaluation_model(f"{tmp_path}/orphan.py:build")
        assert isinstance(raised.value.__cause__, ModuleNotFoundError)
        assert sys.path == before  # restored after a failure too
    finally:
        sys.modules.pop("captum_ext_test_sibling_layers", None)


def test_parser_and_help_import_no_torch():
    code = textwrap.dedent("""\
        import contextlib, io, sys
        import captum_ext.cli
        from captum_ext._cli_parser import build_parser

        build_parser()
        for argv in (["--help"], ["evaluate", "--help"], ["fit-boxes", "--help"], ["explain", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
                captum_ext.cli.main(argv)
            assert "usage: captum-ext" in out.getvalue(), argv
        heavy = sorted(m for m in ("torch", "numpy", "captum", "matplotlib") if m in sys.modules)
        assert not heavy, heavy
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_lazy_package_still_exports_its_names():
    done = subprocess.run([sys.executable, "-c", "import sys, captum_ext; assert 'torch' not in sys.modules; "
                           "from captum_ext import NodeBacktrack, SensitivityBBox, zoo; "
                           "assert captum_ext.metrics.pointing_game and captum_ext.ROIAttentionResNet; "
                           "assert set(captum_ext.__all__) <= set(dir(captum_ext))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no_such_name"):
        import captum_ext

        captum_ext.no_such_name


def test_parser_choices_equal_the_library_constants():
    from captum_ext import explain, zoo
    from captum_ext.attr._box_features import FEATURE_BLOCKS
    from captum_ext.evaluation import methods, models, scoring
    from captum_ext.models import roi_attention_resnet as roi_net
    from captum_ext.training import roi
    from captum_ext.zoo.ellipses import DATASETS

    assert _cli_parser.EXPLAIN_METHODS == explain.METHODS
    assert _cli_parser.SCENE_CLASSIFIERS == tuple(zoo.available(zoo.SCENE_CLASSIFIER))
    assert _cli_parser.ELLIPSE_DATASETS == DATASETS
    assert (_cli_parser.ROI_MERGE_POINTS, _cli_parser.ROI_MODES, _cli_parser.ROI_HARD, _cli_parser.ROI_DEPTHS) == \
        (roi_net.MERGE_POINTS, roi_net.MODES, roi_net.HARD, roi_net.DEPTHS)
    assert _cli_parser.ROI_DEFAULTS == {"epochs": roi.DEFAULT_EPOCHS, "n_train": roi.DEFAULT_N_TRAIN,
                                        "n_test": roi.DEFAULT_N_TEST}
    assert tuple(_cli_parser.EVALUATION_METHODS) == methods.METHODS  # names and order
    assert _cli_parser.LOCALISATION_METRICS == scoring.LOCALISATION_METRICS
    assert _cli_parser.FAITHFULNESS_METRICS == scoring.FAITHFULNESS_METRICS
    from captum_ext.metrics import faithfulness

    assert _cli_parser.FAITHFULNESS_BASELINES == faithfulness.BASELINES
    assert _cli_parser.FEATURE_BLOCKS == tuple(FEATURE_BLOCKS)
    assert _cli_parser.MODEL_FORMS == models.MODEL_FORMS


def test_help_shows_defaults_an_example_per_command_and_a_line_per_method(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            cli.main([command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert f"example:\n  captum-ext {command}" in out, command
        assert "--debug" in out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # argparse wraps option help at the terminal's width
    assert "images per batch (default: 16)" in flat and "(default: float16)" in flat and "(default: 0)" in flat
    assert "(default: None)" not in flat and "(default: False)" not in flat
    listed = out.split("methods (--method):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == list(_cli_parser.EVALUATION_METHODS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in listed)  # each with its description
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS) and "CAPTUM_EXT_DEBUG=1" in " ".join(out.split())


def test_argparse_errors_still_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--model", "zoo:scenes_vgg", "--method", "smoothgrad", "--data", "x", "--out", "y"])
    assert exited.value.code == 2 and "unknown method 'smoothgrad'; choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency, saliency", "--data", "x",
                  "--out", "y"])
    assert exited.value.code == 2 and "names a method twice" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "--batch-size", "1.5"],
     "captum-ext evaluate: error: argument --batch-size: invalid int value: '1.5'"),
    (["bogus"], "captum-ext: error: argument COMMAND: invalid choice: 'bogus'"),
    (["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency", "--data", "x", "--out", "y", "--metrics",
      "pointing"], "captum-ext evaluate: error: argument --metrics: invalid choice: 'pointing'"),
])
def test_argparse_errors_are_one_line_too(capsys, argv, words):
    """Before: argparse printed the command's whole usage block (eight lines for evaluate) above the error."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and err.startswith(words)
    assert err.rstrip().endswith(f"(see {' '.join(words.split(':')[0].split())} --help)")


def test_a_process_whose_peers_stopped_says_so_in_one_line(monkeypatch, capsys):
    """Under torchrun, the process that met the error prints it; the others, cut off in a collective operation,
    used to print a gloo traceback below it."""
    def lose_peers(args):
        raise RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:22410. This is typically caused by "
                           "a remote worker crashing.")

    monkeypatch.setattr(cli, "_runner", lambda reference: lose_peers)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(EVALUATE + ["--out", "unused"]) == 1
    assert one_error_line(capsys.readouterr().err) == ("captum-ext: error: another process of this run stopped (its "
                                                       "error is printed above or below); this one stops too")
    monkeypatch.setenv("WORLD_SIZE", "1")  # alone, the same error is no peer's: a bug, with its traceback
    with pytest.raises(RuntimeError, match="closed by peer"):
        cli.main(EVALUATE + ["--out", "unused"])


def test_an_unreadable_image_read_by_a_worker_process_is_one_line(tmp_path, capsys):
    """DataLoader re-raises a worker's error with the worker's whole traceback in its message."""
    from captum_ext.datasets import export_coco, scenes

    annotations, images = export_coco(scenes.make_scenes(4, mode="single", split="test", seed=2), tmp_path / "c")
    (images / "000002.png").write_bytes(b"not a png")
    argv = EVALUATE + ["--out", str(tmp_path / "out"), "--workers", "1"]
    argv[argv.index("--data") + 1] = f"coco:{annotations}:{images}"
    assert cli.main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cannot decode image" in line and "000002.png" in line and "--skip-bad leaves unreadable images out" in line
    assert "Traceback" not in line


def test_a_skip_bad_run_that_read_no_image_exits_2_after_writing_its_list(tmp_path, capsys):
    """Before: it exited 0 with every metric null."""
    from captum_ext.datasets import export_coco, scenes

    annotations, images = export_coco(scenes.make_scenes(2, mode="single", split="test", seed=2), tmp_path / "c")
    for image in images.iterdir():
        image.write_bytes(b"not a png")
    argv = EVALUATE + ["--out", str(tmp_path / "out"), "--skip-bad"]
    argv[argv.index("--data") + 1] = f"coco:{annotations}:{images}"
    assert cli.main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "nothing was scored: --skip-bad left out every image or pair (2 listed in" in line
    assert len(json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped"]) == 2


def test_a_resume_into_an_empty_folder_warns_in_one_line_without_progress(tmp_path):
    """Before: with --no-progress a mistyped --out started a fresh run without a word."""
    argv = ["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency", "--data", "scenes:single:2",
            "--out", str(tmp_path / "typo"), "--resume", "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "captum_ext", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stderr.strip() == f"captum-ext: warning: resuming: nothing done yet in {tmp_path / 'typo'}; " \
                                  f"starting the run"
    previous = warnings.formatwarning
    assert cli.main(argv) == 0 and warnings.formatwarning is previous  # main() leaves the format as found


def test_a_metric_named_twice_is_refused_in_one_line(tmp_path, capsys):
    """Before: run.json recorded the repeat, and a resume naming the metric once counted as another run."""
    argv = EVALUATE + ["--out", str(tmp_path / "out"), "--metrics", "deletion", "pointing_game", "deletion"]
    assert cli.main(argv) == 2
    assert "--metrics names 'deletion' more than once" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
