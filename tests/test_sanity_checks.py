"""Cascading model randomisation (Adebayo et al., 2018): the user's model is left as found, a model-independent
"explanation" stays perfectly similar, gradients decorrelate, and BatchNorm statistics survive the re-initialisation."""
import pytest
import torch
from captum.attr import Saliency
from torch import nn

from captum_ext.metrics.sanity import _reinitialise, cascading_randomization, randomizable_layers


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)).eval()


def gradient(model, images, targets):
    return Saliency(model).attribute(images.clone().requires_grad_(), target=targets, abs=False)


def test_layers_are_randomised_from_the_output_down_and_the_model_is_left_as_found():
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = torch.rand(3, 3, 12, 12), torch.tensor([0, 1, 2])
    result = cascading_randomization(model, gradient, images, targets)
    assert randomizable_layers(model) == ["0", "1", "3", "7"]
    assert result.layers == ["7", "3", "1", "0"] and tuple(result.ssim.shape) == (4, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


def test_an_explanation_that_ignores_the_model_stays_identical():
    images = torch.rand(2, 3, 12, 12)
    result = cascading_randomization(small_net(), lambda m, x, t: x.clone(), images, torch.tensor([0, 1]))
    for values in (result.spearman_abs, result.spearman_signed, result.ssim):
        assert torch.allclose(values, torch.ones_like(values))


def test_gradients_decorrelate_as_the_model_is_randomised():
    torch.manual_seed(3)
    images = torch.rand(4, 3, 12, 12)
    result = cascading_randomization(small_net(), gradient, images, torch.tensor([0, 1, 2, 0]))
    assert float(result.spearman_abs[-1].mean()) < 0.6 and float(result.ssim[-1].mean()) < 0.6
    assert "Spearman abs" in result.to_markdown()


def test_reinitialisation_keeps_batchnorm_statistics_and_is_seeded():
    first, second = small_net(), small_net()
    first[1].running_mean.fill_(0.5)
    second[1].running_mean.fill_(0.5)
    _reinitialise(first[0], seed=4)
    _reinitialise(second[0], seed=4)
    assert torch.equal(first[0].weight, second[0].weight) and not torch.equal(first[0].weight, small_net()[0].weight)
    _reinitialise(first[1], seed=1)
    assert float(first[1].running_mean[0]) == 0.5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`layers`"):
        cascading_randomization(small_net(), gradient, torch.rand(1, 3, 8, 8), torch.tensor([0]), layers=["nope"])
    with pytest.raises(ValueError, match="`explain`"):
        cascading_randomization(small_net(), lambda m, x, t: torch.zeros(5, 8, 8), torch.rand(1, 3, 8, 8),
                                torch.tensor([0]))
    with pytest.raises(ValueError, match="`images`"):
        cascading_randomization(small_net(), gradient, torch.full((1, 3, 8, 8), float("nan")), torch.tensor([0]))
    with pytest.raises(ValueError, match="`targets`"):
        cascading_randomization(small_net(), gradient, torch.rand(2, 3, 8, 8), torch.tensor([0]))


def test_a_container_is_randomised_whole_and_a_layer_without_parameters_is_refused():
    """Before: a container name (``nn.Sequential``) or a ReLU was accepted and nothing was randomised, so every step
    reported the trained maps (Spearman and SSIM 1.0) as the randomised model's: a good method looked broken."""
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
                          nn.Sequential(nn.Flatten(), nn.Linear(8 * 64, 3))).eval()
    images, targets = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    result = cascading_randomization(model, gradient, images, targets, layers=["0", "1"])
    assert float(result.spearman_abs.max()) < 0.9
    copy = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), nn.Linear(2, 2))
    _reinitialise(copy[0], seed=0)
    torch.manual_seed(0)
    assert torch.equal(copy[0][0].weight, nn.Conv2d(3, 8, 3, padding=1).weight)  # the conv inside, seeded
    with pytest.raises(ValueError, match=r"without learnable parameters.*\['0\.1'\]"):
        cascading_randomization(model, gradient, images, targets, layers=["0.1"])


def test_the_model_and_its_batchnorm_statistics_are_left_as_found_in_train_mode():
    """Before: a model handed over in train mode had its BatchNorm running statistics moved by the reference
    explanation."""
    model = small_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascading_randomization(model, gradient, torch.rand(3, 3, 12, 12), torch.tensor([0, 1, 2]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


def test_maps_too_small_for_ssim_are_named_after_the_first_explanation():
    calls = []

    def tiny(model, images, targets):
        calls.append(1)
        return torch.rand(len(images), 2, 2)

    with pytest.raises(ValueError, match=r"`explain` returned maps of \(2, 2\) pixels; SSIM needs at least 3×3"):
        cascading_randomization(small_net(), tiny, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert len(calls) == 1
