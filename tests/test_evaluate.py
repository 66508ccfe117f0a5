"""captum-ext evaluate / fit-boxes: outputs, 1 vs 2 processes (torchrun, gloo), resume after SIGKILL, bad input."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import zarr

from captum_ext.evaluation import evaluate, fit_box_map, store
from captum_ext.evaluation.data import open_dataset

DATA = "scenes:multi:12"


def cli(*args: str, processes: int = 1, check: bool = True, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    done = subprocess.run([*launcher, "-m", "captum_ext", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def outputs(folder: Path):
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["settings"].pop("processes")
    rows = list(csv.DictReader((folder / "pairs.csv").read_text().splitlines()))
    maps = np.asarray(zarr.open_array(str(folder / "maps.zarr" / "maps"), mode="r")[:])
    return metrics, rows, maps


def test_a_run_writes_metrics_table_maps_and_figure(tmp_path):
    summary = evaluate("zoo:scenes_vgg_multilabel", "saliency", DATA, tmp_path / "run", batch_size=5,
                       show_progress=False)
    dataset = open_dataset(DATA)
    n_pairs = sum(len(e.categories) for e in dataset.entries)
    assert summary["n_images"] == 12 and summary["n_pairs"] == n_pairs
    for key in ("pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap", "accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    metrics, rows, maps = outputs(tmp_path / "run")
    assert metrics["n_pairs"] == len(rows) == maps.shape[0] == n_pairs
    assert [int(r["pair"]) for r in rows] == list(range(n_pairs))
    assert maps.dtype == np.float16 and float(maps.max()) == 1.0
    positions = zarr.open_array(str(tmp_path / "run" / "maps.zarr" / "image_index"), mode="r")[:]
    assert [int(r["image_index"]) for r in rows] == positions.tolist()
    assert (tmp_path / "run" / "summary.png").stat().st_size > 10_000
    # The table's per-pair energies average to the metric.
    assert abs(np.mean([float(r["energy"]) for r in rows]) - summary["energy_pointing_game"]) < 1e-9


def test_two_processes_give_exactly_the_one_process_results(tmp_path):
    common = ["evaluate", "--model", "zoo:scenes_vgg_multilabel", "--method", "saliency", "--data", DATA,
              "--batch-size", "3", "--no-progress"]
    cli(*common, "--out", str(tmp_path / "one"))
    cli(*common, "--out", str(tmp_path / "two"), processes=2)
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert one[0] == two[0]  # metrics and settings
    assert one[1] == two[1]  # every row
    assert np.array_equal(one[2], two[2])  # every map, bit for bit
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["settings"]["processes"] == 2


@pytest.mark.skipif(not store.sharding_supported(), reason="Zarr 2 writes no shards")
def test_one_pair_per_image_stores_one_shard_file_per_batch(tmp_path):
    evaluate("zoo:scenes_vgg", "saliency", "scenes:single:10", tmp_path / "sharded", batch_size=4,
             show_progress=False)
    with mock.patch.object(store, "sharding_supported", lambda: False):
        evaluate("zoo:scenes_vgg", "saliency", "scenes:single:10", tmp_path / "plain", batch_size=4,
                 show_progress=False)
    array = zarr.open_array(str(tmp_path / "sharded" / "maps.zarr" / "maps"), mode="r")
    assert array.shards == (4, 64, 64) and array.chunks == (1, 64, 64)
    assert len([p for p in (tmp_path / "sharded" / "maps.zarr" / "maps" / "c").rglob("*") if p.is_file()]) == 3
    assert len([p for p in (tmp_path / "plain" / "maps.zarr" / "maps" / "c").rglob("*") if p.is_file()]) == 10
    sharded, plain = outputs(tmp_path / "sharded"), outputs(tmp_path / "plain")
    assert sharded[0] == plain[0] and sharded[1] == plain[1] and np.array_equal(sharded[2], plain[2])
    one_map = store.MapStore(tmp_path / "sharded" / "maps.zarr").read(5)  # one map reads back alone
    assert torch.equal(one_map, torch.from_numpy(sharded[2][5].astype(np.float32)))
    # A varying number of pairs per image: batches do not line up with shards, so one file per map.
    evaluate("zoo:scenes_vgg", "saliency", "scenes:multi:6", tmp_path / "multi", batch_size=4, show_progress=False)
    assert zarr.open_array(str(tmp_path / "multi" / "maps.zarr" / "maps"), mode="r").shards is None


def test_two_processes_write_their_shards_exactly_as_one_process_for_several_methods(tmp_path):
    # Infidelity, max-sensitivity and ROAD too: their perturbations are seeded by the batch, not by the process.
    common = ["evaluate", "--model", "zoo:scenes_vgg", "--method", "grad_cam,saliency", "--data",
              "scenes:single:12", "--batch-size", "3", "--no-progress", "--metrics", "pointing_game", "maxboxacc_v2",
              "infidelity", "sensitivity_max", "road_morf", "--perturbations", "3"]
    printed = cli(*common, "--out", str(tmp_path / "one")).stdout
    assert "one folder per method" in printed and set(json.loads(printed.split("\nresults in")[0])) == \
        {"grad_cam", "saliency"}
    cli(*common, "--out", str(tmp_path / "two"), processes=2)
    for method in ("grad_cam", "saliency"):
        one, two = outputs(tmp_path / "one" / method), outputs(tmp_path / "two" / method)
        assert one[0] == two[0] and one[1] == two[1] and np.array_equal(one[2], two[2])
    boards = [(tmp_path / run / "leaderboard.csv").read_text().replace(str(tmp_path / run), "") for run in ("one", "two")]
    assert boards[0] == boards[1] and "grad_cam" in boards[0]


@pytest.mark.parametrize("method, shared", [("saliency", True), ("grad_cam", True), ("integrated_gradients", False)])
def test_predictions_come_from_the_methods_own_forward_where_it_runs_the_plain_model(tmp_path, method, shared):
    from captum_ext.evaluation.models import load_evaluation_model

    loaded = load_evaluation_model("zoo:scenes_vgg_multilabel")
    calls = []
    counter = loaded.model.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        evaluate(loaded, method, DATA, tmp_path / "tapped", batch_size=5, show_progress=False, metrics=())
        tapped_calls = list(calls)
        calls.clear()
        with mock.patch("captum_ext.evaluation.runner.PLAIN_FORWARD_METHODS", ()):
            evaluate(loaded, method, DATA, tmp_path / "separate", batch_size=5, show_progress=False, metrics=())
        separate_calls = list(calls)
    finally:
        counter.remove()
    assert not loaded.model._forward_hooks  # nothing of the run's left on the model
    # DATA's 12 images make 3 batches: a separate prediction forward is one more call per batch, which the
    # method's own forward saves where it runs the plain model (Integrated Gradients never does).
    assert len(separate_calls) == len(tapped_calls) + (3 if shared else 0)
    tapped, separate = outputs(tmp_path / "tapped"), outputs(tmp_path / "separate")
    assert np.array_equal(tapped[2], separate[2])
    for mine, theirs in zip(tapped[1], separate[1]):
        assert mine["predicted"] == theirs["predicted"] and mine["recognised"] == theirs["recognised"]
        for key in ("predicted_score", "class_score"):
            assert abs(float(mine[key]) - float(theirs[key])) < 1e-6


def test_several_methods_in_one_pass_equal_their_separate_runs_and_resume_alone(tmp_path):
    from captum_ext.evaluation.models import load_evaluation_model

    loaded = load_evaluation_model("zoo:scenes_vgg_multilabel")
    methods = ["integrated_gradients", "saliency", "grad_cam"]
    calls = []
    counter = loaded.model.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        options = dict(batch_size=5, show_progress=False, perturbation_samples=2,
                       metrics=["pointing_game", "maxboxacc_v2", "infidelity"])
        together = evaluate(loaded, ",".join(methods), DATA, tmp_path / "together", **options)
        together_calls = len(calls)
        separate_calls = {}
        for method in methods:
            calls.clear()
            evaluate(loaded, method, DATA, tmp_path / method, **options)
            separate_calls[method] = len(calls)
    finally:
        counter.remove()
    # One pass: each method's own forwards, and the predictions taken from saliency's (Integrated Gradients, first,
    # gives none), so no prediction forward at all: 3 fewer calls than the three separate runs' 12 batches.
    assert together_calls == sum(separate_calls.values()) - 3
    assert sorted(together) == sorted(methods)
    for method in methods:
        mine, theirs = outputs(tmp_path / "together" / method), outputs(tmp_path / method)
        assert np.array_equal(mine[2], theirs[2])
        assert {k: v for k, v in mine[0].items() if k != "settings"} == \
            {k: v for k, v in theirs[0].items() if k != "settings"} == \
            {k: v for k, v in together[method].items() if k != "settings"}
        assert mine[0]["settings"] == theirs[0]["settings"]
        for a, b in zip(mine[1], theirs[1]):
            assert abs(float(a.pop("class_score")) - float(b.pop("class_score"))) < 1e-6
            assert abs(float(a.pop("predicted_score")) - float(b.pop("predicted_score"))) < 1e-6
            assert a == b
    board = (tmp_path / "together" / "leaderboard.csv").read_text()
    assert all(method in board for method in methods) and (tmp_path / "together" / "index.html").is_file()
    # One method's lost batch is recomputed for that method only, and the run ends as before.
    before = outputs(tmp_path / "together" / "grad_cam")
    (tmp_path / "together" / "grad_cam" / "progress" / "batch-00000001.json").unlink()
    from captum_ext.evaluation._batch import explain_batch

    with mock.patch("captum_ext.evaluation.runner.explain_batch", wraps=explain_batch) as computed:
        evaluate(loaded, methods, DATA, tmp_path / "together", resume=True, **options)
    assert [[run.name for run in call.args[2]] for call in computed.call_args_list] == [["grad_cam"]]
    after = outputs(tmp_path / "together" / "grad_cam")
    assert np.array_equal(before[2], after[2]) and before[1] == after[1] and before[0] == after[0]


@pytest.mark.parametrize("method, problem", [("saliency,saliency", "twice"), ("saliency,bogus", "bogus"),
                                             (["saliency", 3], "sequence of names")])
def test_several_methods_refuse_bad_lists(tmp_path, method, problem):
    with pytest.raises((ValueError, TypeError), match=problem):
        evaluate("zoo:scenes_vgg", method, DATA, tmp_path / "run", show_progress=False)
    with pytest.raises(ValueError, match="grad_cam is not among"):
        evaluate("zoo:scenes_vgg", "saliency,guided_backprop", DATA, tmp_path / "run", layer="features.0",
                 show_progress=False)


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path):
    common = ["evaluate", "--model", "zoo:scenes_vgg", "--method", "integrated_gradients", "--data",
              "scenes:single:40", "--batch-size", "2", "--no-progress"]
    cli(*common, "--out", str(tmp_path / "whole"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen([sys.executable, "-m", "captum_ext", *common, "--out", str(tmp_path / "killed")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / "progress"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(progress.glob("batch-*.json"))) < 3:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    before = {p.name: p.stat().st_mtime_ns for p in progress.glob("batch-*.json")}
    assert 3 <= len(before) < 20, len(before)  # killed mid-way
    assert not (tmp_path / "killed" / "metrics.json").exists()
    again = cli(*common, "--out", str(tmp_path / "killed"), check=False)
    assert again.returncode != 0 and "--resume" in again.stderr  # never silently mixed with earlier work
    cli(*common, "--out", str(tmp_path / "killed"), "--resume")
    after = {p.name: p.stat().st_mtime_ns for p in progress.glob("batch-*.json")}
    assert len(after) == 20
    assert all(after[name] == stamp for name, stamp in before.items())  # recorded batches were not recomputed
    whole, resumed = outputs(tmp_path / "whole"), outputs(tmp_path / "killed")
    assert whole[0] == resumed[0] and whole[1] == resumed[1] and np.array_equal(whole[2], resumed[2])


def test_box_map_fit_in_two_processes_equals_one_and_feeds_evaluate(tmp_path):
    # Every feature block, the class one included, goes through the cross-process sums and into the file. With 24
    # images for 458 features the default penalty (1e-5, the window block's) leaves the solve ill-conditioned, so
    # summation order shows in the weights; a firm penalty compares the sums themselves.
    blocks = ["grid", "multiscale", "moments", "cam", "window", "class"]
    common = ["fit-boxes", "--model", "zoo:scenes_vgg", "--data", "scenes:single:24", "--batch-size", "5",
              "--ridge", "0.1", "--features", *blocks]
    cli(*common, "--out", str(tmp_path / "one.pt"))
    cli(*common, "--out", str(tmp_path / "two.pt"), processes=2)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert int(one["stats.count"]) == int(two["stats.count"]) == 24
    assert one["features"] == two["features"] == blocks and one["num_classes"] == 10
    assert torch.allclose(one["weight"], two["weight"], rtol=1e-9, atol=1e-12)
    assert one["ridge"] == 0.1
    for name in ("stats.xtx", "stats.xty"):
        assert torch.allclose(one[name], two[name], rtol=1e-12, atol=1e-12)
    direct = fit_box_map("zoo:scenes_vgg", "scenes:single:24", tmp_path / "api.pt", batch_size=24, features=blocks,
                         ridge=0.1)
    assert torch.allclose(direct["weight"], one["weight"], rtol=1e-9, atol=1e-12)
    summary = evaluate("zoo:scenes_vgg", "sensitivity", "scenes:single:8", tmp_path / "learned",
                       box_map=tmp_path / "one.pt", show_progress=False)
    plain = evaluate("zoo:scenes_vgg", "sensitivity", "scenes:single:8", tmp_path / "cam", show_progress=False)
    assert summary["corloc"] != plain["corloc"] or summary["settings"]["box_map"] is not None


@pytest.mark.parametrize("method", ["node_backtrack", "class_diff", "guided_backprop", "grad_cam"])
def test_every_method_runs_through_the_python_api_with_a_dataloader_and_a_module(tmp_path, method):
    from torch.utils.data import DataLoader

    from captum_ext import zoo
    from captum_ext.datasets import scenes
    from captum_ext.evaluation.models import Normalized

    model = Normalized(zoo.load("scenes_vgg"), scenes.SCENE_MEAN, scenes.SCENE_STD).eval()
    loader = DataLoader(open_dataset("scenes:single:4"), batch_size=2, collate_fn=list)
    summary = evaluate(model, method, loader, tmp_path / method, batch_size=2, show_progress=False)
    assert summary["n_pairs"] == 4 and summary["settings"]["method"] == method
    assert not model.training


def test_bad_input_gets_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="method"):
        evaluate("zoo:scenes_vgg", "smoothgrad", DATA, tmp_path / "a", show_progress=False)
    with pytest.raises(ValueError, match="categories without a class"):
        evaluate("zoo:scenes_vgg", "saliency", DATA, tmp_path / "b", class_map={"0": 0}, show_progress=False)
    with pytest.raises(ValueError, match="unknown `model`"):
        evaluate("resnet", "saliency", DATA, tmp_path / "c", show_progress=False)
    with pytest.raises(ValueError, match="num_workers"):
        evaluate("zoo:scenes_vgg", "saliency", DATA, tmp_path / "w", num_workers=-1, show_progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything is written
    evaluate("zoo:scenes_vgg", "saliency", "scenes:single:2", tmp_path / "d", show_progress=False)
    with pytest.raises(ValueError, match="other settings"):
        evaluate("zoo:scenes_vgg", "saliency", "scenes:single:2", tmp_path / "d", tolerance=3, resume=True,
                 show_progress=False)
    done = cli("evaluate", "--model", "zoo:scenes_vgg", "--method", "saliency", "--data", "coco:none.json:img",
               "--out", str(tmp_path / "e"), check=False)
    assert done.returncode != 0 and "none.json" in done.stderr


def test_an_undecodable_image_stops_the_run_naming_it_or_is_listed_with_skip_bad(tmp_path):
    from captum_ext.datasets import export_coco, scenes

    annotations, images = export_coco(scenes.make_scenes(6, mode="single", split="test", seed=3), tmp_path / "coco")
    broken = sorted(images.iterdir())[2]
    broken.write_bytes(b"not a png")
    data = f"coco:{annotations}:{images}"
    class_map = json.loads((tmp_path / "coco" / "class_map.json").read_text())
    with pytest.raises(ValueError, match=broken.name):
        evaluate("zoo:scenes_vgg", "saliency", data, tmp_path / "strict", class_map=class_map, show_progress=False)
    summary = evaluate("zoo:scenes_vgg", "saliency", data, tmp_path / "lenient", class_map=class_map,
                       skip_bad=True, show_progress=False)
    strict_pairs = sum(len(e.categories) for e in open_dataset(data).entries)
    assert len(summary["skipped"]) == 1 and broken.name in summary["skipped"][0]
    rows = list(csv.DictReader((tmp_path / "lenient" / "pairs.csv").read_text().splitlines()))
    assert len(rows) == summary["n_pairs"] == strict_pairs - 1  # every pair but the broken image's, and counted so
    assert 2 not in {int(r["image_index"]) for r in rows}


def test_your_own_model_file_and_a_torchvision_model_with_local_weights(tmp_path):
    factory = tmp_path / "my_net.py"
    factory.write_text("from torch import nn\n\n"
                       "def build():\n"
                       "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
                       "                         nn.Flatten(), nn.Linear(8, 10))\n")
    summary = evaluate(f"{factory}:build", "node_backtrack", "scenes:single:4", tmp_path / "own",
                       show_progress=False)
    assert summary["n_pairs"] == 4 and summary["settings"]["model"].endswith("my_net.py:build")

    import torchvision

    from captum_ext.evaluation import load_evaluation_model

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "resnet18.pth")
    loaded = load_evaluation_model("torchvision:resnet18", tmp_path / "resnet18.pth")
    assert len(loaded.class_names) == 10
    summary = evaluate(loaded, "grad_cam", "scenes:single:4", tmp_path / "tv", show_progress=False)
    assert summary["n_pairs"] == 4
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_evaluation_model(f"{factory}:nope")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_evaluation_model(str(tmp_path / "missing.py") + ":build")


def test_voc_trees_and_class_folders_evaluate(tmp_path):
    from PIL import Image

    from captum_ext.datasets import export_voc, scenes

    root = export_voc(scenes.make_scenes(5, mode="multi", split="test", seed=2), tmp_path / "voc")
    class_map = json.loads((root / "class_map.json").read_text())
    summary = evaluate("zoo:scenes_vgg_multilabel", "saliency", f"voc:{root}", tmp_path / "voc-run",
                       class_map=class_map, show_progress=False)
    assert summary["n_images"] == 5 and "maxboxacc_v2" in summary and "pxap" not in summary  # boxes only
    batch = scenes.make_scenes(4, mode="single", split="test", seed=4)
    for i, label in enumerate(batch.labels.tolist()):
        folder = tmp_path / "folder" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((batch.images[i].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(folder / f"{i}.png")
    classes = sorted({int(p.name) for p in (tmp_path / "folder").iterdir()})
    summary = evaluate("zoo:scenes_vgg", "saliency", f"folder:{tmp_path / 'folder'}", tmp_path / "folder-run",
                       class_map={str(k): c for k, c in enumerate(classes)}, show_progress=False)
    assert summary["n_pairs"] == 4 and "pointing_game" not in summary and 0 <= summary["accuracy"] <= 1


def test_a_train_mode_model_is_evaluated_in_eval_mode_and_left_as_found(tmp_path):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10)).train()
    model[0].bias.requires_grad_(False)
    running = model[1].running_mean.clone()
    evaluate(model, "saliency", "scenes:single:4", tmp_path / "run", show_progress=False)
    assert model.training and model[1].training and torch.equal(model[1].running_mean, running)
    assert not model[0].bias.requires_grad and model[0].weight.requires_grad
    with pytest.raises(ValueError, match="method"):  # and after an error, too
        evaluate(model, "nope", "scenes:single:4", tmp_path / "bad", show_progress=False)
    assert model.training and torch.equal(model[1].running_mean, running)
