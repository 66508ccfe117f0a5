"""Training and evaluation harnesses of captum_ext's models (the networks themselves live in
:mod:`captum_ext.models` and :mod:`captum_ext.zoo`), all built on one seeded loop (AdamW, one-cycle schedule).

- :mod:`captum_ext.training.ellipse_regression` — :class:`~captum_ext.SelfSupervisedAttentionRegressor` on the
  ellipse datasets: targets, errors, attention IoU, training, the shipped weights (``captum-ext train-regressor``).
- :mod:`captum_ext.training.roi` — :class:`~captum_ext.ROIAttentionResNet` on the ROI scenes: training, accuracy
  binned by ROI size, train-and-record (``captum-ext train-roi``).
- :mod:`captum_ext.training.scene_classifiers` — the zoo's scene classifiers (``scripts/train_zoo.py``).
- :mod:`captum_ext.training.crops` — digit-crop pretraining, the first stage of scene networks trained from
  scratch.
"""
from captum_ext.training import crops, ellipse_regression, roi, scene_classifiers
from captum_ext.training.crops import pretrain_on_digit_crops

__all__ = ["crops", "ellipse_regression", "pretrain_on_digit_crops", "roi", "scene_classifiers"]
