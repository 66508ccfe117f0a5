"""Input checks and model-state guarantees of the model-calling faithfulness metrics (deletion / insertion, ROAD,
infidelity): NaN / inf inputs, maps with H and W swapped and bad targets raise errors naming the argument, integer
sequences are accepted as targets, and the model is left exactly as found, even when it raises mid-way."""
import pytest
import torch
from torch import nn

from captum_ext.metrics import deletion_insertion_curves, infidelity_per_pair, road_curves, road_impute

CLASSES = 5


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, CLASSES))


def deletion(model, images, maps, targets, batch_size=64):
    return deletion_insertion_curves(model, images, maps, targets, steps=3, batch_size=batch_size)


def insertion(model, images, maps, targets, batch_size=64):
    return deletion_insertion_curves(model, images, maps, targets, "insertion", steps=3, batch_size=batch_size)


def road(model, images, maps, targets, batch_size=64):
    return road_curves(model, images, maps, targets, fractions=(0.25, 0.5), generator=torch.Generator().manual_seed(0),
                       batch_size=batch_size)


def infidelity(model, images, maps, targets, batch_size=64):
    return infidelity_per_pair(model, images, maps, targets, False, torch.Generator().manual_seed(0), samples=3,
                               batch_size=batch_size)


METRICS = pytest.mark.parametrize("metric", [deletion, insertion, road, infidelity],
                                  ids=["deletion", "insertion", "road", "infidelity"])


def inputs(height: int = 8, width: int = 8):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, height, width, generator=generator)
    maps = torch.rand(2, height, width, generator=generator)
    return images, maps, torch.tensor([1, 3])


@METRICS
def test_nan_maps_are_refused(metric):
    images, maps, targets = inputs()
    maps[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="`maps` contains NaN or inf"):
        metric(tiny_model().eval(), images, maps, targets)


@METRICS
def test_inf_images_are_refused(metric):
    images, maps, targets = inputs()
    images[1, 0, 4, 4] = float("inf")
    with pytest.raises(ValueError, match="`images` contains NaN or inf"):
        metric(tiny_model().eval(), images, maps, targets)


@METRICS
def test_maps_with_h_and_w_swapped_are_refused(metric):
    images, maps, targets = inputs(6, 8)
    model = tiny_model().eval()
    metric(model, images, maps, targets)  # 2×6×8 maps for 2×3×6×8 images: fine
    metric(model, images, maps[:, None], targets)  # N×1×H×W too
    with pytest.raises(ValueError, match=r"`maps` must hold one H×W map per image .* 2×6×8 .*got 2×8×6"):
        metric(model, images, maps.transpose(1, 2), targets)
    with pytest.raises(ValueError, match="`maps` must be 3-D or 4-D"):  # as many pixels, but flattened
        metric(model, images, maps.reshape(2, 48), targets)


def test_road_impute_refuses_a_mask_with_h_and_w_swapped():
    images = torch.rand(2, 3, 6, 8)
    removed = torch.zeros(2, 6, 8, dtype=torch.bool)
    removed[:, 2, 3] = True
    assert torch.equal(road_impute(images, removed, noise=0.0), road_impute(images, removed[:, None], noise=0.0))
    with pytest.raises(ValueError, match="`removed` must hold one H×W mask per image, .* 2×6×8 .*got 2×8×6"):
        road_impute(images, removed.transpose(1, 2), noise=0.0)


@METRICS
@pytest.mark.parametrize("bad", [[1, CLASSES + 2], [-1, 0]], ids=["too-large", "negative"])
def test_targets_out_of_range_are_refused(metric, bad):
    images, maps, _ = inputs()
    with pytest.raises(ValueError, match=rf"`targets` must be class indices in \[0, {CLASSES}\)"):
        metric(tiny_model().eval(), images, maps, torch.tensor(bad))


@METRICS
@pytest.mark.parametrize("bad", [torch.tensor([1.0, 2.0]), [1.0, 2.0], torch.tensor([True, False])],
                         ids=["float-tensor", "float-list", "bool-tensor"])
def test_non_integer_targets_are_refused(metric, bad):
    images, maps, _ = inputs()
    with pytest.raises(TypeError, match="`targets` must hold one integer class index per image"):
        metric(tiny_model().eval(), images, maps, bad)


@METRICS
@pytest.mark.parametrize("bad", [[1], [1, 2, 3], torch.tensor([[1, 2]])], ids=["short", "long", "2-D"])
def test_targets_of_the_wrong_length_are_refused(metric, bad):
    images, maps, _ = inputs()
    with pytest.raises(ValueError, match=r"`targets` must hold one integer class index per image \(2\)"):
        metric(tiny_model().eval(), images, maps, bad)


@METRICS
def test_a_model_without_class_scores_is_named(metric):
    images, maps, targets = inputs()
    with pytest.raises(ValueError, match="`model` must return B×K class scores"):
        metric(nn.Sequential(tiny_model(), nn.Flatten(0)).eval(), images, maps, targets)


@METRICS
def test_integer_sequences_and_other_integer_dtypes_give_the_same_values_as_a_long_tensor(metric):
    images, maps, targets = inputs()
    model = tiny_model().eval()
    expected = metric(model, images, maps, targets)
    for other in ([1, 3], (1, 3), targets.to(torch.int32), targets.to(torch.uint8)):
        assert torch.equal(metric(model, images, maps, other), expected)


class FailsOnSecondCall(nn.Module):
    """The wrapped model, but its second forward raises (after the first one ran, in train mode, BatchNorm)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("second call fails")
        return self.net(x)


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model: nn.Module, before) -> None:
    state, modes, flags = snapshot(model)
    assert state.keys() == before[0].keys()
    for key, value in state.items():
        assert torch.equal(value, before[0][key]), f"{key} changed"
    assert modes == before[1] and flags == before[2]


@METRICS
def test_a_model_in_train_mode_is_left_as_found(metric):
    images, maps, targets = inputs()
    model = tiny_model().train()
    model[0].bias.requires_grad_(False)
    model[3].eval()  # a mixed mode is restored module by module
    before = snapshot(model)
    values = metric(model, images, maps, targets)
    assert_unchanged(model, before)
    assert model.training and not model[3].training
    # It scored in eval mode: with the BatchNorm's running statistics, as an eval-mode model does.
    assert torch.equal(values, metric(tiny_model().eval(), images, maps, targets))


@METRICS
def test_a_model_that_raises_mid_way_is_left_as_found(metric):
    images, maps, targets = inputs()
    model = FailsOnSecondCall(tiny_model()).train()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="second call fails"):
        metric(model, images, maps, targets, batch_size=2)  # several forwards: the second one raises
    assert model.calls == 2
    assert_unchanged(model, before)
    assert all(m.training for m in model.modules())


@METRICS
def test_a_batchnorm_without_running_statistics_is_refused_unless_one_image_per_forward(metric):
    """Before: such a BatchNorm normalises every forward pass with its own statistics even in eval mode, so the
    scores changed with ``batch_size`` (a deletion AUC of 0.297 at batch size 1, 0.269 at 5) without a word."""
    images, maps, targets = inputs()
    model = tiny_model()
    model[1] = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match=r"BatchNorm `1` .* scores would depend on the other images .* batch_size=1"):
        metric(model, images, maps, targets)
    if metric in (deletion, insertion):  # no noise drawn in sequence: a pair's curve is its own
        one = metric(model, images, maps, targets, batch_size=1)
        assert torch.equal(one[1:], metric(model, images[1:], maps[1:], targets[1:], batch_size=1))


def test_infidelity_refuses_zero_noise():
    """Before: noise 0 scored every map, random or negated, a perfect 0."""
    images, maps, targets = inputs()
    with pytest.raises(ValueError, match="`noise`"):
        infidelity_per_pair(tiny_model().eval(), images, maps, targets, False, torch.Generator().manual_seed(0),
                            noise=0.0)
