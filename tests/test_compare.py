"""captum-ext compare: the leaderboard recomputes each run's metrics from its table, bootstrap intervals over
images behave, the files and the self-contained HTML page are written, bad folders are named."""
import csv
import json

import pytest

from captum_ext.cli import main
from captum_ext.evaluation import evaluate
from captum_ext.evaluation.compare import _images_and_columns, _statistic, compare, read_run, score


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("runs")
    for method in ("saliency", "grad_cam"):
        evaluate("zoo:scenes_vgg", method, "scenes:multi:8", work / method, show_progress=False,
                 metrics=["pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "deletion"],
                 faithfulness_steps=4)
    return work


def test_the_table_recomputes_each_metric_of_the_summary(runs):
    run = read_run(runs / "saliency")
    for key, column in (("pointing_game", "pointing_hit"), ("energy_pointing_game", "energy"),
                        ("corloc", "corloc_hit"), ("accuracy", "recognised"), ("deletion_auc", "deletion_auc")):
        _, values, classes = _images_and_columns(run, column)
        assert abs(_statistic(key, values, classes) - run.summary[key]) < 1e-8, key


def test_bootstrap_intervals_over_images(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"settings": {"method": "saliency", "data": "x"},
                                                     "n_pairs": 6, "energy_pointing_game": 0.5, "pxap": 0.4}))
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair", "image_index", "class_index", "energy"])
        # Image 0 has two pairs: resampling draws images, so its pairs move together.
        for pair, (image, energy) in enumerate([(0, 0.0), (0, 0.0), (1, 1.0), (2, 1.0), (3, 0.0), (4, 1.0)]):
            writer.writerow([pair, image, 0, energy])
    run = read_run(folder)
    first, again = score(run, "energy_pointing_game", 400, seed=1), score(run, "energy_pointing_game", 400, seed=1)
    assert first == again and 0.0 <= first.low < 0.5 < first.high <= 1.0
    assert score(run, "pxap", 400).low is None and score(run, "pxap", 400).value == 0.4  # dataset-level only
    assert score(run, "corloc", 400).value is None and score(run, "corloc").text() == "—"


def test_compare_writes_the_leaderboard_and_a_self_contained_page(runs, tmp_path, capsys):
    assert main(["compare", str(runs / "saliency"), str(runs / "grad_cam"), "--out", str(tmp_path / "report"),
                 "--resamples", "100"]) == 0
    assert "| saliency |" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "report" / "leaderboard.csv").read_text().splitlines()))
    assert {r["method"] for r in rows} == {"saliency", "grad_cam"}
    corloc = {r["method"]: r for r in rows if r["metric"] == "corloc"}
    for r in corloc.values():
        assert float(r["ci_low"]) <= float(r["ci_high"])
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "http" not in page.replace("http-equiv", "")
    markdown = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "deletion AUC (lower is better)" in markdown and markdown.count("\n") == 4


def test_bad_folders_are_named(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="no finished evaluate run"):
        compare([tmp_path], tmp_path / "out")
    with pytest.raises(ValueError, match="told apart"):
        compare([runs / "saliency", runs / "saliency"], tmp_path / "out")
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
