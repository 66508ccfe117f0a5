"""The dataset driver never gives a wrong number silently: image ids, class maps, resized maps, resumed runs and
bad boxes. Each test here failed before the behaviour it checks existed."""
import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import zarr

from captum_ext.datasets import export_coco, export_voc, scenes
from captum_ext.evaluation import evaluate, fit_box_map, open_dataset
from captum_ext.evaluation.class_maps import as_class_map, read_class_map, resolve_classes

MODEL = "zoo:scenes_vgg_multilabel"


@pytest.fixture(scope="module")
def multi_batch():
    return scenes.make_scenes(8, mode="multi", split="test", seed=5)


def coco(tmp_path: Path, batch, edit=None) -> str:
    annotations, images = export_coco(batch, tmp_path)
    if edit is not None:
        document = json.loads(annotations.read_text())
        edit(document)
        annotations.write_text(json.dumps(document))
    return f"coco:{annotations}:{images}"


def run(tmp_path: Path, data: str, name: str, **kwargs):
    return evaluate(MODEL, "saliency", data, tmp_path / name, batch_size=4, show_progress=False, **kwargs)


def rows_of(folder: Path):
    return list(csv.DictReader((folder / "pairs.csv").read_text().splitlines()))


# -- image ids -----------------------------------------------------------------------------------------------------

def test_a_coco_image_id_used_twice_is_refused_naming_both_files(tmp_path, multi_batch):
    def duplicate(document):
        document["images"][3]["id"] = document["images"][1]["id"]

    data = coco(tmp_path / "coco", multi_batch, duplicate)
    with pytest.raises(ValueError, match=r"image id 2 is used twice, by '000001.png' and '000003.png'"):
        open_dataset(data)


def test_a_coco_category_id_used_twice_is_refused(tmp_path, multi_batch):
    def duplicate(document):
        document["categories"][4]["id"] = document["categories"][2]["id"]

    with pytest.raises(ValueError, match=r"category id 3 is used twice, by '2' and '4'"):
        open_dataset(coco(tmp_path / "coco", multi_batch, duplicate))


# -- class maps ----------------------------------------------------------------------------------------------------

def test_two_categories_of_one_name_are_refused_by_the_default_map_not_merged(tmp_path, multi_batch):
    """Before: categories 4 and 11, both named "3", were both scored as class 3 without a word."""
    def rename(document):
        document["categories"].append({"id": 11, "name": "3"})
        document["annotations"][0]["category_id"] = 11

    data = coco(tmp_path / "coco", multi_batch, rename)
    (tmp_path / "coco" / "class_map.json").unlink()  # the default map by name, as for a dataset of one's own
    with pytest.raises(ValueError, match=r"categories 4, 11 are all named '3': a class map by name would merge them; "
                                         r"pass a class map keyed by category ids"):
        evaluate(MODEL, "saliency", data, tmp_path / "run", class_map=None, show_progress=False)
    ids = {str(c): c - 1 for c in range(1, 11)}
    summary = run(tmp_path, data, "by_ids", class_map={"ids": {**ids, "11": 3}})
    assert summary["n_pairs"] > 0


def categories_of_export():
    return {d + 1: str(d) for d in range(10)}


def test_a_name_keyed_map_is_read_by_names_and_an_id_keyed_one_by_ids():
    names = categories_of_export()
    by_names = resolve_classes([1, 5, 10], names, as_class_map({str(d): d for d in range(10)}), 10)
    by_ids = resolve_classes([1, 5, 10], names, as_class_map({str(d + 1): d for d in range(10)}), 10)
    assert by_names.classes == by_ids.classes == {1: 0, 5: 4, 10: 9}


def test_a_map_whose_keys_read_both_ways_is_refused_not_guessed():
    # Keys "1".."9" are ids of digits 0..8 and names of digits 1..9: before, id 10 fell back to the name "9".
    ambiguous = as_class_map({str(k): k - 1 for k in range(1, 10)})
    with pytest.raises(ValueError, match=r"ambiguous: key '1' is the id of category '0' and the name of category id 2"):
        resolve_classes([1, 10], categories_of_export(), ambiguous, 10)
    explicit = as_class_map({"ids": {str(k): k - 1 for k in range(1, 10)}})
    with pytest.raises(ValueError, match=r"categories without a class: 10 \('9'\)"):
        resolve_classes([1, 10], categories_of_export(), explicit, 10)


def test_class_map_keys_that_are_neither_or_mixed_are_refused():
    names = categories_of_export()
    with pytest.raises(ValueError, match="neither category ids nor names"):
        resolve_classes([1], names, as_class_map({"cat": 0}), 10)
    with pytest.raises(ValueError, match="not names of the dataset's categories"):
        resolve_classes([1], names, as_class_map({"names": {"10": 0}}), 10)
    with pytest.raises(ValueError, match="several category ids"):
        resolve_classes([1], {1: "cat", 2: "cat"}, as_class_map({"names": {"cat": 0}}), 10)
    with pytest.raises(ValueError, match="class index"):
        as_class_map({"1": -1})
    with pytest.raises(ValueError, match=r"does not have: 1 \('0'\) → 12"):
        resolve_classes([1], names, as_class_map({"ids": {"1": 12}}), 10)


def test_without_a_map_a_dataset_with_unknown_names_is_refused_not_mapped_by_id():
    with pytest.raises(ValueError, match=r"no class map for categories named 'cat'"):
        resolve_classes([1], {1: "cat"}, None, 10)
    # Class folders: the folder index is the class by construction.
    assert resolve_classes([1], {0: "cat", 1: "dog"}, None, 2, ids_are_classes=True).classes == {1: 1}


def test_coco_export_without_a_digit_is_scored_against_the_right_classes(tmp_path, multi_batch):
    """Before: no map → category id used as the class, every class off by one (accuracy 0), no error."""
    kept = multi_batch.object_labels != 9

    def drop_nines(document):
        document["annotations"] = [a for a in document["annotations"] if a["category_id"] != 10]

    data = coco(tmp_path / "coco", multi_batch, drop_nines)
    reference = run(tmp_path, data, "explicit", class_map={"names": {str(d): d for d in range(10)}})
    carried = run(tmp_path, data, "carried")  # the export's own class_map.json
    (tmp_path / "coco" / "class_map.json").unlink()
    by_names = run(tmp_path, data, "names")  # digit names are class indices
    assert bool(kept.any()) and reference["accuracy"] > 0.5
    assert carried["accuracy"] == by_names["accuracy"] == reference["accuracy"]
    assert carried["class_map"]["how"].startswith("carried by the dataset")
    assert by_names["class_map"]["how"] == "category names are class indices"
    assert {r["id"]: r["class"] for r in by_names["class_map"]["categories"]} == \
        {c + 1: c for c in sorted({int(v) for v in multi_batch.object_labels[kept & (multi_batch.object_labels >= 0)]})}
    written = json.loads((tmp_path / "names" / "metrics.json").read_text())
    assert written["class_map"] == by_names["class_map"]
    assert all(int(r["class_index"]) == int(r["category"]) - 1 for r in rows_of(tmp_path / "names"))


def test_the_resolved_map_is_printed_at_start(tmp_path, capsys):
    evaluate("zoo:scenes_vgg", "saliency", "scenes:single:2", tmp_path / "run", show_progress=True)
    assert re.search(r"class map \(category names are class indices\): \d '\d' → \d", capsys.readouterr().err)


def test_voc_keeps_its_class_list_when_a_stray_name_appears(tmp_path, multi_batch):
    """Before: one stray <name> renumbered every category and the export's id-keyed map scored the wrong classes."""
    root = export_voc(multi_batch, tmp_path / "voc")
    clean = run(tmp_path, f"voc:{root}", "clean")
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "000002.xml"
    text = xml.read_text()
    first = re.search(r"<name>(\d)</name>", text)
    xml.write_text(text[:first.start()] + "<name>zebra</name>" + text[first.end():])
    with pytest.raises(ValueError, match=r"image '000002' .*object 1 in 000002.xml: class 'zebra' is not one of"):
        open_dataset(f"voc:{root}")
    stray = run(tmp_path, f"voc:{root}", "stray", skip_bad=True)
    assert clean["class_map"] == {**stray["class_map"], "categories": clean["class_map"]["categories"]}
    assert all(int(r["class_index"]) == int(r["category"]) - 1 for r in rows_of(tmp_path / "stray"))
    assert any("zebra" in item for item in stray["skipped"])
    by_pair = {(r["image_id"], r["category"]): r["class_score"] for r in rows_of(tmp_path / "clean")}
    for row in rows_of(tmp_path / "stray"):  # every other pair scored exactly as before
        assert by_pair[(row["image_id"], row["category"])] == row["class_score"]
    with pytest.raises(ValueError, match="names its classes"):
        open_dataset(f"voc:{root}", class_map={"ids": {"1": 0}})


def test_pairs_tables_of_voc_runs_with_other_class_maps_join_by_category_name(tmp_path, multi_batch):
    """Before: VOC numbers its categories by the class map's names, so with the classes reversed the same
    (image, category) key named two different objects in the two tables, and nothing else in a row told them apart."""
    root = export_voc(multi_batch, tmp_path / "voc")
    plain = {"names": {str(d): d for d in range(10)}}
    swapped = {"names": {str(d): 9 - d for d in range(10)}}
    run(tmp_path, f"voc:{root}", "plain", class_map=plain)
    run(tmp_path, f"voc:{root}", "swapped", class_map=swapped)
    plain_rows, swapped_rows = rows_of(tmp_path / "plain"), rows_of(tmp_path / "swapped")
    assert list(plain_rows[0])[3:6] == ["category", "category_name", "class_index"]
    by_name = {(r["image_id"], r["category_name"]): r for r in plain_rows}
    assert len(by_name) == len(plain_rows) == len(swapped_rows)
    for row in swapped_rows:  # the same object, explained as the class the map gives its name
        twin = by_name[(row["image_id"], row["category_name"])]
        assert int(row["class_index"]) == swapped["names"][row["category_name"]]
        assert int(twin["class_index"]) == plain["names"][row["category_name"]]
    # the ids alone pair objects of different names in the two runs
    by_id = {(r["image_id"], r["category"]): r["category_name"] for r in plain_rows}
    assert any(by_id.get((r["image_id"], r["category"])) not in (None, r["category_name"]) for r in swapped_rows)


def test_the_exports_write_explicit_class_maps(tmp_path, multi_batch):
    export_coco(multi_batch, tmp_path / "coco")
    export_voc(multi_batch, tmp_path / "voc")
    assert read_class_map(tmp_path / "coco" / "class_map.json").keys == "ids"
    assert read_class_map(tmp_path / "voc" / "class_map.json").keys == "names"


# -- resized maps --------------------------------------------------------------------------------------------------

def tiny_net():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def test_resized_runs_record_the_stored_size_and_the_native_one(tmp_path):
    """Before: the native size was recorded, so ``maps[p, :height, :width]`` cropped resized maps wrongly."""
    evaluate(tiny_net(), "saliency", "scenes:multi:3", tmp_path / "run", resize=(48, 40), show_progress=False)
    store = zarr.open_group(str(tmp_path / "run" / "maps.zarr"), mode="r")
    assert set(np.asarray(store["height"][:]).tolist()) == {48} and set(np.asarray(store["width"][:]).tolist()) == {40}
    assert set(np.asarray(store["native_height"][:]).tolist()) == {64}
    assert store["maps"].shape[1:] == (48, 40) and store["maps"].chunks[1:] == (48, 40)
    # The documented read gives the whole map, whose maximum is 1 (each map is scaled so).
    for pair in range(store["maps"].shape[0]):
        height, width = int(store["height"][pair]), int(store["width"][pair])
        assert float(np.asarray(store["maps"][pair, :height, :width]).max()) == 1.0


def test_an_opened_dataset_applies_its_own_resize_and_refuses_other_options(tmp_path):
    """Before: ``resize`` and ``skip_bad`` given with an opened dataset were recorded in the settings but not
    applied (maps at the native size, scores against native truth)."""
    with pytest.raises(ValueError, match=r"`resize` \(48, 40\) differs from the dataset's own \(None\): open the "
                                         r"dataset with resize=\(48, 40\)"):
        evaluate(tiny_net(), "saliency", open_dataset("scenes:multi:3"), tmp_path / "a", resize=(48, 40),
                 show_progress=False)
    with pytest.raises(ValueError, match=r"`skip_bad` is True but the dataset was opened with skip_bad=False"):
        evaluate(tiny_net(), "saliency", open_dataset("scenes:multi:3"), tmp_path / "b", skip_bad=True,
                 show_progress=False)
    opened = evaluate(tiny_net(), "saliency", open_dataset("scenes:multi:3", resize=(48, 40)), tmp_path / "c",
                      show_progress=False)
    by_spec = evaluate(tiny_net(), "saliency", "scenes:multi:3", tmp_path / "d", resize=(48, 40), show_progress=False)
    assert opened["settings"]["resize"] == [48, 40]
    assert (tmp_path / "c" / "pairs.csv").read_text() == (tmp_path / "d" / "pairs.csv").read_text()
    assert {k: v for k, v in opened.items() if k != "settings"} == {k: v for k, v in by_spec.items()
                                                                      if k != "settings"}


# -- resumed runs --------------------------------------------------------------------------------------------------

def test_resume_after_the_annotations_changed_is_refused_naming_them(tmp_path, multi_batch):
    data = coco(tmp_path / "coco", multi_batch)
    run(tmp_path, data, "run")
    annotations = Path(data.split(":")[1])
    document = json.loads(annotations.read_text())
    document["annotations"][0]["bbox"][0] += 1
    annotations.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"inputs have changed since: the annotation files;"):
        run(tmp_path, data, "run", resume=True)


def test_resume_after_an_image_file_changed_is_refused_naming_it(tmp_path, multi_batch):
    from PIL import Image

    data = coco(tmp_path / "coco", multi_batch)
    run(tmp_path, data, "run")
    folder = Path(data.split(":")[2])
    files = sorted(folder.iterdir())
    # A copy keeps the bytes but not the time: still the same image, so the resume goes on.
    for path in files:
        path.write_bytes(path.read_bytes())
    run(tmp_path, data, "run", resume=True)
    # Pixels changed, same size and list: before, the resume replayed results of the old pixels without a word.
    for path in files[:4]:
        pixels = np.asarray(Image.open(path)).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(path)
    (tmp_path / "run" / "progress" / "batch-00000001.json").unlink()  # a run stopped half way
    with pytest.raises(ValueError, match=rf"image files that have changed since: {re.escape(str(files[0]))}, .* "
                                         r"and 1 more; continuing would mix results"):
        run(tmp_path, data, "run", resume=True)
    files[3].unlink()  # a missing file is a changed one
    with pytest.raises(ValueError, match="have changed since"):
        run(tmp_path, data, "run", resume=True)


def test_resume_under_other_library_versions_is_refused_naming_them(tmp_path):
    """Before: a run begun under one captum (or captum_ext) and resumed after an upgrade mixed both versions' maps."""
    import captum

    evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", show_progress=False)
    settings_file = tmp_path / "run" / "run.json"
    settings = json.loads(settings_file.read_text())
    assert settings["versions"]["captum"] == captum.__version__ and "+" not in settings["versions"]["torch"]
    evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", resume=True, show_progress=False)
    settings["versions"]["captum"] = "0.6.0"
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=rf"other library versions \(captum 0.6.0 → {re.escape(captum.__version__)}\); "
                                         r"continuing would mix"):
        evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", resume=True, show_progress=False)
    del settings["versions"]  # a run begun before versions were recorded
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="were not recorded by the captum_ext that began it"):
        evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", resume=True, show_progress=False)


def test_file_changed_reads_bytes_only_when_the_time_differs(tmp_path, monkeypatch):
    from captum_ext.evaluation import _fingerprints

    path = tmp_path / "a.png"
    path.write_bytes(b"12345")
    state = _fingerprints.file_state(path)
    assert state[0] == 5 and _fingerprints.file_state(tmp_path / "missing.png") is None
    read = []
    real = _fingerprints.hash_file
    monkeypatch.setattr(_fingerprints, "hash_file", lambda digest, p: read.append(p) or real(digest, p))
    assert not _fingerprints.file_changed(path, state) and read == []
    assert _fingerprints.file_changed(path, [6, *state[1:]]) and read == []  # another size: changed, unread
    assert not _fingerprints.file_changed(path, [5, state[1] - 1, state[2]]) and read == [path]
    assert _fingerprints.file_changed(path, [5, state[1] - 1, "0" * 64])


def test_resume_with_other_weights_or_class_map_is_refused(tmp_path):
    model = tiny_net()
    evaluate(model, "saliency", "scenes:single:3", tmp_path / "run", show_progress=False)
    evaluate(model, "saliency", "scenes:single:3", tmp_path / "run", resume=True, show_progress=False)  # same: fine
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="the model's weights and buffers"):
        evaluate(model, "saliency", "scenes:single:3", tmp_path / "run", resume=True, show_progress=False)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] -= 1.0
    with pytest.raises(ValueError, match="the category → class map"):
        evaluate(model, "saliency", "scenes:single:3", tmp_path / "run", resume=True, show_progress=False,
                 class_map={"ids": {str(d): 9 - d for d in range(10)}})


def test_a_resumed_run_says_where_it_starts(tmp_path, capsys):
    evaluate("zoo:scenes_vgg", "saliency", "scenes:single:6", tmp_path / "run", batch_size=2, show_progress=False)
    for name in ("batch-00000001.json", "batch-00000002.json"):
        (tmp_path / "run" / "progress" / name).unlink()
    evaluate("zoo:scenes_vgg", "saliency", "scenes:single:6", tmp_path / "run", batch_size=2, resume=True)
    err = capsys.readouterr().err
    assert "resuming: 2 of 6 images done" in err
    assert re.search(r"\b6/6\b", err)  # the bar counts from the images already done


def test_a_resume_with_another_resize_names_the_resize(tmp_path):
    evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", resize=(48, 48), show_progress=False)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(resize: \[48, 48\] then, \[32, 32\] "
                                         r"now\)"):
        evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "run", resize=(32, 32), resume=True,
                 show_progress=False)


def test_a_resume_finds_the_same_folders_however_spelled_and_names_another_spelling(tmp_path, multi_batch,
                                                                                      monkeypatch):
    """Before: a trailing slash on the image folder was "other settings (data)", naming neither spelling."""
    monkeypatch.chdir(tmp_path)
    export_coco(multi_batch, "coco")
    first = run(tmp_path, "coco:coco/annotations.json:coco/images", "run")
    records = sorted((tmp_path / "run" / "progress").glob("batch-*.json"))
    records[-1].unlink()  # as if stopped before the last batch was recorded
    resumed = run(tmp_path, "coco:./coco/annotations.json:coco/images/", "run", resume=True)
    assert {k: v for k, v in resumed.items() if k != "settings"} == {k: v for k, v in first.items() if k != "settings"}
    with pytest.raises(ValueError, match=r"other settings \(data: \"coco:coco/annotations.json:coco/images\" then, "
                                         rf"\"coco:{re.escape(str(tmp_path))}/coco/annotations.json:"):
        run(tmp_path, f"coco:{tmp_path}/coco/annotations.json:{tmp_path}/coco/images", "run", resume=True)


def test_resume_says_when_there_is_nothing_to_resume(tmp_path, capsys):
    evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "typo", resume=True)
    assert f"resuming: nothing done yet in {tmp_path / 'typo'}; starting the run" in capsys.readouterr().err
    # Without progress output it is a warning (before: nothing was said).
    with pytest.warns(UserWarning, match="resuming: nothing done yet in .*quiet; starting the run"):
        evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "quiet", resume=True, show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resume that finds batches done says nothing more
        evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "quiet", resume=True, show_progress=False)


def test_one_method_is_refused_in_a_folder_of_several_and_the_other_way_round(tmp_path):
    evaluate(tiny_net(), "saliency,grad_cam", "scenes:single:2", tmp_path / "both", show_progress=False)
    with pytest.raises(ValueError, match="holds a run of several methods; give one method another folder"):
        evaluate(tiny_net(), "grad_cam", "scenes:single:2", tmp_path / "both", resume=True, show_progress=False)
    evaluate(tiny_net(), "grad_cam", "scenes:single:2", tmp_path / "one", show_progress=False)
    with pytest.raises(ValueError, match="holds a run of one method; give several methods another folder"):
        evaluate(tiny_net(), "saliency,grad_cam", "scenes:single:2", tmp_path / "one", resume=True,
                 show_progress=False)


def test_a_resume_that_drops_a_finished_method_is_refused_before_any_work(tmp_path):
    """Before: the new method ran over the whole dataset, and only then was the leaderboard refused."""
    evaluate(tiny_net(), "saliency,grad_cam", "scenes:single:2", tmp_path / "both", show_progress=False)
    with pytest.raises(ValueError, match=r"holds finished results of grad_cam, which this run's leaderboard would "
                                         r"leave out: list them too"):
        evaluate(tiny_net(), "saliency,guided_backprop", "scenes:single:2", tmp_path / "both", resume=True,
                 show_progress=False)
    assert not (tmp_path / "both" / "guided_backprop").exists()
    added = evaluate(tiny_net(), "saliency,grad_cam,guided_backprop", "scenes:single:2", tmp_path / "both",
                     resume=True, show_progress=False)
    assert set(added) == {"saliency", "grad_cam", "guided_backprop"}


# -- bad boxes -----------------------------------------------------------------------------------------------------

def spoil_boxes(document):
    document["annotations"][2]["bbox"][3] = 0  # zero height
    document["annotations"][5]["bbox"][0] = 80  # starts right of a 64-px image
    document["annotations"][7]["bbox"][2] += 0.5  # half a pixel past the edge at most: clipped, kept


def test_bad_boxes_are_found_when_the_dataset_opens_naming_image_file_and_annotation(tmp_path, multi_batch):
    data = coco(tmp_path / "coco", multi_batch, spoil_boxes)
    document = json.loads(Path(data.split(":")[1]).read_text())
    zero, outside = document["annotations"][2], document["annotations"][5]
    file_of = {img["id"]: img["file_name"] for img in document["images"]}
    with pytest.raises(ValueError) as raised:
        open_dataset(data)
    message = str(raised.value)
    assert "2 annotation(s) cannot be scored" in message
    assert f"image {zero['image_id']} " in message and file_of[zero["image_id"]] in message
    assert f"annotation {zero['id']}: box" in message and "has zero area" in message
    assert f"annotation {outside['id']}: box (80," in message and "reaches outside the 64×64 image" in message
    with pytest.raises(ValueError, match="cannot be scored"):
        fit_box_map("zoo:scenes_vgg", data, tmp_path / "boxes.pt")


def test_skip_bad_skips_the_pairs_of_bad_boxes_and_lists_them(tmp_path, multi_batch):
    data = coco(tmp_path / "coco", multi_batch, spoil_boxes)
    document = json.loads(Path(data.split(":")[1]).read_text())
    bad_pairs = {(document["annotations"][k]["image_id"], document["annotations"][k]["category_id"]) for k in (2, 5)}
    summary = run(tmp_path, data, "run", skip_bad=True)
    scored = {(int(r["image_id"]), int(r["category"])) for r in rows_of(tmp_path / "run")}
    all_pairs = {(a["image_id"], a["category_id"]) for a in document["annotations"]}
    assert scored == all_pairs - bad_pairs and summary["n_pairs"] == len(scored)
    assert sum("skipped pair" in item for item in summary["skipped"]) == 2
    dataset = open_dataset(data, skip_bad=True)
    clipped = document["annotations"][7]
    sample = dataset[[e.image_id for e in dataset.entries].index(clipped["image_id"])]
    truth = next(t for t in sample.truths if t.category == clipped["category_id"])
    assert float(truth.boxes[:, 2].max()) <= 64.0


def test_voc_bad_boxes_are_named_too(tmp_path, multi_batch):
    root = export_voc(multi_batch, tmp_path / "voc")
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "000001.xml"
    text = xml.read_text()
    xml.write_text(re.sub(r"<xmax>\d+</xmax>", "<xmax>0</xmax>", text, count=1))
    with pytest.raises(ValueError, match=r"image '000001' .*object 1 in 000001.xml: box .* negative size"):
        open_dataset(f"voc:{root}")


def boxes_only(document):
    for ann in document["annotations"]:
        ann.pop("segmentation", None)


def test_a_box_without_a_pixel_centre_is_refused_when_the_dataset_opens_or_skipped(tmp_path, multi_batch):
    """Positive area but no pixel centre inside, alone for its pair: every metric would reject the pair, so the
    dataset refuses it before any work (it used to stop the run at its batch, even with skip_bad)."""
    def sliver(document):
        boxes_only(document)
        ann = document["annotations"][3]
        ann["bbox"] = [10.6, 10.6, 0.8, 0.8]  # no centre j + 0.5 in [10.6, 11.4)
        document["annotations"] = [a for a in document["annotations"] if a is ann or not (
            a["image_id"] == ann["image_id"] and a["category_id"] == ann["category_id"])]

    data = coco(tmp_path / "coco", multi_batch, sliver)
    document = json.loads(Path(data.split(":")[1]).read_text())
    ann = document["annotations"][3]
    with pytest.raises(ValueError, match=rf"annotation {ann['id']}: category {ann['category_id']}'s box\(es\) "
                                         r"cover no pixel centre of the 64×64 image"):
        open_dataset(data)
    summary = run(tmp_path, data, "run", skip_bad=True)
    assert (ann["image_id"], ann["category_id"]) not in {(int(r["image_id"]), int(r["category"]))
                                                         for r in rows_of(tmp_path / "run")}
    assert summary["n_pairs"] == len(rows_of(tmp_path / "run")) == len(document["annotations"]) - 1


def test_a_small_box_that_a_resize_would_empty_is_refused_at_that_size_only(tmp_path, multi_batch):
    def small(document):
        boxes_only(document)
        ann = document["annotations"][0]
        ann["bbox"] = [20.0, 20.0, 1.0, 1.0]  # one pixel at 64²; [10, 10.5)² at 32² holds no centre
        document["annotations"] = [a for a in document["annotations"] if a is ann or not (
            a["image_id"] == ann["image_id"] and a["category_id"] == ann["category_id"])]

    data = coco(tmp_path / "coco", multi_batch, small)
    assert len(open_dataset(data).entries) == 8
    with pytest.raises(ValueError, match="cover no pixel centre once resized to 32×32"):
        open_dataset(data, resize=(32, 32))
    assert len(open_dataset(data, resize=(128, 128)).entries) == 8


def test_a_malformed_or_empty_segmentation_is_named_when_the_dataset_opens(tmp_path, multi_batch):
    def spoil(document):
        document["annotations"][1]["segmentation"] = [[4, 4, 14, 14]]  # two points: not a polygon
        document["annotations"][4]["segmentation"] = [[5, 5, 5, 5, 5, 5]]  # a polygon without area
        for k in (1, 4):  # alone for its pair, so the pair has no other mask
            keep = document["annotations"][k]
            document["annotations"] = [a for a in document["annotations"] if a is keep or not (
                a["image_id"] == keep["image_id"] and a["category_id"] == keep["category_id"])]

    data = coco(tmp_path / "coco", multi_batch, spoil)
    with pytest.raises(ValueError) as raised:
        open_dataset(data)
    message = str(raised.value)
    assert "2 annotation(s) cannot be scored" in message
    assert "segmentation polygon [4, 4, 14, 14] is not a list of at least three (x, y) points" in message
    assert "segmentation covers no pixel" in message
    summary = run(tmp_path, data, "run", skip_bad=True)
    assert sum("skipped pair" in item for item in summary["skipped"]) == 2


def test_a_segmentation_far_from_its_bbox_is_named_when_the_dataset_opens(tmp_path, multi_batch):
    """Before: the mask metrics scored the segmentation and the box metrics the bbox, wherever each lay."""
    moved = {}

    def spoil(document):
        from pycocotools import mask as coco_mask

        polygon, rle = document["annotations"][1], document["annotations"][4]
        moved.update(polygon=polygon["id"], rle=rle["id"])
        x, y, w, h = polygon["bbox"]
        far = (x + w + 2) % 60  # to the right of the box, or wrapped to the left edge
        polygon["segmentation"] = [[far, y, far + w, y, far + w, y + h, far, y + h]]
        # the RLE shifted by half the image's width: the same shape, elsewhere
        size, counts = rle["segmentation"]["size"], rle["segmentation"]["counts"]
        pixels = coco_mask.decode({"size": size, "counts": counts.encode() if isinstance(counts, str) else counts})
        encoded = coco_mask.encode(np.asfortranarray(np.roll(pixels, pixels.shape[1] // 2, axis=1)))
        rle["segmentation"] = {"size": size, "counts": encoded["counts"].decode()}

    data = coco(tmp_path / "coco", multi_batch, spoil)
    with pytest.raises(ValueError) as raised:
        open_dataset(data)
    message = str(raised.value)
    assert "2 annotation(s) cannot be scored" in message
    for key in ("polygon", "rle"):
        assert re.search(rf"annotation {moved[key]}: its segmentation spans \(.*\) but its bbox is \(.*\): IoU "
                         rf"0\.\d\d < 0\.5", message), message
    summary = run(tmp_path, data, "run", skip_bad=True, metrics=["pointing_game"])
    assert sum("its segmentation spans" in item for item in summary["skipped"]) == 2


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**31 - 1), st.floats(0.0, 0.3))
def test_an_rles_extent_is_pycocotools_bbox_of_it(height, width, seed, density):
    from pycocotools import mask as coco_mask

    from captum_ext.evaluation._coco import _rle_runs, _runs_extent

    pixels = np.asfortranarray((np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8))
    encoded = coco_mask.encode(pixels)
    extent = _runs_extent(_rle_runs(encoded["counts"].decode()), height)
    if not pixels.any():
        assert extent is None
    else:
        x, y, w, h = coco_mask.toBbox(encoded).tolist()
        assert extent == (x, y, x + w, y + h)


def test_segmentations_that_agree_with_their_bbox_open_as_before(tmp_path):
    """COCO derives bboxes from the segmentations: an export of 60 scenes (polygons for a few) opens clean."""
    batch = scenes.make_scenes(60, mode="multi", split="test", seed=11)

    def as_polygons(document):
        for annotation in document["annotations"][:20]:
            x, y, w, h = annotation["bbox"]  # a polygon that is its box, as COCO's bbox of it
            annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]

    dataset = open_dataset(coco(tmp_path / "coco", batch, as_polygons))
    assert dataset.bad_annotations == [] and len(dataset) == 60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 40, width=32)] * 4), min_size=1, max_size=6),
       st.sampled_from([None, (7, 9), (64, 48), (33, 40)]))
def test_the_open_time_pixel_check_agrees_with_the_drawn_regions(corners, resize):
    """The check draws nothing, yet agrees with the region the metrics draw after the loader's float32 scaling."""
    from captum_ext._utils.boxes import boxes_to_masks
    from captum_ext.evaluation._annotations import boxes_without_pixels

    native = (30, 41)
    boxes = np.array([[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in corners], dtype=np.float32)
    stored = resize or native
    scales = None
    drawn = torch.from_numpy(boxes)
    if resize is not None:
        factors = (stored[1] / native[1], stored[0] / native[0])
        scales = np.tile(np.array(factors, dtype=np.float32), (len(boxes), 1))
        drawn = drawn * torch.tensor([factors[0], factors[1], factors[0], factors[1]], dtype=torch.float32)
    expected = ~boxes_to_masks(drawn, *stored).flatten(1).any(dim=1)
    got = boxes_without_pixels(boxes, scales, np.full(len(boxes), stored[0]), np.full(len(boxes), stored[1]))
    assert got.tolist() == expected.tolist()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_the_open_time_mask_check_agrees_with_the_loaders_resize(height, width, new_height, new_width, seed):
    from captum_ext.evaluation._annotations import masks_emptied_by_resize
    from captum_ext.evaluation._annotations import resize_sample as _resized
    from captum_ext.evaluation.data import ImageEntry
    from captum_ext.metrics.ground_truth import GroundTruth

    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=bool)
    mask[rng.integers(0, height, 3), rng.integers(0, width, 3)] = True  # a few scattered pixels

    class Source:
        entries = [ImageEntry(0, "a", "a.png", height, width, (1,))]
        masked_pairs = {0: [1]}

        @staticmethod
        def mask_union(entry, category):
            return mask

    refused = masks_emptied_by_resize(Source(), (new_height, new_width))
    _, (loaded,) = _resized(None, [GroundTruth(1, torch.zeros(0, 4), torch.from_numpy(mask))], (height, width),
                            (new_height, new_width))
    emptied = (height, width) != (new_height, new_width) and not bool(loaded.mask.any())
    assert (len(refused) == 1) == emptied
    reference = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None].float(),
                                                size=(new_height, new_width), mode="nearest-exact")[0, 0] > 0.5
    assert torch.equal(loaded.mask, reference)  # the loader keeps torch's nearest-exact resize of the mask


def test_voc_boxes_without_a_pixel_are_refused_too(tmp_path, multi_batch):
    root = export_voc(multi_batch, tmp_path / "voc")
    xml = root / "VOCdevkit" / "VOC2012" / "Annotations" / "000001.xml"
    text = xml.read_text()
    objects = text.count("<object>")
    if objects > 1:  # one object, so that its pair has no other box
        head, *parts = text.split("<object>")
        text = head + "<object>" + parts[0].split("</object>")[0] + "</object>" + parts[-1].split("</object>")[-1]
    for tag, value in (("xmin", 12), ("ymin", 12), ("xmax", 12), ("ymax", 12)):  # VOC: 1-based, inclusive
        text = re.sub(rf"<{tag}>\d+</{tag}>", f"<{tag}>{value}</{tag}>", text, count=1)
    xml.write_text(text)
    assert open_dataset(f"voc:{root}") is not None  # one pixel: [11, 12)² holds centre 11.5; at 16², [2.75, 3)² none
    with pytest.raises(ValueError, match=r"image '000001' .*object 1 in 000001.xml: category \d+'s box\(es\) cover "
                                         r"no pixel centre once resized to 16×16"):
        open_dataset(f"voc:{root}", resize=(16, 16))


def test_a_mask_that_a_resize_empties_is_refused_when_the_dataset_opens_or_skipped(tmp_path, multi_batch):
    def thin(document):
        ann = document["annotations"][0]
        ann["segmentation"] = [[20.2, 20.2, 20.8, 20.2, 20.8, 40.0, 20.2, 40.0]]  # column 20 only
        ann["bbox"] = [20.0, 20.0, 1.0, 20.0]
        document["annotations"] = [a for a in document["annotations"] if a is ann or not (
            a["image_id"] == ann["image_id"] and a["category_id"] == ann["category_id"])]

    data = coco(tmp_path / "coco", multi_batch, thin)
    ann = json.loads(Path(data.split(":")[1]).read_text())["annotations"][0]
    assert len(open_dataset(data).entries) == 8  # 20 pixels at 64×64
    with pytest.raises(ValueError, match=rf"image {ann['image_id']} .*the masks of category {ann['category_id']}: "
                                         r"they cover no pixel once resized to 16×16"):
        open_dataset(data, resize=(16, 16))  # nearest-exact samples columns 2, 6, ..., 18, 22: never 20
    dataset = open_dataset(data, resize=(16, 16), skip_bad=True)
    entry = next(e for e in dataset.entries if e.image_id == ann["image_id"])
    assert ann["category_id"] not in entry.categories
    assert all(bool(t.mask.any()) for t in dataset[entry.index].truths)


@pytest.mark.parametrize("spelling", ["000001.png", "./000001.png", "sub/../000001.png"])
def test_two_coco_images_of_one_file_are_refused(tmp_path, multi_batch, spelling):
    def same_file(document):
        document["images"][3]["file_name"] = spelling

    with pytest.raises(ValueError, match=rf"file_name '{re.escape(spelling)}' of image 4 names the file of image 2 "
                                         r"\('000001.png'\)"):
        open_dataset(coco(tmp_path / "coco", multi_batch, same_file))


@pytest.mark.parametrize("category_id", [1.2, "1", True, None])
def test_a_coco_category_id_that_is_not_an_integer_is_refused(tmp_path, multi_batch, category_id):
    def odd_id(document):  # int() would read 1.2 as 1: two categories merged without a word
        document["categories"][0]["id"] = category_id
        for annotation in document["annotations"]:
            if annotation["category_id"] == 1:
                annotation["category_id"] = category_id

    with pytest.raises(ValueError, match=rf"category '0' needs an integer id, got {re.escape(repr(category_id))}"):
        open_dataset(coco(tmp_path / "coco", multi_batch, odd_id))


# -- smaller -------------------------------------------------------------------------------------------------------

def test_a_dataset_without_pairs_writes_valid_json_and_no_warning(tmp_path, multi_batch):
    def no_objects(document):
        document["annotations"] = []

    data = coco(tmp_path / "coco", multi_batch, no_objects)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = run(tmp_path, data, "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())  # NaN would not parse strictly
    assert summary["accuracy"] is None and written["accuracy"] is None and written["n_pairs"] == 0
    assert "NaN" not in (tmp_path / "run" / "metrics.json").read_text()


def test_a_file_that_is_not_a_box_map_is_named(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"'.*model.pt' is not a box map"):
        evaluate("zoo:scenes_vgg", "sensitivity", "scenes:single:2", tmp_path / "run", box_map=tmp_path / "model.pt",
                 show_progress=False)


def test_fit_boxes_checks_its_output_before_fitting(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"`out` '.*a_file/boxes.pt' cannot be written"):
        fit_box_map("zoo:scenes_vgg", "scenes:single:2", blocker / "boxes.pt")
    with pytest.raises(ValueError, match="is a folder"):
        fit_box_map("zoo:scenes_vgg", "scenes:single:2", tmp_path)


# -- the background writer -----------------------------------------------------------------------------------------

def test_the_writer_writes_maps_before_records_in_order_and_raises_its_errors():
    from captum_ext.evaluation._writer import BackgroundWriter

    log = []

    class Store:
        def write(self, pair_ids, maps):
            if pair_ids == [99]:
                raise OSError("disk full")
            log.append(("maps", list(pair_ids)))

    class Records:
        def write(self, batch, record):
            log.append(("record", batch))

    with BackgroundWriter(Store(), Records(), depth=1) as writer:
        for batch in range(4):
            writer.submit(batch, [([2 * batch, 2 * batch + 1], torch.zeros(2, 3, 3))], {"rows": []})
    assert log == [entry for b in range(4) for entry in (("maps", [2 * b, 2 * b + 1]), ("record", b))]
    writer = BackgroundWriter(Store(), Records())
    writer.submit(10, [([99], torch.zeros(1, 3, 3))], {})
    with pytest.raises(OSError, match="disk full"):
        for batch in range(11, 20):  # never blocks on the failed thread; the error surfaces here or at close
            writer.submit(batch, [([batch], torch.zeros(1, 3, 3))], {})
        writer.close()
    writer.close()  # the error was raised once; closing again stops the thread without raising it anew
    assert ("record", 10) not in log  # a batch whose maps failed is not recorded: a resume computes it again


# -- files that parse but say something else than they seem to ------------------------------------------------------

def test_a_corrupt_rle_is_found_when_the_dataset_opens_and_skipped_with_skip_bad(tmp_path, multi_batch):
    """Before: pycocotools read the garbage RLE's area without complaint, so the run died mid-way on its decode
    with a message naming no file, even under --skip-bad."""
    def corrupt(document):
        document["annotations"][0]["segmentation"]["counts"] = "!!!!zz"

    data = coco(tmp_path / "coco", multi_batch, corrupt)
    with pytest.raises(ValueError, match=r"000000\.png.*annotation 1.*RLE segmentation's runs do not cover the "
                                         r"64×64 image exactly"):
        open_dataset(data)
    dataset = open_dataset(data, skip_bad=True)
    first = next(e for e in dataset.entries if e.image_id == 1)
    clean = open_dataset(coco(tmp_path / "clean", multi_batch))
    assert set(first.categories) < set(clean.entries[first.index].categories)  # only the corrupt pair left out
    summary = run(tmp_path, data, "run", skip_bad=True)
    assert any("do not cover" in item for item in summary["skipped"])


def test_a_voc_split_list_naming_an_image_twice_is_refused(tmp_path, multi_batch):
    root = export_voc(multi_batch, tmp_path / "voc")
    split = next((root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main").glob("*.txt"))
    names = split.read_text().split()
    split.write_text("\n".join(names[:2] + names[1:]) + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(split))} names image '{names[1]}' twice"):
        open_dataset(f"voc:{root}")


def test_a_class_map_file_giving_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"ids": {"3": 0, "4": 1, "3": 5}}')  # plain JSON keeps the last: category 3 would move
    with pytest.raises(ValueError, match=r"map\.json' gives key '3' twice"):
        read_class_map(path)


def test_a_run_stopped_by_an_unreadable_image_goes_on_with_skip_bad(tmp_path, multi_batch):
    """Before: the stop said nothing of skip_bad, and resuming with it was refused as another setting, so the
    finished batches were lost."""
    data = coco(tmp_path / "coco", multi_batch)
    image = tmp_path / "coco" / "images" / "000005.png"
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cannot decode image .*000005\.png.*\(`skip_bad` leaves unreadable "
                                         r"images out\)"):
        run(tmp_path, data, "stopped")
    resumed = run(tmp_path, data, "stopped", skip_bad=True, resume=True)
    fresh = run(tmp_path, data, "fresh", skip_bad=True)
    assert (tmp_path / "stopped" / "pairs.csv").read_text() == (tmp_path / "fresh" / "pairs.csv").read_text()
    assert resumed["n_pairs"] == fresh["n_pairs"] and any("000005.png" in item for item in resumed["skipped"])
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["skip_bad"] is True
    # Without skip_bad, the images it left out would stop the run again.
    with pytest.raises(ValueError, match=r"holds a run made with `skip_bad`: pass it to continue"):
        run(tmp_path, data, "stopped", resume=True)


def test_a_voc_image_of_unknown_size_is_named_as_such(tmp_path, multi_batch):
    """Before: an annotation without <size> whose image does not open read as a 0×0 image, and its boxes were
    refused as covering no pixel of it."""
    root = export_voc(multi_batch, tmp_path / "voc")
    year = root / "VOCdevkit" / "VOC2012"
    xml = year / "Annotations" / "000003.xml"
    xml.write_text(re.sub(r"<size>.*?</size>", "", xml.read_text(), flags=re.S))
    next((year / "JPEGImages").glob("000003.*")).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"000003.xml has no <size> and the image does not open"):
        open_dataset(f"voc:{root}")
    dataset = open_dataset(f"voc:{root}", skip_bad=True)
    assert dataset.entries[3].categories == () and dataset[3].image is None


@pytest.mark.parametrize("segmentation, why", [
    ({"counts": [10, 5], "size": [64, 64]}, "runs do not cover the 64×64 image exactly"),  # pycocotools pads it
    ({"counts": [4000, -4, 100], "size": [64, 64]}, "runs do not cover"),
    ({"counts": [4096], "size": [32, 32]}, r"size \[64, 64\], got keys \['counts', 'size'\] and size \[32, 32\]"),
])
def test_an_rle_that_does_not_cover_its_image_is_refused(tmp_path, multi_batch, segmentation, why):
    def short(document):
        document["annotations"][0]["segmentation"] = segmentation

    with pytest.raises(ValueError, match=why):
        open_dataset(coco(tmp_path / "coco", multi_batch, short))


def test_n_images_counts_the_images_scored_not_those_left_out(tmp_path, multi_batch):
    """Before: ``n_images`` was the dataset's image count, unreadable images and images without a pair included."""
    def spoil_every_pair_of_the_first_image(document):
        first = document["images"][0]["id"]
        for annotation in document["annotations"]:
            if annotation["image_id"] == first:
                annotation["bbox"][3] = 0
    data = coco(tmp_path / "coco", multi_batch, spoil_every_pair_of_the_first_image)
    image = tmp_path / "coco" / "images" / "000005.png"
    image.write_bytes(image.read_bytes()[:100])
    summary = run(tmp_path, data, "run", skip_bad=True)
    scored_images = {r["image_id"] for r in rows_of(tmp_path / "run")}
    assert len(multi_batch.images) == 8 and summary["n_images"] == len(scored_images) == 6
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_images"] == 6


def test_grad_cam_layer_may_be_named_inside_the_wrapped_classifier(tmp_path):
    """The run wraps a zoo or torchvision model to take images in [0, 1]; before, `features.10` (the classifier's
    own name) was refused and only the wrapper's `model.features.10` worked."""
    from captum_ext.evaluation.methods import find_layer
    from captum_ext.evaluation.models import Normalized

    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    wrapped = Normalized(inner, [0.5] * 3, [0.2] * 3)
    assert find_layer(wrapped, "0") is inner[0] and find_layer(wrapped, "model.0") is inner[0]
    with pytest.raises(ValueError, match="not a submodule"):
        find_layer(inner, "model.0")
    maps = {}
    for name in ("features.10", "model.features.10", None):  # None: the last convolution
        evaluate("zoo:scenes_vgg", "grad_cam", "scenes:single:2", tmp_path / str(name), layer=name,
                 show_progress=False, metrics=["pointing_game"])
        maps[name] = zarr.open_group(str(tmp_path / str(name) / "maps.zarr"), mode="r")["maps"][:]
    assert np.array_equal(maps["features.10"], maps["model.features.10"])
    assert not np.array_equal(maps["features.10"], maps[None])  # the layer named is the layer used


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path):
    """Before: the user's own ``metrics.json`` and ``pairs.csv`` in ``out`` were replaced without a word."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"my_training_metrics": 0.93}')
    (out / "pairs.csv").write_text("my table\n")
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"holds files of no evaluate run \(metrics.json, pairs.csv\); use a new "
                                             r"or empty folder"):
            evaluate(tiny_net(), "saliency", "scenes:single:2", out, resume=resume, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "pairs.csv"]
    assert (out / "metrics.json").read_text() == '{"my_training_metrics": 0.93}'
    (tmp_path / "empty").mkdir()
    evaluate(tiny_net(), "saliency", "scenes:single:2", tmp_path / "empty", show_progress=False)
    assert (tmp_path / "empty" / "run.json").is_file()


def test_constant_maps_are_counted_marked_and_warned_about(tmp_path):
    """Before: a model whose maps were all zeros earned pointing-game hits for objects near the top-left corner,
    and nothing said so."""
    net = tiny_net()
    with torch.no_grad():
        net[0].weight.zero_()  # the scores no longer depend on the pixels: every gradient map is zero
    with pytest.warns(UserWarning, match=r"saliency: (\d+) of \1 maps are constant \(no maximum\), so the pointing "
                                         r"game took their first pixel \(0, 0\); pairs.csv marks them"):
        dead = evaluate(net, "saliency", "scenes:multi:4", tmp_path / "dead", show_progress=False)
    assert dead["constant_maps"] == dead["n_pairs"] > 0
    assert {row["constant_map"] for row in rows_of(tmp_path / "dead")} == {"1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alive = evaluate(tiny_net(), "saliency", "scenes:multi:4", tmp_path / "alive", show_progress=False)
    assert alive["constant_maps"] == 0 and {row["constant_map"] for row in rows_of(tmp_path / "alive")} == {"0"}
    assert "constant_maps" not in evaluate(tiny_net(), "saliency", "scenes:multi:4", tmp_path / "none", metrics=(),
                                           show_progress=False)


def test_box_maps_fit_on_training_scenes_and_are_warned_off_the_held_out_ones(tmp_path):
    """Before: ``fit-boxes --data scenes:single:60`` fitted on the very scenes ``evaluate --data scenes:single:30``
    scored (CorLoc 1.0 against 0.17 for a map fitted on other scenes), and no spec gave other scenes."""
    held_out, training = open_dataset("scenes:single:6"), open_dataset("scenes:single:6:train")
    assert not any(torch.equal(held_out[i].image, training[i].image) for i in range(6))
    assert torch.equal(open_dataset("scenes:single:3")[2].image, held_out[2].image)  # held-out: a prefix
    with pytest.warns(UserWarning, match=r"'scenes:single:8' are the held-out scenes that evaluate scores: .* fit on "
                                         r"scenes:single:8:train"):
        fit_box_map(tiny_net(), "scenes:single:8", tmp_path / "leak.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_box_map(tiny_net(), "scenes:single:8:train", tmp_path / "fair.pt")
    with pytest.raises(ValueError, match=r"optionally followed by 'train'"):
        open_dataset("scenes:single:8:test")


def test_a_folder_in_use_by_another_run_is_refused_and_free_again_after_it(tmp_path):
    """Before: two runs started at once on one folder both passed the folder checks and mixed their maps, tables and
    settings (a run.json naming grad_cam over saliency's results)."""
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    other = os.open(out, os.O_RDONLY)  # what a running evaluate holds: a lock on the folder
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="is in use by another evaluate run"):
            evaluate("zoo:scenes_vgg", "saliency", "scenes:single:4", out, batch_size=4, show_progress=False)
        assert not any(out.iterdir())  # refused before writing anything
    finally:
        os.close(other)
    summary = evaluate("zoo:scenes_vgg", "saliency", "scenes:single:4", out, batch_size=4, show_progress=False)
    assert summary["n_pairs"] == 4


def test_a_run_that_stopped_before_its_first_batch_starts_again_with_other_settings(tmp_path):
    """Before: a run refused at its first batch (a resize too small for the model) left its settings behind, and
    following the error's advice in the same folder was refused as "a run with other settings", with no result
    in it to keep."""
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):  # the model's own error (the command line explains it)
        evaluate("zoo:scenes_vgg", "saliency", "scenes:multi:8", out, batch_size=4, resize=(8, 8), show_progress=False)
    assert (out / "run.json").is_file() and not list((out / "progress").glob("batch-*.json"))
    summary = evaluate("zoo:scenes_vgg", "saliency", "scenes:multi:8", out, batch_size=4, show_progress=False)
    assert summary["settings"]["resize"] is None and summary["n_images"] == 8
    with pytest.raises(ValueError, match="holds a run with other settings"):  # finished results are kept
        evaluate("zoo:scenes_vgg", "saliency", "scenes:multi:8", out, batch_size=4, resize=(48, 48),
                 show_progress=False)
