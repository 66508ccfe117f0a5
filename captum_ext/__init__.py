"""captum_ext: five published CNN interpretability methods, used exactly like Captum's own.

Public names are re-exported here as they land; ``datasets``, ``metrics`` and ``zoo`` hold the benchmark ground.
They are imported on first use (``from captum_ext import NodeBacktrack`` works as ever), so that importing a light
part such as the command line's parser does not load torch.
"""
import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, List

from captum_ext._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from captum_ext import datasets, metrics, zoo
    from captum_ext.attr import MultiLayerClassDiffSaliency, NodeBacktrack, SensitivityBBox
    from captum_ext.models import ROIAttentionResNet, SelfSupervisedAttentionRegressor

#: public name → the module that defines it.
_LAZY = {
    "MultiLayerClassDiffSaliency": "captum_ext.attr",
    "NodeBacktrack": "captum_ext.attr",
    "SensitivityBBox": "captum_ext.attr",
    "ROIAttentionResNet": "captum_ext.models",
    "SelfSupervisedAttentionRegressor": "captum_ext.models",
}

__all__ = ["MultiLayerClassDiffSaliency", "NodeBacktrack", "ROIAttentionResNet", "SelfSupervisedAttentionRegressor", "SensitivityBBox", "__version__", "datasets", "metrics", "zoo"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # `import captum_ext; captum_ext.zoo.load(...)` (or any subpackage) kept working when the package
        # imported them all up front.
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
