"""Captum's infidelity and max-sensitivity per pair: against the formulas written out here, reproducible from the
seed, summed exactly, and in the evaluation driver."""
import csv
import json

import pytest
import torch
from torch import nn

from captum_ext.evaluation import evaluate
from captum_ext.metrics.perturbation import PerturbationMetric, infidelity_per_pair, sensitivity_max_per_pair


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).double().eval()


def test_infidelity_is_the_formula_of_yeh_et_al_with_the_best_scale():
    model, samples, noise = tiny_model(), 6, 0.05
    images, maps, targets = torch.rand(2, 3, 5, 5, dtype=torch.float64), torch.rand(2, 5, 5), torch.tensor([2, 0])
    got = infidelity_per_pair(model, images, maps, targets, False, torch.Generator().manual_seed(7), samples, noise)
    # One draw for all pairs' perturbations (they fit one forward), each pair's copies next to each other.
    perturbations = torch.randn(2 * samples, 3, 5, 5, generator=torch.Generator().manual_seed(7)).double() * noise
    expanded = images.repeat_interleave(samples, dim=0)
    classes = targets.repeat_interleave(samples)
    with torch.no_grad():
        before = torch.softmax(model(expanded), dim=1)[torch.arange(2 * samples), classes]
        after = torch.softmax(model(expanded - perturbations), dim=1)[torch.arange(2 * samples), classes]
    change = (before - after).view(2, samples)
    predicted = (maps.double().repeat_interleave(samples, dim=0)[:, None] * perturbations).sum(dim=(1, 2, 3))
    predicted = predicted.view(2, samples)
    beta = (predicted * change).sum(dim=1, keepdim=True) / (predicted ** 2).sum(dim=1, keepdim=True)
    expected = ((beta * predicted - change) ** 2).mean(dim=1)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-15)
    # The perturbations come from the generator alone: the same seed gives the same values, another seed others.
    again = infidelity_per_pair(model, images, maps, targets, False, torch.Generator().manual_seed(7), samples, noise)
    other = infidelity_per_pair(model, images, maps, targets, False, torch.Generator().manual_seed(8), samples, noise)
    assert torch.equal(got, again) and not torch.equal(got, other)


def test_a_map_that_predicts_a_linear_model_exactly_has_no_infidelity():
    # A sigmoid of a linear score (kept near 0, where the sigmoid is not flat) is nearly linear for perturbations
    # this small; the map of its weights (the same in every channel) predicts its changes up to second order, a
    # shuffled map does not.
    torch.manual_seed(0)
    weights = torch.randn(1, 1, 6, 6, dtype=torch.float64) * 0.05
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 1, bias=False)).double()
    model[1].weight.data = weights.expand(1, 3, 6, 6).reshape(1, 108).clone()
    images, target = torch.rand(1, 3, 6, 6, dtype=torch.float64), torch.tensor([0])
    exact = infidelity_per_pair(model, images, weights[0], target, True, torch.Generator().manual_seed(0), 8, 1e-3)
    shuffled = weights.flatten()[torch.randperm(36)].view(1, 6, 6)
    wrong = infidelity_per_pair(model, images, shuffled, target, True, torch.Generator().manual_seed(0), 8, 1e-3)
    assert float(wrong) > 1e-10 and float(exact) < 1e-6 * float(wrong)


def test_max_sensitivity_is_the_largest_relative_change_of_the_map():
    model, samples, radius = tiny_model(1), 5, 0.1
    images, targets = torch.rand(3, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2])

    def explain(inputs, classes):
        inputs = inputs.detach().requires_grad_()
        grad, = torch.autograd.grad(model(inputs).gather(1, classes[:, None]).sum(), inputs)
        return grad.abs().amax(dim=1, keepdim=True)

    got = sensitivity_max_per_pair(explain, images, targets, torch.Generator().manual_seed(3), samples, radius)
    uniform = torch.rand(3 * samples, 3, 4, 4, generator=torch.Generator().manual_seed(3)).double() * 2 - 1
    perturbed = explain(images.repeat_interleave(samples, dim=0) + uniform * radius, targets.repeat_interleave(samples))
    original = explain(images, targets)
    change = (perturbed - original.repeat_interleave(samples, dim=0)).flatten(1).norm(dim=1).view(3, samples)
    expected = (change / original.flatten(1).norm(dim=1, keepdim=True)).amax(dim=1)
    assert torch.allclose(got, expected, rtol=1e-9)
    assert bool((got > 0).all())


def test_max_sensitivity_names_bad_inputs_and_bad_maps():
    """Before: an ``explain`` returning one map for two images scored both "perfectly stable" (0.0), NaN maps gave
    NaN, and targets of the wrong length or NaN images reached Captum (a bare AssertionError)."""
    images, targets, generator = torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), torch.Generator().manual_seed(0)
    fixed = lambda x, t: torch.ones(len(x), 1, 4, 4)  # noqa: E731
    with pytest.raises(ValueError, match=r"`explain` must return one map per image \(\d+ here\), got \(1, 1, 4, 4\)"):
        sensitivity_max_per_pair(lambda x, t: torch.ones(1, 1, 4, 4), images, targets, generator, samples=2)
    with pytest.raises(ValueError, match="`explain` returned maps holding NaN"):
        sensitivity_max_per_pair(lambda x, t: torch.full((len(x), 1, 4, 4), float("nan")), images, targets, generator,
                                 samples=2)
    with pytest.raises(ValueError, match="`targets`"):
        sensitivity_max_per_pair(fixed, images, torch.tensor([0]), generator, samples=2)
    with pytest.raises(ValueError, match="`images`"):
        sensitivity_max_per_pair(fixed, torch.full((2, 3, 4, 4), float("nan")), targets, generator, samples=2)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten())
    with pytest.raises(ValueError, match="batch_size=1"):
        sensitivity_max_per_pair(model, images, targets, generator, samples=2)


def test_the_mean_is_summed_in_fixed_point_and_refuses_non_finite_values():
    whole, halves = PerturbationMetric("sensitivity_max"), PerturbationMetric("sensitivity_max")
    values = torch.rand(10, dtype=torch.float64) * 3
    whole.update(values)
    halves.update(values[5:])
    halves.update(values[:5])
    assert float(whole.compute()) == float(halves.compute())
    assert abs(float(whole.compute()) - float(values.mean())) < 1e-9
    with pytest.raises(ValueError, match=r"`values` must be finite values in \[0, 65536\], got \[nan\]"):
        PerturbationMetric("infidelity").update(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="`key` must be one of"):
        PerturbationMetric("deletion")


def test_the_driver_writes_each_pairs_values_and_their_mean(tmp_path):
    summary = evaluate("zoo:scenes_vgg", "grad_cam", "scenes:multi:6", tmp_path / "run", batch_size=4,
                       show_progress=False, metrics=["infidelity", "sensitivity_max"], perturbation_samples=4)
    rows = list(csv.DictReader((tmp_path / "run" / "pairs.csv").read_text().splitlines()))
    for key in ("infidelity", "sensitivity_max"):
        values = [float(row[key]) for row in rows]
        assert all(v >= 0 for v in values) and len(set(values)) > 1
        assert abs(sum(values) / len(values) - summary[key]) < 1e-9
    assert summary["settings"]["perturbation"] == {"samples": 4, "noise": 0.1, "radius": 0.02}
    timing = json.loads((tmp_path / "run" / "progress" / "timing-rank0.json").read_text())
    assert timing["pairs"] == len(rows) and set(timing["seconds_by_part"]) == {"method", "infidelity",
                                                                             "sensitivity_max"}
    assert all(seconds > 0 for seconds in timing["seconds_by_part"].values())
    with pytest.raises(ValueError, match="`infidelity_noise` must be > 0"):
        evaluate("zoo:scenes_vgg", "grad_cam", "scenes:multi:6", tmp_path / "bad", metrics=["infidelity"],
                 infidelity_noise=0.0, show_progress=False)


def test_a_python_callable_method_gets_every_faithfulness_metric(tmp_path):
    """A method given as a function is re-run on perturbed images for max-sensitivity like a named one, and its maps
    ranked for deletion, insertion and ROAD: a map that marks the brightest pixels scores the same as the same map
    computed inside the driver would, so the values are checked against the metric functions directly."""
    calls = []

    def brightness(images: torch.Tensor, targets: torch.Tensor):
        calls.append(images.shape[0])
        return images.mean(dim=1, keepdim=True), None

    metrics = ["deletion", "insertion", "infidelity", "sensitivity_max", "road_morf", "road_lerf"]
    summary = evaluate("zoo:scenes_vgg", brightness, "scenes:single:4", tmp_path / "run", batch_size=4,
                       metrics=metrics, faithfulness_steps=4, perturbation_samples=3, show_progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "pairs.csv").read_text().splitlines()))
    for key in ("deletion_auc", "insertion_auc", "infidelity", "sensitivity_max", "road_morf", "road_lerf"):
        values = [float(r[key]) for r in rows]
        assert len(values) == 4 and all(v == v for v in values), key
        assert abs(sum(values) / 4 - summary[key]) < 1e-6, key
    assert calls[0] == 4 and sum(calls[1:]) >= 3 * 4  # the maps, then every perturbed copy for max-sensitivity
    # Brightness does not depend on the model: small input noise changes it by about the noise's relative size.
    assert 0.0 < summary["sensitivity_max"] < 0.2


def test_the_driver_refuses_a_model_that_mixes_the_images_of_a_batch_and_scores_one_image_at_a_time(tmp_path):
    """Before: a BatchNorm without running statistics (it normalises with each batch's own even in eval mode) made
    maps and scores depend on the images batched together, without a word."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match=r"maps and scores would depend on the other images.*--batch-size 1"):
        evaluate(model, "saliency", "scenes:single:4", tmp_path / "bad", batch_size=2, show_progress=False)
    summary = evaluate(model, "saliency", "scenes:single:3", tmp_path / "run", batch_size=1, show_progress=False,
                       metrics=["deletion"], faithfulness_steps=4)
    assert summary["n_pairs"] == 3 and 0.0 <= summary["deletion_auc"] <= 1.0
