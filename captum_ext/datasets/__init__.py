"""Benchmark ground with exact ground truth, generated deterministically from a seed.

- :mod:`captum_ext.datasets.ellipses` — the three ellipse regression datasets of Li & Shimada, *Discovery of image
  pixels highly contributing to CNN regression*.
- :mod:`captum_ext.datasets.scenes` — real handwritten digits on real photographs: single object with clutter,
  multi-label, and ROI mode with informative context.
- :mod:`captum_ext.datasets.export` — the scenes written as a COCO dataset (PNGs + JSON) or a Pascal VOC tree, so
  that dataset-scale evaluation reads real files.
"""
from captum_ext.datasets import ellipses, scenes
from captum_ext.datasets.ellipses import EllipseBatch, EllipseDataset, make_ellipses
from captum_ext.datasets.export import export_coco, export_voc
from captum_ext.datasets.scenes import SceneBatch, SceneDataset, make_scenes

__all__ = [
    "EllipseBatch", "EllipseDataset", "SceneBatch", "SceneDataset", "ellipses", "export_coco", "export_voc",
    "make_ellipses", "make_scenes", "scenes",
]
