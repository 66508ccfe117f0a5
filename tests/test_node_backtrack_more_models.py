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
from test_node_backtrack import set_weights


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


# ---------------------------------------------------------------------------------------------------------------------
# 2. Squeeze-and-excitation gates
# ---------------------------------------------------------------------------------------------------------------------

PRODUCTS = {"f*g": lambda f, g: f * g, "g*f": lambda f, g: g * f, "torch.mul": torch.mul,
            "Tensor.mul": lambda f, g: f.mul(g)}
POOLS = {"function": lambda f: F.adaptive_avg_pool2d(f, 1), "mean": lambda f: f.mean((2, 3), keepdim=True),
         "module": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d((1, 1))}


class Gated(nn.Module):
    """conv1 (2→2, 1×1, identity) → f; g = sigmoid(fc(pool(f))), fc = diag(-1, 1); conv2(f·g) (2→1, 2×2, ones)
    → Linear(1→1, 1)."""

    def __init__(self, product, pool, scale_activation=torch.sigmoid) -> None:
        super().__init__()
        self.product, self.pool, self.scale_activation = product, pool, scale_activation
        self.conv1 = set_weights(nn.Conv2d(2, 2, 1, bias=False), torch.eye(2))
        self.fc = set_weights(nn.Conv2d(2, 2, 1, bias=False), [[-1.0, 0.0], [0.0, 1.0]])
        self.conv2 = set_weights(nn.Conv2d(2, 1, 2, bias=False), torch.ones(8))
        self.head = set_weights(nn.Linear(1, 1), [[1.0]])

    def forward(self, x):
        f = self.conv1(x)
        g = self.scale_activation(self.fc(self.pool(f)))
        return self.head(self.conv2(self.product(f, g)).flatten(1))


# Channel 0 is all ones (window sum 4), channel 1 has 3.5 at pixel 3: ungated, channel 0 would win (its first
# tap, input pixel 0). The average pooling gives (1, 0.875) → fc → (-1, 0.875) → sigmoid → (0.27, 0.71): gated sums
# 1.08 and 2.47, so conv2 keeps channel 1 at pixel 3, which conv1 (identity) takes from input channel 1, pixel 3
# (flat 4 + 3). The max pooling gives (1, 3.5): the same choice.
GATE_INPUT = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 3.5]).view(1, 2, 2, 2)


@pytest.mark.parametrize("product", list(PRODUCTS))
@pytest.mark.parametrize("pool", list(POOLS))
def test_gated_product_follows_the_feature_branch_by_hand(product, pool):
    hits = NodeBacktrack(Gated(PRODUCTS[product], POOLS[pool]).eval()).attribute(GATE_INPUT, target=0)
    assert hits.view(-1).tolist() == [0.0] * 7 + [1.0]
    ungated = NodeBacktrack(Gated(lambda f, g: f, POOLS[pool]).eval()).attribute(GATE_INPUT, target=0)
    assert ungated.view(-1).tolist() == [1.0] + [0.0] * 7


def test_hardsigmoid_gate_by_hand():
    # hardsigmoid(-1, 0.875) = (0.33, 0.65): gated sums 1.33 and 2.27, the same path as with the sigmoid.
    hits = NodeBacktrack(Gated(PRODUCTS["f*g"], POOLS["module"], nn.Hardsigmoid()).eval()).attribute(GATE_INPUT)
    assert hits.view(-1).tolist() == [0.0] * 7 + [1.0]


@pytest.mark.parametrize("gate", [lambda f: torch.sigmoid(f), lambda f: f, lambda f: f.mean((1,), keepdim=True)],
                         ids=["sigmoid(f)", "f", "channel-mean"])
def test_a_product_of_two_attributed_values_without_a_pooled_gate_is_refused(gate):
    class Product(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            f = self.conv(x)
            return (f * gate(f)).mean((2, 3))

    with pytest.raises(NotImplementedError, match="mul.*squeeze-and-excitation"):
        NodeBacktrack(Product())


def test_a_product_of_two_gates_is_refused():
    class TwoGates(nn.Module):
        def forward(self, x):
            return (x.mean((2, 3), keepdim=True) * F.adaptive_max_pool2d(x, 1)).flatten(1)

    with pytest.raises(NotImplementedError, match="global pooling"):
        NodeBacktrack(TwoGates())


def test_a_gate_that_does_not_broadcast_per_channel_is_refused_when_called():
    class Flat(nn.Module):
        def forward(self, x):
            return (x * F.adaptive_avg_pool2d(x, 1).flatten(1)).flatten(1)  # 1×2 against 1×2×2×2

    with pytest.raises(NotImplementedError, match="broadcast"):
        NodeBacktrack(Flat()).attribute(GATE_INPUT, target=0)


def test_a_gate_in_a_graph_with_several_inputs_follows_the_attributed_feature():
    # The gate of the first input's features multiplies them; the second input (attributed too) is added.
    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return ((x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1))) + y).flatten(1)

    x, y = GATE_INPUT, torch.zeros(1, 2, 2, 2)
    hits_x, hits_y = NodeBacktrack(TwoInputs()).attribute((x, y), target=7)
    assert hits_x.view(-1).tolist() == [0.0] * 7 + [1.0] and float(hits_y.sum()) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# 3. Moving elements: channel shuffle, transpose, permute, slicing, chunk/split
# ---------------------------------------------------------------------------------------------------------------------

def channel_shuffle(x, groups):
    """torchvision's ShuffleNetV2 channel shuffle."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


def swap_halves(x):
    a, b = x.chunk(2, dim=1)
    return torch.cat((b, a), dim=1)


def split_three(x):
    a, b, c = torch.split(x, [1, 2, 3], dim=1)  # channels 0 | 1 2 | 3 4 5
    return torch.cat((c, a, b), dim=1)


# Each net maps a 1×6×1×2 input to a 12-wide output; the expected list gives, for every output element, the input
# element (flat C×H×W index) it was moved from, worked out by hand.
MOVES = {
    # out channel c' = 3·(c mod 2) + c div 2 holds input channel: 0, 3, 1, 4, 2, 5 (groups 2, 3 channels each)
    "shuffle": (lambda x: channel_shuffle(x, 2), [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]),
    # channels 3 4 5 then 0 1 2
    "chunk": (swap_halves, [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]),
    # channels 3 4 5, 0, 1 2
    "split": (split_three, [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]),
    # N×1×2×6 (H, W, C order): position w, channel c at w·6 + c comes from c·2 + w
    "permute": (lambda x: x.permute(0, 2, 3, 1), [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]),
    "torch.permute": (lambda x: torch.permute(x, [0, 3, 2, 1]), [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]),
    "transpose": (lambda x: x.transpose(1, 3), [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]),
    "movedim": (lambda x: torch.movedim(x, 1, 3), [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]),
    # channels 2 3 4, then 0 1 2 (channel 2 twice)
    "slice": (lambda x: torch.cat((x[:, 2:5], x[:, :3]), dim=1), [4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5]),
}


class Moved(nn.Module):
    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x).flatten(1)


@pytest.mark.parametrize("name", list(MOVES))
def test_moving_operations_map_each_node_to_its_source_by_hand(name):
    function, sources = MOVES[name]
    x = torch.rand(12, 6, 1, 2)
    hits = NodeBacktrack(Moved(function)).attribute(x, target=list(range(12)))
    expected = torch.zeros(12, 12)
    expected[torch.arange(12), torch.tensor(sources)] = 1.0
    assert torch.equal(hits.view(12, 12), expected)


def test_shuffled_channels_reach_the_right_convolution_input_by_hand():
    # conv (1→6, 1×1, weights 1..6) then a shuffle: output channel 1 is conv channel 3 (weight 4), which reads
    # the single input channel at the same pixel; a Linear picks pixel 1 of output channel 1 (flat 1·2 + 1 = 3).
    class ConvShuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = set_weights(nn.Conv2d(1, 6, 1, bias=False), torch.arange(1.0, 7.0))
            self.fc = set_weights(nn.Linear(12, 1), torch.eye(12)[3])

        def forward(self, x):
            return self.fc(channel_shuffle(self.conv(x), 2).flatten(1))

    x = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    hits = NodeBacktrack(ConvShuffle(), spatial_fc_rule="argmax").attribute(x, target=0)
    assert hits.view(-1).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("function, words, errors", [
    (lambda x: x[0:1], "within each example", NotImplementedError),
    (lambda x: x.transpose(0, 1).transpose(0, 1), "within each example", NotImplementedError),
    # torch 2.3's fx cannot trace a cat of a chunk proxy: refused when traced, with fx's reason (ValueError)
    (lambda x: torch.cat(x.chunk(2, dim=1), dim=1), "chunk|cat", (NotImplementedError, ValueError)),
], ids=["batch-slice", "batch-transpose", "cat-of-a-split"])
def test_moves_across_examples_are_refused(function, words, errors):
    with pytest.raises(errors, match=words):
        NodeBacktrack(Moved(function)).attribute(torch.rand(2, 6, 1, 2), target=0)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Channels-last blocks (ConvNeXt): LayerNorm over channels, Linear on the channel axis
# ---------------------------------------------------------------------------------------------------------------------

class ChannelsLast(nn.Module):
    """conv → [permute to N×H×W×C → LayerNorm(C) → Linear(C→D) → GELU → Linear(D→C) → permute back] → head; with
    ``as_conv`` the bracket is BatchNorm-free 1×1 convolutions with the same weights instead (no LayerNorm)."""

    def __init__(self, as_conv: bool = False, norm: bool = True) -> None:
        super().__init__()
        self.as_conv, self.norm = as_conv, norm
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.ln = nn.LayerNorm(3)
        self.fc1, self.fc2 = nn.Linear(3, 5), nn.Linear(5, 3)
        self.head = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        y = self.conv(x)
        if self.as_conv:
            y = F.conv2d(F.gelu(F.conv2d(y, self.fc1.weight[:, :, None, None], self.fc1.bias)),
                         self.fc2.weight[:, :, None, None], self.fc2.bias)
        else:
            y = y.permute(0, 2, 3, 1)
            y = self.fc2(F.gelu(self.fc1(self.ln(y) if self.norm else y))).permute(0, 3, 1, 2)
        return self.head(torch.relu(y).flatten(1))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), conv_rule=st.sampled_from(["max", "top_n", "positive"]),
       include_bias=st.booleans(), deduplicate=st.booleans())
def test_linear_on_channels_last_maps_equals_a_1x1_convolution(seed, conv_rule, include_bias, deduplicate):
    torch.manual_seed(seed)
    model = ChannelsLast(norm=False).eval()
    as_conv = ChannelsLast(as_conv=True).eval()
    as_conv.load_state_dict(model.state_dict())
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
    always_kept = conv_rule == "max"  # then the argmax rules keep one node everywhere: some paths arrive
    rules = {"conv_rule": conv_rule, "conv_top_n": 2, "include_bias": include_bias, "deduplicate": deduplicate,
             "spatial_fc_rule": "argmax" if always_kept else "top_n", "spatial_fc_top_n": 3}
    expected = NodeBacktrack(as_conv, **rules).attribute(x, target=[0, 1, 3])
    assert float(expected.sum()) > 0 or not always_kept
    assert torch.equal(NodeBacktrack(model, **rules).attribute(x, target=[0, 1, 3]), expected)


def test_channels_last_linear_and_layer_norm_by_hand():
    # x = 1×2×1×2 → permute → 1×1×2×2 (position, channel) → LayerNorm(2): per position (-1, 1) when channel 1 is
    # larger, (1, -1) otherwise → Linear(2→1, weights (1, 2)) → back to 1×1×1×2 → flatten; target 0 is position
    # 0, where x = (3, 5): normalised (-1, 1), contributions (-1, 2): channel 1, input flat 1·2 + 0 = 2.
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(2, elementwise_affine=False)
            self.fc = set_weights(nn.Linear(2, 1, bias=False), [[1.0, 2.0]])

        def forward(self, x):
            return self.fc(self.ln(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).flatten(1)

    x = torch.tensor([3.0, 1.0, 5.0, 0.0]).view(1, 2, 1, 2)
    assert NodeBacktrack(Block()).attribute(x, target=0).view(-1).tolist() == [0.0, 0.0, 1.0, 0.0]
    # position 1: x = (1, 0) → (1, -1) → contributions (1, -2): channel 0, input flat 1
    assert NodeBacktrack(Block()).attribute(x, target=1).view(-1).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_layer_norm_over_more_than_the_last_dimension_is_refused():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.LayerNorm([3, 2, 2]), nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(NotImplementedError, match="LayerNorm over the last dimension"):
        NodeBacktrack(model).attribute(torch.rand(1, 2, 2, 2), target=0)


# ---------------------------------------------------------------------------------------------------------------------
# torchvision classifiers with random weights
# ---------------------------------------------------------------------------------------------------------------------

def check_torchvision_model(name: str, size: int = 64) -> None:
    """Hits of a randomly initialised torchvision classifier: shaped like the input, finite, non-negative, some
    paths reach every image, and the model is left as found (mode, parameters, buffers, in-place flags)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = {k: m.inplace for k, m in model.named_modules() if hasattr(m, "inplace")}
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    hits = NodeBacktrack(model).attribute(x, target=[1, 7])
    assert hits.shape == x.shape and hits.dtype == x.dtype
    assert bool(torch.isfinite(hits).all()) and bool((hits >= 0).all())
    assert bool((hits.sum((1, 2, 3)) > 0).all())
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert inplace == {k: m.inplace for k, m in model.named_modules() if hasattr(m, "inplace")}


def newly_supported():
    """Every torchvision classifier that NodeBacktrack refused before smooth activations, gates, permutations and
    channels-last blocks were supported."""
    return [n for n in torchvision.models.list_models(module=torchvision.models)
            if n.startswith(("efficientnet", "mobilenet_v3", "regnet_y", "shufflenet_v2",
                                                              "convnext"))]


FAST = ["efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", "regnet_y_400mf", "shufflenet_v2_x0_5",
        "convnext_tiny"]


@pytest.mark.parametrize("name", FAST)
def test_newly_supported_torchvision_models_with_random_weights(name):
    check_torchvision_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in newly_supported() if n not in FAST])
def test_every_newly_supported_torchvision_model_with_random_weights(name):
    check_torchvision_model(name)


def test_operations_inside_a_gate_branch_need_no_rule():
    """No path enters a gate's branch, so an operation there without a rule (``torch.erf``) is accepted. A positive
    gate scales each channel by one factor, which keeps the sign of every FC contribution and every argmax inside a
    channel: the hits equal those of the same net without the gate."""

    class Gated(nn.Module):
        def __init__(self, gated: bool) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.excite = nn.Conv2d(3, 3, 1)
            self.head = nn.Linear(3, 2)
            self.gated = gated

        def forward(self, x):
            features = torch.relu(self.conv(x))
            if self.gated:  # erf has no rule; the gate stays in (1, 3)
                features = features * (torch.erf(self.excite(F.adaptive_avg_pool2d(features, 1))) + 2.0)
            return self.head(F.adaptive_avg_pool2d(features, 1).flatten(1))

    torch.manual_seed(0)
    gated, plain = Gated(True).eval(), Gated(False).eval()
    plain.load_state_dict(gated.state_dict())
    x = torch.randn(2, 2, 6, 6)
    hits = NodeBacktrack(gated).attribute(x, target=[0, 1])
    assert hits.sum() > 0
    assert torch.equal(hits, NodeBacktrack(plain).attribute(x, target=[0, 1]))

    class ErfOnThePath(nn.Module):
        def forward(self, x):
            return torch.erf(x).flatten(1)

    with pytest.raises(NotImplementedError, match="erf"):
        NodeBacktrack(ErfOnThePath())
