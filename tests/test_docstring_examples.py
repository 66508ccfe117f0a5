"""The Example sections of the docstrings run as written, in every module of the package that has one (found by
walking the package, so a new module's examples are tested without being listed)."""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import captum_ext


def modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(captum_ext.__path__, "captum_ext."):
        if ">>>" in inspect.getsource(importlib.import_module(info.name)):
            names.append(info.name)
    return names


MODULES = modules_with_examples()


def test_the_walk_finds_the_methods_and_the_private_helpers():
    assert {"captum_ext.attr.node_backtrack", "captum_ext.zoo.vgg", "captum_ext._utils.ridge"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
