"""NodeBacktrack: exact paths on hand-built nets, every supported op, properties over random models, errors."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import NodeBacktrack, zoo
from captum_ext.testing import backtrack_loop


def set_weights(layer: nn.Module, weight, bias=None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).view_as(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.zeros_like(layer.bias) if bias is None else torch.as_tensor(bias))
    return layer


def fc_net() -> nn.Module:
    """x (3 values as a 3×1×1 image) → Linear(3→2) → ReLU → Linear(2→2)."""
    return nn.Sequential(
        nn.Flatten(), set_weights(nn.Linear(3, 2), [[1, -1, 2], [0, 1, 1]]), nn.ReLU(),
        set_weights(nn.Linear(2, 2), [[1, 1], [-1, 2]]),
    ).eval()


FC_INPUT = torch.tensor([1.0, 2.0, 1.0]).view(1, 3, 1, 1)  # hidden = relu([1, 3]), output = [4, 5]


def test_fc_all_positive_rule_by_hand():
    # Output 0 ← h0 (1·1 > 0) and h1 (3·1 > 0); h0 ← x0 (1), x2 (2) [x1: -2]; h1 ← x1 (2), x2 (1) [x0: 0].
    hits = NodeBacktrack(fc_net()).attribute(FC_INPUT, target=0)
    assert hits.view(-1).tolist() == [1.0, 1.0, 2.0]
    # Output 1 ← h1 only (h0·(-1) < 0); h1 ← x1, x2.
    assert NodeBacktrack(fc_net()).attribute(FC_INPUT, target=1).view(-1).tolist() == [0.0, 1.0, 1.0]


def test_fc_top_n_rule_and_bias_option_by_hand():
    # Top-1: output 0 ← h1 (3 > 1) ← x1 (2 > 1).
    hits = NodeBacktrack(fc_net(), fc_rule="top_n", fc_top_n=1).attribute(FC_INPUT, target=0)
    assert hits.view(-1).tolist() == [0.0, 1.0, 0.0]
    # With the paper's "W * A + b", a bias of -1.5 on h0 removes x0 (1 - 1.5 < 0) but keeps x2 (2 - 1.5 > 0).
    net = fc_net()
    with torch.no_grad():
        net[1].bias.copy_(torch.tensor([-1.5, 0.0]))
    with_bias = NodeBacktrack(net, include_bias=True).attribute(torch.tensor([3.0, 2.0, 1.0]).view(1, 3, 1, 1), 0)
    # h = relu([3 - 2 + 2 - 1.5, 0 + 2 + 1]) = [1.5, 3]; h0 ← x0 (3 - 1.5 > 0), x2 (2 - 1.5 > 0); h1 ← x1, x2
    assert with_bias.view(-1).tolist() == [1.0, 1.0, 2.0]
    net[1].bias.data = torch.tensor([-3.5, 0.0])
    out = NodeBacktrack(net, include_bias=True).attribute(torch.tensor([5.0, 0.0, 1.0]).view(1, 3, 1, 1), 0)
    # h = relu([5 + 2 - 3.5, 1]) = [3.5, 1]; h0: [5, 0, 2] - 3.5 → only x0; h1: [0, 0, 1] → x2
    assert out.view(-1).tolist() == [1.0, 0.0, 1.0]


def conv_pool_net() -> nn.Module:
    """conv(2→1, 3×3, pad 1) → ReLU → max-pool 2 → flatten → Linear(4→1) reading the bottom-right cell."""
    kernel = torch.zeros(1, 2, 3, 3)
    kernel[0, 0] = 1.0  # channel 0: sum over the window
    kernel[0, 1, 1, 1] = 1.0  # channel 1: the centre only
    return nn.Sequential(
        set_weights(nn.Conv2d(2, 1, 3, padding=1), kernel), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        set_weights(nn.Linear(4, 1), [0, 0, 0, 1]),
    ).eval()


def conv_pool_input() -> torch.Tensor:
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 1, 1] = 5.0
    x[0, 1, 2, 2] = 1.0
    x[0, 1, 3, 0] = 2.0
    return x  # conv output: 5 on rows/cols 0-2, 6 at (2, 2), 2 at (3, 0)


def test_conv_and_max_pool_by_hand():
    # FC (fed by a spatial map): argmax of a·W → pooled cell (1, 1); pool → conv output (2, 2) = 6;
    # conv: channel sums in the window are 5 (ch 0) and 1 (ch 1) → ch 0, its largest contribution at (1, 1).
    hits = NodeBacktrack(conv_pool_net()).attribute(conv_pool_input())
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, 0, 1, 1] = 1.0
    assert torch.equal(hits, expected)
    # Alg. 2 line 8 (every channel with a positive sum): channel 1 too, at its only contribution (2, 2).
    both = NodeBacktrack(conv_pool_net(), conv_rule="positive").attribute(conv_pool_input())
    expected[0, 1, 2, 2] = 1.0
    assert torch.equal(both, expected)


def spatial_fc_net() -> nn.Module:
    """A 1×2×2 map flattened into Linear(4→1) with weights [1, -1, 2, 0.5]."""
    return nn.Sequential(nn.Flatten(), set_weights(nn.Linear(4, 1), [1.0, -1.0, 2.0, 0.5])).eval()


@pytest.mark.parametrize("rule, top_n, expected", [
    ("argmax", 20, [1.0, 0.0, 0.0, 0.0]),  # contributions [3, -1, 2, 1]: the largest, pixel 0
    ("positive", 20, [1.0, 0.0, 1.0, 1.0]),  # every positive contribution
    ("top_n", 2, [1.0, 0.0, 1.0, 0.0]),  # the two largest positive ones
    ("top_n", 4, [1.0, 0.0, 1.0, 1.0]),  # n beyond the positive ones: never a negative contribution
])
def test_spatial_fc_rules_by_hand(rule, top_n, expected):
    x = torch.tensor([3.0, 1.0, 1.0, 2.0]).view(1, 1, 2, 2)
    hits = NodeBacktrack(spatial_fc_net(), spatial_fc_rule=rule, spatial_fc_top_n=top_n).attribute(x, target=0)
    assert hits.view(-1).tolist() == expected


def test_spatial_fc_argmax_on_all_negative_contributions_keeps_the_largest():
    # Contributions [-3, -1, -2, -1.5]: the argmax rule still follows one node (the least negative, pixel 1);
    # the positive rules end the path.
    x = torch.tensor([-3.0, 1.0, -1.0, -3.0]).view(1, 1, 2, 2)
    argmax = NodeBacktrack(spatial_fc_net(), spatial_fc_rule="argmax")
    assert argmax.attribute(x, 0).view(-1).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert float(NodeBacktrack(spatial_fc_net(), spatial_fc_rule="top_n").attribute(x, 0).sum()) == 0.0


def test_conv_top_n_rule_and_path_counts_by_hand():
    # conv_pool_net: channel sums 5 (ch 0) and 1 (ch 1) in the kept window. Top-1 is the max rule; top-2 adds
    # channel 1 at (2, 2), as the positive rule does.
    x = conv_pool_input()
    top1 = NodeBacktrack(conv_pool_net(), conv_rule="top_n", conv_top_n=1).attribute(x)
    assert torch.equal(top1, NodeBacktrack(conv_pool_net()).attribute(x))
    top2 = NodeBacktrack(conv_pool_net(), conv_rule="top_n", conv_top_n=2).attribute(x)
    assert torch.equal(top2, NodeBacktrack(conv_pool_net(), conv_rule="positive").attribute(x))
    assert top2[0, 1, 2, 2] == 1.0 and float(top2.sum()) == 2.0


def test_counting_paths_without_deduplication_by_hand():
    # fc_net, target 0: both hidden nodes reach x2, so x2 gets 2 with or without de-duplication (arrivals at the
    # input always count). One layer deeper, a node reached twice counts twice only without de-duplication:
    # Linear(1→2) duplicates the input into two hidden nodes that both feed the output.
    net = nn.Sequential(nn.Flatten(), set_weights(nn.Linear(1, 2), [[1.0], [2.0]]), nn.ReLU(),
                        set_weights(nn.Linear(2, 2), [[1.0, 1.0], [1.0, 0.0]]), nn.ReLU(),
                        set_weights(nn.Linear(2, 1), [[1.0, 1.0]])).eval()
    x = torch.ones(1, 1, 1, 1)
    # output ← h2_0, h2_1; h2_0 ← h1_0, h1_1; h2_1 ← h1_0 → h1_0 reached twice, h1_1 once; each ← x.
    assert NodeBacktrack(net).attribute(x, 0).item() == 2.0  # de-duplicated: h1_0 and h1_1 once each
    assert NodeBacktrack(net, deduplicate=False).attribute(x, 0).item() == 3.0  # three paths


class ShiftSum(nn.Module):
    """Two shifted copies of a 1×1×1×3 input added (a residual-style join) or concatenated, then a readout."""

    def __init__(self, join: str) -> None:
        super().__init__()
        self.join = join
        self.left = set_weights(nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False), [1, 0, 0])  # y[i] = x[i-1]
        self.right = set_weights(nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False), [0, 0, 1])  # y[i] = x[i+1]
        width = 3 if join == "add" else 6
        readout = torch.zeros(width)
        readout[1 if join == "add" else 4] = 1.0  # add: the middle; cat: the middle of the *right* copy
        self.fc = set_weights(nn.Linear(width, 1, bias=False), readout)

    def forward(self, x):
        a, b = self.left(x), self.right(x)
        joined = a + b if self.join == "add" else torch.cat([a, b], dim=1)
        return self.fc(torch.flatten(joined, 1))


@pytest.mark.parametrize("values, expected_pixel", [([4.0, 0.0, 1.0], 0), ([1.0, 0.0, 4.0], 2)])
def test_residual_add_follows_the_larger_branch(values, expected_pixel):
    x = torch.tensor(values).view(1, 1, 1, 3)
    hits = NodeBacktrack(ShiftSum("add").eval()).attribute(x, target=0)
    expected = torch.zeros(1, 1, 1, 3)
    expected[0, 0, 0, expected_pixel] = 1.0
    assert torch.equal(hits, expected)


def test_channel_cat_routes_to_the_right_input():
    hits = NodeBacktrack(ShiftSum("cat").eval()).attribute(torch.tensor([4.0, 0.0, 1.0]).view(1, 1, 1, 3), target=0)
    assert hits.view(-1).tolist() == [0.0, 0.0, 1.0]  # the right copy at the middle reads x[2]


class Functional(nn.Module):
    """Functional ops, depthwise/strided/dilated convs, BatchNorm, padding, avg and adaptive pooling, mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6)
        self.pad = nn.ZeroPad2d((1, 0, 1, 0))
        self.grouped = nn.Conv2d(6, 4, 2, groups=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.leaky_relu(self.depthwise(x), 0.1)
        x = F.avg_pool2d(self.grouped(self.pad(x)), 2, ceil_mode=True)
        x = torch.relu(x)
        pooled = torch.cat([F.adaptive_max_pool2d(x, 1).flatten(1), x.mean(dim=(2, 3))], dim=1)
        return self.fc(F.dropout(pooled, 0.5, training=self.training))


def random_model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "functional":
        model = Functional()
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
            model.bn.weight.uniform_(-1.0, 1.0)  # negative scales flip contributions: the fold must handle them
        return model.eval()
    if kind == "vgg":
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(54, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 4),
        ).eval()
    return torchvision.models.resnet18(num_classes=4).eval()


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["functional", "vgg", "resnet"]), seed=st.integers(0, 10_000),
       n=st.integers(1, 3), size=st.integers(9, 20))
def test_properties_over_random_models(kind, seed, n, size):
    model = random_model(kind, seed)
    flags = [(m, m.training) for m in model.modules()]
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    nb = NodeBacktrack(model)
    hits = nb.attribute(x)
    assert hits.shape == x.shape
    assert bool((hits >= 0).all()) and torch.equal(hits, hits.round())
    # (a path may end early: a node with no positive contribution has no predecessor, so hits can be all zero)
    single = torch.cat([nb.attribute(x[i : i + 1]) for i in range(n)])
    assert torch.equal(hits, single)  # batch invariance
    assert torch.equal(hits, nb.attribute(x))  # determinism
    density = nb.saliency(x, sigma=1.0)
    assert density.shape == (n, 1, size, size)
    assert bool((density >= 0).all() and (density <= 1).all())
    reached = (hits.flatten(1).sum(1) > 0).float()
    torch.testing.assert_close(density.flatten(1).amax(1), reached)
    assert [(m, m.training) for m in model.modules()] == flags
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())


def test_batchnorm_fold_agrees_with_an_explicitly_folded_model():
    from captum_ext._utils.folding import fold_conv_bn

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-1, 1)
    head = [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)]
    with_bn = nn.Sequential(conv, bn, *head).eval()
    folded = nn.Sequential(fold_conv_bn(conv, bn), *head).eval()
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(NodeBacktrack(with_bn).attribute(x), NodeBacktrack(folded).attribute(x))


def test_points_and_density():
    nb = NodeBacktrack(conv_pool_net())
    hits, points = nb.attribute(conv_pool_input(), return_points=True)
    assert len(points) == 1 and points[0].tolist() == [[1.0, 1.0, 1.0]]  # (y, x, count)
    density = nb.saliency(conv_pool_input(), sigma=1.0)
    assert float(density[0, 0, 1, 1]) == 1.0 and float(density[0, 0, 3, 3]) < 0.05
    mask = nb.saliency_mask(conv_pool_input(), sigma=1.0, threshold=0.5)
    assert mask.dtype == torch.bool and bool(mask[0, 0, 1, 1]) and not bool(mask[0, 0, 3, 3])


@pytest.mark.parametrize("rules, divisor", [({}, 16), (NodeBacktrack.TWO_CHANNEL_RULES, 32),
                                            (NodeBacktrack.DENSE_RULES, 128)])
def test_default_density_bandwidth_follows_the_rules(rules, divisor):
    model = random_model("vgg", 0)
    x = torch.rand(2, 3, 32, 32)
    nb = NodeBacktrack(model, **rules)
    expected = NodeBacktrack.density_from_hits(nb.attribute(x, target=1), sigma=32 / divisor)
    torch.testing.assert_close(nb.saliency(x, target=1), expected)


@pytest.mark.parametrize("groups", [1, 2])
def test_a_window_wholly_in_the_padding_ends_the_path(groups):
    # A 1×1 convolution with padding 1: its border outputs see only padding (their value is the bias alone).
    conv = nn.Conv2d(2, 2, 1, padding=1, groups=groups)
    with torch.no_grad():
        conv.bias.fill_(5.0)
    head = nn.Linear(72, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 36] = 1.0  # output channel 1 at (0, 0): a padding-only window
        head.weight[1, 36 + 7] = 1.0  # output channel 1 at (1, 1): the input pixel (0, 0)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head).eval()
    x = torch.rand(3, 2, 4, 4) + 0.1
    nb = NodeBacktrack(model)
    assert torch.equal(nb.attribute(x, target=0), torch.zeros_like(x))
    hits = nb.attribute(x, target=1)
    assert hits.sum() == 3 and bool((hits[:, :, 0, 0].sum(1) == 1).all())
    if groups == 1:
        for i in range(3):
            assert torch.equal(hits[i : i + 1], backtrack_loop(model, x[i : i + 1], 1))


def test_the_reference_loop_refuses_convolutions_it_does_not_model():
    with pytest.raises(NotImplementedError, match="stride-1"):
        backtrack_loop(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2)), torch.rand(1, 1, 5, 5), 0)


def test_model_left_as_found_after_an_exception():
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))

    model = Exploding().eval()
    model.conv.bias.requires_grad_(False)
    nb = NodeBacktrack(model)

    def explode(*_):
        raise RuntimeError("injected")

    handle = model.fc.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            nb.attribute(torch.randn(1, 3, 6, 6))
    finally:
        handle.remove()
    assert not model.training and not model.conv.bias.requires_grad and model.conv.weight.requires_grad


def test_train_mode_model_is_explained_in_eval_mode_and_restored():
    model = random_model("functional", 1).train()
    x = torch.randn(2, 3, 12, 12)
    running = model.bn.running_mean.clone()
    hits = NodeBacktrack(model).attribute(x)
    assert model.training and torch.equal(model.bn.running_mean, running)
    assert torch.equal(hits, NodeBacktrack(model.eval()).attribute(x))


@pytest.mark.parametrize(
    "model, words",
    [
        (nn.Sequential(nn.Conv2d(3, 8, 3), nn.PixelShuffle(2), nn.Flatten(), nn.Linear(8, 2)), "PixelShuffle"),
        (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(8, 2)), "Upsample"),
    ],
)
def test_unsupported_layers_are_named(model, words):
    with pytest.raises(NotImplementedError, match=words):
        NodeBacktrack(model)


def test_unsupported_functional_op_is_named():
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.fc((y * torch.sigmoid(y)).mean(dim=(2, 3)))

    with pytest.raises(NotImplementedError, match="sigmoid|mul"):
        NodeBacktrack(Gated())


def test_untraceable_model_gets_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x.flatten(1) if x.sum() > 0 else -x.flatten(1)

    with pytest.raises(ValueError, match="torch.fx cannot trace"):
        NodeBacktrack(Branchy())


@pytest.mark.parametrize(
    "inputs, target, error, words",
    [
        (torch.randn(3, 4, 4), None, ValueError, "N×C×H×W"),
        (torch.full((1, 2, 4, 4), float("nan")), None, ValueError, "NaN"),
        (conv_pool_input(), 1, ValueError, "out of range"),
        (conv_pool_input(), [0, 0], ValueError, "one entry per example"),
    ],
)
def test_bad_input(inputs, target, error, words):
    with pytest.raises(error, match=words):
        NodeBacktrack(conv_pool_net()).attribute(inputs, target=target)


@pytest.mark.parametrize("kwargs, words", [({"fc_rule": "all"}, "fc_rule"), ({"conv_rule": "min"}, "conv_rule"),
                                           ({"fc_top_n": 0}, "fc_top_n"),
                                           ({"spatial_fc_rule": "max"}, "spatial_fc_rule"),
                                           ({"spatial_fc_top_n": 0}, "spatial_fc_top_n"),
                                           ({"conv_rule": "top"}, "conv_rule"), ({"conv_top_n": 0}, "conv_top_n")])
def test_bad_options(kwargs, words):
    with pytest.raises(ValueError, match=words):
        NodeBacktrack(conv_pool_net(), **kwargs)


@pytest.mark.parametrize("builder", [torchvision.models.vgg16, torchvision.models.vgg19,
                                     torchvision.models.resnet18, torchvision.models.resnet50])
def test_torchvision_models_with_random_weights(builder):
    torch.manual_seed(0)
    model = builder(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    hits = NodeBacktrack(model).attribute(x, target=[1, 7])
    assert hits.shape == x.shape and bool((hits.sum((1, 2, 3)) > 0).all())


@pytest.mark.parametrize("name", ["scenes_vgg", "scenes_resnet", "scenes_vgg_multilabel"])
def test_zoo_models(name):
    from captum_ext.datasets import scenes

    batch = scenes.make_scenes(4, mode="single", split="test", seed=3)
    hits = NodeBacktrack(zoo.load(name)).attribute(scenes.normalize(batch.images), target=batch.labels)
    assert bool((hits.sum((1, 2, 3)) > 0).all())


def test_efficientnet_lite0_traces_and_backtracks():
    pytest.importorskip("efficientnet_lite_pytorch")
    from captum_ext.zoo.efficientnet import load_efficientnet_lite0

    model = load_efficientnet_lite0()
    x = torch.randn(1, 3, 224, 224)
    hits = NodeBacktrack(model).attribute(x)
    assert hits.shape == x.shape and float(hits.sum()) > 0


@settings(max_examples=16, deadline=None)
@given(seed=st.integers(0, 10_000), conv_rule=st.sampled_from(["max", "top_n", "positive"]),
       spatial_fc_rule=st.sampled_from(["argmax", "top_n", "positive"]), fc_rule=st.sampled_from(["positive", "top_n"]),
       top_n=st.integers(1, 3), deduplicate=st.booleans())
def test_vectorised_equals_a_per_node_loop(seed, conv_rule, spatial_fc_rule, fc_rule, top_n, deduplicate):
    """An independent, literal per-node implementation of Algorithms 1-3 gives the same hits, for every rule."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Dropout(), nn.Linear(6, 3),
    ).eval()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
    rules = {"conv_rule": conv_rule, "spatial_fc_rule": spatial_fc_rule, "fc_rule": fc_rule,
             "deduplicate": deduplicate}
    hits = NodeBacktrack(model, conv_top_n=top_n, spatial_fc_top_n=top_n, fc_top_n=top_n, **rules).attribute(
        x, target=[0, 2])
    for i, target in enumerate([0, 2]):
        looped = backtrack_loop(model, x[i : i + 1], target, fc_top_n=top_n, spatial_fc_top_n=top_n,
                                conv_top_n=top_n, **rules)
        assert torch.equal(hits[i : i + 1], looped)


class Block(nn.Module):
    """A torchvision-style residual block: ``out += identity`` then an in-place ReLU."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        out = self.conv(x)
        if self.inplace:
            out += x
        else:
            out = out + x
        out = self.relu(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def test_inplace_ops_do_not_corrupt_the_recorded_values():
    torch.manual_seed(0)
    inplace, plain = Block(True).eval(), Block(False).eval()
    plain.load_state_dict(inplace.state_dict())
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(NodeBacktrack(inplace).attribute(x), NodeBacktrack(plain).attribute(x))
    assert inplace.relu.inplace  # the user's module is untouched


def test_vectorised_equals_the_loop_on_the_trained_zoo_vgg():
    from captum_ext.datasets import scenes

    vgg = zoo.load("scenes_vgg")
    flat = nn.Sequential(*vgg.features, *vgg.classifier).eval()  # in-place ReLUs, dropout between flatten and FC
    batch = scenes.make_scenes(1, split="test", seed=8)
    x = scenes.normalize(batch.images)
    assert torch.equal(NodeBacktrack(flat).attribute(x, target=batch.labels),
                       backtrack_loop(flat, x, int(batch.labels[0])))


@pytest.mark.parametrize("hits, sigma, error, words", [(torch.zeros(4, 4), None, ValueError, "hits"),
                                                        (torch.zeros(1, 1, 4, 4), -1.0, ValueError, "sigma")])
def test_density_from_hits_rejects_bad_input(hits, sigma, error, words):
    with pytest.raises(error, match=words):
        NodeBacktrack.density_from_hits(hits, sigma)


class _Resize(nn.Module):
    """x → F.interpolate → flatten → Linear reading one output pixel (weight one-hot)."""

    def __init__(self, size: int, mode: str, pixel: int) -> None:
        super().__init__()
        self.size, self.mode = size, mode
        self.fc = set_weights(nn.Linear(size * size, 1), F.one_hot(torch.tensor(pixel), size * size).float())

    def forward(self, x):
        y = F.interpolate(x, size=(self.size, self.size), mode=self.mode,
                          **({} if self.mode == "nearest" else {"align_corners": False}))
        return self.fc(y.flatten(1))


def test_resize_rules_by_hand():
    # nearest 2×2 → 4×4: output (3, 3) reads source (floor(3·2/4), floor(3·2/4)) = (1, 1)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    hits = NodeBacktrack(_Resize(4, "nearest", 15).eval()).attribute(x, target=0)
    assert hits.view(-1).tolist() == [0.0, 0.0, 0.0, 1.0]
    # bilinear 2×2 → 3×3: output (0, 1) reads row 0 only and columns 0, 1 with weights ½, ½: the larger value wins
    for values, expected in (([1.0, 0.0, 0.0, 5.0], [1.0, 0.0, 0.0, 0.0]), ([1.0, 3.0, 0.0, 5.0], [0.0, 1.0, 0.0, 0.0])):
        hits = NodeBacktrack(_Resize(3, "bilinear", 1).eval()).attribute(torch.tensor(values).view(1, 1, 2, 2), 0)
        assert hits.view(-1).tolist() == expected


class _ScaledByConstants(nn.Module):
    """conv → × buffer → + buffer (broadcast) → − 1 → ÷ 2 → flatten → Linear: constants keep the conv's nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = set_weights(nn.Conv2d(1, 1, 1), torch.ones(1))
        self.register_buffer("gain", torch.full((1, 1, 1, 1), 3.0))
        self.register_buffer("offset", torch.tensor([0.5]))
        self.fc = set_weights(nn.Linear(4, 1), [0.0, 0.0, 1.0, 0.0])

    def forward(self, x):
        return self.fc((((self.conv(x) * self.gain + self.offset) - 1) / 2).flatten(1))


def test_products_and_sums_with_constants_keep_the_attributed_node():
    hits = NodeBacktrack(_ScaledByConstants().eval()).attribute(torch.rand(1, 1, 2, 2) + 1, target=0)
    assert hits.view(-1).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_product_of_two_attributed_values_is_refused_at_construction():
    class Squared(nn.Module):
        def forward(self, x):
            return (x * x).flatten(1)

    with pytest.raises(NotImplementedError, match="additional_forward_args"):
        NodeBacktrack(Squared())


def test_a_mask_given_as_additional_argument_is_a_constant():
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = set_weights(nn.Linear(4, 1), [1.0, 1.0, 1.0, 1.0])

        def forward(self, x, mask):
            return self.fc((x * mask).flatten(1))

    x, mask = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2), torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # The linear layer reads a flattened map: one node, the argmax of A ⊙ W = x·mask = [1, 0, 3, 0] (not x's 4)
    hits = NodeBacktrack(Masked().eval(), spatial_fc_rule="argmax").attribute(x, target=0,
                                                                            additional_forward_args=(mask,))
    assert hits.view(-1).tolist() == [0.0, 0.0, 1.0, 0.0]
    ones = torch.ones_like(mask)
    assert NodeBacktrack(Masked().eval(), spatial_fc_rule="argmax").attribute(x, 0, (ones,)).view(-1).tolist() == \
        [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("copy_ratio", [0, 10**9])
def test_both_ways_of_gathering_receptive_fields_agree(monkeypatch, copy_ratio):
    """Fields read straight from the input and from the channels-last copy give the same walk (strides,
    padding, dilation, groups, depthwise)."""
    from captum_ext.attr import _backtrack_rules

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 6, (1, 3), padding=(0, 1)),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()
    x = torch.randn(3, 3, 13, 11)
    expected = {rule: NodeBacktrack(model, conv_rule=rule, deduplicate=False).attribute(x, target=[0, 1, 3])
                for rule in ("max", "positive")}
    monkeypatch.setattr(_backtrack_rules, "FIELD_COPY_RATIO", copy_ratio)
    for rule, hits in expected.items():
        assert torch.equal(NodeBacktrack(model, conv_rule=rule, deduplicate=False).attribute(x, [0, 1, 3]), hits)


@pytest.mark.parametrize("rules", [{"conv_rule": "max"}, {"conv_rule": "top_n", "conv_top_n": 2},
                                   {"conv_rule": "top_n", "conv_top_n": 3, "include_bias": True},
                                   {"conv_rule": "top_n", "conv_top_n": 7, "deduplicate": False}])
def test_the_compiled_cpu_kernel_walks_exactly_as_the_tensor_operations(monkeypatch, rules):
    """The compiled kernel (channel sums, strongest channels, strongest taps per node) gives the tensor path's
    hits: strides, padding, dilation, groups, depthwise, 1×1 and non-square kernels, bias, more channels asked for
    than a group has."""
    from captum_ext.attr import _backtrack_kernels, _backtrack_rules

    if not _backtrack_kernels.available():
        pytest.skip("Numba (the `fast` extra) is not installed")
    monkeypatch.setattr(_backtrack_rules, "FIELD_COPY_RATIO", 10**9)  # every layer through the channels-last rows
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 6, (1, 3), padding=(0, 1)),
        nn.ReLU(), nn.Conv2d(6, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()
    x = torch.randn(3, 3, 13, 11)
    calls = []
    kernel = _backtrack_kernels.conv_entries
    monkeypatch.setattr(_backtrack_kernels, "conv_entries", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    compiled = NodeBacktrack(model, **rules).attribute(x, target=[0, 1, 3])
    assert len(calls) >= 5 and compiled.sum() > 0  # every convolution went through the kernel
    monkeypatch.setattr(_backtrack_kernels, "ENABLED", False)
    through_kernel = len(calls)
    assert torch.equal(NodeBacktrack(model, **rules).attribute(x, target=[0, 1, 3]), compiled)
    assert len(calls) == through_kernel


def test_explaining_from_several_threads_at_once_gives_each_its_own_hits():
    """Threads share the model and the compiled kernel (one parallel launch at a time) and get the hits of calls
    made one after the other."""
    import threading

    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    explainer = NodeBacktrack(model, **NodeBacktrack.TWO_CHANNEL_RULES)
    inputs = [torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    expected = [explainer.attribute(x, target=k) for k, x in enumerate(inputs)]
    got = [None] * len(inputs)

    def explain(k):
        for _ in range(3):
            got[k] = explainer.attribute(inputs[k], target=k)

    threads = [threading.Thread(target=explain, args=(k,)) for k in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), kernel=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
       dilation=st.integers(1, 2), ceil_mode=st.booleans())
def test_max_pool_windows_match_max_pool2d_indices(seed, kernel, stride, padding, dilation, ceil_mode):
    """The kept-node window argmax equals torch's max-pool indices, ties included (integer-valued input), by the
    tensor operations and by the compiled CPU kernel."""
    from captum_ext.attr import _backtrack_index_kernels, _backtrack_kernels
    from captum_ext.attr._backtrack_pooling import _window_argmax

    if padding * 2 > kernel:
        return  # torch refuses padding above half the kernel
    x = torch.randint(0, 3, (2, 3, 7, 6), generator=torch.Generator().manual_seed(seed)).float()
    settings_ = {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation}
    pooled, index = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    b, c, y, xs = [t.reshape(-1) for t in torch.meshgrid(*[torch.arange(n) for n in pooled.shape], indexing="ij")]
    assert torch.equal(_window_argmax(x, b, c, y, xs, settings_), index.reshape(-1))
    if _backtrack_kernels.available():
        h_out, w_out = pooled.shape[-2:]
        geometry = [(v, v) for v in (kernel, stride, padding, dilation)]
        got = _backtrack_index_kernels.window_argmax(x, b, (c * h_out + y) * w_out + xs, (h_out, w_out), *geometry)
        assert torch.equal(got, c * x.shape[2] * x.shape[3] + index.reshape(-1))


def _reassign_data(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            module.weight.data = torch.randn_like(module.weight)  # a hand-written update or weight surgery


def _copy_in_place(model: nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))


def _load_other_state(model: nn.Module) -> None:
    model.load_state_dict({k: torch.randn_like(v) if v.is_floating_point() else v
                           for k, v in model.state_dict().items()})


@pytest.mark.parametrize("change", [_reassign_data, _copy_in_place, _load_other_state])
@pytest.mark.parametrize("with_bn", [False, True])
def test_a_reused_explainer_walks_with_the_models_current_weights(change, with_bn):
    """Before: ``param.data = …`` kept the parameter's identity and version, so a reused NodeBacktrack walked the
    old (folded) convolution weights with the new activations."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if with_bn else nn.Identity(), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    x = torch.randn(4, 3, 16, 16)
    explainer = NodeBacktrack(model)
    before = explainer.attribute(x, target=1)
    change(model)
    reused = explainer.attribute(x, target=1)
    assert torch.equal(reused, NodeBacktrack(model).attribute(x, target=1))
    assert not torch.equal(reused, before)  # the change moved the hits: the check above could fail


def test_data_parallel_models_are_explained_as_the_module_they_wrap():
    """Before: refused with torch.fx's "Proxy object cannot be iterated" (blamed on Python control flow)."""
    from captum_ext import MultiLayerClassDiffSaliency

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    wrapped, x = nn.DataParallel(inner), torch.randn(2, 3, 8, 8)
    assert torch.equal(NodeBacktrack(wrapped).attribute(x, target=1), NodeBacktrack(inner).attribute(x, target=1))
    torch.testing.assert_close(MultiLayerClassDiffSaliency(wrapped, [inner[0]]).attribute(x, target=1),
                               MultiLayerClassDiffSaliency(inner, [inner[0]]).attribute(x, target=1))


@pytest.mark.parametrize("channels, top_n", [(4, 2), (16, 5), (64, 2)])
@pytest.mark.parametrize("rule", ["conv", "fc", "spatial_fc"])
def test_exactly_tied_contributions_keep_the_lower_indices_on_every_code_path(channels, top_n, rule):
    """Before: the tensor path chose among equal sums with ``topk``, which leaves that choice unspecified: with 4
    tied channels and two kept it kept channels 2 and 3 on the GPU path and without Numba, 0 and 1 with Numba and in
    the reference loop (and the fully connected rules kept 5 and 6 of 8 tied inputs everywhere)."""
    import captum_ext.attr._backtrack_kernels as kernels
    from captum_ext.testing import accelerator_code_paths

    x, expected = torch.ones(1, channels, 2, 2), torch.zeros(1, channels, 2, 2)
    if rule == "conv":  # the spatial argmax keeps position (0, 0), then the top channels there
        model = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.Flatten(), nn.Linear(4, 1, bias=False))
        rules = {"conv_rule": "top_n", "conv_top_n": top_n}
        expected[0, :top_n, 0, 0] = 1.0
    elif rule == "fc":  # a vector of pooled channels: the top channels, each at its window's first largest value
        model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1, bias=False))
        rules = {"fc_rule": "top_n", "fc_top_n": top_n}
        expected[0, :top_n, 0, 0] = 1.0
    else:  # a flattened C×H×W map: the first top_n of its elements
        model = nn.Sequential(nn.Flatten(), nn.Linear(4 * channels, 1, bias=False))
        rules = {"spatial_fc_rule": "top_n", "spatial_fc_top_n": top_n}
        expected.view(-1)[:top_n] = 1.0
    with torch.no_grad():
        for layer in model:
            if hasattr(layer, "weight"):
                layer.weight.fill_(1.0)
    model.eval()
    for compiled in (True, False):
        for accelerator in (False, True):
            kernels.ENABLED = compiled
            try:
                explainer = NodeBacktrack(model, **rules)
                if accelerator:
                    with accelerator_code_paths():
                        hits = explainer.attribute(x, target=0)
                else:
                    hits = explainer.attribute(x, target=0)
            finally:
                kernels.ENABLED = True
            assert torch.equal(hits, expected), (compiled, accelerator, hits.flatten().nonzero().flatten().tolist())
    if rule != "fc":  # the reference loop has no pooling
        assert torch.equal(backtrack_loop(model, x, 0, **rules), expected)
