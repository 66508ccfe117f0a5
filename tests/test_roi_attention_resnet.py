"""ROIAttentionResNet: identity at initialisation, gradients into the branch, hard baselines, Captum interop."""
import pytest
import torch
import torchvision
from captum.attr import IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_ext import ROIAttentionResNet

VARIANTS = [(merge, mode) for merge in ("first", "layer1", "layer2", "layer3", "layer4", "all")
            for mode in ("add", "mul")]


def backbone(depth: int = 18, seed: int = 0) -> torchvision.models.ResNet:
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=5)
    with torch.no_grad():  # non-trivial BN statistics, so that identity is a real check
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def inputs(n: int = 2, size: int = 48, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=gen)
    masks = (torch.rand(n, 1, size, size, generator=gen) > 0.7).float()
    return images, masks


@pytest.mark.parametrize("merge, mode", VARIANTS)
@pytest.mark.parametrize("depth", [18, 50])
def test_untrained_branch_is_an_exact_identity(merge, mode, depth):
    plain = backbone(depth)
    net = ROIAttentionResNet(backbone=plain, merge=merge, mode=mode).eval()
    images, masks = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(images, masks), plain(images), atol=1e-6, rtol=0)


@pytest.mark.parametrize("merge, mode", VARIANTS)
def test_gradients_reach_every_branch(merge, mode):
    net = ROIAttentionResNet(backbone=backbone(), merge=merge, mode=mode).train()
    images, masks = inputs()
    net(images, masks).sum().backward()
    assert len(net.branches) == (5 if merge == "all" else 1)
    for branch in net.branches.values():
        assert branch.weight.grad is not None and float(branch.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("hard", ["image", "first"])
def test_hard_attention_with_all_ones_masks_is_the_plain_backbone(hard):
    plain = backbone()
    net = ROIAttentionResNet(backbone=plain, hard=hard).eval()
    images, _ = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(images, torch.ones(2, 1, 48, 48)), plain(images))
        blacked = net(images, torch.zeros(2, 1, 48, 48))
    assert len(net.branches) == 0
    assert not torch.allclose(blacked, plain(images))


def test_hard_image_blacks_out_the_background_of_the_normalised_image():
    plain = backbone()
    net = ROIAttentionResNet(backbone=plain, hard="image").eval()
    images, masks = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(images, masks), plain(images * masks))


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), height=st.integers(17, 41), width=st.integers(17, 41), seed=st.integers(0, 100),
       merge=st.sampled_from(["first", "layer3", "all"]), mode=st.sampled_from(["add", "mul"]))
def test_shapes_odd_sizes_and_batch_invariance(n, height, width, seed, merge, mode):
    net = ROIAttentionResNet(backbone=backbone(seed=seed), merge=merge, mode=mode).eval()
    with torch.no_grad():  # a trained-looking branch: random weights
        for branch in net.branches.values():
            branch.weight.normal_(0, 0.1)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, height, width, generator=gen)
    masks = torch.rand(n, 1, height, width, generator=gen)
    with torch.no_grad():
        out = net(images, masks)
        singles = torch.cat([net(images[i : i + 1], masks[i : i + 1]) for i in range(n)])
    assert out.shape == (n, 5)
    torch.testing.assert_close(out, singles, atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip(tmp_path):
    net = ROIAttentionResNet(num_classes=4, depth=18, merge="all", mode="mul").eval()
    with torch.no_grad():
        for branch in net.branches.values():
            branch.weight.normal_()
    torch.save(net.state_dict(), tmp_path / "roi.pt")
    restored = ROIAttentionResNet(num_classes=4, depth=18, merge="all", mode="mul").eval()
    restored.load_state_dict(torch.load(tmp_path / "roi.pt", weights_only=True))
    images, masks = inputs()
    with torch.no_grad():
        assert torch.equal(net(images, masks), restored(images, masks))


def test_captum_attribution_to_the_image_and_to_image_and_mask():
    net = ROIAttentionResNet(backbone=backbone(), merge="first").eval()
    images, masks = inputs()
    to_image = IntegratedGradients(net).attribute(images, additional_forward_args=(masks,), target=1, n_steps=8)
    assert to_image.shape == images.shape
    # Inputs that already require gradients: Captum otherwise sets the flag itself and warns that it did.
    both = Saliency(net).attribute((images.clone().requires_grad_(), masks.clone().requires_grad_()), target=1)
    assert isinstance(both, tuple) and both[0].shape == images.shape and both[1].shape == masks.shape


def test_integrated_gradients_on_image_and_mask_satisfies_completeness():
    torch.manual_seed(3)
    net = ROIAttentionResNet(backbone=backbone(), merge="all", mode="add").eval()
    with torch.no_grad():  # a trained-looking branch, so that the mask really contributes
        for conv in net.branches.values():
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.1)
    images, masks = inputs(n=2, size=40)
    baselines = (torch.zeros_like(images), torch.zeros_like(masks))
    (to_image, to_mask), delta = IntegratedGradients(net).attribute(
        (images, masks), baselines=baselines, target=2, n_steps=128, return_convergence_delta=True)
    with torch.no_grad():
        change = net(images, masks)[:, 2] - net(*baselines)[:, 2]
    total = to_image.sum(dim=(1, 2, 3)) + to_mask.sum(dim=(1, 2, 3))  # float64 on older Captum
    torch.testing.assert_close(total.double(), change.double(), atol=0.02 * float(change.abs().max()) + 1e-3,
                               rtol=0.0)
    assert bool((delta.abs() <= 0.02 * change.abs().max() + 1e-3).all())
    assert float(to_mask.abs().sum()) > 0  # the mask is attributed, not only the image


@pytest.mark.parametrize(
    "kwargs, error, words",
    [({"merge": "layer5"}, ValueError, "merge"), ({"mode": "concat"}, ValueError, "mode"),
     ({"hard": "all"}, ValueError, "hard"), ({"depth": 20}, ValueError, "depth"),
     ({"backbone": torch.nn.Linear(2, 2)}, TypeError, "backbone"), ({"num_classes": 0}, ValueError, "num_classes")],
)
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        ROIAttentionResNet(**{"depth": 18, **kwargs})


@pytest.mark.parametrize(
    "images, masks, error, words",
    [(torch.randn(2, 3, 32, 32), torch.ones(2, 1, 16, 16), ValueError, "masks"),
     (torch.randn(2, 1, 32, 32), torch.ones(2, 1, 32, 32), ValueError, "3 channels"),
     (torch.randn(2, 3, 32, 32), torch.ones(3, 1, 32, 32), ValueError, "masks"),
     (torch.randn(3, 32, 32), torch.ones(1, 32, 32), ValueError, "N×C×H×W")],
)
def test_bad_forward_input(images, masks, error, words):
    net = ROIAttentionResNet(backbone=backbone()).eval()
    with pytest.raises(error, match=words):
        net(images, masks)


def test_short_seeded_training_lowers_the_loss_and_evaluates_by_roi_size():
    from captum_ext.datasets import scenes
    from captum_ext.training import roi

    batch = scenes.make_scenes(96, mode="roi", split="train", seed=0)
    torch.manual_seed(0)
    model = ROIAttentionResNet(num_classes=10, depth=18, merge="first")
    history = roi.fit(model, batch, epochs=3, batch_size=32, lr=3e-3, show_progress=False)
    assert history[-1]["total"] < history[0]["total"]
    result = roi.evaluate(model, batch)
    assert int(result.counts.sum()) == 96
    assert "|" in result.to_markdown()
    with pytest.raises(ValueError, match="mode='roi'"):
        roi.evaluate(model, scenes.make_scenes(4, mode="single", seed=0))


def test_branch_lr_scale_speeds_up_only_the_mask_branch():
    from captum_ext.datasets import scenes
    from captum_ext.training import roi

    batch = scenes.make_scenes(16, mode="roi", split="train", seed=0)

    def one_step(scale: float) -> tuple:
        torch.manual_seed(0)
        model = roi.build_model(18)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        roi.fit(model, batch, epochs=1, batch_size=16, lr=1e-3, show_progress=False, branch_lr_scale=scale)
        after = model.state_dict()
        moved = {k: float((after[k] - before[k]).abs().max()) for k in ("branches.first.weight",
                                                                         "backbone.conv1.weight")}
        return moved["branches.first.weight"], moved["backbone.conv1.weight"]

    branch_1, backbone_1 = one_step(1.0)
    branch_10, backbone_10 = one_step(10.0)
    # One AdamW step moves a weight by about the rate, whatever its gradient's size.
    assert branch_10 == pytest.approx(10 * branch_1, rel=0.05)
    assert backbone_10 == pytest.approx(backbone_1, rel=1e-4)
    model = roi.build_model(18)
    for bad in (0, -1.0, True, "10"):
        with pytest.raises(ValueError, match="`branch_lr_scale` must be a positive number"):
            roi.fit(model, batch, epochs=1, show_progress=False, branch_lr_scale=bad)
    with pytest.raises(ValueError, match="without a mask branch"):
        roi.fit(roi.build_model(18, hard="image"), batch, epochs=1, show_progress=False, branch_lr_scale=10.0)


def test_masks_on_another_device_are_named():
    """Before: torch's "Tensor on device meta is not on the expected device cpu!", naming neither argument."""
    net = ROIAttentionResNet(num_classes=3, depth=18, merge="layer3", mode="mul").eval()
    with pytest.raises(ValueError, match="`masks` must be on the images' device cpu, got meta"):
        net(torch.randn(1, 3, 32, 32), torch.ones(1, 1, 32, 32, device="meta"))
