"""The Example sections of the methods' docstrings run as written (metrics has its own doctest test)."""
import doctest
import importlib

import pytest

MODULES = [
    "captum_ext.attr.node_backtrack",
    "captum_ext.attr.sensitivity_bbox",
    "captum_ext.attr._box_features",
    "captum_ext.attr.multi_layer_class_diff_saliency",
    "captum_ext.models.self_supervised_attention",
    "captum_ext.models.roi_attention_resnet",
    "captum_ext.training.ellipse_regression",
    "captum_ext.training.roi",
    "captum_ext.training.crops",
    "captum_ext.zoo",
    "captum_ext.zoo.ellipses",
    "captum_ext.metrics",
    "captum_ext.datasets.export",
    "captum_ext.evaluation.data",
    "captum_ext.visualization",
    "captum_ext.explain",
    "captum_ext.datasets.scenes",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
