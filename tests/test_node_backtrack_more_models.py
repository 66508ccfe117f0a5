"""NodeBacktrack on more architectures: smooth activations, squeeze-and-excitation gates, channel shuffles and
channels-last blocks, by hand on tiny nets and on torchvision classifiers with random weights."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import NodeBacktrack
from captum_ext.testing import backtrack_loop


def set_weights(layer: nn.Module, weight, bias=None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).view_as(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.zeros_like(layer.bias) if bias is None else torch.as_tensor(bias))
    return layer


class Functional(nn.Module):
    """A functional activation as a layer (traced as a ``call_function`` node)."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


# ---------------------------------------------------------------------------------------------------------------------
# 1. Element-wise activations
# ---------------------------------------------------------------------------------------------------------------------

ACTIVATIONS = [nn.SiLU(), nn.SiLU(inplace=True), nn.Hardswish(), nn.Hardswish(inplace=True), nn.Hardsigmoid(),
               nn.GELU(), nn.Mish(), Functional(F.silu), Functional(F.hardswish), Functional(F.hardsigmoid),
               Functional(F.gelu), Functional(F.mish)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: repr(a))
def test_elementwise_activations_pass_the_node_through_by_hand(activation):
    # Conv(1→2, 1×1, weights [1, -1]) → activation → Conv(2→1, 2×2, weights 1) → Flatten → Linear(1→1).
    # x = [[1, 2], [4, 3]]: channel 0 is x, channel 1 is -x; every activation here is increasing, so
    # act(x) > act(-x) and channel 0 has the larger window sum; its largest tap is x = 4 at pixel 2. Through the
    # first conv, that node's only (1×1, one input channel) source is pixel 2 of the input.
    model = nn.Sequential(set_weights(nn.Conv2d(1, 2, 1, bias=False), [1.0, -1.0]), activation,
                          set_weights(nn.Conv2d(2, 1, 2, bias=False), torch.ones(8)), nn.Flatten(),
                          set_weights(nn.Linear(1, 1), [[1.0]])).eval()
    x = torch.tensor([[1.0, 2.0], [4.0, 3.0]]).view(1, 1, 2, 2)
    hits = NodeBacktrack(model).attribute(x, target=0)
    assert hits.view(-1).tolist() == [0.0, 0.0, 1.0, 0.0]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), conv_rule=st.sampled_from(["max", "top_n", "positive"]),
       activation=st.sampled_from([nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish, nn.Hardsigmoid]))
def test_smooth_activations_agree_with_the_per_node_loop(seed, conv_rule, activation):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), activation(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1),
                          activation(), nn.Flatten(), nn.Linear(64, 6), activation(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    hits = NodeBacktrack(model, conv_rule=conv_rule, conv_top_n=2).attribute(x, target=[0, 2])
    for i, target in enumerate([0, 2]):
        assert torch.equal(hits[i : i + 1], backtrack_loop(model, x[i : i + 1], target, conv_rule=conv_rule,
                                                           conv_top_n=2))


def test_inplace_smooth_activation_leaves_the_model_and_recorded_values_alone():
    torch.manual_seed(0)
    inplace = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU(inplace=True), nn.Conv2d(4, 4, 3),
                            nn.Hardswish(inplace=True), nn.Flatten(), nn.LazyLinear(3))
    inplace(torch.randn(1, 3, 8, 8))
    plain = nn.Sequential(*[nn.SiLU() if isinstance(m, nn.SiLU) else nn.Hardswish() if isinstance(m, nn.Hardswish)
                            else m for m in inplace]).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(NodeBacktrack(inplace.eval()).attribute(x), NodeBacktrack(plain).attribute(x))
    assert inplace[2].inplace and inplace[4].inplace
