"""Bad inputs to `captum_ext.explain` and `captum_ext.visualization.plot_attribution` get a clear error naming the
argument (a corrupt weights file, a batch of images, a map of another size, a NaN map), and inputs that mean
something valid are accepted: numpy / tensor class indices, a map with nothing to show for the chosen sign."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_ext import explain  # noqa: E402
from captum_ext.visualization import plot_attribution, plot_points  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return explain.load_model("scenes_vgg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- explain.load_model weights files -------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"garbage", b""], ids=["corrupt", "empty"])
def test_load_model_unreadable_weights_file_is_named(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a readable weights file") as info:
        explain.load_model("torchvision:resnet18", path)
    assert repr(str(path)) in str(info.value) and "state dict" in str(info.value)


def test_load_model_pickled_whole_model_says_to_save_the_state_dict(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 3), path)
    with pytest.raises(ValueError, match=r"not a readable weights file.*save model\.state_dict\(\)"):
        explain.load_model("torchvision:resnet18", path)


@pytest.mark.parametrize("content, kind", [([1, 2], "list"), (torch.zeros(3), "Tensor")])
def test_load_model_weights_holding_no_state_dict_is_named(tmp_path, content, kind):
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=f"holds a {kind}, not a state dict") as info:
        explain.load_model("torchvision:resnet18", path)
    assert repr(str(path)) in str(info.value)


def test_load_model_missing_weights_file_still_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        explain.load_model("torchvision:resnet18", tmp_path / "missing.pth")


# --- explain.explain image and target ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (0, 3, 64, 64)])
def test_explain_refuses_a_batch_naming_image_and_shape(loaded, shape):
    with pytest.raises(ValueError, match=r"`image` must be one image, 1×3×H×W .*got shape \(" + str(shape[0])):
        explain.explain(torch.rand(shape), loaded, ["saliency"])


def test_explain_refuses_a_non_tensor_or_a_bad_layout(loaded):
    with pytest.raises(TypeError, match="`image` must be a torch.Tensor.* or a numpy array H×W×3, got list"):
        explain.explain([[0.5]], loaded, ["saliency"])
    with pytest.raises(ValueError, match="numpy arrays are channels-last"):
        explain.explain(np.random.rand(1, 3, 64, 64), loaded, ["saliency"])
    with pytest.raises(ValueError, match="`image` must be one image with 1 or 3 channels"):
        explain.explain(torch.rand(1, 4, 64, 64), loaded, ["saliency"])


def test_explain_reads_a_float64_image_as_float32_and_refuses_bytes(loaded):
    """Before: a float64 image failed inside the model ("Input type (double) and bias type (float)"), and bytes
    were read as a white image."""
    image = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    result = explain.explain(image, loaded, ["saliency"], target=3)
    assert torch.equal(result["saliency"], explain.explain(image.float(), loaded, ["saliency"], target=3)["saliency"])
    with pytest.raises(TypeError, match=r"`image` must hold floats in \[0, 1\] .*got dtype torch.uint8: divide"):
        explain.explain((image * 255).to(torch.uint8), loaded, ["saliency"])


def test_explain_takes_a_numpy_image_as_image_libraries_give_it(loaded):
    """Before: an H×W×3 array (skimage, PIL, imageio) was refused; it now reads as read_image reads a file."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    expected = explain.explain(as_tensor, loaded, ["saliency"], target=3)["saliency"]
    assert torch.equal(explain.explain(pixels, loaded, ["saliency"], target=3)["saliency"], expected)
    gray = pixels[..., 0]
    assert explain.explain(gray, loaded, ["saliency"], target=3)["inputs"].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"`image` array holds float pixels in \[0, 255\], not in \[0, 1\]"):
        explain.explain(pixels.astype(np.float32) * (255 / pixels.max()), loaded, ["saliency"])
    with pytest.raises(ValueError, match="`image` must be one image"):
        explain.explain(np.stack([pixels, pixels]), loaded, ["saliency"])


@pytest.mark.parametrize("target", [np.int64(3), np.int32(3), torch.tensor(3), torch.tensor([3]), np.array([3])],
                         ids=["np.int64", "np.int32", "0-d tensor", "1-element tensor", "1-element array"])
def test_explain_accepts_integer_targets_of_numpy_and_torch(loaded, target):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    expected = explain.explain(image, loaded, ["saliency"], target=3)
    result = explain.explain(image, loaded, ["saliency"], target=target)
    assert result["target"] == 3 and type(result["target"]) is int
    assert torch.equal(result["saliency"], expected["saliency"]) and result["top"] == expected["top"]


@pytest.mark.parametrize("target", [True, np.bool_(True), 3.0, np.float32(3), torch.tensor(3.0), torch.tensor(True),
                                    torch.tensor([1, 2]), "3"])
def test_explain_refuses_targets_that_are_not_integers(loaded, target):
    with pytest.raises(ValueError, match=r"`target` must be an integer class index in \[0, 10\)"):
        explain.explain(torch.rand(1, 3, 64, 64), loaded, ["saliency"], target=target)


@pytest.mark.parametrize("target", [10, -1, np.int64(10), torch.tensor(-1)])
def test_explain_refuses_out_of_range_targets(loaded, target):
    with pytest.raises(ValueError, match=r"`target` must be a class index in \[0, 10\), got"):
        explain.explain(torch.rand(1, 3, 64, 64), loaded, ["saliency"], target=target)


# --- visualization.plot_attribution / plot_points -------------------------------------------------------------

def test_plot_attribution_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match="`attribution` is 8×8 but `image` is 16×16"):
        plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 16, 16), plt.figure().gca())
    with pytest.raises(ValueError, match="`density` is 8×12 but `image` is 16×16"):
        plot_points(torch.tensor([[1.0, 2.0]]), torch.rand(3, 16, 16), plt.figure().gca(), density=torch.rand(8, 12))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_plot_attribution_refuses_nan_or_inf_maps(bad):
    attribution = torch.rand(1, 16, 16)
    attribution[0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"`attribution` holds NaN or inf \(1 of 256 values\)"):
        plot_attribution(attribution, torch.rand(3, 16, 16), plt.figure().gca())
    with pytest.raises(ValueError, match="`density` holds NaN or inf"):
        plot_points(torch.zeros(0, 2), torch.rand(3, 16, 16), plt.figure().gca(), density=attribution)


def test_plot_attribution_refuses_an_unknown_sign_or_method():
    """Before: Captum's KeyError or bare AssertionError."""
    with pytest.raises(ValueError, match="`sign` must be one of"):
        plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), plt.figure().gca(), sign="positve")
    with pytest.raises(ValueError, match="`method` must be one of"):
        plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), plt.figure().gca(), method="heatmap")
    for method in ("masked_image", "alpha_scaling"):
        with pytest.raises(ValueError, match=f"`method` '{method}' shows one sign"):
            plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), plt.figure().gca(), method=method, sign="all")
        plot_attribution(torch.rand(1, 8, 8), torch.rand(3, 8, 8), plt.figure().gca(), method=method)  # drawn


@pytest.mark.parametrize("sign, values", [("positive", -torch.rand(1, 16, 16)), ("negative", torch.rand(1, 16, 16))])
@pytest.mark.parametrize("method", ["blended_heat_map", "heat_map"])
def test_plot_attribution_map_with_nothing_of_its_sign_is_drawn_empty(sign, values, method):
    image = torch.rand(3, 16, 16)
    fig = plt.figure()
    ax = plot_attribution(values, image, fig.gca(), method=method, sign=sign, title="map")
    assert ax.get_title() == f"map (no {sign} attribution)"
    drawn = ax.get_images()
    # Only the image: no heat-map layer, so no attribution of that sign is shown.
    assert len(drawn) == 1 and np.array_equal(np.asarray(drawn[0].get_array()), image.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"

