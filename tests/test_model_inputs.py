"""Input checks of the two trainable models: what the user-style sweep found accepted silently or failing deep
inside torch (custom regressor shapes, state dicts of other settings, depth / dtype / width / normalisation)."""
import math

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from captum_ext import ROIAttentionResNet, SelfSupervisedAttentionRegressor

# ----------------------------------------------------------------------------------------------------------------
# SelfSupervisedAttentionRegressor: a custom regressor must return N×out_features


class _MeanOutput(nn.Module):
    """A regressor of the wrong shape: N×1 (keep=True) or 1-D N, whatever out_features is."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = images.mean(dim=(1, 2, 3))
        return out[:, None] if self.keep else out


class _Linear(nn.Module):
    """A regressor of the right shape: N×out_features."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(16 * 16, out_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.flatten(1))


@pytest.mark.parametrize("keep, n", [(True, 3), (False, 2)])
def test_custom_regressor_of_the_wrong_shape_is_refused_by_regress_and_loss(keep, n):
    model = SelfSupervisedAttentionRegressor(out_features=2, width=4, regressor=_MeanOutput(keep))
    images = torch.rand(n, 1, 16, 16)
    with pytest.raises(ValueError, match=r"`regressor`.*N×2.*got shape"):
        model.regress(images)
    with pytest.raises(ValueError, match=r"`regressor`.*N×2.*got shape"):
        model.loss(images, torch.rand(n, 2))
    with pytest.raises(ValueError, match=r"`regressor`"):
        model(images)


def test_one_output_regressor_returning_1d_is_refused():
    # out_features=1 with a 1-D output: the loss broadcast N predictions against N×1 targets into N×N.
    model = SelfSupervisedAttentionRegressor(out_features=1, width=4, regressor=_MeanOutput(keep=False))
    with pytest.raises(ValueError, match=r"`regressor`.*N×1.*6×1 for the loss.s 6 clean and disturbed images.*"
                                         r"got shape \(6,\)"):
        model.loss(torch.rand(3, 1, 16, 16), torch.rand(3))


def test_custom_regressor_of_the_right_shape_still_works():
    torch.manual_seed(0)
    model = SelfSupervisedAttentionRegressor(out_features=2, width=4, regressor=_Linear(2))
    images = torch.rand(3, 1, 16, 16)
    assert model.regress(images).shape == (3, 2)
    model.loss(images, torch.rand(3, 2)).backward()
    assert model.regressor.fc.weight.grad is not None


# ----------------------------------------------------------------------------------------------------------------
# ROIAttentionResNet: the state dict records merge / mode / hard


def _trained(**kwargs) -> ROIAttentionResNet:
    torch.manual_seed(0)
    net = ROIAttentionResNet(4, depth=18, **kwargs).eval()
    with torch.no_grad():  # a trained-looking branch, so that mode matters
        for branch in net.branches.values():
            branch.weight.normal_(0, 0.1)
    return net


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=gen), (torch.rand(2, 1, 32, 32, generator=gen) > 0.5).float()


@pytest.mark.parametrize("saved, loaded, words", [
    (dict(merge="all", mode="add"), dict(merge="all", mode="mul"), r"mode='add'.*mode='mul'"),
    (dict(hard="image"), dict(hard="first"), r"hard='image'.*hard='first'"),
    (dict(merge="first"), dict(hard="first"), r"hard=None.*hard='first'"),
])
@pytest.mark.parametrize("strict", [True, False])
def test_state_dict_of_other_settings_is_refused_and_leaves_the_model_unchanged(saved, loaded, words, strict):
    source, target = _trained(**saved), ROIAttentionResNet(4, depth=18, **loaded).eval()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=words):
        target.load_state_dict(source.state_dict(), strict=strict)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_state_dict_of_another_merge_point_is_refused():
    with pytest.raises((ValueError, RuntimeError), match="merge|branches"):
        ROIAttentionResNet(4, depth=18, merge="layer2").load_state_dict(_trained(merge="layer1").state_dict())
    with pytest.raises(ValueError, match=r"merge='layer1'.*merge='layer2'"):  # also when keys are not checked
        ROIAttentionResNet(4, depth=18, merge="layer2").load_state_dict(_trained(merge="layer1").state_dict(),
                                                                        strict=False)


def test_hard_baselines_ignore_merge_and_mode_which_they_do_not_use():
    source = _trained(hard="image", mode="add")
    target = ROIAttentionResNet(4, depth=18, hard="image", mode="mul", merge="layer3").eval()
    target.load_state_dict(source.state_dict())
    images, masks = _inputs()
    with torch.no_grad():
        assert torch.equal(target(images, masks), source(images, masks))


def test_same_settings_round_trip_through_weights_only_and_float16(tmp_path):
    source = _trained(merge="all", mode="mul")
    state = source.state_dict()
    assert state["_extra_state"].dtype == torch.uint8
    # The usual state-dict handling works on every entry: clone, and casting the floating ones (as the zoo does).
    half = {k: v.clone().half() if v.is_floating_point() else v.clone() for k, v in state.items()}
    torch.save(half, tmp_path / "roi.pt")
    restored = ROIAttentionResNet(4, depth=18, merge="all", mode="mul").eval()
    restored.load_state_dict(torch.load(tmp_path / "roi.pt", weights_only=True))
    restored_exact = ROIAttentionResNet(4, depth=18, merge="all", mode="mul").eval()
    restored_exact.load_state_dict(state)
    images, masks = _inputs()
    with torch.no_grad():
        assert torch.equal(restored_exact(images, masks), source(images, masks))
        torch.testing.assert_close(restored(images, masks), source(images, masks), atol=0.05, rtol=0.05)


def test_old_state_dict_without_the_record_still_loads_strictly():
    source = _trained(merge="layer3", mode="add")
    old = {k: v for k, v in source.state_dict().items() if k != "_extra_state"}
    target = ROIAttentionResNet(4, depth=18, merge="layer3", mode="add").eval()
    assert target.load_state_dict(old, strict=True).missing_keys == []
    images, masks = _inputs()
    with torch.no_grad():
        assert torch.equal(target(images, masks), source(images, masks))
    with pytest.raises(RuntimeError, match="Missing key"):  # other missing keys are still reported
        target.load_state_dict({k: v for k, v in old.items() if k != "branches.layer3.weight"})


def test_nested_model_checks_its_record_under_its_prefix():
    outer_a, outer_b = nn.Sequential(_trained(mode="add")), nn.Sequential(ROIAttentionResNet(4, depth=18, mode="mul"))
    assert "0._extra_state" in outer_a.state_dict()
    with pytest.raises(ValueError, match="mode='add'"):
        outer_b.load_state_dict(outer_a.state_dict())


def test_corrupt_record_is_refused_naming_the_entry():
    state = _trained().state_dict()
    state["_extra_state"] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    with pytest.raises(ValueError, match="_extra_state"):
        ROIAttentionResNet(4, depth=18).load_state_dict(state)


def test_zoo_roi_weights_still_load():
    from captum_ext import zoo

    model = zoo.load("roi_attention_resnet18")
    assert isinstance(model, ROIAttentionResNet) and not model.training
    raw = torch.load(zoo.weights_path("roi_attention_resnet18"), map_location="cpu", weights_only=True)
    assert "_extra_state" not in raw  # the shipped file predates the record
    state = model.state_dict()
    assert all(torch.equal(state[k], v.float() if v.is_floating_point() else v) for k, v in raw.items())


# ----------------------------------------------------------------------------------------------------------------
# ROIAttentionResNet: depth and image dtype


@pytest.mark.parametrize("depth", [18.0, True, "18"])
def test_roi_depth_must_be_an_int(depth):
    with pytest.raises(TypeError, match=r"`depth` must be an int"):
        ROIAttentionResNet(4, depth=depth)


def test_roi_depth_accepts_numpy_ints_and_refuses_unsupported_ones():
    assert ROIAttentionResNet(4, depth=np.int64(18)).backbone.layer1[0].conv1.out_channels == 64
    with pytest.raises(ValueError, match=r"`depth` must be one of"):
        ROIAttentionResNet(4, depth=19)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_roi_integer_images_are_refused_naming_images(dtype):
    net = ROIAttentionResNet(4, depth=18).eval()
    with pytest.raises(TypeError, match=r"`images` must be a floating-point tensor.*" + str(dtype)):
        net(torch.zeros(1, 3, 32, 32, dtype=dtype), torch.ones(1, 1, 32, 32))


def test_roi_images_of_another_float_dtype_are_refused_naming_both():
    net = ROIAttentionResNet(4, depth=18).eval()
    with pytest.raises(TypeError, match=r"`images` must have the model's dtype torch.float32, got torch.float64"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.float64), torch.ones(1, 1, 32, 32))
    double = ROIAttentionResNet(4, depth=18).double().eval()  # a converted model takes images of its dtype
    assert double(torch.zeros(1, 3, 32, 32, dtype=torch.float64), torch.ones(1, 1, 32, 32)).dtype == torch.float64


def test_roi_integer_masks_are_still_accepted():
    net = ROIAttentionResNet(4, depth=18).eval()
    images, masks = _inputs()
    with torch.no_grad():
        assert torch.equal(net(images, masks.to(torch.uint8)), net(images, masks))


# ----------------------------------------------------------------------------------------------------------------
# SelfSupervisedAttentionRegressor: normalisation, loss weights, noise, width, Captum


@pytest.mark.parametrize("scale", [[math.inf, 1.0], [math.nan, 1.0], [0.0, 1.0], [-1.0, 1.0]])
def test_non_finite_or_non_positive_scale_is_refused(scale):
    model = SelfSupervisedAttentionRegressor(2, width=4)
    with pytest.raises(ValueError, match=r"`scale` must be positive and finite"):
        model.set_target_normalization([0.0, 0.0], scale)
    assert torch.equal(model.target_scale, torch.ones(2))


def test_non_finite_mean_is_refused_naming_mean():
    with pytest.raises(ValueError, match=r"`mean` must be finite"):
        SelfSupervisedAttentionRegressor(2, width=4).set_target_normalization([math.inf, 0.0], [1.0, 1.0])


@pytest.mark.parametrize("weights", [(1, math.inf, 1), (1, 1, -math.inf), (math.nan, 1, 1)])
def test_non_finite_loss_weights_are_refused(weights):
    with pytest.raises(ValueError, match=r"`loss_weights` must be three finite non-negative"):
        SelfSupervisedAttentionRegressor(2, width=4, loss_weights=weights)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_noise_is_refused_by_the_loss(bad):
    model = SelfSupervisedAttentionRegressor(2, width=4)
    images = torch.rand(2, 1, 16, 16)
    noise = torch.zeros_like(images)
    noise[0, 0, 3, 3] = bad
    with pytest.raises(ValueError, match=r"`noise` contains NaN or inf"):
        model.loss(images, torch.rand(2, 2), noise=noise)
    assert torch.isfinite(model.loss(images, torch.rand(2, 2), noise=torch.zeros_like(images)))


def test_width_that_leaves_the_attention_net_no_channels_is_refused():
    with pytest.raises(ValueError, match=r"`width` must be at least 2"):
        SelfSupervisedAttentionRegressor(2, width=1)
    # With your own attention net the width only sizes the regressor: 1 is enough.
    own = SelfSupervisedAttentionRegressor(2, width=1, attention_net=nn.Conv2d(1, 1, 1))
    params, attention = own(torch.rand(2, 1, 16, 16))
    assert params.shape == (2, 2) and attention.shape == (2, 1, 16, 16)
    assert SelfSupervisedAttentionRegressor(2, width=2)(torch.rand(2, 1, 16, 16))[0].shape == (2, 2)


def test_forward_docstring_sends_captum_to_regress_which_works():
    doc = SelfSupervisedAttentionRegressor.forward.__doc__
    assert "IntegratedGradients(model.regress)" in doc and "Captum and the graph-walking" not in doc
    model = SelfSupervisedAttentionRegressor(2, width=4).eval()
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(AttributeError):  # Captum itself cannot take the tuple forward returns
        IntegratedGradients(model).attribute(images, target=0, n_steps=2)
    assert IntegratedGradients(model.regress).attribute(images, target=0, n_steps=2).shape == images.shape
