"""Trust checks of the faithfulness metrics: maps on another device than the images are refused up front (naming
both devices), ROAD refuses a noise that is not a finite number >= 0, and max-sensitivity leaves a model behind its
explanation function as found."""
import math

import pytest
import torch
from torch import nn

from captum_ext.metrics import (deletion_insertion_curves, infidelity_per_pair, road_curves, road_impute,
                                sensitivity_max_per_pair)

CLASSES = 5


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, CLASSES))


def deletion(model, images, maps, targets):
    return deletion_insertion_curves(model, images, maps, targets, steps=3)


def insertion(model, images, maps, targets):
    return deletion_insertion_curves(model, images, maps, targets, "insertion", steps=3)


def road(model, images, maps, targets):
    return road_curves(model, images, maps, targets, fractions=(0.25, 0.5), generator=torch.Generator().manual_seed(0))


def infidelity(model, images, maps, targets):
    return infidelity_per_pair(model, images, maps, targets, False, torch.Generator().manual_seed(0), samples=3)


METRICS = pytest.mark.parametrize("metric", [deletion, insertion, road, infidelity],
                                  ids=["deletion", "insertion", "road", "infidelity"])


def inputs(device: str = "cpu"):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 6, 6, generator=generator)
    maps = torch.rand(2, 6, 6, generator=generator)
    return images.to(device), maps.to(device), torch.tensor([1, 3], device=device)


@METRICS
def test_maps_on_another_device_than_the_images_are_refused_naming_both_devices(metric):
    images, maps, targets = inputs()
    # A meta tensor stands in for an accelerator here: the check must come before anything reads the maps' values.
    with pytest.raises(ValueError, match=r"^`maps` are on meta but `images` on cpu; put them on one device$"):
        metric(tiny_model().eval(), images, torch.empty(2, 6, 6, device="meta"), targets)
    with pytest.raises(ValueError, match=r"^`maps` are on meta but `images` on cpu"):  # N×1×H×W too
        metric(tiny_model().eval(), images, torch.empty(2, 1, 6, 6, device="meta"), targets)


@METRICS
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_maps_with_cpu_images_and_the_reverse_are_refused(metric):
    images, maps, targets = inputs()
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=r"^`maps` are on cuda:0 but `images` on cpu; put them on one device$"):
        metric(model, images, maps.cuda(), targets)
    with pytest.raises(ValueError, match=r"^`maps` are on cpu but `images` on cuda:0; put them on one device$"):
        metric(model.cuda(), images.cuda(), maps, targets.cuda())
    with pytest.raises(ValueError, match=r"^`maps` are on cpu but `images` on cuda:0"):  # arrays live on the host
        metric(model, images.cuda(), maps.numpy(), targets.cuda())
    metric(model, images.cuda(), maps.cuda(), targets.cuda())  # one device: fine


@pytest.mark.parametrize("noise", [float("nan"), math.inf, -math.inf, -0.01, torch.tensor(float("nan"))],
                         ids=["nan", "inf", "-inf", "negative", "nan-tensor"])
def test_road_refuses_a_noise_that_is_not_finite_and_non_negative(noise):
    images, maps, targets = inputs()
    with pytest.raises(ValueError, match=r"^`noise` must be (finite|>= 0\.0), got"):
        road_curves(tiny_model().eval(), images, maps, targets, fractions=(0.5,), noise=noise)
    removed = torch.zeros(2, 6, 6, dtype=torch.bool)
    removed[:, 2, 3] = True
    with pytest.raises(ValueError, match=r"^`noise` must be (finite|>= 0\.0), got"):
        road_impute(images, removed, torch.Generator().manual_seed(0), noise=noise)


@pytest.mark.parametrize("noise", ["0.01", None, True, 1j], ids=["str", "none", "bool", "complex"])
def test_road_refuses_a_noise_that_is_not_a_real_number(noise):
    images, maps, targets = inputs()
    with pytest.raises(TypeError, match=r"^`noise` must be a real number, got"):
        road_curves(tiny_model().eval(), images, maps, targets, fractions=(0.5,), noise=noise)
    with pytest.raises(TypeError, match=r"^`noise` must be a real number, got"):
        road_impute(images, torch.zeros(2, 6, 6, dtype=torch.bool), noise=noise)


def test_road_scores_valid_noise_as_before():
    images, maps, targets = inputs()
    model = tiny_model().eval()

    def curves(noise):
        return road_curves(model, images, maps, targets, fractions=(0.25, 0.5),
                           generator=torch.Generator().manual_seed(0), noise=noise)

    assert torch.equal(curves(0), curves(0.0))
    assert torch.equal(curves(0.01), curves(torch.tensor(0.01, dtype=torch.float64)))
    assert not torch.equal(curves(0.0), curves(0.5))  # the noise is used


class GradientExplainer(nn.Module):
    """Explains a BatchNorm model by its input gradient: as a module (``forward``) or a bound method
    (``saliency``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()
        self.calls = 0
        self.fail_at = 0

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.saliency(images, targets)

    def saliency(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("explanation fails")
        images = images.detach().requires_grad_()
        grad, = torch.autograd.grad(self.net(images).gather(1, targets[:, None]).sum(), images)
        return grad.abs().amax(dim=1, keepdim=True)


def state(module: nn.Module):
    return {k: v.clone() for k, v in module.state_dict().items()}, [m.training for m in module.modules()]


def assert_state(module: nn.Module, before) -> None:
    after = state(module)
    assert after[0].keys() == before[0].keys()
    for key, value in after[0].items():
        assert torch.equal(value, before[0][key]), f"{key} changed"
    assert after[1] == before[1]


@pytest.mark.parametrize("bound", [False, True], ids=["module", "bound-method"])
def test_max_sensitivity_runs_a_module_explanation_in_eval_mode_and_restores_it(bound):
    images, _, targets = inputs()
    explainer = GradientExplainer().train()
    explainer.net[0].eval()  # a mixed mode is restored module by module
    before = state(explainer)
    explain = explainer.saliency if bound else explainer
    values = sensitivity_max_per_pair(explain, images, targets, torch.Generator().manual_seed(3), samples=3)
    assert_state(explainer, before)  # BatchNorm's running statistics untouched, every flag as found
    assert explainer.training and not explainer.net[0].training
    # It explained in eval mode: as the eval-mode explainer does.
    reference = GradientExplainer().eval()
    assert torch.equal(values, sensitivity_max_per_pair(reference.saliency if bound else reference, images, targets,
                                                        torch.Generator().manual_seed(3), samples=3))


def test_max_sensitivity_restores_the_module_after_an_error():
    images, _, targets = inputs()
    explainer = GradientExplainer().train()
    explainer.fail_at = 2  # the first call (the unperturbed maps) runs, the second raises
    before = state(explainer)
    with pytest.raises(RuntimeError, match="explanation fails"):
        sensitivity_max_per_pair(explainer, images, targets, torch.Generator().manual_seed(3), samples=3,
                                 batch_size=2)
    assert explainer.calls == 2
    assert_state(explainer, before)
    assert all(m.training for m in explainer.modules())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"noise": float("nan")}, ValueError, "`noise`"), ({"noise": -0.1}, ValueError, "`noise`"),
    ({"samples": 0}, ValueError, "`samples`"), ({"samples": 2.5}, TypeError, "`samples`"),
    ({"batch_size": 0}, ValueError, "`batch_size`"),
], ids=repr)
def test_infidelity_refuses_bad_perturbation_settings_naming_them(kwargs, error, match):
    """Before: a NaN noise gave NaN infidelities, a negative one was used with its sign, samples=0 reached Captum."""
    images, maps, targets = inputs()
    with pytest.raises(error, match=match):
        infidelity_per_pair(tiny_model().eval(), images, maps, targets, False, torch.Generator().manual_seed(0),
                            **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"radius": float("inf")}, ValueError, "`radius`"), ({"radius": -0.02}, ValueError, "`radius`"),
    ({"samples": 0}, ValueError, "`samples`"), ({"batch_size": -1}, ValueError, "`batch_size`"),
], ids=repr)
def test_max_sensitivity_refuses_bad_perturbation_settings_naming_them(kwargs, error, match):
    images, _, targets = inputs()
    with pytest.raises(error, match=match):
        sensitivity_max_per_pair(GradientExplainer().eval(), images, targets, torch.Generator().manual_seed(0),
                                 **kwargs)


# -- found by a user's sweep of the metrics -------------------------------------------------------------------------

def one_pixel_model() -> nn.Module:
    """Class 0's score reads pixel 1 of a 2×2 image alone."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    return model


@pytest.mark.parametrize("maps", [torch.tensor([[[1.0, 1.0 + 1e-9], [0.0, 0.0]]], dtype=torch.float64),
                                  torch.tensor([[[16777216, 16777217], [0, 0]]])])
def test_deletion_and_road_rank_float64_and_int64_maps_in_their_own_precision(maps):
    """Before: ranked in float32, the two top values tied and pixel 0 was removed first, against the map."""
    model, image, target = one_pixel_model(), torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]), torch.tensor([0])
    curve = deletion_insertion_curves(model, image, maps, target, steps=4)[0]
    assert curve[1] == pytest.approx(0.5) and curve[0] > 0.9  # pixel 1, the map's first, removed first
    removed_first = road_curves(model, image, maps, target, order="morf", fractions=(0.25,), noise=0.0)[0, 0]
    assert float(removed_first) == pytest.approx(0.5)


@pytest.mark.parametrize("values, words", [
    (torch.tensor([0.5, float("nan")]), r"must be finite values in \[0, 1\], got \[nan\] at index\(es\) \[1\]"),
    (torch.tensor([[0.5, 0.25]]), r"one value per pair \(a 1-D tensor\), got shape \(1, 2\)"),
    (torch.tensor([1.5]), r"\[0, 1\], got \[1.5\]"),
])
def test_faithfulness_auc_metric_refuses_values_no_auc_takes(values, words):
    """Before: a NaN became -1.07e9 in the fixed-point sum, and a row of two AUCs counted as one pair."""
    from captum_ext.metrics import FaithfulnessAUCMetric

    with pytest.raises(ValueError, match=words):
        FaithfulnessAUCMetric("deletion").update(values)


def test_perturbation_metric_refuses_values_beyond_its_exact_sum():
    from captum_ext.metrics import PerturbationMetric

    with pytest.raises(ValueError, match=r"\[0, 65536\], got \[3000000000.0\]"):
        PerturbationMetric("sensitivity_max").update(torch.tensor([3e9]))  # int64 overflow before


@pytest.mark.parametrize("curves", [torch.ones(2, 1), torch.ones(3)])
def test_curve_auc_refuses_a_curve_of_one_sample(curves):
    from captum_ext.metrics import curve_auc

    with pytest.raises(ValueError, match=r"`curves` must be N×\(S\+1\) with S >= 1"):
        curve_auc(curves)


def test_float32_thresholds_are_refused_since_their_decimals_are_not_exact():
    """Before: ``torch.tensor([0.2])`` was 0.2000000030, and pixels at exactly 0.2 fell below it."""
    from captum_ext.metrics import pxap

    maps = torch.tensor([[[0.0, 0.2, 0.2, 0.6, 1.0]]], dtype=torch.float64)
    masks = torch.tensor([[[False, True, True, False, True]]])
    assert pxap(maps, masks, thresholds=[0.2], reduce=False).recall.tolist()[0] == 1.0
    assert pxap(maps, masks, thresholds=torch.tensor([0.2], dtype=torch.float64), reduce=False).recall[0] == 1.0
    with pytest.raises(TypeError, match=r"`thresholds` must be float64 \(or a list of floats\)"):
        pxap(maps, masks, thresholds=torch.tensor([0.2]))


def test_boxes_wholly_outside_their_map_are_refused_by_every_box_metric():
    """Before: MaxBoxAccV2 and CorLoc scored such pairs 0 (boxes in image pixels on a 14×14 CAM, say), while the
    pointing games refused them."""
    from captum_ext.metrics import CorLocMetric, GroundTruth, MaxBoxAccV2Metric, maxboxacc_v2

    saliency, box = torch.rand(1, 14, 14), torch.tensor([[100.0, 100.0, 180.0, 200.0]])
    with pytest.raises(ValueError, match=r"at least one box overlapping the 14×14 map per pair .* index\(es\) \[0\]"):
        maxboxacc_v2(saliency, box)
    for metric in (CorLocMetric(), MaxBoxAccV2Metric()):
        with pytest.raises(ValueError, match=r"every pair a box overlapping its map .* index\(es\) \[0\]"):
            metric.update([saliency[0]], [GroundTruth(0, box)])
    partly = torch.tensor([[10.0, 10.0, 180.0, 200.0]])  # overlaps the map: scored as before
    assert maxboxacc_v2(saliency, partly) >= 0.0


def test_the_blurred_baseline_names_images_too_small_for_its_kernel():
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    with pytest.raises(ValueError, match=r"`images` of 5×5 pixels are too small for the blurred baseline"):
        deletion_insertion_curves(model, torch.rand(1, 1, 5, 5), torch.rand(1, 5, 5), torch.tensor([0]),
                                  mode="insertion")


@pytest.mark.parametrize("fractions", [(), 0.5])
def test_road_needs_at_least_one_fraction(fractions):
    """Before: no fraction gave an N×0 curve, whose mean is NaN."""
    with pytest.raises(ValueError, match=r"`fractions` must be a non-empty sequence"):
        road_curves(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4),
                    torch.tensor([0]), fractions=fractions)


def test_iou_thresholds_take_arrays_and_name_a_bare_number_as_a_type_error():
    """Before: a numpy array and a bare 0.5 were both "must be a non-empty sequence" (ValueError)."""
    import numpy as np

    from captum_ext.metrics import MaxBoxAccV2Metric, maxboxacc_v2

    saliency, boxes = torch.rand(2, 8, 8), torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 7.0, 6.0]])
    assert maxboxacc_v2(saliency, boxes, iou_thresholds=np.array([0.3, 0.5])) == \
        maxboxacc_v2(saliency, boxes, iou_thresholds=(0.3, 0.5))
    for build in (lambda: maxboxacc_v2(saliency, boxes, iou_thresholds=0.5),
                  lambda: MaxBoxAccV2Metric(iou_thresholds=0.5)):
        with pytest.raises(TypeError, match=r"`iou_thresholds` must be a sequence of numbers \(e.g. \(0.5,\)\), got "
                                            r"float 0.5"):
            build()
    with pytest.raises(ValueError, match=r"non-empty"):
        maxboxacc_v2(saliency, boxes, iou_thresholds=())
