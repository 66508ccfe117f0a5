"""Each example's map is its own: models that mix the examples of a batch, and layers whose output would hide
some of their calls, are refused with errors that name them, instead of giving maps that depend on the batch."""
import pytest
import torch
import torchvision
from torch import nn

from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox


def batch_statistics_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, track_running_stats=False), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("build", [lambda m: SensitivityBBox(m),
                                   lambda m: MultiLayerClassDiffSaliency(m, [m[0], m[3]])])
def test_a_batchnorm_on_batch_statistics_is_refused_for_a_batch_and_works_for_one_image(build):
    """Before: no word, and MultiLayerClassDiffSaliency's maps of a batch differed from the single-image maps by
    0.50 (map maximum 0.96)."""
    model = batch_statistics_model()
    explainer, x = build(model), torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"BatchNorm `1` normalises with each batch's statistics .* each of the 4 "
                                         r"maps would depend on the other images of the batch"):
        explainer.attribute(x, target=1)
    assert hooks(model) == 0 and not model.training
    alone = explainer.attribute(x[:1], target=1)  # one image: its statistics are its own
    assert alone.shape[0] == 1 and alone.shape[-2:] == (16, 16) and torch.isfinite(alone).all()


def test_nodebacktrack_names_the_batchnorm_it_cannot_fold():
    with pytest.raises(ValueError, match=r"module `1` \(BatchNorm2d\) normalises with each batch's statistics .* "
                                         r"cannot be folded into module `0` \(Conv2d\)"):
        NodeBacktrack(batch_statistics_model()).attribute(torch.randn(1, 3, 16, 16), target=1)


def test_a_batchnorm_with_running_statistics_is_explained_in_batches_as_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 4)).train()  # explained in eval mode, left in train mode
    x = torch.randn(3, 3, 8, 8)
    explainer = SensitivityBBox(model)
    batch = explainer.attribute(x, target=2)
    torch.testing.assert_close(batch, torch.cat([explainer.attribute(x[i:i + 1], target=2) for i in range(3)]))
    assert model.training


def test_an_activation_layer_called_twice_is_refused():
    """Before: torchvision's BasicBlock calls its ReLU twice, and the map was the gradient of the last call alone
    (0.58 from the gradient of both calls' sum, map maximum 2.2)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    with pytest.raises(ValueError, match=r"`activation_layer` \(ReLU\) must be called exactly once in the forward "
                                         r"pass, but was called 2 times"):
        SensitivityBBox(net, activation_layer=net.layer4[1].relu).attribute(torch.randn(2, 3, 32, 32))
    assert hooks(net) == 0
    once = SensitivityBBox(net, activation_layer=net.layer4[1].conv2).attribute(torch.randn(2, 3, 32, 32))
    assert once.shape == (2, 3, 32, 32)


def test_nodebacktrack_refuses_a_batch_through_a_batchnorm_on_batch_statistics_it_does_not_fold():
    """Before: a BatchNorm without running statistics after a ReLU was passed through, and the hits of a batch
    differed from the single-image hits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8, track_running_stats=False),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"BatchNorm `2` normalises with each batch's statistics .* each of the 4 "
                                         r"maps would depend on the other images of the batch"):
        NodeBacktrack(model).attribute(x, target=1)
    alone = NodeBacktrack(model).attribute(x[:1], target=1)
    assert alone.shape == (1, 3, 16, 16) and float(alone.sum()) > 0 and hooks(model) == 0
