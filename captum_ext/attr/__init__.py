"""Attribution methods, one per seed paper, each a Captum ``Attribution`` subclass."""
from captum_ext.attr.multi_layer_class_diff_saliency import MultiLayerClassDiffSaliency
from captum_ext.attr.node_backtrack import NodeBacktrack
from captum_ext.attr.sensitivity_bbox import SensitivityBBox

__all__ = ["MultiLayerClassDiffSaliency", "NodeBacktrack", "SensitivityBBox"]
