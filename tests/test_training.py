"""captum_ext.training: the harnesses moved out of captum_ext.models, the shared crop pretraining, the zoo's scene
classifier recipe, ROI train-and-record, and the deprecated aliases of the old modules."""
import importlib
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from captum_ext import zoo
from captum_ext.datasets import ellipses, scenes
from captum_ext.training import crops, ellipse_regression, pretrain_on_digit_crops, roi, scene_classifiers


# ------------------------------------------------------------------------------------------------------------------
# Deprecated aliases
# ------------------------------------------------------------------------------------------------------------------


def test_old_ellipse_regression_import_still_works_and_warns():
    with pytest.warns(DeprecationWarning, match="captum_ext.training.ellipse_regression.load_pretrained"):
        from captum_ext.models.ellipse_regression import load_pretrained
    assert load_pretrained is ellipse_regression.load_pretrained
    old = importlib.import_module("captum_ext.models.ellipse_regression")
    with pytest.warns(DeprecationWarning, match="next release"):
        assert old.evaluate is ellipse_regression.evaluate
    with pytest.warns(DeprecationWarning, match="captum_ext.zoo.WEIGHTS_DIR"):
        assert old.WEIGHTS_DIR == zoo.WEIGHTS_DIR  # the weights moved to the zoo
    with pytest.raises(AttributeError, match="no_such_name"):
        old.no_such_name
    assert "train_and_record" in dir(old)


def test_old_roi_training_import_still_works_and_warns():
    import captum_ext.models

    # Another test may have imported the alias already, which makes it a plain attribute of the package.
    sys.modules.pop("captum_ext.models.roi_training", None)
    vars(captum_ext.models).pop("roi_training", None)
    with pytest.warns(DeprecationWarning, match="captum_ext.models.roi_training is deprecated"):
        old = captum_ext.models.roi_training  # attribute access on the package, as before
    with pytest.warns(DeprecationWarning, match="captum_ext.training.roi.fit"):
        assert old.fit is roi.fit
    with pytest.raises(AttributeError):
        captum_ext.models.not_a_module


def test_new_locations_import_without_warnings():
    # A fresh interpreter: nothing of captum_ext imported yet, so every module-level warning would show.
    code = ("import warnings, captum.attr, torchvision; warnings.simplefilter('error'); "
            "import captum_ext, captum_ext.cli, captum_ext.training.ellipse_regression, captum_ext.training.roi; "
            "from captum_ext.models import ROIAttentionResNet; print(sorted(captum_ext.models.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['LossParts', 'ROIAttentionResNet', 'SelfSupervisedAttentionRegressor']"


# ------------------------------------------------------------------------------------------------------------------
# Ellipse regression: a thin layer over the zoo
# ------------------------------------------------------------------------------------------------------------------


def test_ellipse_weights_and_records_come_from_the_zoo():
    for dataset in ellipse_regression.DATASETS:
        name = f"ellipses_ds{dataset}"
        assert ellipse_regression.weights_path(dataset) == zoo.weights_path(name)
        assert ellipse_regression.weights_path(dataset).parent == zoo.WEIGHTS_DIR
        assert ellipse_regression.training_record(dataset) == zoo.info(name)
    torch.manual_seed(0)
    built = ellipse_regression.new_model(3, width=8)
    torch.manual_seed(0)
    direct = zoo.ellipses.ellipse_regressor(3, width=8)
    assert built.area_target == pytest.approx(0.9) and built.loss_weights == (1.0, 1.0, 10.0)
    for (key, a), (_, b) in zip(built.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), key
    for bad in (0, 4, True, "1"):
        with pytest.raises(ValueError, match="`dataset`"):
            ellipse_regression.load_pretrained(bad)


def test_ellipse_train_and_record_writes_what_the_zoo_loads(tmp_path):
    record = ellipse_regression.train_and_record(2, tmp_path, n_train=64, n_test=16, epochs=1, show_progress=False,
                                                 width=8)
    assert json.loads((tmp_path / "ellipses_ds2.json").read_text()) == record
    assert record["model_kwargs"] == {"width": 8, "area_target": 0.9}
    assert record["loss_settings"] == {"area_target": 0.9, "loss_weights": [1.0, 1.0, 10.0], "noise": "gaussian",
                                       "noise_scale": 0.75}
    assert record["command"] == ("captum-ext train-regressor --dataset 2 --n-train 64 --n-test 16 --epochs 1 "
                                 "--seed 0 --width 8")
    assert len(record["load_average"]) == 2
    model = ellipse_regression.new_model(2, **record["model_kwargs"])
    model.load_state_dict(torch.load(tmp_path / "ellipses_ds2.pt", weights_only=True))
    test = ellipses.make_ellipses(16, dataset=2, seed=1)
    assert ellipse_regression.evaluate(model, test) == pytest.approx(record["test"])


# ------------------------------------------------------------------------------------------------------------------
# Digit-crop pretraining
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crop_scenes():
    return scenes.make_scenes(48, mode="single", split="train", seed=3)


def test_step_schedule_is_the_documented_recipe(crop_scenes):
    # Reference: crops with jitter from a generator seeded `seed`, then batches drawn with replacement from the same
    # generator, AdamW (weight decay 1e-4) at a constant rate. The function must match it exactly.
    def trunk():
        torch.manual_seed(5)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())

    trunk_a = trunk()
    history = pretrain_on_digit_crops(trunk_a, crop_scenes, steps=4, batch_size=8, lr=1e-2, seed=2,
                                      temporary_head=True, show_progress=False)
    trunk_b = trunk()
    generator = torch.Generator().manual_seed(2)
    inputs = scenes.digit_crops(crop_scenes, jitter=4.0, generator=generator)
    net = crops.with_crop_head(trunk_b, inputs[:2])
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
    net.train()
    losses = []
    for _ in range(4):
        index = torch.randint(0, len(crop_scenes), (8,), generator=generator)
        loss = F.cross_entropy(net(inputs[index]), crop_scenes.labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert [step["total"] for step in history] == losses
    for (key, a), (_, b) in zip(trunk_a.state_dict().items(), trunk_b.state_dict().items()):
        assert torch.equal(a, b), key
    expected = losses[0]
    for value in losses[1:]:
        expected = 0.95 * expected + 0.05 * value
    assert crops.smoothed_loss(history) == expected


def test_epoch_schedule_trains_a_whole_classifier(crop_scenes):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=scenes.NUM_CLASSES)
    before = net.conv1.weight.detach().clone()
    history = pretrain_on_digit_crops(net, crop_scenes, epochs=2, batch_size=16, show_progress=False)
    assert len(history) == 2 and all(set(epoch) == {"total"} for epoch in history)
    assert not net.training and not torch.equal(before, net.conv1.weight)


@pytest.mark.parametrize("kwargs, error, words", [
    ({}, ValueError, "exactly one"), ({"epochs": 1, "steps": 1}, ValueError, "exactly one"),
    ({"steps": 0}, ValueError, "`steps`"), ({"epochs": 1, "batch_size": 0}, ValueError, "`batch_size`"),
])
def test_crop_pretraining_rejects_bad_arguments(crop_scenes, kwargs, error, words):
    with pytest.raises(error, match=words):
        pretrain_on_digit_crops(nn.Identity(), crop_scenes, **kwargs)
    with pytest.raises(TypeError, match="`batch`"):
        pretrain_on_digit_crops(nn.Identity(), crop_scenes.images, steps=1)


# ------------------------------------------------------------------------------------------------------------------
# Zoo scene classifiers and ROI runs
# ------------------------------------------------------------------------------------------------------------------


def test_scene_classifier_recipe_writes_a_zoo_compatible_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scene_classifiers, "PRETRAIN_SCENES", 64)  # the recipe's 8,000 crop scenes are for real runs
    monkeypatch.setattr(scene_classifiers, "HELD_OUT_SCENES", 100)
    record = scene_classifiers.train_scene_classifier("scenes_vgg_multilabel", tmp_path, epochs=1, per_epoch=32,
                                                      batch_size=16, pretrain_steps=2, show_progress=False)
    assert json.loads((tmp_path / "scenes_vgg_multilabel.json").read_text()) == record
    assert record["held_out"]["n"] == 100 and set(record["held_out"]) >= {"mAP", "exact_set_accuracy"}
    assert record["training"]["digit_crop_pretraining_steps"] == 2 and len(record["history"]) == 1
    state = torch.load(tmp_path / "scenes_vgg_multilabel.pt", weights_only=True)
    shipped = zoo.ZOO["scenes_vgg_multilabel"].build()
    shipped.load_state_dict(state)  # BatchNorm folded: the plain zoo architecture's keys
    assert not any(isinstance(m, nn.BatchNorm2d) for m in shipped.modules())
    assert "digit-crop pretraining: 2 steps" in capsys.readouterr().out
    # The command reproduces the run: before, a non-default batch size and rate were left out of it.
    assert "--batch-size 16 --lr 0.002 --pretrain-steps 2" in record["command"]
    for bad, match in (({"lr": -0.5}, "`lr` must be > 0"), ({"pretrain_steps": -1}, "`pretrain_steps`"),
                       ({"seed": 1.5}, "`seed`")):
        with pytest.raises((ValueError, TypeError), match=match):  # before any work
            scene_classifiers.train_scene_classifier("scenes_vgg", tmp_path, **bad)
    with pytest.raises(ValueError, match="`name`"):
        scene_classifiers.train_scene_classifier("ellipses_ds1", tmp_path)
    with pytest.raises(ValueError, match="`per_epoch`"):
        scene_classifiers.train_scene_classifier("scenes_vgg", tmp_path, per_epoch=0)


def test_roi_build_model_and_bad_arguments(tmp_path):
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None, num_classes=10)
    torch.save(backbone.state_dict(), tmp_path / "backbone.pt")
    model = roi.build_model(18, "layer3", "mul", backbone_weights=tmp_path / "backbone.pt")
    assert torch.equal(model.backbone.fc.weight, backbone.fc.weight) and list(model.branches) == ["layer3"]
    assert roi.variant_name("layer3", "mul") == "roi_layer3_mul" and roi.variant_name(hard="image") == "roi_image"
    with pytest.raises(ValueError, match="`depth`"):
        roi.build_model(20)
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        roi.build_model(backbone_weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="`n_train`"):
        roi.train_and_record(tmp_path, n_train=0)


def test_train_epochs_lr_scales_set_one_peak_rate_per_parameter_group():
    from captum_ext._utils.training import train_epochs

    net = nn.ParameterDict({"body": nn.Parameter(torch.zeros(3)), "head": nn.Parameter(torch.zeros(3))})

    def loss(index):  # independent parts: each parameter's step depends only on its own rate
        return {"total": ((net["body"] - 1) ** 2).sum() + ((net["head"] - 1) ** 2).sum()}

    train_epochs(net, 4, loss, 2, batch_size=2, lr=1e-2, weight_decay=0.0, show_progress=False,
                 lr_scales={"head": 10.0})
    # AdamW steps of a constant-sign gradient are about the rate: "head" moves ten times as far as "body".
    head, body = float(net["head"].detach()[0]), float(net["body"].detach()[0])
    assert head == pytest.approx(10 * body, rel=1e-3)
    with pytest.raises(ValueError, match="match no parameter"):
        train_epochs(net, 4, loss, 1, show_progress=False, lr_scales={"neck": 10.0})
    with pytest.raises(ValueError, match="positive numbers"):
        train_epochs(net, 4, loss, 1, show_progress=False, lr_scales={"head": 0.0})
