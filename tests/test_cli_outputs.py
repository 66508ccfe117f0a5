"""The command line never replaces what it was not asked to: an option given twice is refused (argparse would keep
the last silently), and outputs that would overwrite the input, a dataset's files, another run's leaderboard or a
training run with other settings are refused in one line; ``explain --out`` writes where it says."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from captum_ext import cli


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captum-ext: error: "), stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("argv, option", [
    (["explain", "x.png", "--method", "saliency", "--method", "class_diff"], "--method"),
    (["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency", "--data", "scenes:multi:2", "--data",
      "scenes:single:2", "--out", "o"], "--data"),
    (["compare", "a", "--out", "b", "--out=c"], "--out"),
    (["fit-boxes", "--model", "m", "--data", "d", "--out", "o", "--features", "grid", "--features", "cam"],
     "--features"),
])
def test_an_option_given_twice_is_refused(argv, option, capsys):
    """Before: the last value won silently (``--method saliency --method class_diff`` ran class_diff alone)."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    assert f"error: {option} is given 2 times: give it once" in capsys.readouterr().err


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


def explain(photo, out, capsys):
    code = cli.main(["explain", str(photo), "--model", "scenes_vgg", "--method", "saliency", "--out", str(out)])
    return code, capsys.readouterr()


def test_explain_out_never_replaces_the_image_and_says_where_it_wrote(photo, tmp_path, capsys):
    """Before: ``--out photo.png`` replaced the photo with the figure; ``--out noext`` wrote ``noext.png`` but said
    ``noext``; ``--out folder`` wrote ``folder.png`` beside the folder."""
    before = photo.read_bytes()
    code, printed = explain(photo, photo, capsys)
    assert code == 2 and photo.read_bytes() == before
    assert "is the explained image itself" in one_error_line(printed.err)
    code, printed = explain(photo, tmp_path / "noext", capsys)
    assert code == 0 and f"wrote {tmp_path / 'noext.png'}" in printed.out and (tmp_path / "noext.png").is_file()
    (tmp_path / "figures").mkdir()
    code, printed = explain(photo, tmp_path / "figures", capsys)
    assert code == 0 and (tmp_path / "figures" / "photo_explained.png").is_file()
    assert f"wrote {tmp_path / 'figures' / 'photo_explained.png'}" in printed.out


def test_explain_writes_into_a_new_folder_named_with_a_slash_and_refuses_unknown_suffixes(photo, tmp_path, capsys):
    """Before: ``--out newdir/`` wrote ``newdir.png``; ``--out o.txt`` failed with matplotlib's words."""
    code, printed = explain(photo, f"{tmp_path / 'newdir'}/", capsys)
    assert code == 0 and (tmp_path / "newdir" / "photo_explained.png").is_file()
    code, printed = explain(photo, tmp_path / "o.txt", capsys)
    assert code == 2 and "--out" in one_error_line(printed.err) and "matplotlib writes no '.txt' figures" in printed.err


def test_explain_replaces_its_own_figure_of_the_image_but_no_other_file(tmp_path, capsys):
    """Before: a user's own ``photo_explained.png``, or the figure of ``photo.jpg``, was replaced without a word."""
    pixels = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    Image.fromarray(pixels).save(tmp_path / "photo.jpg")
    argv = ["explain", str(tmp_path / "photo.png"), "--model", "scenes_vgg", "--method", "saliency"]
    figure = tmp_path / "photo_explained.png"
    assert cli.main(argv) == 0 and cli.main(argv) == 0  # a rerun replaces its own figure
    capsys.readouterr()
    assert cli.main(["explain", str(tmp_path / "photo.jpg"), *argv[2:]]) == 2
    assert "photo_explained.png' exists and is the figure of 'photo.png'" in one_error_line(capsys.readouterr().err)
    Image.fromarray(pixels[:8, :8]).save(figure)  # the user's own file of that name
    mine = figure.read_bytes()
    assert cli.main(argv) == 2 and figure.read_bytes() == mine
    assert "exists and is a file captum-ext did not write" in one_error_line(capsys.readouterr().err)


def test_demo_refuses_a_folder_holding_a_users_file_of_a_figures_name_before_writing(tmp_path, capsys):
    (tmp_path / "ground_scenes.png").write_bytes(b"my own picture")
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    assert "ground_scenes.png' exists and is a file captum-ext did not write" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ground_scenes.png"]


def test_fit_boxes_replaces_a_box_map_but_no_other_file(tmp_path, capsys):
    """Before: ``--out annotations.json`` replaced a dataset's annotations with the box map."""
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"images": []}))
    argv = ["fit-boxes", "--model", "zoo:scenes_vgg", "--data", "scenes:single:6", "--out"]
    assert cli.main(argv + [str(annotations)]) == 2
    assert "exists and is not a box map: it would be replaced" in one_error_line(capsys.readouterr().err)
    assert json.loads(annotations.read_text()) == {"images": []}
    for _ in range(2):  # a refit may replace its own box map
        assert cli.main(argv + [str(tmp_path / "boxes.pt")]) == 0


def test_compare_does_not_replace_an_evaluate_folders_leaderboard_with_other_runs(tmp_path, capsys):
    """Before: ``compare runs/saliency --out runs`` replaced the two-method leaderboard with a one-method one."""
    runs = tmp_path / "runs"
    assert cli.main(["evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency,grad_cam", "--data",
                     "scenes:multi:4", "--out", str(runs), "--no-progress", "--metrics", "pointing_game"]) == 0
    board = (runs / "leaderboard.csv").read_text()
    assert cli.main(["compare", str(runs / "saliency"), "--out", str(runs)]) == 2
    assert "holds evaluate results (grad_cam, saliency) whose leaderboard" in one_error_line(capsys.readouterr().err)
    assert (runs / "leaderboard.csv").read_text() == board
    # the run's own methods: its leaderboard again, as evaluate wrote it
    assert cli.main(["compare", str(runs / "saliency"), str(runs / "grad_cam"), "--out", str(runs)]) == 0
    # one method's run folder: before, a comparison of other runs was written into it
    assert cli.main(["compare", str(runs / "saliency"), "--out", str(runs / "grad_cam")]) == 2
    assert "holds the results of another evaluate run" in one_error_line(capsys.readouterr().err)
    assert not (runs / "grad_cam" / "leaderboard.md").exists()


def test_training_into_a_folder_with_another_run_of_the_same_variant_is_refused(tmp_path):
    """Before: a second ``train-regressor`` with another seed replaced the first run's weights and record."""
    argv = [sys.executable, "-m", "captum_ext", "train-regressor", "--dataset", "2", "--n-train", "16", "--n-test",
            "8", "--epochs", "1", "--out", str(tmp_path)]
    assert subprocess.run(argv + ["--seed", "0"], capture_output=True, text=True, timeout=300).returncode == 0
    weights = (tmp_path / "ellipses_ds2.pt").read_bytes()
    again = subprocess.run(argv + ["--seed", "0"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0  # the same settings: a rerun
    other = subprocess.run(argv + ["--seed", "1"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 2
    assert "already holds ellipses_ds2.pt and ellipses_ds2.json, trained with seed 0 (this run: 1)" in \
        one_error_line(other.stderr)
    assert (tmp_path / "ellipses_ds2.pt").read_bytes() == weights


@pytest.mark.parametrize("argv, words", [
    (["fit-boxes", "--model", "zoo:scenes_vgg", "--data", "scenes:single:4", "--out", "{d}/b.pt", "--batch-size",
      "0"], "--batch-size must be >= 1, got 0"),
    (["fit-boxes", "--model", "zoo:scenes_vgg", "--data", "scenes:single:4", "--out", "{d}/b.pt", "--device", "tpu"],
     "--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["train-regressor", "--dataset", "2", "--n-train", "1", "--out", "{d}/r"], "--n-train must be >= 2, got 1"),
    (["train-roi", "--backbone", "{d}/photo.png", "--out", "{d}/r"],
     "--backbone '{d}/photo.png' is not a readable weights file"),
    (["train-roi", "--backbone", "{d}/roi.pt", "--out", "{d}/r"],
     "it holds a whole ROIAttentionResNet (keys 'backbone.…'), not a plain ResNet"),
    (["train-roi", "--backbone", "{d}", "--out", "{d}/r"], "(it is a folder)"),
    (["explain", "{d}", "--model", "scenes_vgg"], "image file '{d}' does not exist (it is a folder)"),
    (["compare", "{d}/a", "--out", "{d}/c", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["compare", "{d}/a", "--out", "{d}/photo.png"], "--out '{d}/photo.png' is a file, not a folder"),
    (["fit-boxes", "--model", "zoo:scenes_vgg", "--data", "folder:{d}/photo.png", "--out", "{d}/b.pt"],
     "image folder not found: {d}/photo.png (it is a file)"),
    (["train-roi", "--hard", "image", "--merge", "layer3", "--out", "{d}/r"],
     "--hard image trains a baseline without a mask branch: --merge and --mode have no effect there"),
])
def test_user_mistakes_of_other_commands_are_one_line(argv, words, photo, tmp_path, capsys):
    """Before: tracebacks (a device torch does not know, a backbone file torch cannot read or of the whole model),
    or messages naming no option (``range() arg 3 must not be zero``, `` `n` must be >= 1``)."""
    import torch

    from captum_ext import ROIAttentionResNet

    torch.save(ROIAttentionResNet(depth=18, num_classes=10).state_dict(), tmp_path / "roi.pt")
    assert cli.main([a.format(d=tmp_path) for a in argv]) == 2
    assert words.format(d=tmp_path) in one_error_line(capsys.readouterr().err)
