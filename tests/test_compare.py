"""captum-ext compare: the leaderboard recomputes each run's metrics from its table, bootstrap intervals over
images behave, the files and the self-contained HTML page are written, bad folders are named."""
import base64
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

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
    # The gallery: 6 pairs × (image + 2 maps), then per ranking metric (energy, box IoU, deletion) 2 runs × 2 × 2.
    assert page.count("data:image/jpeg;base64,") == 6 * 3 + 3 * 2 * 4
    assert page.count("<details") == 3 and "energy (higher is better)" in page and "no map" not in page
    markdown = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "deletion AUC (lower is better)" in markdown and markdown.count("\n") == 4


def test_bad_folders_are_named(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="no finished evaluate run"):
        compare([tmp_path], tmp_path / "out")
    with pytest.raises(ValueError, match="told apart"):
        compare([runs / "saliency", runs / "saliency"], tmp_path / "out")
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_gallery_thumbnails_draw_the_map_the_boxes_and_the_mask():
    from captum_ext.evaluation._gallery import THUMBNAIL, thumbnail

    image = np.zeros((56, 28, 3))
    saliency = np.zeros((56, 28))
    saliency[:28] = 1.0  # jet: top half dark red, bottom half dark blue
    mask = np.zeros((56, 28), dtype=bool)
    mask[40:50, 5:20] = True
    data = thumbnail(image, saliency, np.array([[2.0, 2.0, 26.0, 20.0]]), mask)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.float64)
    assert picture.shape == (THUMBNAIL, THUMBNAIL // 2, 3)  # the longer side is THUMBNAIL, aspect kept: scale 2
    assert picture[20, 28, 0] > 40 > 20 > picture[20, 28, 2]  # jet's red, at 45 %, where the map is 1
    assert picture[70, 28, 2] > 40 > 20 > picture[70, 28, 0]  # jet's blue where it is 0
    assert picture[4, 8:48].mean() > 150  # the box's top edge (y = 2) in white
    assert picture[30, 8:48].mean() < 100  # the box is an outline, not filled
    assert picture[81, 14:36].mean() > 150  # the mask's top boundary (y = 40) in white
    assert picture[90, 24, 2] > 40 > 20 > picture[90, 24, 0]  # inside the mask the map's colour stays


def test_gallery_without_the_dataset_shows_the_maps_and_says_why(runs, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    for method in ("saliency", "grad_cam"):
        shutil.copytree(runs / method, moved / method)
        summary = json.loads((moved / method / "metrics.json").read_text())
        summary["settings"]["data"] = f"coco:{tmp_path / 'gone.json'}:{tmp_path / 'gone'}"
        (moved / method / "metrics.json").write_text(json.dumps(summary))
    compare([moved / "saliency", moved / "grad_cam"], tmp_path / "report", resamples=0, same_pairs=2, examples=1)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "could not be opened" in page and "gone.json" in page
    assert page.count("data:image/jpeg;base64,") == 2 * 2 + 3 * 2 * 2  # maps only: no image column thumbnails
    assert page.count("no map") == 2  # the image column has nothing to show
    with pytest.raises(ValueError, match="`examples` must be an int >= 0"):
        compare([moved / "saliency"], tmp_path / "report", examples=-1)


def test_gallery_finds_each_pair_truth_under_the_run_class_map(tmp_path):
    """A class map renumbers VOC's categories (they follow the map's names); the gallery, which opens the dataset
    without it, used to match truths by id and so drew another class's boxes."""
    from captum_ext.datasets import export_voc, scenes
    from captum_ext.evaluation import open_dataset
    from captum_ext.evaluation._gallery import _open_images, _Pictures, _same_pairs

    root = export_voc(scenes.make_scenes(6, mode="multi", split="test", seed=3), tmp_path / "voc")
    swapped = {"names": {str(d): d for d in range(10)} | {"0": 1, "1": 0}}
    evaluate("zoo:scenes_vgg", "saliency", f"voc:{root}", tmp_path / "run", show_progress=False,
             class_map=swapped, metrics=["pointing_game"])
    run = read_run(tmp_path / "run")
    dataset, why = _open_images([run])
    assert why == "" and dataset.categories != open_dataset(f"voc:{root}", class_map=swapped).categories
    pictures, scored = _Pictures([run], dataset), open_dataset(f"voc:{root}", class_map=swapped)
    for row in run.rows:
        truth = next(t for t in scored[int(row["image_index"])].truths if str(t.category) == row["category"])
        assert np.array_equal(pictures.truth(run.name, row)[1], truth.boxes.numpy()), row
    evaluate("zoo:scenes_vgg", "saliency", f"voc:{root}", tmp_path / "plain", show_progress=False,
             metrics=["pointing_game"])
    plain = read_run(tmp_path / "plain")  # the same pairs under the other numbering: matched by name
    by_id = [{(r["image_id"], r["category"]) for r in table.rows} for table in (run, plain)]
    assert len(run.rows) == len(plain.rows) and by_id[0] != by_id[1]  # by id, some pairs would not be shared
    table = _same_pairs([run, plain], _Pictures([run, plain], dataset), 50)
    assert table.count("<tr>") == 1 + len(run.rows)  # the head and every pair


def test_runs_on_different_datasets_are_flagged_as_not_comparable(runs, tmp_path):
    compare([runs / "saliency", runs / "grad_cam"], tmp_path / "same", resamples=0, same_pairs=0, examples=0)
    assert "not comparable" not in (tmp_path / "same" / "leaderboard.md").read_text()
    evaluate("zoo:scenes_vgg", "saliency", "scenes:multi:4", tmp_path / "other", show_progress=False,
             metrics=["pointing_game"])
    compare([runs / "grad_cam", tmp_path / "other"], tmp_path / "mixed", resamples=0, same_pairs=2, examples=0)
    warning = "The runs differ in their datasets: their scores are not comparable."
    assert warning in (tmp_path / "mixed" / "leaderboard.md").read_text()
    assert warning in (tmp_path / "mixed" / "index.html").read_text()
    page = (tmp_path / "mixed" / "index.html").read_text()
    assert "on different datasets, so they share no pair" in page
    assert "name different datasets" not in page  # said once: not again as a note over no pictures
    compare([runs / "grad_cam", tmp_path / "other"], tmp_path / "both", resamples=0, same_pairs=2, examples=1)
    page = (tmp_path / "both" / "index.html").read_text()
    assert page.count("different datasets") == 2  # the same-pairs section, and the note over the maps alone
    assert page.index("share no pair") < page.index("only their maps are shown")


def fake_run(folder, settings, scores, rows=()):
    folder.mkdir(parents=True)
    summary = {"settings": {"method": folder.name, "data": "scenes:multi:2", **settings}, "n_pairs": len(rows),
               **scores}
    (folder / "metrics.json").write_text(json.dumps(summary))
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair", "image_index", "class_index", "deletion_auc"])
        writer.writerows(rows)
    return folder


@pytest.mark.parametrize("setting, other, metric, words", [
    ("faithfulness", {"steps": 2, "baseline": "zero"}, "deletion_auc", "deletion settings"),
    ("faithfulness", {"steps": 8, "baseline": "blur"}, "deletion_auc", "deletion settings"),
    ("faithfulness", {"steps": 8, "baseline": "zero"}, "insertion_auc", "insertion settings"),
    ("perturbation", {"samples": 3, "noise": 0.1, "radius": 0.02}, "infidelity", "infidelity perturbations"),
    ("perturbation", {"samples": 2, "noise": 0.1, "radius": 0.05}, "sensitivity_max", "max-sensitivity perturbations"),
    ("batch_size", 4, "sensitivity_max", "batch sizes"),
    ("batch_size", 4, "road_lerf", "batch sizes"),
    ("map_dtype", "float32", "pxap", "stored map precisions"),
    ("road", {"fractions": [0.5]}, "road_morf", "ROAD settings"),
    ("tolerance", 3.0, "pointing_game", "pointing tolerances"),
])
def test_runs_measured_with_other_metric_settings_are_flagged(tmp_path, setting, other, metric, words):
    """Before: only the dataset, image size and tolerance were compared, so deletion AUCs of 8 and of 2 steps were
    tabled side by side without a word."""
    base = {"faithfulness": {"steps": 8, "baseline": None}, "perturbation": {"samples": 2, "noise": 0.1,
            "radius": 0.02}, "batch_size": 8, "road": {"fractions": [0.1, 0.5]}, "tolerance": 15.0,
            "map_dtype": "float16"}
    first = fake_run(tmp_path / "a", base, {metric: 0.2})
    second = fake_run(tmp_path / "b", {**base, setting: other}, {metric: 0.3})
    compare([first, second], tmp_path / "out", resamples=0, same_pairs=0, examples=0)
    assert f"The runs differ in their {words}" in (tmp_path / "out" / "leaderboard.md").read_text()
    # A setting counts only where a run reports one of its metrics.
    third = fake_run(tmp_path / "c", {**base, setting: other}, {"accuracy" if metric != "accuracy" else "pxap": 0.3})
    compare([first, third], tmp_path / "out2", resamples=0, same_pairs=0, examples=0)
    assert "not comparable" not in (tmp_path / "out2" / "leaderboard.md").read_text()


@pytest.mark.parametrize("setting, other, metric", [
    ("faithfulness", {"steps": 8, "baseline": "zero"}, "deletion_auc"),  # deletion's default baseline, named
    ("faithfulness", {"steps": 8, "baseline": "blur"}, "insertion_auc"),  # insertion's default baseline, named
    ("perturbation", {"samples": 2, "noise": 0.1, "radius": 0.5}, "infidelity"),  # infidelity draws no radius
    ("perturbation", {"samples": 2, "noise": 0.5, "radius": 0.02}, "sensitivity_max"),  # nor max-sensitivity noise
])
def test_settings_a_metric_did_not_use_differently_are_not_flagged(tmp_path, setting, other, metric):
    """Before: a deletion run with ``--baseline zero`` (deletion's default) was called incomparable with one that
    left the baseline to the default, and an infidelity run with one of another max-sensitivity radius."""
    base = {"faithfulness": {"steps": 8, "baseline": None}, "perturbation": {"samples": 2, "noise": 0.1,
            "radius": 0.02}}
    first = fake_run(tmp_path / "a", base, {metric: 0.2})
    second = fake_run(tmp_path / "b", {**base, setting: other}, {metric: 0.3})
    compare([first, second], tmp_path / "out", resamples=0, same_pairs=0, examples=0)
    assert "not comparable" not in (tmp_path / "out" / "leaderboard.md").read_text()


@pytest.mark.parametrize("key, words", [("model_weights", "models' weights"),
                                        ("class_map", "category → class maps")])
def test_runs_of_other_models_or_class_maps_are_flagged(tmp_path, key, words):
    """Before: two methods explaining two different models were ranked side by side without a word."""
    inputs = {"model_weights": "aa", "class_map": "cc", "images": "ii"}
    first = fake_run(tmp_path / "a", {"inputs": inputs}, {"pointing_game": 0.2})
    same = fake_run(tmp_path / "b", {"inputs": dict(inputs)}, {"pointing_game": 0.3})
    other = fake_run(tmp_path / "c", {"inputs": {**inputs, key: "zz"}}, {"pointing_game": 0.3})
    compare([first, same], tmp_path / "out", resamples=0, same_pairs=0, examples=0)
    assert "not comparable" not in (tmp_path / "out" / "leaderboard.md").read_text()
    compare([first, other], tmp_path / "out2", resamples=0, same_pairs=0, examples=0)
    assert f"The runs differ in their {words}: their scores are not comparable." in (
        tmp_path / "out2" / "leaderboard.md").read_text()


def test_runs_made_under_other_library_versions_are_named(tmp_path):
    versions = {"captum_ext": "0.1.0", "captum": "0.9.0", "torch": "2.15.0"}
    first = fake_run(tmp_path / "a", {"versions": versions}, {"pointing_game": 0.2})
    same = fake_run(tmp_path / "b", {"versions": dict(versions)}, {"pointing_game": 0.3})
    other = fake_run(tmp_path / "c", {"versions": {**versions, "captum": "0.8.0"}}, {"pointing_game": 0.3})
    compare([first, same], tmp_path / "out", resamples=0, same_pairs=0, examples=0)
    assert "library versions" not in (tmp_path / "out" / "leaderboard.md").read_text()
    compare([first, other], tmp_path / "out2", resamples=0, same_pairs=0, examples=0)
    board = (tmp_path / "out2" / "leaderboard.md").read_text()
    assert "The runs were made under other library versions (captum 0.8.0 / 0.9.0)." in board
    assert "not comparable" not in board  # named, not ruled out
    assert "other library versions (captum 0.8.0 / 0.9.0)" in (tmp_path / "out2" / "index.html").read_text()


def test_a_chart_of_an_unbounded_metric_holds_every_bar(monkeypatch):
    """Before: the axis ended at 1, so a max-sensitivity of 1.67 was drawn as 1."""
    import matplotlib.pyplot as plt

    from captum_ext.evaluation.compare import Score, _chart

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure to read its axis
    _chart({"a": {"sensitivity_max": Score(1.673, 1.5, 1.8)}, "b": {"sensitivity_max": Score(0.4, 0.3, 0.5)}},
           "sensitivity_max")
    _chart({"a": {"sensitivity_max": Score(0.9, 0.8, 0.95)}, "b": {"sensitivity_max": Score(0.4)}},
           "sensitivity_max")
    unbounded, bounded = (figure.axes[0].get_xlim() for figure in figures)
    assert unbounded[0] == 0.0 and unbounded[1] == pytest.approx(1.8 * 1.05)
    assert bounded == (0.0, 1.0)  # scores in [0, 1] keep the fixed axis
    monkeypatch.undo()
    for figure in figures:
        plt.close(figure)


def test_a_cut_off_table_is_named_with_what_is_wrong(tmp_path):
    """Before: a pairs.csv cut mid-row failed with "float() argument must be ... not 'NoneType'", naming nothing;
    one cut at a line's end was read as a smaller run."""
    rows = [(k, k, 0, 0.1 * k) for k in range(4)]
    folder = fake_run(tmp_path / "run", {}, {"deletion_auc": 0.15}, rows)
    table = (folder / "pairs.csv").read_text()
    (folder / "pairs.csv").write_text(table[:table.rindex(",")])  # the last row loses its last field
    with pytest.raises(ValueError, match=r"pairs\.csv' is not a complete evaluate table: line 5 has fewer fields"):
        read_run(folder)
    (folder / "pairs.csv").write_text("".join(table.splitlines(keepends=True)[:4]))  # the last row lost whole
    with pytest.raises(ValueError, match=r"pairs\.csv' holds 3 pairs, but .*metrics\.json' counts 4"):
        read_run(folder)
    assert main(["compare", str(folder), "--out", str(tmp_path / "out")]) == 2


def test_a_missing_table_or_a_score_that_is_no_number_is_named(tmp_path):
    """Before: a run folder without pairs.csv was tabled without intervals and without a word, and a NaN in the
    table gave the interval [nan, nan]."""
    rows = [(k, k, 0, 0.1 * k) for k in range(4)]
    folder = fake_run(tmp_path / "run", {}, {"deletion_auc": 0.15}, rows)
    table = (folder / "pairs.csv").read_text()
    (folder / "pairs.csv").unlink()
    with pytest.raises(ValueError, match=r"pairs\.csv' is missing: .*metrics\.json' counts 4 pairs"):
        read_run(folder)
    (folder / "pairs.csv").write_text(table.replace("0.2", "nan", 1))
    with pytest.raises(ValueError, match=r"pairs\.csv' holds 'nan' in column 'deletion_auc' at line 4"):
        score(read_run(folder), "deletion_auc", resamples=10)
    assert main(["compare", str(folder), "--out", str(tmp_path / "out")]) == 2


def test_the_page_says_when_there_are_no_intervals(runs, tmp_path):
    """Before: with 0 resamples the page still promised intervals in brackets, and showed none."""
    compare([runs / "saliency", runs / "grad_cam"], tmp_path / "none", resamples=0)
    page = (tmp_path / "none" / "index.html").read_text()
    assert "no bootstrap intervals (0 resamples)" in page and "in brackets" not in page
    compare([runs / "saliency", runs / "grad_cam"], tmp_path / "some", resamples=20)
    assert "in brackets a 95&nbsp;% bootstrap interval over images (20 resamples)" in (
        tmp_path / "some" / "index.html").read_text()
