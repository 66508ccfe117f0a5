"""Deprecated alias of :mod:`captum_ext.training.roi`, kept for one release.

Every attribute is looked up in the new module and its access emits a :class:`DeprecationWarning`; import
:mod:`captum_ext.training.roi` instead.
"""
from captum_ext.models import _forward_to

__getattr__, __dir__ = _forward_to(__name__, "captum_ext.training.roi")
