"""Every public function and class of captum_ext is documented in Captum's style: a docstring, an ``Args:`` section
when it takes arguments and a ``Returns:`` section when it returns something."""
import importlib
import inspect
import pkgutil

import captum_ext


def public_objects():
    for info in pkgutil.walk_packages(captum_ext.__path__, "captum_ext."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{info.name}.{name}", obj


def problems_of(qualified, function, is_method=False):
    doc = inspect.getdoc(function) or ""
    if not doc:
        return [f"{qualified}: no docstring"]
    signature = inspect.signature(function)
    params = [p for p in signature.parameters if p not in ("self", "cls")]
    found = []
    if params and "Args:" not in doc and not is_method:
        found.append(f"{qualified}: no Args section")
    returns = signature.return_annotation
    if (not is_method and returns not in (inspect.Signature.empty, None, "None") and "Returns:" not in doc
            and "Example" not in doc):
        found.append(f"{qualified}: no Returns section")
    return found


def test_every_public_function_and_class_is_documented():
    problems = []
    for qualified, obj in public_objects():
        if inspect.isfunction(obj):
            problems += problems_of(qualified, obj)
        else:
            if not inspect.getdoc(obj):
                problems.append(f"{qualified}: no docstring")
            for name, member in vars(obj).items():
                if inspect.isfunction(member) and not name.startswith("_"):
                    problems += problems_of(f"{qualified}.{name}", member, is_method=True)
    assert not problems, "\n".join(problems)
