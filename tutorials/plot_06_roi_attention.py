"""
Classifying one region of an image: ROIAttentionResNet
======================================================

Eppel (*Classifying a specific image region using CNNs with an ROI mask as input*) asks a CNN for the class of
*one* region, given as a binary mask, without throwing away the rest of the image, which may carry context.
:class:`captum_ext.ROIAttentionResNet` wraps any torchvision ResNet and feeds the mask through a side branch.
The variants of the paper's Figure 3:

* ``merge="first"``: one ``Conv2d(1→64, 3×3)`` on the mask (resized to conv1's output) is merged into the
  conv1 output, before bn1. ``mode="add"`` adds it; ``mode="mul"`` multiplies by it.
* ``merge="layer1"`` … ``"layer4"`` merge after that stage instead (the paper's "third block" is ``layer3``);
  ``merge="all"`` merges at conv1 and after every stage, with one conv each.
* ``hard="image"`` blacks out the image outside the mask (after normalisation); ``hard="first"`` zeroes the conv1
  output outside the mask. These are the paper's baselines: the net sees no context at all.

The branch starts as an exact identity (add: weight = bias = 0; mul: weight = 0, bias = 1), so a pretrained
backbone starts unchanged and learns to use the mask during fine-tuning.
"""

# %%
# ROI scenes
# ----------
# In ``"roi"`` mode, a mask selects one of up to four digits; the label is that digit's class. Every digit sits on
# a coloured context plate that shows its class colour with probability 0.9, so the background around a region
# is informative, as context is in COCO. Blacking it out loses that cue; yet on these scenes the baseline that
# zeroes the context after the first layer (``hard="first"``) scores best overall in both regimes it was trained
# in, as the benchmark results at the end of this page show.
import json
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torchvision

from captum_ext import ROIAttentionResNet, zoo
from captum_ext.datasets import scenes
from captum_ext.training import roi
from captum_ext.visualization import scene_grid

test = scenes.make_scenes(400, mode="roi", split="test", seed=1)
fig = scene_grid(test, range(4), cols=4)
plt.show()

# %%
# The branch starts as an identity
# --------------------------------
# Wrap a backbone, e.g. one with your own pretrained weights: before training, every soft variant returns
# exactly the backbone's logits, whatever the mask.
torch.manual_seed(0)
backbone = torchvision.models.resnet18(weights=None, num_classes=scenes.NUM_CLASSES).eval()
images, masks = scenes.normalize(test.images[:8]), test.masks[:8].float()
for merge, mode in (("first", "add"), ("first", "mul"), ("layer3", "add"), ("all", "add")):
    net = ROIAttentionResNet(backbone=backbone, merge=merge, mode=mode).eval()
    with torch.no_grad():
        gap = (net(images, masks) - backbone(images)).abs().max().item()
    print(f"{merge}/{mode}: max |logit difference| at init = {gap:.1e}")

# %%
# The trained model in the zoo
# ----------------------------
# ``zoo.load("roi_attention_resnet18")`` returns a trained ROIAttentionResNet-18 (``merge="first"``,
# ``mode="add"``, 10 classes) in eval mode. It was trained from scratch on 6000 ROI scenes with
# :func:`captum_ext.training.roi.fit` (cross-entropy, AdamW, one-cycle, seeded) by ``scripts/train_roi_zoo.py``;
# :func:`captum_ext.zoo.info` returns its training record. To train a variant yourself, call
# ``roi.fit(ROIAttentionResNet(num_classes=10, depth=18, merge="layer3"), train_scenes, epochs=6)`` or run
# ``captum-ext train-roi --merge layer3``, which also saves the ``state_dict``.
model = zoo.load("roi_attention_resnet18")
record = zoo.info("roi_attention_resnet18")
training, held_out = record["training"], record["held_out"]
print(f"trained {training['epochs']} epochs on {training['n_train']} scenes in {training['seconds'] / 60:.0f} min; "
      f"held-out accuracy {100 * held_out['float16_weights']['accuracy']:.1f}% on {held_out['n']} scenes")

# %%
# Accuracy by ROI size
# --------------------
# :func:`captum_ext.training.roi.evaluate` bins accuracy by the ROI's pixel count, class-mean and per-image,
# in the layout of the paper's Tables 1-4. Here on the first 400 of those held-out scenes:
result = roi.evaluate(model, test)
print(result.to_markdown(skip_empty=True))

# %%
# Attributing to the image and to the mask
# ----------------------------------------
# Captum treats the mask like any other input. Pass it as ``additional_forward_args`` to attribute to the image
# only, or attribute to the ``(image, mask)`` tuple to see how much the mask itself contributed.
from captum.attr import IntegratedGradients, Saliency  # noqa: E402

# Captum's Saliency notes every time it switches on ``requires_grad`` for an input (and restores it afterwards);
# the note says nothing about the result, so this page silences that one message.
warnings.filterwarnings("ignore", message=".*did not already require gradients.*")

x, m = scenes.normalize(test.images[:2]), test.masks[:2].float()
label = test.labels[:2]
image_saliency = Saliency(model).attribute(x, target=label, additional_forward_args=(m,))
ig = IntegratedGradients(model)
(image_ig, mask_ig), delta = ig.attribute((x, m), baselines=(torch.zeros_like(x), torch.zeros_like(m)),
                                           target=label, n_steps=32, return_convergence_delta=True)
print("IG completeness gap per image:", delta.abs().tolist())
fig, axes = plt.subplots(2, 4, figsize=(9, 4.6))
for i in range(2):
    axes[i, 0].imshow(test.images[i].permute(1, 2, 0))
    axes[i, 0].contour(test.masks[i, 0], levels=[0.5], colors="lime")
    axes[i, 0].set_title(f"label {int(label[i])}", fontsize=9)
    axes[i, 1].imshow(image_saliency[i].abs().amax(0), cmap="inferno")
    axes[i, 1].set_title("Saliency (image)", fontsize=9)
    axes[i, 2].imshow(image_ig[i].abs().sum(0), cmap="inferno")
    axes[i, 2].set_title("IG: image", fontsize=9)
    axes[i, 3].imshow(mask_ig[i, 0], cmap="coolwarm")
    axes[i, 3].set_title("IG: mask", fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The benchmark
# -------------
# ``python benchmarks/bench_roi_attention.py`` trains the six variants with one budget in two regimes — from
# scratch, and from a backbone first trained on whole-scene classification (the paper fine-tunes an
# ImageNet-pretrained ResNet) — and reports accuracy by ROI size; ``--finetune-epochs`` and ``--branch-lr-scale``
# add a ``pretrained_long`` regime that fine-tunes longer, with the new mask branch at a multiple of the
# backbone's learning rate. Its latest results, as committed in the repository (read from a clone of it):
try:
    here = Path(__file__).resolve().parent
except NameError:  # executed without a file, e.g. pasted into a notebook
    here = Path.cwd()
results = here.parent / "benchmarks" / "results" / "roi_attention.json"
if results.exists():
    bench = json.loads(results.read_text())
    for regime in dict.fromkeys(run["regime"] for run in bench["runs"]):  # in the file's order
        print(regime)
        for run in bench["runs"]:
            if run["regime"] == regime:
                print(f"  {run['variant']:<11} all sizes {100 * run['overall_per_image']:5.1f}%   smallest ROIs "
                      f"({run['counts'][0]} scenes) {100 * run['per_image'][0]:5.1f}%")
    print(f"forward time, ROIAttentionResNet-50 / resnet50: {bench['speed']['ratio_first']:.3f}x")
else:
    print("no benchmark results found at", results)
