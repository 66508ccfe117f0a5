"""
Which method to trust: seven methods compared on one dataset
============================================================

Localisation metrics ask whether a map points at the annotated object; faithfulness metrics ask whether it ranks
the pixels the model actually uses; a sanity check asks whether it depends on what the model learned at all. This
tutorial answers all three for the three captum_ext methods that give maps and Captum's saliency, Integrated
Gradients, Guided Backprop and Grad-CAM, on built-in digit scenes exported as a COCO dataset:

1. one :func:`~captum_ext.evaluation.evaluate` pass over the data for all seven methods (the images are read once,
   the model's predictions come from one forward), with localisation, deletion / insertion and Captum's infidelity;
2. the leaderboard it writes, with bootstrap confidence intervals over images, and the same image across methods;
3. Captum's max-sensitivity and ROAD's MoRF / LeRF curves (pixels removed and filled in so that the hole's shape
   tells the model nothing) for a few methods;
4. the sanity check of Adebayo et al.: cascading randomisation of the model's layers.

On the command line, step 1 is
``captum-ext evaluate --model zoo:scenes_vgg_multilabel --method node_backtrack,class_diff,... --data coco:...
--metrics pointing_game energy_pointing_game maxboxacc_v2 pxap deletion insertion infidelity --out results/``.
"""

# %%
# One pass, seven methods
# -----------------------
# ``evaluate`` with a list of methods writes one folder per method (each exactly what a run of that method alone
# writes, resumable alone) and ``leaderboard.csv``, ``leaderboard.md`` and ``index.html`` beside them.
import csv
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import zarr

from captum_ext.datasets import export_coco, scenes
from captum_ext.evaluation import METHODS, evaluate, open_dataset

work = Path(tempfile.mkdtemp())
annotations, images = export_coco(scenes.make_scenes(16, mode="multi", split="test", seed=11), work / "coco")
data = f"coco:{annotations}:{images}"
metrics = ["pointing_game", "energy_pointing_game", "maxboxacc_v2", "pxap", "deletion", "insertion", "infidelity"]
# A constant map (a dead Grad-CAM) points at its first pixel: evaluate warns and counts them; printed below instead.
warnings.filterwarnings("ignore", message=r".* maps are constant")
summaries = evaluate("zoo:scenes_vgg_multilabel", list(METHODS), data, work / "all", batch_size=16, tolerance=4,
                     metrics=metrics, faithfulness_steps=16, perturbation_samples=4, show_progress=False)
print(sorted(path.name for path in (work / "all").iterdir()))
print("constant maps:", {method: summary["constant_maps"] for method, summary in summaries.items()})

# %%
# The leaderboard
# ---------------
# Each value with its 95 % bootstrap interval over images (MaxBoxAccV2 and PxAP pool every pixel of the dataset,
# so the per-pair table cannot resample them). Read it as a user would: where intervals overlap, the data do not
# separate the methods. ``index.html`` shows the same table, sortable, a chart per metric, the same pairs across
# methods and each method's best and worst pairs per metric as thumbnails, in one file with nothing external.
# SensitivityBBox's map without a fitted box map is the channel maximum of ``|∂y/∂x|``, the same map as saliency,
# so their rows agree: a check on the table rather than a finding.
rows = list(csv.DictReader((work / "all" / "leaderboard.csv").read_text().splitlines()))
shown = {"pointing_game": "pointing", "energy_pointing_game": "energy", "maxboxacc_v2": "maxboxacc",
         "deletion_auc": "deletion", "insertion_auc": "insertion", "infidelity": "infidel."}
print(f"{'method':>20} " + " ".join(f"{short:>9}" for short in shown.values()))
for method in METHODS:
    print(f"{method:>20} " + " ".join(f"{summaries[method][key]:>9.3f}" for key in shown))
print("leaderboard.csv columns:", ", ".join(rows[0]))

# %%
# The same image, seven maps
# --------------------------
# Each method's maps are in its own Zarr store, in the same pair order, so the same pair is the same index in all.
dataset = open_dataset(data)
pair = 0
sample = dataset[int(zarr.open_array(str(work / "all" / "saliency" / "maps.zarr" / "image_index"), mode="r")[pair])]
fig, axes = plt.subplots(2, 4, figsize=(8.0, 4.6), layout="constrained")
axes = axes.ravel()
axes[0].imshow(sample.image.permute(1, 2, 0).numpy())
axes[0].set_title("image", fontsize=9)
for axis, method in zip(axes[1:], METHODS):
    store = zarr.open_group(str(work / "all" / method / "maps.zarr"), mode="r")
    height, width = int(store["height"][pair]), int(store["width"][pair])
    axis.imshow(store["maps"][pair, :height, :width], cmap="jet", vmin=0, vmax=1)
    axis.set_title(f"{method}, class {int(store['class_index'][pair])}", fontsize=9)
for axis in axes:
    axis.axis("off")

# %%
# Max-sensitivity
# ---------------
# Captum's ``sensitivity_max`` reruns the method on ``perturbation_samples`` slightly perturbed copies of each image
# (uniform noise of ±0.02) and reports the largest relative change of the map: lower is more stable. It costs that
# many runs of the method per pair, so here it is asked for a few fast methods only. The perturbations are seeded
# by the batch, so each method sees the same ones.
stable = evaluate("zoo:scenes_vgg_multilabel", ["saliency", "guided_backprop", "grad_cam"], data, work / "stable",
                  batch_size=16, metrics=["sensitivity_max"], perturbation_samples=4, show_progress=False)
for method, summary in stable.items():
    print(f"{method:>16}: max-sensitivity {summary['sensitivity_max']:.3f}")

# %%
# ROAD: remove and debias
# -----------------------
# Deletion leaves holes whose shape alone can tell the model where the object was. ROAD (Rong et al., 2022) fills
# each removed pixel from its neighbours (a sparse linear system, solved by conjugate gradients for the whole
# batch) plus a little noise, and reports the target's probability after removing 10 %, 20 %, … 90 % of the
# pixels: most relevant first (MoRF, lower is better) and least relevant first (LeRF, higher is better). Each
# fraction is a linear solve per image, so this runs on four scenes only.
small_annotations, small_images = export_coco(scenes.make_scenes(4, mode="multi", split="test", seed=11),
                                              work / "coco-small")
road = evaluate("zoo:scenes_vgg_multilabel", ["saliency", "guided_backprop", "grad_cam"],
                f"coco:{small_annotations}:{small_images}", work / "road", batch_size=16,
                metrics=["road_morf", "road_lerf"], show_progress=False)
for method, summary in road.items():
    print(f"{method:>16}: ROAD MoRF {summary['road_morf']:.3f}, LeRF {summary['road_lerf']:.3f}")

# %%
# The sanity check
# ----------------
# :func:`~captum_ext.metrics.cascading_randomization` re-initialises the model's layers from the output down,
# cumulatively, and compares each step's maps with the trained model's (Spearman rank correlation of the absolute
# maps). A map that explains the model should decorrelate as what it learned is destroyed; Adebayo et al. found
# Guided Backprop barely does on ImageNet models. Here it stays correlated longer than Saliency while the top
# layers are randomised, then decorrelates too. Eight images here; ``benchmarks/bench_sanity_checks.py`` runs more.
from captum.attr import GuidedBackprop, Saliency  # noqa: E402

from captum_ext import NodeBacktrack, zoo  # noqa: E402
from captum_ext.metrics import cascading_randomization  # noqa: E402

warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations.*")
model = zoo.load("scenes_vgg")  # takes normalised images
checked = scenes.make_scenes(8, mode="single", split="test", seed=3)
inputs, targets = scenes.normalize(checked.images), checked.labels


def needs_grad(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_()


explainers = {
    "saliency": lambda m, x, t: Saliency(m).attribute(needs_grad(x), target=t, abs=False),
    "guided_backprop": lambda m, x, t: GuidedBackprop(m).attribute(needs_grad(x), target=t),
    "node_backtrack": lambda m, x, t: NodeBacktrack(m).attribute(x, target=t),
}
fig, axis = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
for method, explain in explainers.items():
    result = cascading_randomization(model, explain, inputs, targets)
    curve = result.spearman_abs.mean(dim=1).numpy()
    axis.plot(np.arange(1, len(curve) + 1), curve, marker="o", label=method)
axis.set_xticks(np.arange(1, len(result.layers) + 1), result.layers, rotation=45, fontsize=7)
axis.set_xlabel("randomised down to")
axis.set_ylabel("Spearman (absolute maps)")
axis.set_ylim(-0.05, 1.05)
_ = axis.legend(fontsize=8)
