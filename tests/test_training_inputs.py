"""The training helpers check their arguments before any work, train nothing to NaN without a word, record what
ran, and do not replace files that are not a run's of theirs."""
import json
import math

import pytest
import torch

from captum_ext import ROIAttentionResNet
from captum_ext._utils.training import check_replaceable_run
from captum_ext.datasets import ellipses, scenes
from captum_ext.training import ellipse_regression as er
from captum_ext.training import pretrain_on_digit_crops, roi


@pytest.fixture(scope="module")
def roi_scenes():
    return scenes.make_scenes(8, mode="roi", seed=0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": math.inf}, ValueError, "`lr` must be finite"),  # before: NaN weights, a finite reported loss
    ({"lr": 0.0}, ValueError, "`lr` must be > 0"),
    ({"branch_lr_scale": math.inf}, ValueError, r"`branch_lr_scale` must be a positive number \(finite\)"),
    ({"epochs": True}, TypeError, "`epochs`"),
    ({"batch_size": 2.5}, TypeError, "`batch_size` must be an integer"),
    ({"seed": -1}, ValueError, "`seed` must be >= 0"),
], ids=repr)
def test_roi_fit_refuses_bad_settings_naming_them(roi_scenes, kwargs, error, match):
    net = ROIAttentionResNet(num_classes=10, depth=18)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=match):
        roi.fit(net, roi_scenes, **{"epochs": 1, "batch_size": 4, "show_progress": False, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_roi_labels_outside_the_model_are_refused_not_counted_as_misses(roi_scenes):
    """Before: evaluate gave accuracy 0 for labels the model cannot predict, and fit a bare IndexError."""
    net = ROIAttentionResNet(num_classes=5, depth=18).eval()
    with pytest.raises(ValueError, match=r"holds label 9, outside the model's 5 classes"):
        roi.fit(net, roi_scenes, epochs=1, show_progress=False)
    with pytest.raises(ValueError, match=r"`labels` must be < num_classes \(5\)"):
        roi.evaluate(net, roi_scenes)


def test_roi_train_and_record_checks_before_building_anything(tmp_path):
    with pytest.raises(ValueError, match="`lr` must be > 0"):
        roi.train_and_record(tmp_path / "out", n_train=4, n_test=2, epochs=1, lr=-1.0, show_progress=False)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        roi.train_and_record(tmp_path / "out", n_train=4, n_test=2, epochs=1, batch_size=0, show_progress=False)
    assert not (tmp_path / "out").exists()  # before: an empty folder was left behind


@pytest.mark.parametrize("kwargs, match", [({"lr": math.inf}, "`lr`"), ({"jitter": math.nan}, "`jitter`"),
                                           ({"seed": 1.5}, "`seed`")], ids=repr)
def test_crop_pretraining_refuses_bad_settings(kwargs, match):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 10))
    data = scenes.make_scenes(4, mode="single", split="train", seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        pretrain_on_digit_crops(net, data, steps=1, batch_size=2, show_progress=False, **kwargs)


def test_ellipse_fit_checks_images_on_both_paths_and_leaves_a_refused_model_as_found():
    """Before: the ablation (attention=False) trained on a NaN image to NaN weights, and epochs=0 was refused only
    after the model's target statistics had been replaced."""
    batch = ellipses.make_ellipses(4, dataset=2, seed=0)
    model = er.new_model(2, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="`epochs` must be >= 1"):
        er.fit(model, batch, epochs=0, show_progress=False)
    batch.images[0, 0, 0, 0] = float("nan")
    for attention in (True, False):
        with pytest.raises(ValueError, match="`images`"):
            er.fit(model, batch, epochs=1, attention=attention, show_progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="at least 2 images"):
        er.fit(model, ellipses.make_ellipses(1, dataset=2, seed=0), epochs=1, show_progress=False)


def test_ellipse_train_and_record_refuses_a_non_bool_attention(tmp_path):
    """Before: attention="no" trained with attention and recorded "no"."""
    with pytest.raises(TypeError, match="`attention` must be a bool, got str"):
        er.train_and_record(2, tmp_path, n_train=4, n_test=2, epochs=1, attention="no", show_progress=False)
    with pytest.raises(TypeError, match="`epochs`"):
        er.train_and_record(2, tmp_path, n_train=4, n_test=2, epochs=True, show_progress=False)


def test_a_weights_file_without_its_record_or_a_record_that_is_no_run_is_not_replaced(tmp_path):
    (tmp_path / "run.pt").write_bytes(b"the user's own weights")
    with pytest.raises(ValueError, match=r"run.pt' exists without a run record beside it"):
        check_replaceable_run(tmp_path / "run.json", {"seed": 0})
    (tmp_path / "run.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="is not a run record \\(it holds a JSON list\\)"):
        check_replaceable_run(tmp_path / "run.json", {"seed": 0})
    (tmp_path / "run.json").write_text(json.dumps({"seed": 0}))
    check_replaceable_run(tmp_path / "run.json", {"seed": 0})  # the same run: may be replaced


def test_predictions_and_scores_refuse_empty_data_and_bad_settings(roi_scenes):
    """Before: torch.cat's or range()'s errors, and background_shift returned NaN for a NaN noise scale."""
    from captum_ext.training import ellipse_scoring

    net = ROIAttentionResNet(num_classes=10, depth=18)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        roi.predict(net, roi_scenes, batch_size=0)
    with pytest.raises(ValueError, match="`batch` holds no scene"):
        roi.predict(net, roi_scenes[:0])
    model = er.new_model(2, width=4)
    batch = ellipses.make_ellipses(2, dataset=2, seed=0)
    with pytest.raises(ValueError, match="`images` holds no image"):
        ellipse_scoring.predict(model, batch.images[:0])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        ellipse_scoring.predict(model, batch.images, batch_size=-1)
    for scale in (math.nan, -1.0):
        with pytest.raises(ValueError, match="`noise_scale`"):
            ellipse_scoring.background_shift(model, batch, noise_scale=scale)
    assert math.isfinite(ellipse_scoring.background_shift(model, batch, noise_scale=0.5))


def test_run_records_are_standard_json_with_null_for_empty_bins():
    """Before: an empty ROI-size bin was written as the bare token NaN, which jq, JavaScript and strict parsers
    refuse."""
    import json
    import math

    from captum_ext._utils.training import record_json

    text = record_json({"per_image": [0.5, float("nan")], "nested": {"gap": float("inf"), "n": 3}})

    def refuse(token):
        raise ValueError(token)

    assert json.loads(text, parse_constant=refuse) == {"per_image": [0.5, None], "nested": {"gap": None, "n": 3}}
    assert not math.isnan(json.loads(record_json({"x": 1.0}))["x"])


def test_an_imagenet_backbone_gives_its_features_and_a_new_head(tmp_path):
    """Before: a torchvision ResNet state dict with ImageNet's 1000-class fc was refused (size mismatch), although
    the docs suggest a pretrained backbone."""
    import torch
    import torchvision

    from captum_ext.training import roi

    saved = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(saved, tmp_path / "imagenet.pt")
    net = roi.build_model(18, backbone_weights=tmp_path / "imagenet.pt")
    own = net.backbone.state_dict()
    assert all(torch.equal(own[key], value) for key, value in saved.items() if not key.startswith("fc."))
    assert net.backbone.fc.out_features == 10
