"""Captum-exact behaviour of the attribution methods: argument order, tuple in/tuple out, default targets, model
state, the library's own models, stale traces, container layers, dtypes and errors that name the argument."""
import inspect
import re

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam, NoiseTunnel, Saliency
from captum.metrics import sensitivity_max
from torch import nn

from captum_ext import (
    MultiLayerClassDiffSaliency,
    NodeBacktrack,
    ROIAttentionResNet,
    SelfSupervisedAttentionRegressor,
    SensitivityBBox,
)


def small_cnn(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes),
    ).eval()


def positional_names(function) -> list:
    return [p.name for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


# -- 1. argument order -------------------------------------------------------------------------------------------

def test_sensitivity_bbox_takes_saliencys_arguments_in_saliencys_order():
    assert positional_names(SensitivityBBox.attribute) == positional_names(Saliency.attribute)
    net = small_cnn()
    x = torch.randn(3, 3, 8, 8)
    ours = SensitivityBBox(net).attribute(x, 0, False)  # positional, as a Captum user writes it
    theirs = Saliency(net).attribute(x.clone().requires_grad_(), 0, False)
    assert torch.allclose(ours, theirs) and bool((ours < 0).any())  # signed: abs=False reached the right slot


def test_class_diff_saliency_takes_captum_layer_arguments_in_captum_order():
    assert positional_names(MultiLayerClassDiffSaliency.attribute) == \
        positional_names(LayerGradCam.attribute)[:4]
    for name in ("candidates", "scales", "alpha", "guided", "subtract", "return_details"):
        assert inspect.signature(MultiLayerClassDiffSaliency.attribute).parameters[name].kind == \
            inspect.Parameter.KEYWORD_ONLY


# -- 2. tuple in, tuple out; target defaults to the top class ----------------------------------------------------

def test_class_diff_saliency_tuple_in_tuple_out_and_default_target():
    net = small_cnn()
    ms = MultiLayerClassDiffSaliency(net, [net[0], net[3]])
    x = torch.randn(2, 3, 8, 8)
    single = ms.attribute(x)
    (as_tuple,) = ms.attribute((x,))
    top = net(x).argmax(1)
    assert isinstance(single, torch.Tensor) and torch.equal(single, as_tuple)
    assert torch.equal(single, ms.attribute(x, target=top))
    assert not torch.equal(single, ms.attribute(x, target=(top + 1) % 4))


def shift(inputs, radius):
    """A deterministic perturbation, so that every batching of captum.metrics sees the same samples."""
    return inputs + 0.05 if isinstance(inputs, torch.Tensor) else tuple(x + 0.05 for x in inputs)


def test_class_diff_saliency_works_with_captum_sensitivity_max_in_any_batching():
    net = small_cnn()
    ms = MultiLayerClassDiffSaliency(net, [net[0], net[3]])
    x = torch.randn(2, 3, 8, 8)
    base, moved = ms.attribute(x, target=0), ms.attribute(x + 0.05, target=0)
    expected = (moved - base).flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1)
    for inputs in (x, (x,)):
        for per_batch in (None, 4):  # 4: sub-batches that split the perturbations of an image
            result = sensitivity_max(ms.attribute, inputs, perturb_func=shift, target=0, n_perturb_samples=3,
                                     max_examples_per_batch=per_batch)
            assert torch.allclose(result, expected, atol=1e-5), (type(inputs), per_batch)


def test_noise_tunnel_expands_per_image_candidates():
    net = small_cnn()
    ms = MultiLayerClassDiffSaliency(net, [net[0], net[3]])
    x = torch.randn(2, 3, 8, 8)
    maps = NoiseTunnel(ms).attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.0, target=[0, 1],
                                     candidates=[[0, 2], [1, 3]])
    direct = ms.attribute(x, target=[0, 1], candidates=[[0, 2], [1, 3]])
    assert torch.allclose(maps, direct, atol=1e-6)  # zero noise: the mean of identical maps
    with pytest.raises(ValueError, match="one list per image"):
        ms.attribute(torch.randn(3, 3, 8, 8), target=0, candidates=[[0, 1], [0, 2]])


# -- 3. the library's own models ---------------------------------------------------------------------------------

def test_both_graph_methods_explain_roi_attention_resnet():
    net = ROIAttentionResNet(num_classes=5, depth=18).eval()  # branches start at zero: exactly the backbone
    images, masks = torch.randn(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    hits = NodeBacktrack(net).attribute(images, target=1, additional_forward_args=(masks,))
    assert torch.equal(hits, NodeBacktrack(net.backbone).attribute(images, target=1))
    assert float(hits.sum()) > 0
    image_hits, mask_hits = NodeBacktrack(net).attribute((images, masks), target=1)
    assert image_hits.shape == images.shape and mask_hits.shape == masks.shape
    ms = MultiLayerClassDiffSaliency(net, [net.backbone.layer1, net.backbone.layer3])
    maps = ms.attribute(images, target=1, additional_forward_args=(masks,))
    assert maps.shape == (2, 1, 32, 32) and bool(torch.isfinite(maps).all()) and float(maps.max()) > 0
    for variant in (dict(merge="all", mode="mul"), dict(hard="image"), dict(hard="first")):
        other = ROIAttentionResNet(num_classes=5, depth=18, **variant).eval()
        assert float(NodeBacktrack(other).attribute(images, 0, (masks,)).sum()) > 0


def test_both_graph_methods_explain_the_attention_regressor():
    regressor = SelfSupervisedAttentionRegressor(2, width=8).eval()
    images = torch.rand(2, 1, 16, 16)
    whole = NodeBacktrack(regressor).attribute(images, target=1)  # a tuple output: its first element
    assert torch.equal(whole, NodeBacktrack(regressor.regressor).attribute(images, target=1))  # linspace: a constant
    assert float(whole.sum()) > 0
    ms = MultiLayerClassDiffSaliency(regressor, [regressor.regressor[1], regressor.regressor[3]])
    assert ms.attribute(images, target=0, candidates=[0, 1]).shape == (2, 1, 16, 16)


def test_tracing_skips_the_models_input_checks_but_eager_calls_keep_them():
    net = ROIAttentionResNet(num_classes=3, depth=18).eval()
    with pytest.raises(ValueError, match="masks"):
        net(torch.randn(1, 3, 32, 32), torch.ones(1, 1, 16, 16))


# -- 4. a submodule replaced after construction ------------------------------------------------------------------

def test_replaced_submodule_is_explained_not_the_old_one():
    net = small_cnn()
    nb = NodeBacktrack(net)
    ms = MultiLayerClassDiffSaliency(net, [net[0], net[3]])
    x = torch.randn(2, 3, 8, 8)
    before_nb, before_ms = nb.attribute(x, target=0), ms.attribute(x, target=0, candidates=[0, 1])
    torch.manual_seed(5)
    net[7] = nn.Linear(32, 10)
    after_nb, after_ms = nb.attribute(x, target=7), ms.attribute(x, target=7, candidates=[7, 1])
    assert torch.equal(after_nb, NodeBacktrack(net).attribute(x, target=7))
    assert torch.equal(after_ms, MultiLayerClassDiffSaliency(net, [net[0], net[3]]).attribute(
        x, target=7, candidates=[7, 1]))
    assert not torch.equal(before_nb, nb.attribute(x, target=0)) or not torch.equal(
        before_ms, ms.attribute(x, target=0, candidates=[0, 1]))
    net[3] = nn.Conv2d(6, 8, 3, padding=1)
    with pytest.raises(ValueError, match="not a submodule"):
        ms.attribute(x, target=0)


class NormalisedCnn(nn.Module):
    """A root-level normalisation the traced graph reads directly (``get_attr``), not through a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self.body = small_cnn()

    def forward(self, x):
        return self.body((x - self.mean) / self.std)


@pytest.mark.parametrize("replace", ["assign", "load_state_dict_assign", "to_double"])
def test_replaced_buffers_are_explained_not_the_traced_ones(replace):
    """Before: both methods kept the buffers of the first trace (MultiLayerClassDiffSaliency's map was off by 0.64,
    NodeBacktrack's hits differed), because the trace holds its own references to tensors it reads directly."""
    net = NormalisedCnn().eval()
    nb, ms = NodeBacktrack(net), MultiLayerClassDiffSaliency(net, [net.body[0], net.body[3]])
    x = torch.rand(2, 3, 8, 8)
    nb.attribute(x, target=1), ms.attribute(x, target=1)
    fingerprint = nb._fingerprint
    nb.attribute(x, target=1)
    assert nb._fingerprint is fingerprint  # nothing replaced: no new trace
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.1]).view(1, 3, 1, 1)
    if replace == "assign":
        net.mean, net.std = mean, std
    elif replace == "load_state_dict_assign":
        net.load_state_dict({**net.state_dict(), "mean": mean, "std": std}, assign=True)
    else:
        net.double()  # new buffer tensors, then new values in them
        net.mean.copy_(mean), net.std.copy_(std)
        x = x.double()
    assert torch.equal(nb.attribute(x, target=1), NodeBacktrack(net).attribute(x, target=1))
    assert torch.equal(ms.attribute(x, target=1), MultiLayerClassDiffSaliency(
        net, [net.body[0], net.body[3]]).attribute(x, target=1))


# -- 5. container layers -----------------------------------------------------------------------------------------

def test_container_layers_give_the_gradient_at_the_containers_output():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    block, stage = net.layer2[0], net.layer3
    ms = MultiLayerClassDiffSaliency(net, [block, stage])
    _, details = ms.attribute(x, target=2, candidates=[[2]], guided=False, subtract=False, return_details=True)
    captured = []
    handles = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in (block, stage)]
    try:
        score = net(x)[0, 2]
    finally:
        for handle in handles:
            handle.remove()
    for k, grad in enumerate(torch.autograd.grad(score, captured)):
        expected = nn.functional.interpolate(grad.abs().amax(1, keepdim=True), size=(32, 32), mode="bilinear",
                                             align_corners=False)
        assert torch.allclose(details["class_maps"][0, k, 0], expected, atol=1e-6)


def test_inplace_relu_module_is_a_valid_layer():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveMaxPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3)).eval()
    maps = MultiLayerClassDiffSaliency(net, [net[1]]).attribute(torch.randn(2, 3, 8, 8), target=0)
    assert maps.shape == (2, 1, 8, 8)


# -- 6. eval mode and model state --------------------------------------------------------------------------------

def test_sensitivity_bbox_runs_a_train_mode_model_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    net.train()
    running = net[1].running_mean.clone()
    x = torch.randn(4, 3, 8, 8)
    sb = SensitivityBBox(net)
    whole = sb.attribute(x, target=1)
    assert net.training and net[1].training and torch.equal(net[1].running_mean, running)
    assert torch.allclose(whole[:1], sb.attribute(x[:1], target=1))  # no batch statistics involved


# -- 7. dtypes, shapes and models torch.fx cannot read -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes_are_cast_to_the_model_and_returned_in_their_own(dtype):
    net = small_cnn()
    x = torch.randn(2, 3, 8, 8)
    methods = [NodeBacktrack(net), MultiLayerClassDiffSaliency(net, [net[0], net[3]]), SensitivityBBox(net)]
    for method in methods:
        reference = method.attribute(x.to(dtype).float(), target=1)
        result = method.attribute(x.to(dtype), target=1)
        assert result.dtype == dtype
        assert torch.allclose(result.float(), reference, atol=1e-2 if dtype == torch.float16 else 1e-6)


@pytest.mark.parametrize("shape, words", [((2, 4, 8, 8), "inputs"), ((2, 3, 1, 1), "inputs")])
def test_inputs_the_model_cannot_take_get_an_error_naming_them(shape, words):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2)).eval()
    x = torch.randn(*shape)
    for method in (NodeBacktrack(net), MultiLayerClassDiffSaliency(net, [net[0]]), SensitivityBBox(net)):
        with pytest.raises(ValueError, match=words):
            method.attribute(x, target=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_compiled_models_are_unwrapped_and_scripted_ones_get_advice():
    net = small_cnn()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(net)
    assert torch.equal(NodeBacktrack(compiled).attribute(x, target=0), NodeBacktrack(net).attribute(x, target=0))
    scripted = torch.jit.script(net)
    for make in (lambda: NodeBacktrack(scripted), lambda: MultiLayerClassDiffSaliency(scripted, [net[0]])):
        with pytest.raises(TypeError, match="original nn.Module"):
            make()


def test_meta_inputs_get_an_error_naming_them_from_every_method():
    net = small_cnn()
    meta = torch.empty(2, 3, 8, 8, device="meta")
    methods = [NodeBacktrack(net), MultiLayerClassDiffSaliency(net, [net[0], net[3]]), SensitivityBBox(net)]
    for method in methods:
        for inputs, name in ((meta, "inputs"), ((torch.randn(2, 3, 8, 8), meta), r"inputs\[1\]")):
            with pytest.raises(ValueError, match=rf"^`{name}` is a meta tensor.*no values"):
                method.attribute(inputs, target=0)
    with pytest.raises(ValueError, match=r"^`inputs` is a meta tensor.*no values"):
        SensitivityBBox(net).fit(meta, torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2), target=0)


# -- conventions found by a user's sweep ------------------------------------------------------------------------

def test_inference_tensors_are_explained_inside_and_outside_inference_mode():
    """Before: tensors made under ``torch.inference_mode()`` (a common data pipeline) failed in both gradient
    methods with torch's "Setting requires_grad=True on inference tensor" / "does not require grad"."""
    net, x = small_cnn(), torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        frozen = x.clone()
    for build in (lambda: SensitivityBBox(net), lambda: MultiLayerClassDiffSaliency(net, [net[0], net[3]])):
        expected = build().attribute(x, target=1)
        assert torch.equal(build().attribute(frozen, target=1), expected)
        with torch.inference_mode():
            assert torch.equal(build().attribute(frozen, target=1), expected)


def test_sensitivity_bbox_layer_variant_explains_a_model_with_a_tuple_output():
    """Before: ``activation_layer`` ignores the model's output, yet a tuple output was refused."""
    torch.manual_seed(0)
    model = SelfSupervisedAttentionRegressor(2, width=4).eval()
    x = torch.rand(2, 1, 16, 16)
    layer = model.regressor[1]
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        leaf = x.clone().requires_grad_(True)
        model(leaf)
        expected = torch.autograd.grad(captured[0].sum(), leaf)[0].abs()
    finally:
        handle.remove()
    torch.testing.assert_close(SensitivityBBox(model, activation_layer=layer).attribute(x), expected)
    with pytest.raises(TypeError, match=r"must return a tensor of scores, got a tuple; explain one output through a "
                                        r"function or bound method \(e.g. `model.regress`\)"):
        SensitivityBBox(model).attribute(x, target=0)


def test_box_fitting_takes_a_one_element_target_tensor_for_every_image_as_attribute_does():
    """Before: ``fit`` and ``predict_boxes`` refused ``torch.tensor([1])``, which ``attribute`` applies to all."""
    net, x = small_cnn(), torch.randn(6, 3, 16, 16)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 12.0]]).repeat(6, 1) + torch.arange(6.0)[:, None]
    by_int, by_tensor = SensitivityBBox(net).fit(x, boxes, target=1), SensitivityBBox(net).fit(
        x, boxes, target=torch.tensor([1]))
    assert torch.equal(by_int.predict_boxes(x, target=1), by_tensor.predict_boxes(x, target=torch.tensor([1])))


def test_node_backtrack_points_from_hits_checks_its_argument():
    for bad in (torch.zeros(2, 3, 4), [1, 2]):
        with pytest.raises(ValueError, match=r"`hits` must be an N×C×H×W tensor"):
            NodeBacktrack.points_from_hits(bad)


@pytest.mark.parametrize("images, words", [(torch.rand(1, 1, 3, 3), "Output size is too small"),
                                            (torch.rand(2, 1, 8, 8, dtype=torch.float64), "scalar type Double")])
def test_self_supervised_regressor_names_images_it_cannot_run_on(images, words):
    """Before: torch's errors from inside the regressor, naming no argument."""
    model = SelfSupervisedAttentionRegressor(2, width=4).eval()
    # The attention net has no pooling: it runs on a 3×3 image.
    for call in (model, model.regress) + ((model.attention,) if images.dtype == torch.float64 else ()):
        with pytest.raises(ValueError, match=rf"could not run on `images` shaped {re.escape(str(tuple(images.shape)))}"
                                             rf": .*{words}"):
            call(images)


def test_roi_num_classes_accepts_numpy_ints_as_depth_does():
    import numpy as np

    assert ROIAttentionResNet(num_classes=np.int64(2), depth=np.int64(18)).backbone.fc.out_features == 2
    with pytest.raises(ValueError, match=r"`num_classes` must be >= 1"):
        ROIAttentionResNet(num_classes=0, depth=18)
