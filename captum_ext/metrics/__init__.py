"""Localisation and saliency metrics (pure, batched tensor functions).

Every function takes a whole batch of ``N`` images (or (image, class) pairs: one row per pair). The per-image
metrics return one number with ``reduce=True`` and one value per row with ``reduce=False``. Everything is imported
from ``captum_ext.metrics`` (the submodules, one concern each, are an implementation detail). The definitions follow
the papers that introduced them:

* :func:`box_iou`, :func:`corloc` -- box overlap and CorLoc (share of images whose predicted box has
  IoU >= 0.5 with a ground-truth box of the target class; Deselaers et al., *Localizing objects while learning
  their appearance*, ECCV 2010), as used for weakly supervised localisation.
* :func:`pointing_game` -- Zhang et al., *Top-down neural attention by excitation backprop*, ECCV 2016, with
  TorchRay's class-mean accuracy and its 15-px tolerance scaled to the map size (:func:`default_tolerance`:
  ``15 · max(H, W) / 224``); :func:`energy_pointing_game` -- the energy-based pointing game of Wang et al.,
  *Score-CAM*, CVPR Workshops 2020.
* :func:`saliency_fmeasure`, :func:`mae` -- the salient-object-detection max-F / adaptive-F (``beta^2 = 0.3``;
  Achanta et al., CVPR 2009) and mean absolute error (Perazzi et al., CVPR 2012).
* :func:`mask_iou` -- IoU of boolean masks.
* :func:`class_distinctness` -- how little a class's map lights up the other classes' objects (Shimoda & Yanai's
  claim of distinct class maps).
* :func:`boxes_from_saliency` -- the CAM box heuristic (Zhou et al., CVPR 2016).
* :func:`binned_accuracy` -- classification accuracy binned by ROI size, as in Eppel's Tables 1-4.
* :func:`maxboxacc_v2` (:class:`MaxBoxAccResult`), :func:`pxap` (:class:`PxAPResult`) -- MaxBoxAccV2 and the pixel
  average precision PxAP of Choe et al., *Evaluating Weakly Supervised Object Localization Methods Right*,
  CVPR 2020 (dataset-level: one threshold sweep, pooled counts).
* :func:`deletion_insertion_curves`, :func:`curve_auc`, :class:`FaithfulnessAUCMetric` -- the deletion and
  insertion AUCs of Petsiuk et al., *RISE*, BMVC 2018: does the map rank the pixels the model uses?
* :func:`cascading_randomization` (:class:`SanityResult`) -- the model-randomisation sanity check of Adebayo et al.,
  *Sanity Checks for Saliency Maps*, NeurIPS 2018.
* :class:`PointingGameMetric`, :class:`EnergyPointingGameMetric`, :class:`CorLocMetric`,
  :class:`MaxBoxAccV2Metric`, :class:`PxAPMetric` -- streaming ``torchmetrics.Metric`` versions for whole datasets
  of (map, :class:`~captum_ext.metrics.ground_truth.GroundTruth`) pairs, in one or several processes: summed
  int64 / float64 states, and ``statistics`` / ``update_from_statistics`` to store and replay a batch exactly.

Conventions shared by all functions:

* Saliency maps are ``N×H×W`` or ``N×1×H×W`` real tensors (numpy arrays are converted); ground-truth masks have
  the same shape and are boolean (or contain only 0 and 1).
* Boxes are ``(x1, y1, x2, y2)`` float pixels with *exclusive* right/bottom edges: a mask covering columns 3..5
  has ``x1 = 3, x2 = 6``; :func:`masks_to_boxes` and :func:`boxes_to_masks` convert between the two.
* Saliency metrics are computed in float64 and return float64 per-image tensors on the input's device; boxes come
  back as float32 (:func:`box_iou`: the promoted input dtype, at least float32).
* Bad input raises ``TypeError`` (wrong type / dtype, bool boxes included) or ``ValueError`` (wrong shape, NaN/inf,
  out of range), and the message names the offending argument.
* **Empty ground truth is an error, in every metric.** A ground-truth mask without a single foreground pixel
  (``masks`` of :func:`pointing_game`, :func:`energy_pointing_game`, :func:`saliency_fmeasure`, :func:`mae`;
  ``gt_masks`` of :func:`mask_iou`) or a (image, class) pair without a ground-truth box of positive area
  (``gt_boxes`` of :func:`corloc`) raises ``ValueError`` naming the argument and listing the offending image
  indices. Scored anyway, such an image would enter the mean as an arbitrary 0 (or 1), which biases the result
  and hides a data bug. *Predictions* may be empty: an empty predicted mask or a zero-area predicted box is a
  valid, wrong answer.

Example::

    >>> import torch
    >>> from captum_ext import metrics
    >>> saliency = torch.zeros(1, 8, 8); saliency[0, 2, 3] = 1.0
    >>> mask = torch.zeros(1, 8, 8, dtype=torch.bool); mask[0, 1:4, 2:5] = True
    >>> metrics.pointing_game(saliency, mask)
    1.0
    >>> metrics.energy_pointing_game(saliency, mask)
    1.0
"""
from captum_ext._utils.boxes import boxes_to_masks, masks_to_boxes
from captum_ext.metrics import binned as _binned
from captum_ext.metrics.binned import BinnedAccuracy, binned_accuracy
from captum_ext.metrics.boxes import box_iou, corloc
from captum_ext.metrics.cam import boxes_from_saliency
from captum_ext.metrics.distinctness import DistinctnessResult, class_distinctness
from captum_ext.metrics.faithfulness import FaithfulnessAUCMetric, curve_auc, deletion_insertion_curves
from captum_ext.metrics.ground_truth import GroundTruth
from captum_ext.metrics.masks import mask_iou
from captum_ext.metrics.perturbation import PerturbationMetric, infidelity_per_pair, sensitivity_max_per_pair
from captum_ext.metrics.pointing import default_tolerance, energy_pointing_game, pointing_game
from captum_ext.metrics.road import road_curves, road_impute
from captum_ext.metrics.saliency import FMeasure, mae, saliency_fmeasure
from captum_ext.metrics.sanity import SanityResult, cascading_randomization
from captum_ext.metrics.streaming import (
    CorLocMetric,
    EnergyPointingGameMetric,
    MaxBoxAccV2Metric,
    PointingGameMetric,
    PxAPMetric,
)
from captum_ext.metrics.wsol import MaxBoxAccResult, PxAPResult, maxboxacc_v2, pxap

#: Upper/lower ROI-size bin edges (pixels) of Eppel's Tables 1-4: ``[0, 1000), [1000, 2000), ... [500k, 1M)``;
#: the default ``bin_edges`` of :func:`binned_accuracy`.
PAPER_ROI_BINS = _binned.PAPER_ROI_BINS  # re-assigned (not just imported) so the API docs show its comment

__all__ = [
    "PAPER_ROI_BINS",
    "BinnedAccuracy",
    "CorLocMetric",
    "DistinctnessResult",
    "EnergyPointingGameMetric",
    "FMeasure",
    "FaithfulnessAUCMetric",
    "GroundTruth",
    "MaxBoxAccResult",
    "MaxBoxAccV2Metric",
    "PerturbationMetric",
    "PointingGameMetric",
    "PxAPMetric",
    "PxAPResult",
    "SanityResult",
    "binned_accuracy",
    "box_iou",
    "boxes_from_saliency",
    "cascading_randomization",
    "boxes_to_masks",
    "class_distinctness",
    "corloc",
    "curve_auc",
    "default_tolerance",
    "deletion_insertion_curves",
    "energy_pointing_game",
    "infidelity_per_pair",
    "mae",
    "mask_iou",
    "masks_to_boxes",
    "maxboxacc_v2",
    "pointing_game",
    "pxap",
    "road_curves",
    "road_impute",
    "saliency_fmeasure",
    "sensitivity_max_per_pair",
]
