"""SelfSupervisedAttentionRegressor: eq. 1 by hand, noise placement, area term, properties, training, errors."""
import math

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import SelfSupervisedAttentionRegressor
from captum_ext.datasets import ellipses
from captum_ext.training import ellipse_regression as er


class ConstantLogits(nn.Module):
    """Attention net whose logit is the same everywhere (so W is a known constant)."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(logit)))

    def forward(self, images):
        return self.logit.expand(images.shape[0], 1, *images.shape[-2:])


def hand_model(logit: float = 0.0, **kwargs) -> SelfSupervisedAttentionRegressor:
    """F(I) = [sum(I), 2·I[0,0]]: a linear regressor with known weights."""
    regressor = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        regressor[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0]]))
    return SelfSupervisedAttentionRegressor(2, regressor=regressor, attention_net=ConstantLogits(logit), **kwargs)


def small_model(seed: int = 0, **kwargs) -> SelfSupervisedAttentionRegressor:
    torch.manual_seed(seed)
    return SelfSupervisedAttentionRegressor(2, width=8, **kwargs).eval()


def test_loss_parts_by_hand():
    model = hand_model(logit=0.0, area_target=0.8, loss_weights=(1.0, 2.0, 3.0))  # W = R = 0.5 everywhere
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    noise = torch.tensor([[[[2.0, 0.0], [0.0, -2.0]]]])
    target = torch.tensor([[9.0, 1.0]])
    parts = model.loss(image, target, noise=noise, return_parts=True)
    # F(I) = [10, 2]; I' = I + 0.5 N = [[2, 2], [3, 3]] → F(I') = [10, 4]
    supervised = (10 - 9) ** 2 + (2 - 1) ** 2
    noisy = 2.0 * ((10 - 9) ** 2 + (4 - 1) ** 2)
    area = 3.0 * (0.5 - 0.8) ** 2
    # The parts keep their graph (they are meant for backward): detach before reading them as numbers.
    assert math.isclose(float(parts.supervised.detach()), supervised, rel_tol=1e-6)
    assert math.isclose(float(parts.noisy.detach()), noisy, rel_tol=1e-6)
    assert math.isclose(float(parts.area.detach()), area, rel_tol=1e-6)
    assert math.isclose(float(parts.total.detach()), supervised + noisy + area, rel_tol=1e-6)
    assert torch.equal(model.loss(image, target, noise=noise), parts.total)


def test_defaults_and_the_earlier_loss_stay_reachable():
    model = SelfSupervisedAttentionRegressor(2, width=8)
    assert (model.area_target, model.loss_weights, model.noise, model.noise_scale) == (
        0.95, (1.0, 1.0, 10.0), "gaussian", 0.75)
    paper = SelfSupervisedAttentionRegressor(2, width=8, loss_weights=(1, 1, 1), noise_scale=0.5)
    assert paper.loss_weights == (1.0, 1.0, 1.0) and paper.noise_scale == 0.5


def test_target_normalisation_only_rescales_errors():
    model = hand_model(logit=0.0, loss_weights=(1.0, 0.0, 0.0))
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    model.set_target_normalization([1.0, 0.0], [2.0, 4.0])
    params, _ = model(image)
    assert params.tolist() == [[10.0 * 2 + 1, 2.0 * 4]]  # forward returns target units
    target = torch.tensor([[9.0, 1.0]])
    # standardised error: (10 - (9 - 1)/2)² + (2 - 1/4)²
    assert math.isclose(float(model.loss(image, target).detach()), (10 - 4) ** 2 + (2 - 0.25) ** 2, rel_tol=1e-6)


def test_noise_only_touches_background_pixels():
    model = small_model()
    images = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        disturbed, background = model.disturb(images, noise=torch.randn(3, 1, 12, 12))
    changed = (disturbed - images).abs() > 0
    assert bool((changed <= (background > 0)).all())
    # A saturated attention (W = 1 everywhere) protects every pixel: nothing changes.
    protected = hand_model(logit=200.0)
    out, r = protected.disturb(torch.rand(2, 1, 2, 2), noise=torch.randn(2, 1, 2, 2))
    assert bool((r == 0).all())


def test_replacing_background_with_other_images():
    model = hand_model(logit=-200.0, noise="images")  # W = 0: all background
    images = torch.arange(8.0).view(2, 1, 2, 2)
    disturbed, _ = model.disturb(images)
    assert torch.equal(disturbed, images.flip(0))  # with two images the other one is the roll by 1


def test_area_term_is_zero_when_area_matches_the_target():
    s_r = 0.9
    model = hand_model(logit=math.log((1 - s_r) / s_r), area_target=s_r)  # W = 0.1 → R = 0.9
    parts = model.loss(torch.rand(2, 1, 2, 2), torch.zeros(2, 2), return_parts=True)
    assert float(parts.area.detach()) < 1e-12


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(1, 4), h=st.integers(5, 20), w=st.integers(5, 20),
       channels=st.integers(1, 3))
def test_shapes_range_and_batch_invariance(seed, n, h, w, channels):
    model = small_model(seed, in_channels=channels)
    images = torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        params, attention = model(images)
        singles = [model(images[i : i + 1]) for i in range(n)]
    assert params.shape == (n, 2) and attention.shape == (n, 1, h, w)
    assert bool((attention >= 0).all() and (attention <= 1).all())
    torch.testing.assert_close(params, torch.cat([p for p, _ in singles]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention, torch.cat([a for _, a in singles]), atol=1e-5, rtol=1e-5)


def test_gradients_reach_both_parts():
    model = small_model().train()
    model.loss(torch.rand(4, 1, 16, 16), torch.rand(4, 2)).backward()
    for part in (model.regressor, model.attention_net):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)


def test_seeded_training_is_deterministic_and_lowers_the_loss():
    batch = ellipses.make_ellipses(512, dataset=1, seed=0)
    targets = er.regression_targets(batch)
    noise = 0.5 * torch.randn(batch.images.shape, generator=torch.Generator().manual_seed(9))

    def run():
        torch.manual_seed(123)
        model = er.new_model(1, width=8)
        model.set_target_normalization(targets.mean(0), targets.std(0))
        with torch.no_grad():
            before = float(model.eval().loss(batch.images, targets, noise=noise))
        er.fit(model, batch, epochs=6, batch_size=32, seed=5, show_progress=False)
        with torch.no_grad():
            after = float(model.loss(batch.images, targets, noise=noise))
        return model, before, after

    first, before, after = run()
    second, _, _ = run()
    assert after < 0.7 * before, (before, after)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert not first.training  # eval mode after training


def test_state_dict_round_trip(tmp_path):
    model = small_model(3)
    model.set_target_normalization([1.0, 2.0], [3.0, 4.0])
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    restored = SelfSupervisedAttentionRegressor(2, width=8)
    restored.load_state_dict(torch.load(path, weights_only=True))
    restored.eval()
    images = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        for a, b in zip(model(images), restored(images)):
            assert torch.equal(a, b)


def test_captum_attributions_of_one_output_parameter():
    model = small_model(4)
    images = torch.rand(2, 1, 16, 16)
    # Inputs that already require gradients: Captum otherwise sets the flag itself and warns that it did.
    saliency = Saliency(model.regress).attribute(images.clone().requires_grad_(), target=1)
    ig = IntegratedGradients(model.regress).attribute(images, target=0, n_steps=8)
    assert saliency.shape == ig.shape == images.shape
    assert float(saliency.abs().sum()) > 0


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: m(torch.rand(2, 3, 8, 8)), ValueError, "channel"),
        (lambda m: m(torch.rand(2, 8, 8)), ValueError, "N×C×H×W"),
        # forward does not scan for NaN (a device synchronisation); the loss does
        (lambda m: m.loss(torch.full((2, 1, 8, 8), float("nan")), torch.rand(2, 2)), ValueError, "NaN"),
        (lambda m: m(torch.zeros(1, 1, 8, 8, dtype=torch.long)), TypeError, "floating-point"),
        (lambda m: m.loss(torch.rand(2, 1, 8, 8), torch.rand(2, 3)), ValueError, "out_features"),
        (lambda m: m.loss(torch.rand(2, 1, 8, 8), torch.rand(3, 2)), ValueError, "one row per image"),
        (lambda m: m.loss(torch.rand(2, 1, 8, 8), torch.rand(2, 2), noise=torch.rand(2, 1, 4, 4)), ValueError,
         "noise"),
        (lambda m: m.set_target_normalization([0.0, 0.0], [1.0, 0.0]), ValueError, "positive"),
    ],
)
def test_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call(small_model())


@pytest.mark.parametrize(
    "kwargs, words",
    [({"area_target": 1.0}, "area_target"), ({"area_target": 0.0}, "area_target"),
     ({"loss_weights": (1.0, 1.0)}, "loss_weights"), ({"loss_weights": (1.0, -1.0, 1.0)}, "loss_weights"),
     ({"noise": "salt"}, "noise"), ({"noise_scale": 0.0}, "noise_scale"), ({"out_features": 0}, "out_features")],
)
def test_bad_constructor_arguments(kwargs, words):
    args = {"out_features": 2, **kwargs}
    with pytest.raises(ValueError, match=words):
        SelfSupervisedAttentionRegressor(**args)


def test_ellipse_helpers_score_exact_predictions_as_perfect():
    batch = ellipses.make_ellipses(16, dataset=1, seed=2)
    assert float(er.errors(er.regression_targets(batch), batch).max()) < 1e-3
    batch2 = ellipses.make_ellipses(16, dataset=2, seed=2)
    assert float(er.errors(er.regression_targets(batch2), batch2).max()) == 0.0
    assert bool((er.attention_iou(batch2.masks.float(), batch2.masks) == 1).all())
    assert bool((er.attention_iou(1 - batch2.masks.float(), batch2.masks) == 0).all())


@pytest.mark.parametrize("call", [lambda: er.load_pretrained(4), lambda: er.new_model(0), lambda: er.decode(
    torch.zeros(1, 2), 5)])
def test_ellipse_helpers_reject_unknown_datasets(call):
    with pytest.raises(ValueError, match="dataset"):
        call()
