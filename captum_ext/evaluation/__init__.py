"""Dataset-scale evaluation: explain and score every (image, annotated class) pair of a dataset on disk.

- :mod:`captum_ext.evaluation.data` — COCO, Pascal VOC, class-folder and built-in scene datasets read as
  :class:`~captum_ext.evaluation.data.Sample` s with one ground truth per annotated class (:func:`open_dataset`).
"""
from captum_ext.evaluation.data import (
    VOC_CLASSES, AnnotatedImages, ImageEntry, Sample, default_class_map, open_dataset, read_image,
)

__all__ = [
    "VOC_CLASSES", "AnnotatedImages", "ImageEntry", "Sample", "default_class_map", "open_dataset", "read_image",
]
