"""
Using captum_ext with Captum
============================

captum_ext's attribution methods are Captum ``Attribution`` subclasses, so Captum's wrappers, metrics and
visualisation take them like Captum's own methods. This page shows the combinations users ask for, each run
during the docs build:

* :class:`captum.attr.NoiseTunnel` (SmoothGrad) around :class:`captum_ext.SensitivityBBox`,
  :class:`captum_ext.MultiLayerClassDiffSaliency` and :class:`captum_ext.NodeBacktrack`;
* :func:`captum.metrics.infidelity` and :func:`captum.metrics.sensitivity_max` scoring captum_ext maps next to
  Captum's ``Saliency``;
* :mod:`captum.attr.visualization` drawing them;
* Captum methods on captum_ext's trainable models, whose extra inputs travel as ``additional_forward_args``.

Everything uses the shipped zoo networks and the benchmark scenes, so it runs offline in seconds.
"""

# %%
# Setup: a zoo model and a few scenes
# -----------------------------------
import warnings

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max

from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox, metrics, zoo
from captum_ext.datasets import scenes

# Captum's Saliency notes every time it switches on ``requires_grad`` for an input (and restores it afterwards);
# the note says nothing about the result, so this page silences that one message.
warnings.filterwarnings("ignore", message=".*did not already require gradients.*")

torch.manual_seed(0)
model = zoo.load("scenes_vgg")  # eval mode, 10-way softmax on 64×64 single-digit scenes
batch = scenes.make_scenes(4, mode="single", split="test", seed=5)
inputs = scenes.normalize(batch.images)
target = batch.labels

# %%
# NoiseTunnel: SmoothGrad around captum_ext methods
# -------------------------------------------------
# ``NoiseTunnel`` adds Gaussian noise to the inputs ``nt_samples`` times, calls the wrapped method's
# ``attribute`` on the enlarged batch (repeating ``target`` for it) and averages. Any method whose output has one
# row per input works, also when the rows are ``N×1×H×W`` maps rather than input-shaped attributions.
sensitivity = SensitivityBBox(model)
smooth_sensitivity = NoiseTunnel(sensitivity).attribute(inputs, nt_type="smoothgrad", nt_samples=8, stdevs=0.2,
                                                        target=target)
multi_model = zoo.load("scenes_vgg_multilabel")
multi = scenes.make_scenes(2, mode="multi", split="test", seed=6)
ms = MultiLayerClassDiffSaliency(multi_model, [multi_model.features[i] for i in (5, 7, 10, 12)])
multi_target = multi.object_labels[:, 0]
smooth_class_maps = NoiseTunnel(ms).attribute(scenes.normalize(multi.images), nt_type="smoothgrad", nt_samples=4,
                                              stdevs=0.2, target=multi_target, attribute_to_layer_input=True)
nb = NodeBacktrack(model)
smooth_hits = NoiseTunnel(nb).attribute(inputs, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=target)
print("SmoothGrad shapes:", tuple(smooth_sensitivity.shape), tuple(smooth_class_maps.shape),
      tuple(smooth_hits.shape))
print("energy in object, sensitivity plain vs SmoothGrad:",
      round(metrics.energy_pointing_game(sensitivity.attribute(inputs, target=target).amax(1, keepdim=True),
                                         batch.masks), 3),
      round(metrics.energy_pointing_game(smooth_sensitivity.abs().amax(1, keepdim=True), batch.masks), 3))

# %%
# captum.metrics: infidelity and sensitivity
# ------------------------------------------
# :func:`~captum.metrics.infidelity` compares ``attribution · perturbation`` with the change of the model's output
# under random perturbations (lower is better); :func:`~captum.metrics.sensitivity_max` measures how much the
# explanation changes under small input perturbations (lower is more stable). Both take any attribution function.


def perturb(x: torch.Tensor):
    noise = 0.1 * torch.randn_like(x)
    return noise, x - noise


for name, method in (("Captum Saliency", Saliency(model)), ("SensitivityBBox", sensitivity)):
    attributions = method.attribute(inputs, target=target)
    torch.manual_seed(1)  # the same random perturbations for both methods
    score = infidelity(model, perturb, inputs, attributions, target=target, n_perturb_samples=8)
    torch.manual_seed(2)
    stability = sensitivity_max(method.attribute, inputs, target=target, n_perturb_samples=4,
                                perturb_radius=0.02)
    print(f"{name:<16} infidelity {score.mean():.4g}   sensitivity_max {stability.mean():.4g}")

# %%
# ``SensitivityBBox.attribute`` returns ``|∂y/∂x|`` exactly like ``Saliency`` (``abs=True``), so with the same
# perturbations the two rows agree; its own contribution is the learned box map (see the SensitivityBBox
# tutorial).
#
# Captum's visualisation
# ----------------------
# captum_ext maps are plain tensors: move channels last for
# :func:`captum.attr.visualization.visualize_image_attr_multiple`.
density = nb.saliency(inputs, target=target, sigma=2.0)
image = batch.images[0].permute(1, 2, 0).numpy()
fig, _ = viz.visualize_image_attr_multiple(
    density[0].permute(1, 2, 0).numpy(), image, methods=["original_image", "blended_heat_map"],
    signs=["all", "positive"], titles=["scene", "NodeBacktrack density"], use_pyplot=False)
plt.show()
fig, _ = viz.visualize_image_attr(smooth_sensitivity[0].permute(1, 2, 0).numpy(), image, method="heat_map",
                                  sign="absolute_value", title="SensitivityBBox + SmoothGrad", use_pyplot=False)
plt.show()

# %%
# Captum on captum_ext's trainable models
# ---------------------------------------
# :class:`captum_ext.ROIAttentionResNet` takes ``(images, masks)``: pass the mask as ``additional_forward_args``
# to attribute to the image only, or attribute to the tuple. The regressor of
# :class:`captum_ext.SelfSupervisedAttentionRegressor` is a plain module (``regressor.regress``), so every Captum
# method explains it directly; ``target`` picks the output coordinate.
from captum_ext import ROIAttentionResNet  # noqa: E402
from captum_ext.datasets import ellipses  # noqa: E402

roi_net = ROIAttentionResNet(num_classes=10, depth=18).eval()  # untrained here; see the ROI tutorial
roi = scenes.make_scenes(2, mode="roi", split="test", seed=7)
x, m = scenes.normalize(roi.images), roi.masks.float()
image_only = Saliency(roi_net).attribute(x, target=roi.labels, additional_forward_args=(m,))
(image_part, mask_part) = IntegratedGradients(roi_net).attribute(
    (x, m), baselines=(torch.zeros_like(x), torch.zeros_like(m)), target=roi.labels, n_steps=8)
print("ROI attributions:", tuple(image_only.shape), tuple(image_part.shape), tuple(mask_part.shape))

regressor = zoo.load("ellipses_ds1")  # shipped weights for ellipse dataset 1 (inclination)
ellipse_batch = ellipses.make_ellipses(2, dataset=1, seed=3)
angle_saliency = Saliency(regressor.regress).attribute(ellipse_batch.images, target=0)
print("regressor saliency:", tuple(angle_saliency.shape))
