"""Dataset-scale evaluation: explain and score every (image, annotated class) pair of a dataset on disk, in one
process or many (``torchrun``), resumably.

- :func:`evaluate` — maps for every pair into a Zarr store, a per-pair table, ``metrics.json`` and a summary figure
  (:mod:`captum_ext.evaluation.runner`); ``captum-ext evaluate`` on the command line.
- :func:`fit_box_map` — SensitivityBBox's box map fitted on a dataset (``captum-ext fit-boxes``).
- :mod:`captum_ext.evaluation.data` — COCO, Pascal VOC, class-folder and built-in scene datasets read as
  :class:`~captum_ext.evaluation.data.Sample` s with one ground truth per annotated class (:func:`open_dataset`).
- :mod:`captum_ext.evaluation.models` and :mod:`captum_ext.evaluation.methods` — the models and methods a run can
  use (:data:`METHODS`).
"""
from captum_ext.evaluation.data import (
    VOC_CLASSES,
    AnnotatedImages,
    ImageEntry,
    Sample,
    default_class_map,
    open_dataset,
    read_image,
)
from captum_ext.evaluation.box_fitting import fit_box_map
from captum_ext.evaluation.methods import METHODS, build_method
from captum_ext.evaluation.models import EvaluationModel, Normalized, load_evaluation_model
from captum_ext.evaluation.runner import evaluate

__all__ = [
    "METHODS", "VOC_CLASSES", "AnnotatedImages", "EvaluationModel", "ImageEntry", "Normalized", "Sample",
    "build_method", "default_class_map", "evaluate", "fit_box_map", "load_evaluation_model", "open_dataset",
    "read_image",
]
