"""The shared attribution plumbing: input/target formatting, state guards, Gaussian blur."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from torch import nn

from captum_ext._utils.attribution import (
    capture_output,
    format_additional_args,
    format_inputs,
    hook_handles,
    preserved_module_state,
    select_targets,
)
from captum_ext._utils.graph import ForwardArgumentsError, check_forward_arguments
from captum_ext._utils.smoothing import gaussian_blur


def test_format_inputs_tensor_and_tuple():
    x = torch.zeros(2, 3, 4, 4)
    assert format_inputs(x) == ((x,), False)
    assert format_inputs((x, x)) == ((x, x), True)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.zeros(3, 4, 4), ValueError, "N×C×H×W"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.long), TypeError, "floating-point"),
        (torch.full((1, 1, 2, 2), float("nan")), ValueError, "NaN"),
        (torch.zeros(0, 1, 2, 2), ValueError, "at least one example"),
        ((torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 2, 2)), ValueError, "batch size"),
        ([torch.zeros(1, 1, 2, 2)], TypeError, "torch.Tensor"),
        ((), ValueError, "at least one tensor"),
        (torch.empty(2, 3, 4, 4, device="meta"), ValueError, r"^`inputs` is a meta tensor .*no values"),
        ((torch.zeros(2, 3, 4, 4), torch.empty(2, 3, 4, 4, device="meta")), ValueError,
         r"^`inputs\[1\]` is a meta tensor .*no values"),
    ],
)
def test_format_inputs_rejects(bad, error, words):
    with pytest.raises(error, match=words):
        format_inputs(bad)


def test_check_forward_arguments_counts_defaults_and_varargs():
    class WithDefault(nn.Module):
        def forward(self, x, mask, scale=2.0):
            return x * mask * scale

    class Varargs(nn.Module):
        def forward(self, x, *rest):
            return x

    optional, varargs = torch.fx.symbolic_trace(WithDefault()), torch.fx.symbolic_trace(Varargs())
    check_forward_arguments(optional, 1, 1)  # the default of `scale` fills in
    check_forward_arguments(optional, 1, 2)
    check_forward_arguments(optional, 2, 0)  # the mask as a second attributed input
    check_forward_arguments(varargs, 1, 5)  # *rest takes any number
    with pytest.raises(ForwardArgumentsError, match=r"takes 3 positional argument\(s\) \(x, mask, scale\), got 4"):
        check_forward_arguments(optional, 1, 3)
    with pytest.raises(ForwardArgumentsError, match=r"needs argument\(s\) `mask` after the 1 input"):
        check_forward_arguments(optional, 1, 0)
    assert issubclass(ForwardArgumentsError, TypeError) and issubclass(ForwardArgumentsError, ValueError)


def test_format_additional_args():
    assert format_additional_args(None) == ()
    assert format_additional_args((1, 2)) == (1, 2)
    assert format_additional_args(3) == (3,)


def test_select_targets_conventions():
    out = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 2.0]])
    scores, index = select_targets(out, None)
    assert index.tolist() == [1, 0] and scores.tolist() == [5.0, 3.0]
    assert select_targets(out, 2)[0].tolist() == [1.0, 2.0]
    assert select_targets(out, torch.tensor(2))[0].tolist() == [1.0, 2.0]
    assert select_targets(out, torch.tensor([0, 2]))[0].tolist() == [0.0, 2.0]
    assert select_targets(out, [2, 1])[0].tolist() == [1.0, 0.0]
    vector = torch.tensor([4.0, 7.0])
    assert select_targets(vector, None)[0].tolist() == [4.0, 7.0]
    cube = torch.arange(12.0).view(2, 2, 3)
    assert select_targets(cube, (1, 2))[0].tolist() == [5.0, 11.0]
    assert select_targets(cube, [(0, 0), (1, 1)])[0].tolist() == [0.0, 10.0]


@pytest.mark.parametrize("target", [torch.tensor([2]), torch.tensor([[2]]), torch.tensor(2, dtype=torch.int32)])
def test_a_one_element_target_tensor_applies_to_every_example_as_in_captum(target):
    """Before: a ``(1,)`` tensor was refused for a batch of 3, where Captum's own methods take it for all."""
    from captum.attr import Saliency

    from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(3, 3, 8, 8)
    assert select_targets(torch.arange(9.0).view(3, 3), target)[0].tolist() == [2.0, 5.0, 8.0]
    assert Saliency(model).attribute(x, target=target).shape == x.shape
    for explainer in (SensitivityBBox(model), NodeBacktrack(model), MultiLayerClassDiffSaliency(model, [model[0]])):
        torch.testing.assert_close(explainer.attribute(x, target=target), explainer.attribute(x, target=2))


@pytest.mark.parametrize(
    "target, error, words",
    [
        (3, ValueError, "out of range"),
        (-1, ValueError, "out of range"),
        ([0], ValueError, "one entry per example"),
        (torch.tensor([0, 1, 2]), ValueError, "one index per example"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer"),
        (1.5, TypeError, "int"),
        ((0, 1), ValueError, "needs 1 index"),
        ([0, 7], ValueError, r"target\[1\]"),
    ],
)
def test_select_targets_rejects(target, error, words):
    with pytest.raises(error, match=words):
        select_targets(torch.zeros(2, 3), target)


def test_select_targets_requires_target_for_cubes():
    with pytest.raises(ValueError, match="required"):
        select_targets(torch.zeros(2, 2, 3), None)


def test_preserved_module_state_restores_after_exception():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.eval()
    model[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with preserved_module_state(model):
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
            raise RuntimeError("boom")
    assert not model.training and not model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad


def test_hook_handles_removed_after_exception():
    layer = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with hook_handles() as handles:
            store = capture_output(handles, layer)
            layer(torch.zeros(1, 2))
            assert len(store) == 1
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0


def test_gaussian_blur_matches_scipy_away_from_borders():
    torch.manual_seed(0)
    maps = torch.zeros(2, 1, 41, 41, dtype=torch.float64)
    maps[:, :, 15:26, 15:26] = torch.rand(2, 1, 11, 11, dtype=torch.float64)
    ours = gaussian_blur(maps, sigma=1.5)
    ref = ndimage.gaussian_filter(maps.numpy(), sigma=(0, 0, 1.5, 1.5), mode="constant", truncate=4.0)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_gaussian_blur_of_a_point_is_a_normalised_gaussian():
    point = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    point[0, 0, 15, 15] = 1.0
    blurred = gaussian_blur(point, sigma=2.0)[0, 0]
    assert math.isclose(float(blurred.sum()), 1.0, rel_tol=1e-12)
    expected_ratio = math.exp(-0.5 * (3 / 2.0) ** 2)
    assert math.isclose(float(blurred[15, 18] / blurred[15, 15]), expected_ratio, rel_tol=1e-9)
    assert torch.equal(gaussian_blur(point, sigma=0.0), point)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), sigma=st.floats(0.3, 4.0))
def test_gaussian_blur_properties(n, h, w, sigma):
    maps = torch.rand(n, 2, h, w, dtype=torch.float64)
    out = gaussian_blur(maps, sigma)
    assert out.shape == maps.shape and bool((out >= 0).all())
    assert bool((out.sum((2, 3)) <= maps.sum((2, 3)) + 1e-9).all())  # zero padding only loses mass
    single = torch.cat([gaussian_blur(maps[i : i + 1], sigma) for i in range(n)])
    torch.testing.assert_close(out, single)


def test_a_float16_map_beyond_its_range_is_refused_not_returned_as_inf():
    """Before: SensitivityBBox cast float32 gradients of 2.8e5 to float16 inputs' dtype, silently inf."""
    from captum_ext import SensitivityBBox
    from captum_ext._utils.attribution import cast_like

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with torch.no_grad():
        model[1].weight.mul_(1e6)
    x = torch.randn(2, 3, 2, 2)
    assert torch.isfinite(SensitivityBBox(model).attribute(x, target=1)).all()
    with pytest.raises(ValueError, match=r"the attributions reach .*beyond the range of the inputs' "
                                         r"torch.float16 \(computed in the model's torch.float32\): pass the "
                                         r"inputs in torch.float32"):
        SensitivityBBox(model).attribute(x.half(), target=1)
    small = torch.tensor([1.0, 60000.0])
    assert cast_like(small, torch.zeros(1, dtype=torch.float16)).dtype == torch.float16
    assert torch.isinf(cast_like(torch.tensor([float("inf")]), torch.zeros(1, dtype=torch.float16))).all()  # as given
    assert cast_like(torch.tensor([1e300], dtype=torch.float64), torch.zeros(1)).dtype == torch.float32  # not checked
