"""captum_ext: five published CNN interpretability methods, used exactly like Captum's own.

Public names are re-exported here as they land; ``datasets``, ``metrics`` and ``zoo`` hold the benchmark ground.
"""
from captum_ext import datasets, metrics, zoo
from captum_ext._version import __version__
from captum_ext.attr import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox
from captum_ext.models import ROIAttentionResNet, SelfSupervisedAttentionRegressor

__all__ = ["MultiLayerClassDiffSaliency", "NodeBacktrack", "ROIAttentionResNet", "SelfSupervisedAttentionRegressor", "SensitivityBBox", "__version__", "datasets", "metrics", "zoo"]
