"""SensitivityBBox: exact gradients, the ridge fit, box validity, state round trips, errors, zoo CorLoc."""
import pytest
import torch
from captum.attr import Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext import SensitivityBBox, metrics, zoo
from captum_ext._utils.ridge import RidgeRegression
from captum_ext._utils.smoothing import gaussian_blur
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
    # Inputs that already require gradients: Captum otherwise sets the flag itself and warns that it did.
    theirs = Saliency(model).attribute(x.clone().requires_grad_(), target=predicted)
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
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=2.0, features="grid")
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
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, power=1.0, features="grid")
    features = sb.box_features(images)
    weight = torch.tensor([[0.05, 0.1, -0.05, 0.2], [0.1, -0.1, 0.15, 0.0], [-0.1, 0.05, 0.0, 0.1],
                           [0.0, 0.0, 0.1, -0.05]], dtype=torch.float64)
    bias = torch.tensor([0.2, 0.2, 0.6, 0.7], dtype=torch.float64)
    boxes = (features @ weight + bias) * torch.tensor([8.0, 6.0, 8.0, 6.0], dtype=torch.float64)
    return images, boxes.float(), boxes


def test_ridge_fit_recovers_a_known_linear_map():
    images, boxes, _ = synthetic_problem(200, seed=0)
    paper = dict(grid_size=2, sigma=0.0, power=1.0, features="grid")
    sb = SensitivityBBox(half_square_energy, **paper).fit(images, boxes, ridge=0.0)
    test_images, _, test_boxes = synthetic_problem(50, seed=1)
    torch.testing.assert_close(sb.predict_boxes(test_images).double(), test_boxes, atol=1e-4, rtol=0)
    # A strong penalty shrinks towards the mean box and must do worse.
    shrunk = SensitivityBBox(half_square_energy, **paper).fit(images, boxes, ridge=100.0)
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


@pytest.mark.parametrize("key, value, words", [
    ("weight", lambda t: t.clone().index_fill_(0, torch.tensor([0]), float("nan")),
     r"`state\['weight'\]` holds NaN or inf"),
    ("bias", lambda t: t + float("inf"), r"`state\['bias'\]` holds NaN or inf"),
    ("weight", lambda t: t.to(torch.int64), r"`state\['weight'\]` must be a floating-point tensor, got torch.int64"),
    ("ridge", lambda r: -1.0, r"state\['ridge'\]"),
    ("ridge", lambda r: float("nan"), r"state\['ridge'\]"),
    ("stats.xtx", lambda t: t * float("nan"), r"`state\['stats.xtx'\]` holds NaN or inf"),
])
def test_a_corrupt_state_is_refused_naming_the_entry(key, value, words):
    """Before: NaN weights loaded and gave NaN boxes (promised valid), a negative ridge loaded as it was."""
    images, boxes, _ = synthetic_problem(20, seed=5)
    state = SensitivityBBox(half_square_energy, grid_size=2).fit(images, boxes).state_dict()
    assert key in state
    with pytest.raises(ValueError, match=words):
        SensitivityBBox(half_square_energy, grid_size=2).load_state_dict({**state, key: value(state[key])})


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
    # Batch invariance: the batch gives the per-image boxes (float32 features: batched and single blurs round
    # differently, and the random map's weights, up to ~300 here, magnify that to about 1e-4 pixels).
    single = torch.cat([sb.predict_boxes(images[i : i + 1]) for i in range(n)])
    torch.testing.assert_close(boxes, single, atol=5e-4, rtol=0)
    torch.testing.assert_close(sb.predict_boxes(images, batch_size=1), boxes, atol=5e-4, rtol=0)


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


# ----------------------------------------------------------------------------------------------------------------
# Feature sets
# ----------------------------------------------------------------------------------------------------------------

def two_blob_map() -> torch.Tensor:
    """A 1×1×4×8 map: 1 on rows 0-1 × columns 0-1, 3 on rows 2-3 × columns 4-7."""
    image = torch.zeros(1, 1, 4, 8)
    image[0, 0, :2, :2] = 1.0
    image[0, 0, 2:, 4:] = 3.0
    return image


def test_moments_of_a_known_map_by_hand():
    sb = SensitivityBBox(half_square_energy, sigma=0.0, features="moments")
    f = sb.box_features(two_blob_map())
    assert f.shape == (1, 28)
    # power 1: weights 1/3 on the small blob (4 px), 1 on the big one (8 px): masses 4/3 and 8, total 28/3.
    # x centres: small blob (0.5+1.5)/2/8 = 0.125, big blob (4.5+..+7.5)/4/8 = 0.75; the centroid weighs them by
    # their masses.
    cx = (4 / 3 * 0.125 + 8 * 0.75) / (28 / 3)
    cy = (4 / 3 * 0.25 + 8 * 0.75) / (28 / 3)
    torch.testing.assert_close(f[0, :2], torch.tensor([cx, cy], dtype=torch.float64))
    # power 8: the small blob weighs (1/3)^8, next to nothing -> the big blob's centroid and spread.
    p8 = f[0, 21:28]
    x = (torch.arange(4, 8, dtype=torch.float64) + 0.5) / 8
    var_x = float((x**2).mean() - x.mean() ** 2)
    torch.testing.assert_close(p8[[0, 1, 4, 5]], torch.tensor([0.75, 0.75, var_x, 1 / 64], dtype=torch.float64),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(p8[2] ** 2, p8[4])  # the std block is the root of the variance block


def test_cam_features_are_the_threshold_boxes_in_image_fractions():
    sb = SensitivityBBox(half_square_energy, sigma=0.0, features="cam")
    f = sb.box_features(two_blob_map())
    scale = torch.tensor([8.0, 4.0, 8.0, 4.0], dtype=torch.float64)
    # Thresholds 0.2 and 0.3 keep both blobs (1 >= 0.3·3): the larger region (8 px) wins; so at every threshold.
    for k, threshold in enumerate((0.2, 0.3, 0.4, 0.5, 0.6)):
        expected = metrics.boxes_from_saliency(two_blob_map(), threshold=threshold)[0].double() / scale
        torch.testing.assert_close(f[0, 4 * k : 4 * k + 4], expected)
    torch.testing.assert_close(f[0, :4] * scale, torch.tensor([4.0, 2.0, 8.0, 4.0], dtype=torch.float64))


def test_window_features_ignore_clutter_outside_the_windows_by_hand():
    from captum_ext.attr._box_features import map_moments, threshold_boxes

    obj = torch.zeros(1, 1, 64, 64)
    obj[0, 0, 20:25, 30:33] = 1.0  # 5×3 object: its blurred peak is its centre pixel (row 22, column 31)
    obj[0, 0, 22, 31] = 2.0
    scene = obj.clone()
    scene[0, 0, 50:53, 2:5] = 0.5  # clutter 28 rows below: outside every window (half-sides 8, 12, 16 px)
    sb = SensitivityBBox(half_square_energy, sigma=0.0, features="window")
    f = sb.box_features(scene)
    assert f.shape == (1, 64) and sb.feature_dim == 64
    torch.testing.assert_close(f[0, :2], torch.tensor([31.5 / 64, 22.5 / 64], dtype=torch.float64))
    own = map_moments(obj, (1.0, 2.0))[0]
    for k in range(3):  # each window holds the object only: its moments are the object's
        torch.testing.assert_close(f[0, 2 + 14 * k : 16 + 14 * k], own)
    torch.testing.assert_close(f[0, 44:], threshold_boxes(obj)[0])
    torch.testing.assert_close(f[0, 44:48] * 64, torch.tensor([30.0, 20.0, 33.0, 25.0], dtype=torch.float64))
    # The global blocks see the clutter: their centroid moves, the window block's does not.
    assert not torch.allclose(map_moments(scene, (1.0,))[0, :2], own[:2])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(3, 40), w=st.integers(3, 40), half=st.floats(0.5, 20.0),
       sparse=st.booleans())
def test_window_boxes_equal_the_threshold_boxes_of_the_masked_map(seed, h, w, half, sparse):
    from captum_ext.attr._box_features import peak_windows, threshold_boxes, window_boxes

    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(4, 1, h, w, generator=gen) ** (8 if sparse else 1)
    maps[0] = 0.0  # no salient pixel: the full image
    maps[1, 0, : h // 2] = 0.0
    _, windows = peak_windows(maps, (half,), peak_blur=1.0)
    peak = gaussian_blur(maps, 1.0).flatten(1).argmax(1)  # the peaks peak_windows centres on
    expected = threshold_boxes(maps * windows[0])
    torch.testing.assert_close(window_boxes(maps, peak // w, peak % w, half), expected, atol=1e-12, rtol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(3, 40), w=st.integers(3, 40), sparse=st.booleans())
def test_window_moments_equal_the_moments_of_the_masked_map(seed, h, w, sparse):
    from captum_ext.attr._box_features import map_moments, peak_windows, window_moments

    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(4, 1, h, w, generator=gen) ** (8 if sparse else 1)
    maps[0] = 0.0  # no mass anywhere: uniform weights over the whole image
    maps[1] = 0.0
    maps[1, 0, 0, 0] = 1.0  # mass far from the windows of a wide peak blur
    half_sides = (1.5, 3.0, 5.0)
    _, windows = peak_windows(maps, half_sides, peak_blur=1.0)
    peak = gaussian_blur(maps, 1.0).flatten(1).argmax(1)
    expected = torch.cat([map_moments(maps * window, (1.0, 2.0)) for window in windows], dim=1)
    # atol: a variance that is zero up to rounding (~1e-16) has a square root ~1e-8 either way
    torch.testing.assert_close(window_moments(maps, peak // w, peak % w, half_sides), expected, atol=1e-7, rtol=0)


def test_gcv_equals_its_formula_on_the_data_and_picks_the_fitting_penalty():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(5, 2, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(60, 2, generator=gen,
                                                                                    dtype=torch.float64)
    regression = RidgeRegression(5, 2).accumulate(x[:25], y[:25]).accumulate(x[25:], y[25:])
    scores = regression.gcv((1e-3, 1.0))
    xc, yc = x - x.mean(0), y - y.mean(0)
    for penalty, score in scores.items():  # the reference: explicit residuals and hat-matrix trace
        alpha = penalty * float((xc * xc).sum() / 5)
        inverse = torch.linalg.inv(xc.T @ xc + alpha * torch.eye(5, dtype=torch.float64))
        rss = ((yc - xc @ inverse @ xc.T @ yc) ** 2).sum()
        df = torch.trace(xc @ inverse @ xc.T)
        assert score == pytest.approx(float(60 * rss / (60 - df - 1) ** 2), rel=1e-6)
    assert scores[1e-3] < scores[1.0]  # a real linear relation: the light penalty generalises better
    noise = RidgeRegression(5, 2).accumulate(x, torch.randn(60, 2, generator=gen, dtype=torch.float64))
    light, strong = noise.gcv((1e-6, 1e3)).values()
    assert strong < light  # targets unrelated to the features: shrinking to the mean wins
    few = RidgeRegression(5, 2).accumulate(x[:4], y[:4])  # 4 images, 5 features: a light penalty interpolates
    assert few.gcv((1e-6,))[1e-6] == float("inf") and few.gcv((1e3,))[1e3] < float("inf")


def test_default_ridge_is_chosen_by_gcv_and_an_explicit_one_is_kept():
    images, boxes, _ = synthetic_problem(40, seed=5)
    sb = SensitivityBBox(half_square_energy, grid_size=2, features="grid")
    fitted = sb.fit(images, boxes)
    scale = torch.tensor([8.0, 6.0, 8.0, 6.0], dtype=torch.float64)  # boxes are fitted in image fractions
    regression = RidgeRegression(sb.feature_dim, 4).accumulate(sb.box_features(images), boxes.double() / scale)
    scores = regression.gcv(sb.RIDGE_CANDIDATES)
    assert fitted.ridge == min(sorted(scores, reverse=True), key=lambda p: scores[p])
    assert sb.fit_attributions(images, boxes).ridge == fitted.ridge
    assert sb.fit(images, boxes, ridge=0.3).ridge == 0.3


def test_feature_sets_concatenate_in_table_order_and_class_is_one_hot():
    maps = two_blob_map().expand(2, 1, 4, 8)
    sb = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, features=("class", "grid"), num_classes=3)
    assert sb.features == ("grid", "class") and sb.feature_dim == 4 + 3
    f = sb.box_features(maps, target=torch.tensor([2, 0]))
    grid = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, features="grid").box_features(maps)
    torch.testing.assert_close(f[:, :4], grid)
    assert f[:, 4:].tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert sb.box_features(maps, target=1)[:, 4:].tolist() == [[0.0, 1.0, 0.0]] * 2
    multi = SensitivityBBox(half_square_energy, grid_size=2, sigma=0.0, features=("grid", "multiscale"))
    assert multi.box_features(maps).shape == (2, 4 + 16 + 64) and multi.feature_dim == 84


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"features": ()}, "at least one block"),
        ({"features": ("grid", "edges")}, "unknown blocks"),
        ({"features": "class"}, "num_classes"),
        ({"features": "class", "num_classes": 0}, "num_classes"),
    ],
)
def test_bad_feature_sets_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SensitivityBBox(half_square_energy, **kwargs)


def test_class_features_need_the_target_for_maps_but_not_for_images():
    images = torch.rand(6, 1, 4, 8) + 0.1
    boxes = torch.tensor([[1.0, 1.0, 5.0, 3.0]] * 6)
    sb = SensitivityBBox(tiny_cnn(classes=3), grid_size=2, features=("grid", "class"), num_classes=3)
    with pytest.raises(ValueError, match="`target` is required"):
        sb.fit_attributions(images, boxes)
    with pytest.raises(ValueError, match="outside"):
        sb.fit_attributions(images, boxes, target=torch.tensor([0, 1, 2, 3, 0, 1]))
    sb.fit_attributions(images, boxes, target=torch.tensor([0, 1, 2, 0, 1, 2]))
    x = torch.randn(4, 3, 8, 8)
    predicted = tiny_cnn(classes=3)(x).argmax(1)
    # Without a target the explained (predicted) class feeds the class block, as for the map.
    sens = sb.attribute(x, target=predicted)
    torch.testing.assert_close(sb.predict_boxes(x), sb.boxes_from_attributions(sens, predicted))
    # The activation variant's map ignores the target, but the class block still reads it.
    model = tiny_cnn(classes=3)
    act = SensitivityBBox(model, activation_layer=model[3], grid_size=2, features=("grid", "class"), num_classes=3)
    assert act._sensitivity_and_classes(x, 2, None)[1].tolist() == [2] * 4
    assert act._sensitivity_and_classes(x, None, None)[1].tolist() == model(x).argmax(1).tolist()


def test_feature_set_round_trip_and_old_files_load_as_the_paper_features(tmp_path):
    images, boxes, _ = synthetic_problem(30, seed=6)
    labels = torch.arange(30) % 4
    sb = SensitivityBBox(half_square_energy, grid_size=2, features=("grid", "moments", "cam", "class"), num_classes=4)
    sb.fit_attributions(images, boxes, target=labels)
    path = tmp_path / "rich.pt"
    torch.save(sb.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["features"] == ["grid", "moments", "cam", "class"] and state["num_classes"] == 4
    restored = SensitivityBBox(half_square_energy, grid_size=2, features="grid").load_state_dict(state)
    assert restored.features == sb.features and restored.num_classes == 4
    assert torch.equal(restored.boxes_from_attributions(images, labels), sb.boxes_from_attributions(images, labels))
    # A file from before feature sets: version 1, no "features" key -> the paper's pooled grid.
    paper = SensitivityBBox(half_square_energy, grid_size=2, features="grid").fit_attributions(images, boxes)
    old = {k: v for k, v in paper.state_dict().items() if k not in ("features", "num_classes")}
    old["version"] = 1
    loaded = SensitivityBBox(half_square_energy, grid_size=2).load_state_dict(old)
    assert loaded.features == ("grid",) and loaded.num_classes is None
    assert torch.equal(loaded.boxes_from_attributions(images), paper.boxes_from_attributions(images))
    with pytest.raises(ValueError, match="features"):
        SensitivityBBox(half_square_energy, grid_size=2).load_state_dict({**old, "version": 2})


def test_statistics_from_older_files_load_and_partial_ones_are_refused():
    images, boxes, _ = synthetic_problem(30, seed=7)
    sb = SensitivityBBox(half_square_energy, grid_size=2, features="grid").fit(images, boxes)
    # Files written before the targets' sum of squares existed: they load, re-save without it, and select_ridge
    # (which needs no GCV) still works.
    older = {k: v for k, v in sb.state_dict().items() if k != "stats.y_sq_sum"}
    loaded = SensitivityBBox(half_square_energy, grid_size=2).load_state_dict(older)
    assert "stats.y_sq_sum" not in loaded.state_dict()
    assert torch.equal(loaded.predict_boxes(images), sb.predict_boxes(images))
    assert loaded.select_ridge(images, boxes, candidates=(0.1,)) == sb.select_ridge(images, boxes, candidates=(0.1,))
    with pytest.raises(RuntimeError, match="sum of squares"):
        loaded._regression.gcv((0.1,))
    partial = {k: v for k, v in sb.state_dict().items() if k != "stats.xtx"}
    with pytest.raises(ValueError, match=r"stats\.xtx"):
        SensitivityBBox(half_square_energy, grid_size=2).load_state_dict(partial)


def test_float64_maps_beyond_float32_range_give_the_same_boxes_and_empty_batches_work():
    images, boxes, _ = synthetic_problem(40, seed=8)
    sb = SensitivityBBox(half_square_energy, grid_size=2).fit(images, boxes)
    maps = images.double()
    expected = sb.boxes_from_attributions(maps)
    for factor in (1e39, 1e-46):  # overflow and underflow in float32
        torch.testing.assert_close(sb.boxes_from_attributions(maps * factor), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(sb.cam_boxes_from_attributions(maps * factor), sb.cam_boxes_from_attributions(maps))
    for features in ("grid", "multiscale", "moments", "cam", "window"):
        empty = SensitivityBBox(half_square_energy, grid_size=2, features=features).box_features(images[:0])
        assert empty.shape == (0, SensitivityBBox(half_square_energy, grid_size=2, features=features).feature_dim)


def test_errors_name_what_the_user_passed():
    images, boxes, _ = synthetic_problem(4, seed=9)
    sb = SensitivityBBox(half_square_energy, grid_size=2)
    with pytest.raises(ValueError, match="`attributions` must hold at least two"):
        sb.fit_attributions(images[:1], boxes[:1])
    with pytest.raises(ValueError, match="`inputs` must hold at least two"):
        sb.fit(images[:1], boxes[:1])


def test_window_boxes_agree_with_the_windows_just_below_a_whole_half_side():
    """A half-side a hair below 2 (1.9999999999999964): float32 rounds it to 2, so the windows took one pixel more
    than the window boxes, which read whole pixels."""
    from captum_ext.attr._box_features import gaussian_blur, peak_windows, threshold_boxes, window_boxes

    maps = torch.rand(4, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    maps[0] = 0.0
    maps[1, 0, :1] = 0.0
    half = 1.9999999999999964
    _, windows = peak_windows(maps, (half,), peak_blur=1.0)
    peak = gaussian_blur(maps, 1.0).flatten(1).argmax(1)
    torch.testing.assert_close(window_boxes(maps, peak // 4, peak % 4, half), threshold_boxes(maps * windows[0]),
                               atol=1e-12, rtol=0)


def test_an_activation_layer_of_a_compiled_model_that_already_ran_is_read():
    """Before: a compiled model ignores hooks added after it compiled, so once it had run the layer was "called 0
    times" and the map was refused although the layer runs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = SensitivityBBox(net, activation_layer=net[0]).attribute(x)
    compiled = torch.compile(net, backend="eager")
    SensitivityBBox(compiled).attribute(x, target=0)  # the compiled model runs once without the hook
    assert torch.equal(SensitivityBBox(compiled, activation_layer=net[0]).attribute(x), expected)
