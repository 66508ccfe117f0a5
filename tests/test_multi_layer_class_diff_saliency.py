"""MultiLayerClassDiffSaliency: hand-checked maps, batched = per-class gradients, guided ReLUs, properties, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import MultiLayerClassDiffSaliency, zoo
from captum_ext._utils.guided import guided_relu


class LinearReadout(nn.Module):
    """A 1×1 conv layer followed by a linear readout: ∂y_c/∂A = W_c exactly, whatever the input."""

    def __init__(self, readout: torch.Tensor) -> None:
        super().__init__()
        self.layer = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2 * 3 * 3, readout.shape[0], bias=False)
        with torch.no_grad():
            self.layer.weight.fill_(1.0)
            self.fc.weight.copy_(readout)

    def forward(self, x):
        return self.fc(torch.flatten(self.layer(x), 1))


def readout_weights() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 18)


def expected_map(m: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    return torch.tanh(alpha * m / m.max())


def layer_saliency(weights: torch.Tensor, c: int) -> torch.Tensor:
    return weights[c].view(2, 3, 3).abs().amax(0)  # max over channels of |∂y_c/∂A|


def test_single_class_equals_tanh_normalised_max_abs_layer_gradient():
    weights = readout_weights()
    model = LinearReadout(weights).eval()
    ms = MultiLayerClassDiffSaliency(model, [model.layer])
    out = ms.attribute(torch.randn(1, 1, 3, 3), target=1, candidates=[1])
    torch.testing.assert_close(out[0, 0], expected_map(layer_saliency(weights, 1)))


def test_subtraction_by_hand_uses_the_batched_gradients_of_every_candidate():
    weights = readout_weights()
    model = LinearReadout(weights).eval()
    ms = MultiLayerClassDiffSaliency(model, [model.layer])
    out = ms.attribute(torch.randn(1, 1, 3, 3), target=0, candidates=[0, 1, 2])
    m0, m1, m2 = (layer_saliency(weights, c) for c in range(3))
    diff = (m0 - m1).clamp_min(0) + (m0 - m2).clamp_min(0)
    torch.testing.assert_close(out[0, 0], expected_map(diff))
    # class-order invariance of the candidate list
    torch.testing.assert_close(ms.attribute(torch.randn(1, 1, 3, 3), target=0, candidates=[2, 0, 1]), out)


class TwoReLUNet(nn.Module):
    #: The two ReLUs: module (one module called twice), functional, and in-place functional forms.
    FORMS = {"module": None, "functional": (F.relu, torch.relu), "in-place": (torch.relu_, F.relu_)}

    def __init__(self, form: str) -> None:
        super().__init__()
        self.functions = self.FORMS[form]
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        first, second = self.functions or (self.relu, self.relu)  # the module is reused
        x = first(self.conv1(x))
        x = second(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("form", ["functional", "in-place"])
def test_guided_backprop_covers_functional_and_reused_relus(form):
    """Before: the in-place functional forms (``torch.relu_``, ``F.relu_``) kept the plain gradient."""
    torch.manual_seed(1)
    module_net = TwoReLUNet("module").eval()
    functional_net = TwoReLUNet(form).eval()
    functional_net.load_state_dict(module_net.state_dict())
    x = torch.randn(2, 3, 8, 8)
    a = MultiLayerClassDiffSaliency(module_net, [module_net.conv1])
    b = MultiLayerClassDiffSaliency(functional_net, [functional_net.conv1])
    assert a.guided_relu_count == b.guided_relu_count == 2
    guided_a = a.attribute(x, target=3, candidates=[3])
    torch.testing.assert_close(guided_a, b.attribute(x, target=3, candidates=[3]))
    plain = a.attribute(x, target=3, candidates=[3], guided=False)
    assert not torch.allclose(guided_a, plain)


def test_guided_relu_gradient():
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    y = guided_relu(x)
    (g,) = torch.autograd.grad(y, x, grad_outputs=torch.tensor([5.0, -4.0, 1.0]))
    assert y.tolist() == [0.0, 2.0, 3.0] and g.tolist() == [0.0, 0.0, 1.0]


def random_fcn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(), nn.Conv2d(8, 5, 1), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    ).eval()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), size=st.integers(6, 16),
       scales=st.sampled_from([(1.0,), (1.0, 1.5), (0.8, 1.2)]))
def test_properties(seed, n, size, scales):
    model = random_fcn(seed)
    flags = [(m, m.training) for m in model.modules()]
    ms = MultiLayerClassDiffSaliency(model, [model[0], model[3]])
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    target = [int(t) for t in torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(seed))]
    maps, details = ms.attribute(x, target=target, scales=scales, min_candidates=3, return_details=True)
    assert maps.shape == (n, 1, size, size)
    assert bool((maps >= 0).all() and (maps <= 1).all())
    assert details["layer_maps"].shape == (len(scales), 2, n, 1, size, size)
    assert all(c[0] == t and len(c) >= 3 for c, t in zip(details["candidates"], target))
    # subtraction never adds evidence: each eq. 2 term max(M_c - M_c', 0) <= M_c, so the sum over the K-1 others is
    # at most (K-1)·M_c, and the support of every normalised layer map lies inside the target's raw support
    raw, subtracted = details["class_maps"][:, :, 0], details["subtracted_maps"]
    others = torch.tensor([len(c) - 1 for c in details["candidates"]], dtype=raw.dtype).view(1, 1, n, 1, 1, 1)
    assert bool((subtracted <= others * raw * (1 + 1e-6)).all())
    assert bool((details["layer_maps"][raw == 0] == 0).all())
    singles = torch.cat([ms.attribute(x[i : i + 1], target=target[i], scales=scales, min_candidates=3)
                         for i in range(n)])
    torch.testing.assert_close(maps, singles, atol=1e-5, rtol=1e-4)  # batch invariance
    alone = ms.attribute(x, target=target, candidates=[[t] for t in target], scales=scales)
    unsubtracted = ms.attribute(x, target=target, candidates=[[t] for t in target], scales=scales, subtract=False)
    torch.testing.assert_close(alone, unsubtracted)  # a single candidate means no subtraction
    _, alone_details = ms.attribute(x, target=target, candidates=[[t] for t in target], scales=scales,
                                    return_details=True)
    torch.testing.assert_close(alone_details["subtracted_maps"], alone_details["class_maps"][:, :, 0])
    assert [(m, m.training) for m in model.modules()] == flags
    assert all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0 for m in model.modules())


def test_state_restored_after_an_exception():
    model = random_fcn(0)
    ms = MultiLayerClassDiffSaliency(model, [model[0]])
    model[3].weight.requires_grad_(False)

    def explode(*_):
        raise RuntimeError("injected")

    handle = model[5].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            ms.attribute(torch.randn(1, 3, 8, 8), target=0)
    finally:
        handle.remove()
    assert not model.training and not model[3].weight.requires_grad and model[0].weight.requires_grad


def test_zoo_multilabel_scene():
    from captum_ext.datasets import scenes

    model = zoo.load("scenes_vgg_multilabel")
    batch = scenes.make_scenes(4, mode="multi", split="test", seed=2)
    ms = MultiLayerClassDiffSaliency(model, [model.features[10], model.features[12]])
    maps = ms.attribute(scenes.normalize(batch.images), target=batch.object_labels[:, 0].tolist(),
                        scales=(1.0, 1.2))
    assert maps.shape == (4, 1, 64, 64) and bool((maps.flatten(1).amax(1) > 0.5).all())


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, x: MultiLayerClassDiffSaliency(m, [nn.Conv2d(1, 1, 1)]), ValueError, "not a submodule"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, []), ValueError, "non-empty"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, [m[0]]).attribute(x, target=0, candidates=[1, 2]),
         ValueError, "not among"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, [m[0]]).attribute(x * float("nan"), target=0), ValueError,
         "NaN"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, [m[0]]).attribute(x, target=9), ValueError, "out of range"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, [m[0]]).attribute(x, target=0, scales=(0.0,)), ValueError,
         "scales"),
        (lambda m, x: MultiLayerClassDiffSaliency(m, [m[0]]).attribute(x, target=0, alpha=-1.0), ValueError,
         "alpha"),
    ],
)
def test_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call(random_fcn(0), torch.randn(2, 3, 8, 8))


def test_a_layer_without_feature_maps_is_refused_naming_it():
    """Before: an ``N×C×L`` layer output skipped the channel maximum and its ``C×L`` gradient was resized as if it
    were an image."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.flat, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(2), nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.flat(torch.relu(self.conv(x))).mean(2))

    torch.manual_seed(0)
    model = Tokens().eval()
    with pytest.raises(ValueError, match=r"`layers\[1\]` must output N×C×H×W feature maps, got \(2, 8, 64\)"):
        MultiLayerClassDiffSaliency(model, [model.conv, model.flat]).attribute(torch.randn(2, 3, 8, 8), target=0)
    assert MultiLayerClassDiffSaliency(model, [model.conv]).attribute(torch.randn(2, 3, 8, 8)).shape == (2, 1, 8, 8)


def test_scales_on_a_fixed_size_model_raise_a_clear_error():
    model = zoo.load("scenes_vgg")  # flatten + Linear(4096, …): 64×64 only
    ms = MultiLayerClassDiffSaliency(model, [model.features[10]], multi_label=False)
    x = torch.randn(1, 3, 64, 64)
    assert ms.attribute(x, target=0).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match=r"failed on the inputs scaled by 1.2 \(77×77\): .*mat1 and mat2 shapes "
                                         r"cannot be multiplied.*If it needs one input size"):
        ms.attribute(x, target=0, scales=(1.0, 1.2))
    assert math.isfinite(float(ms.attribute(x, target=0).sum()))


def test_an_error_at_another_scale_is_passed_on_in_the_models_own_words():
    """Before: any error at a scale other than 1 was said to be the model not accepting the size."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    calls = []

    def fail_on_the_second_call(module, inputs, output):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of resources (simulated)")

    handle = model[0].register_forward_hook(fail_on_the_second_call)
    try:
        with pytest.raises(ValueError, match=r"failed on the inputs scaled by 1.5 \(24×24\): out of resources "
                                             r"\(simulated\)\. If it needs one input size"):
            MultiLayerClassDiffSaliency(model, [model[0]]).attribute(torch.randn(2, 3, 16, 16), target=1,
                                                                     scales=(1.0, 1.5))
    finally:
        handle.remove()


def test_batched_candidate_gradients_equal_per_class_gradients():
    model = random_fcn(3)
    ms = MultiLayerClassDiffSaliency(model, [model[0], model[3]])
    x = torch.randn(2, 3, 10, 10)
    candidates = [[1, 0, 4], [2, 3, 4]]
    _, batched = ms.attribute(x, target=[1, 2], candidates=candidates, scales=(1.0, 1.3), return_details=True)
    for slot in range(3):
        classes = [c[slot] for c in candidates]
        _, alone = ms.attribute(x, target=classes, candidates=[[c] for c in classes], scales=(1.0, 1.3),
                                return_details=True)
        slot_maps = batched["class_maps"][:, :, slot]
        torch.testing.assert_close(slot_maps, alone["class_maps"][:, :, 0], atol=1e-6, rtol=1e-5)


class MaskedFCN(nn.Module):
    """A fully convolutional net whose score maps are multiplied by a mask given as a second argument."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, mask):
        return (self.conv(x) * mask).amax(dim=(2, 3))


@pytest.mark.parametrize("make, extra, words", [
    # surplus arguments: the fx interpreter used to drop them and return a map as if they were never given
    (lambda: random_fcn(0), (torch.ones(2, 1, 8, 8),), r"takes 1 positional argument.*got 2.*additional_forward_args"),
    (lambda: random_fcn(0), 3.0, r"takes 1 positional argument.*additional_forward_args"),
    (MaskedFCN, (torch.ones(2, 1, 8, 8), 1.0), r"takes 2 positional argument.*\(x, mask\).*got 3"),
    # a missing argument used to surface as a RuntimeError about channels and image sizes
    (MaskedFCN, None, r"needs argument\(s\) `mask`.*additional_forward_args"),
])
def test_additional_forward_args_the_model_does_not_take_are_refused(make, extra, words):
    model = make().eval()
    layer = model[0] if isinstance(model, nn.Sequential) else model.conv
    ms = MultiLayerClassDiffSaliency(model, [layer])
    for error in (TypeError, ValueError):  # a TypeError as Python's own, a ValueError as NodeBacktrack's
        with pytest.raises(error, match=words):
            ms.attribute(torch.randn(2, 3, 8, 8), target=0, additional_forward_args=extra)


def test_additional_forward_args_the_model_takes_are_used():
    model = MaskedFCN().eval()
    ms = MultiLayerClassDiffSaliency(model, [model.conv])
    x = torch.randn(2, 3, 8, 8)
    ones, left = torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    left[..., :4] = 1.0
    whole = ms.attribute(x, target=1, additional_forward_args=ones, candidates=[1])
    masked = ms.attribute(x, target=1, additional_forward_args=(left,), candidates=[1])
    assert whole.shape == masked.shape == (2, 1, 8, 8)
    assert not torch.allclose(whole, masked)  # the mask reached the model


def test_a_layer_whose_output_nothing_uses_is_named_as_such():
    """Before: "must take one tensor and return one tensor; found 1 input(s) and 0 output(s)" for a layer that does
    return one tensor, which the rest of the model discards."""

    class Discarding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.aux, self.head = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 5, 1)

        def forward(self, x):
            self.aux(x)  # an auxiliary head whose result inference discards
            return self.head(self.c(x)).amax((2, 3))

    net = Discarding().eval()
    with pytest.raises(ValueError, match=r"`layers\[0\]`.*`aux`'s output is used by nothing"):
        MultiLayerClassDiffSaliency(net, [net.aux]).attribute(torch.rand(2, 3, 8, 8), target=0)
