"""
Whole datasets: explain and score every image on disk
=====================================================

An attribution method is judged on a dataset, not on one image. :func:`captum_ext.evaluation.evaluate` (the
``captum-ext evaluate`` command) reads an annotated dataset from disk — COCO, Pascal VOC, class folders — runs a
method on every (image, annotated class) pair, streams the maps into a Zarr store and scores them with
localisation metrics that sum exactly across processes, so the same command runs under ``torchrun`` on many GPUs
and resumes after an interruption.

This tutorial writes a small COCO dataset from the built-in digit scenes, evaluates NodeBacktrack and Captum's
Grad-CAM on it, reads the maps back from Zarr, and shows the summary figure. The command-line equivalents are in
the comments; the torchrun recipe is on the :doc:`command-line page </api/command_line>`.
"""

# %%
# A COCO dataset on disk
# ----------------------
# :func:`~captum_ext.datasets.export_coco` writes PNGs, ``annotations.json`` (boxes and RLE masks, one annotation
# per digit) and ``class_map.json`` (``{"ids": {"1": 0, …}}``): COCO category ids start at 1, the zoo's classes at 0.
# ``evaluate`` finds that file beside the annotations on its own (and prints the map it resolved); passing it
# explicitly, as here, is the same.
import json
import tempfile
import textwrap
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import zarr

from captum_ext.datasets import export_coco, scenes
from captum_ext.evaluation import evaluate, open_dataset

work = Path(tempfile.mkdtemp())
scenes_batch = scenes.make_scenes(48, mode="multi", split="test", seed=5)
annotations, images = export_coco(scenes_batch, work / "coco")
class_map = json.loads((work / "coco" / "class_map.json").read_text())
data = f"coco:{annotations}:{images}"
dataset = open_dataset(data)
pairs_total = sum(len(e.categories) for e in dataset.entries)
print(len(dataset), "images,", pairs_total, "(image, class) pairs")
sample = dataset[0]
print("image", tuple(sample.image.shape),
      "- category ids", [t.category for t in sample.truths],
      "- boxes per category", [t.boxes.shape[0] for t in sample.truths])

# %%
# Evaluate two methods
# --------------------
# ``zoo:scenes_vgg_multilabel`` is the zoo's multi-label net with its normalisation folded in: images reach it as
# float in [0, 1]. Same as
# ``captum-ext evaluate --model zoo:scenes_vgg_multilabel --method node_backtrack --data coco:... --class-map ...``.
results = {}
for method in ("node_backtrack", "grad_cam"):
    with warnings.catch_warnings(record=True) as said:  # shown below, with the table
        warnings.simplefilter("always")
        results[method] = evaluate("zoo:scenes_vgg_multilabel", method, data, work / method,
                                   batch_size=16, tolerance=4, class_map=class_map,
                                   show_progress=False)
    for warning in said:
        print("warning:", warning.message)
columns = {"accuracy": "accuracy", "pointing_game": "pointing",
           "energy_pointing_game": "energy", "corloc": "corloc",
           "maxboxacc_v2": "maxboxacc", "pxap": "pxap"}
print(f"{'method':>15} " + " ".join(f"{short:>9}" for short in columns.values()) + "  constant maps")
for method, summary in results.items():
    print(f"{method:>15} " + " ".join(f"{summary[key]:>9.3f}" for key in columns)
          + f"  {summary['constant_maps']:>13}")

# %%
# A few Grad-CAM maps are constant (all zeros: the weighted sum of the layer's channels is negative everywhere, and
# Grad-CAM's ReLU sets it to zero). A constant
# map has no maximum; the pointing game takes its first pixel, ``(0, 0)``, which would hit an object in that
# corner. ``evaluate`` therefore counts them (``constant_maps`` in ``metrics.json``), marks them in ``pairs.csv``'s
# ``constant_map`` column and warns.

# %%
# The maps, from Zarr
# -------------------
# One chunk per map, each in the top-left corner of its chunk (images may differ in size), with the pair's image
# (its position in the dataset) and category beside it. ``pairs.csv`` holds the per-pair metric values in the same
# order.
store = zarr.open_group(str(work / "node_backtrack" / "maps.zarr"), mode="r")
# the pairs of the first image
pairs = [k for k in range(store["maps"].shape[0]) if int(store["image_index"][k]) == 0]
fig, axes = plt.subplots(1, len(pairs) + 1, figsize=(2.4 * (len(pairs) + 1) + 0.8, 2.6),
                         layout="constrained")
axes[0].imshow(sample.image.permute(1, 2, 0).numpy())
axes[0].set_title(f"image {sample.image_id}", fontsize=8)
for axis, k in zip(axes[1:], pairs):
    height, width = int(store["height"][k]), int(store["width"][k])
    shown = axis.imshow(store["maps"][k, :height, :width], cmap="jet", vmin=0, vmax=1)
    axis.set_title(f"NodeBacktrack, class {int(store['class_index'][k])}", fontsize=8)
for axis in axes:
    axis.axis("off")
fig.colorbar(shown, ax=axes[1:], shrink=0.8, label="map (scaled to max 1)")
header = (work / "node_backtrack" / "pairs.csv").read_text().splitlines()[0]
print("pairs.csv columns:")
print(textwrap.fill(", ".join(header.split(",")), width=80))

# %%
# The summary figure
# ------------------
# Written by rank 0 at the end of a run: the metrics and the best and worst pairs by energy in the object.
summary_figure = plt.imread(work / "node_backtrack" / "summary.png")
# At its own pixel size and without margins: the page shows it at the full text width.
height, width = summary_figure.shape[:2]
fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
axis = fig.add_axes((0, 0, 1, 1))
axis.imshow(summary_figure)
axis.set_axis_off()
