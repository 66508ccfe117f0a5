"""Every public function and class of captum_ext, and every public method of a public class, is documented in
Captum's style: a docstring, an ``Args:`` section when it takes arguments and a ``Returns:`` section when it returns
something."""
import importlib
import inspect
import pkgutil

import captum_ext

# Names of public methods exempt from the Args/Returns sections (a docstring is still required): only trivial
# overrides of a torch / Captum hook whose contract the base class documents, e.g. ``extra_repr``. None exists
# today; add a name only together with a comment saying why it is trivial. ``forward`` is *not* trivial: its
# arguments and output are the model's own.
TRIVIAL_OVERRIDES: frozenset = frozenset()


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


def public_methods(cls):
    """``(name, function)`` of the public methods a class defines itself.

    Only ``vars(cls)``: methods inherited from torch, Captum or another base are that base's business (a
    captum_ext base class is checked on its own). Dunder and private names and properties are skipped; static and
    class methods are unwrapped.
    """
    for name, member in vars(cls).items():
        if name.startswith("_") or isinstance(member, property):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            yield name, member


def problems_of(qualified, function, sections=True):
    doc = inspect.getdoc(function) or ""
    if not doc:
        return [f"{qualified}: no docstring"]
    if not sections:
        return []
    signature = inspect.signature(function)
    params = [p for p in signature.parameters if p not in ("self", "cls")]
    found = []
    if params and "Args:" not in doc:
        found.append(f"{qualified}: no Args section")
    returns = signature.return_annotation
    if returns not in (inspect.Signature.empty, None, "None") and "Returns:" not in doc and "Example" not in doc:
        found.append(f"{qualified}: no Returns section")
    return found


def documentation_problems():
    problems = []
    for qualified, obj in public_objects():
        if inspect.isfunction(obj):
            problems += problems_of(qualified, obj)
            continue
        if not inspect.getdoc(obj):
            problems.append(f"{qualified}: no docstring")
        for name, method in public_methods(obj):
            problems += problems_of(f"{qualified}.{name}", method, sections=name not in TRIVIAL_OVERRIDES)
    return problems


def test_every_public_function_class_and_method_is_documented():
    problems = documentation_problems()
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def test_the_check_catches_an_undocumented_method_section():
    class Example:
        """A class."""

        def method(self, value: int) -> int:
            """Doubles, but documents neither argument nor result."""
            return 2 * value

        @staticmethod
        def helper(value: int) -> None:
            """Args:
                value: ignored.
            """

        @property
        def size(self) -> int:  # properties are attributes: no sections asked for
            """The size."""
            return 1

    found = [p for name, m in public_methods(Example) for p in problems_of(f"Example.{name}", m)]
    assert found == ["Example.method: no Args section", "Example.method: no Returns section"]
