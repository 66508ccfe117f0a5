"""SensitivityBBox: exact gradients, the ridge fit, box validity, state round trips, errors, zoo CorLoc."""
import pytest
import torch
from captum.attr import Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import SensitivityBBox, metrics, zoo
from captum_ext.datasets import scenes


def half_square_energy(x: torch.Tensor) -> torch.Tensor:
    """f(x) = ½‖x‖²: its gradient is x itself, so the sensitivity map is |x| — maps we choose exactly."""
    return 0.5 * (x**2).flatten(1).sum(dim=1)


def tiny_cnn(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes),
    ).eval()


def test_attribute_of_a_linear_model_is_its_weight_row():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(4, 3, 2, 2)
    sens = SensitivityBBox(model).attribute(x, target=torch.tensor([0, 1, 2, 1]))
    expected = model[1].weight.detach()[[0, 1, 2, 1]].abs().view(4, 3, 2, 2)
    assert torch.equal(sens, expected)
    signed = SensitivityBBox(model).attribute(x, target=2, abs=False)
    assert torch.equal(signed, model[1].weight.detach()[2].view(1, 3, 2, 2).expand(4, 3, 2, 2))


def test_attribute_matches_captum_saliency_and_predicted_target():
    model = tiny_cnn()
    x = torch.randn(5, 3, 8, 8)
    predicted = model(x).argmax(1)
    ours = SensitivityBBox(model).attribute(x)
    theirs = Saliency(model).attribute(x, target=predicted)
    torch.testing.assert_close(ours, theirs)


def test_attribute_tuple_in_tuple_out_and_additional_args():
    def forward(a, b, scale):
        return scale * (a.flatten(1) * 2 + b.flatten(1) * 3)

    a, b = torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2)
    ga, gb = SensitivityBBox(forward).attribute((a, b), target=1, additional_forward_args=(5.0,))
    assert ga.tolist() == [[[[0.0, 10.0]]]] * 2 and gb.tolist() == [[[[0.0, 15.0]]]] * 2


def test_activation_layer_variant_differentiates_the_summed_activations():
    layer = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([2.0, -3.0]).view(2, 1, 1, 1))
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(8, 4))
    sens = SensitivityBBox(model, activation_layer=layer).attribute(torch.randn(3, 1, 2, 2), target=None)
    assert torch.equal(sens, torch.ones(3, 1, 2, 2))  # |2 - 3| at every pixel


def test_box_features_by_hand():
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=2.0)
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, :2, :2] = 4.0  # pooled cell (0,0) = 4
    image[0, 0, 2:, 2:] = 2.0  # pooled cell (1,1) = 2
    features = sb.box_features(sb.attribute(image))
    # max-normalised: [1, 0, 0, 0.5]; squared: [1, 0, 0, 0.25]; sum-normalised:
    torch.testing.assert_close(features, torch.tensor([[0.8, 0.0, 0.0, 0.2]], dtype=torch.float64))
    blank = sb.box_features(torch.zeros(2, 3, 4, 4))
    torch.testing.assert_close(blank, torch.full((2, 4), 0.25, dtype=torch.float64))


def synthetic_problem(n: int, seed: int):
    """Random maps and boxes that are an exact affine function of their features."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 6, 8, generator=gen) + 0.1
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=1.0)
    features = sb.box_features(images)
    weight = torch.tensor([[0.05, 0.1, -0.05, 0.2], [0.1, -0.1, 0.15, 0.0], [-0.1, 0.05, 0.0, 0.1],
                           [0.0, 0.0, 0.1, -0.05]], dtype=torch.float64)
    bias = torch.tensor([0.2, 0.2, 0.6, 0.7], dtype=torch.float64)
    boxes = (features @ weight + bias) * torch.tensor([8.0, 6.0, 8.0, 6.0], dtype=torch.float64)
    return images, boxes.float(), boxes


def test_ridge_fit_recovers_a_known_linear_map():
    images, boxes, _ = synthetic_problem(200, seed=0)
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=1.0).fit(images, boxes, ridge=0.0)
    test_images, _, test_boxes = synthetic_problem(50, seed=1)
    torch.testing.assert_close(sb.predict_boxes(test_images).double(), test_boxes, atol=1e-4, rtol=0)
    # A strong penalty shrinks towards the mean box and must do worse.
    shrunk = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=1.0).fit(images, boxes, ridge=100.0)
    assert (shrunk.predict_boxes(test_images).double() - test_boxes).abs().max() > 0.01


def test_fit_accepts_an_iterable_of_batches_and_matches_the_tensor_fit():
    images, boxes, _ = synthetic_problem(60, seed=2)
    whole = SensitivityBBox(half_square_energy, grid_size=2).fit(images, boxes, batch_size=7)
    loader = [(images[i : i + 25], boxes[i : i + 25]) for i in range(0, 60, 25)]
    streamed = SensitivityBBox(half_square_energy, grid_size=2).fit(loader, show_progress=True)
    torch.testing.assert_close(whole.state_dict()["weight"], streamed.state_dict()["weight"])


def test_fitting_twice_gives_the_same_map_and_select_ridge_keeps_the_best():
    images, boxes, _ = synthetic_problem(80, seed=3)
    sb = SensitivityBBox(half_square_energy, grid_size=2)
    first = sb.fit(images, boxes).state_dict()["weight"]
    second = sb.fit(images, boxes).state_dict()["weight"]
    assert torch.equal(first, second)
    val_images, val_boxes, _ = synthetic_problem(40, seed=4)
    scores = sb.select_ridge(val_images, val_boxes, candidates=(0.0, 1e3))
    assert set(scores) == {0.0, 1e3} and scores[0.0] >= scores[1e3]
    assert sb.ridge == max(scores, key=lambda p: (scores[p], p))


def test_predict_before_fit_raises():
    sb = SensitivityBBox(half_square_energy)
    with pytest.raises(RuntimeError, match="not fitted"):
        sb.predict_boxes(torch.rand(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="not fitted"):
        sb.state_dict()
    with pytest.raises(RuntimeError, match="not fitted"):
        sb.select_ridge(torch.rand(2, 1, 4, 4), torch.zeros(2, 4))


def test_state_dict_round_trip_through_weights_only_load(tmp_path):
    images, boxes, _ = synthetic_problem(50, seed=5)
    sb = SensitivityBBox(half_square_energy, grid_size=2).fit(images, boxes)
    path = tmp_path / "sb.pt"
    torch.save(sb.state_dict(), path)
    restored = SensitivityBBox(half_square_energy, grid_size=2).load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored.predict_boxes(images), sb.predict_boxes(images))
    assert restored.ridge == sb.ridge
    with pytest.raises(ValueError, match="grid_size"):
        SensitivityBBox(half_square_energy, grid_size=3).load_state_dict(sb.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        SensitivityBBox(half_square_energy, grid_size=2).load_state_dict({"version": 1})


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), h=st.integers(2, 20), w=st.integers(2, 20),
       scale=st.floats(0.01, 100.0))
def test_boxes_are_valid_and_inside_the_image_whatever_the_map(seed, n, h, w, scale):
    gen = torch.Generator().manual_seed(seed)
    sb = SensitivityBBox(tiny_cnn(seed % 5), grid_size=3)
    sb.load_state_dict({"version": 1, "grid_size": 3, "channel_reduction": "max", "sigma": 4.0, "power": 4.0,
                        "ridge": 0.0, "weight": scale * torch.randn(9, 4, generator=gen, dtype=torch.float64),
                        "bias": scale * torch.randn(4, generator=gen, dtype=torch.float64)})
    images = torch.randn(n, 3, h, w, generator=gen)
    boxes = sb.predict_boxes(images)
    assert boxes.shape == (n, 4)
    assert bool((boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all())
    assert bool((boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all())
    # Batch invariance: the batch gives the per-image boxes.
    single = torch.cat([sb.predict_boxes(images[i : i + 1]) for i in range(n)])
    torch.testing.assert_close(boxes, single, atol=1e-4, rtol=0)
    torch.testing.assert_close(sb.predict_boxes(images, batch_size=1), boxes, atol=1e-4, rtol=0)


def test_model_state_and_hooks_restored_after_success_and_failure():
    model = tiny_cnn()
    model[0].bias.requires_grad_(False)
    layer = model[3]
    sb = SensitivityBBox(model, activation_layer=layer)
    sb.attribute(torch.randn(2, 3, 8, 8))
    assert len(layer._forward_hooks) == 0 and not model.training
    assert not model[0].bias.requires_grad and model[0].weight.requires_grad

    def explode(*_):
        raise RuntimeError("injected")

    handle = model[4].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            sb.attribute(torch.randn(2, 3, 8, 8))
    finally:
        handle.remove()
    assert len(layer._forward_hooks) == 0 and len(model[4]._forward_hooks) == 0
    assert not model.training and not model[0].bias.requires_grad


def test_user_inputs_are_left_untouched():
    x = torch.randn(2, 3, 8, 8)
    SensitivityBBox(tiny_cnn()).attribute(x, target=0)
    assert not x.requires_grad and x.grad is None


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda sb, x, b: sb.fit(x, b[:, :3]), ValueError, "last dimension 4"),
        (lambda sb, x, b: sb.fit(x, b[:, [2, 1, 0, 3]]), ValueError, "x1 <= x2"),
        (lambda sb, x, b: sb.fit(x, torch.full_like(b, float("nan"))), ValueError, "NaN"),
        (lambda sb, x, b: sb.fit(x, b[:3]), ValueError, "same length"),
        (lambda sb, x, b: sb.fit(x), ValueError, "`boxes` is required"),
        (lambda sb, x, b: sb.fit(x[:1], b[:1]), ValueError, "at least two"),
        (lambda sb, x, b: sb.fit(x, b, ridge=-1.0), ValueError, "ridge"),
        (lambda sb, x, b: sb.fit(x, b, batch_size=0), ValueError, "batch_size"),
        (lambda sb, x, b: sb.fit(x, b, target=[0, 1]), ValueError, "one entry per image"),
        (lambda sb, x, b: sb.fit((x, x), b), TypeError, "single image tensor"),
        (lambda sb, x, b: sb.fit([(x, b, 0, 0)]), TypeError, "each batch"),
        (lambda sb, x, b: sb.attribute(x[0]), ValueError, "N×C×H×W"),
        (lambda sb, x, b: sb.attribute(x * float("nan")), ValueError, "NaN"),
        (lambda sb, x, b: sb.attribute(x, target=3), ValueError, "out of range"),
        (lambda sb, x, b: sb.attribute(x.long()), TypeError, "floating-point"),
        (lambda sb, x, b: sb.box_features(x[0]), ValueError, "attributions"),
        (lambda sb, x, b: sb.cam_boxes(x, threshold=2.0), ValueError, "threshold"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, words):
    sb = SensitivityBBox(tiny_cnn())
    x = torch.randn(4, 3, 8, 8)
    b = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(4, 1)
    with pytest.raises(error, match=words):
        call(sb, x, b)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"grid_size": 0}, ValueError, "grid_size"),
        ({"channel_reduction": "min"}, ValueError, "channel_reduction"),
        ({"sigma": -1.0}, ValueError, "sigma"),
        ({"power": 0.0}, ValueError, "power"),
        ({"activation_layer": "conv"}, TypeError, "activation_layer"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        SensitivityBBox(tiny_cnn(), **kwargs)


def test_learned_boxes_beat_the_centre_box_on_zoo_scenes():
    """A real, small reproduction: 400 training scenes already localise far better than the paper's baseline."""
    model = zoo.load("scenes_vgg")
    train = scenes.make_scenes(400, split="train", seed=101)
    test = scenes.make_scenes(200, split="test", seed=102)
    sb = SensitivityBBox(model).fit(scenes.normalize(train.images), train.boxes, target=train.labels)
    learned = metrics.corloc(sb.predict_boxes(scenes.normalize(test.images), target=test.labels), test.boxes)
    size = (train.boxes[:, 2:] - train.boxes[:, :2]).mean(0)
    centre = torch.cat([32 - size / 2, 32 + size / 2]).expand(200, 4)
    baseline = metrics.corloc(centre, test.boxes)
    cam = metrics.corloc(sb.cam_boxes(scenes.normalize(test.images), target=test.labels), test.boxes)
    assert baseline < 0.15
    assert learned > 0.5 and cam > 0.5


def test_fit_attributions_equals_fit_on_the_images():
    images, boxes, _ = synthetic_problem(40, seed=6)
    from_images = SensitivityBBox(half_square_energy, grid_size=2).fit(images, boxes)
    from_maps = SensitivityBBox(half_square_energy, grid_size=2).fit_attributions(images.abs(), boxes)
    torch.testing.assert_close(from_images.state_dict()["weight"], from_maps.state_dict()["weight"])
    with pytest.raises(ValueError, match="same length"):
        from_maps.fit_attributions(images, boxes[:3])
