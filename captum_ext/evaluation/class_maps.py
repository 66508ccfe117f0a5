"""Which class of the model each dataset category is scored as: one unambiguous resolution, reported in full.

A class map links dataset categories to the model's class indices. Its keys are category **ids** or category
**names**, never a mix, and the map says which when it could be read either way:

- ``{"ids": {"1": 0, "2": 1}}`` — keys are category ids (COCO ``category_id``; VOC: see below);
- ``{"names": {"cat": 7, "dog": 11}}`` — keys are category names;
- ``{"1": 0, "2": 1}`` — a plain object: its keys must all be ids, or all names. When every key could be read
  both ways and one of them is the id of one category and the name of *another* (an exported digit dataset: id
  ``1`` is named ``"0"``), the plain form is ambiguous and refused: use one of the two forms above. A map that
  only one reading fits (a key that is an id but no name) is read that way.

Without a class map, :func:`resolve_classes` uses, in this order: the class map the dataset carries
(``class_map.json`` beside a COCO annotation file or in a VOC root, as :mod:`captum_ext.datasets.export` writes
it); the category names when they are all integers (class ``int(name)``) or, for a 20-class model, all Pascal VOC
classes (their standard order); for class folders, the folder's class index. Anything else is refused with a
request for a map: a silent guess would score every pair against the wrong class.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # data imports this module; the annotation only names its dataset class
    from captum_ext.evaluation.data import AnnotatedImages

#: The two explicit forms' keys.
KEY_KINDS = ("ids", "names")

#: File name of a class map that a dataset carries (beside a COCO annotation file, in a VOC root).
CARRIED_FILE = "class_map.json"


@dataclass(frozen=True)
class ClassMap:
    """A parsed class map.

    Attributes:
        keys (str): ``"ids"``, ``"names"`` or ``"auto"`` (a plain object: decided against the dataset).
        classes (dict of str to int): key → class index, in the map's order.
        source (str): where it came from, for messages and reports.
    """

    keys: str
    classes: Dict[str, int]
    source: str


@dataclass(frozen=True)
class ResolvedClasses:
    """The class of every category a run scores, and how it was decided.

    Attributes:
        classes (dict of int to int): category id → class index.
        how (str): the rule or file that decided it.
    """

    classes: Dict[int, int]
    how: str

    def report(self, names: Mapping[int, str], class_names: Sequence[str]) -> Dict[str, Any]:
        """The resolution as ``metrics.json`` and the start-up message show it.

        Args:
            names (mapping of int to str): category id → name.
            class_names (sequence of str): the model's class names.

        Returns:
            dict: ``{"how": ..., "categories": [{"id", "name", "class", "class_name"}, ...]}``.
        """
        rows = [{"id": cid, "name": names.get(cid, "?"), "class": index,
                 "class_name": class_names[index] if 0 <= index < len(class_names) else str(index)}
                for cid, index in sorted(self.classes.items())]
        return {"how": self.how, "categories": rows}

    def describe(self, names: Mapping[int, str], class_names: Sequence[str], shown: int = 12) -> str:
        """One line: ``class map (how): 1 '0' → 0, 2 '1' → 1, …``.

        Args:
            names (mapping of int to str): category id → name.
            class_names (sequence of str): the model's class names.
            shown (int): how many categories to list before counting the rest.

        Returns:
            str: the line.
        """
        rows = self.report(names, class_names)["categories"]
        parts = [f"{r['id']} {r['name']!r} → {r['class']}" + (f" ({r['class_name']})" if r["class_name"] != str(
            r["class"]) else "") for r in rows[:shown]]
        more = f", … ({len(rows) - shown} more)" if len(rows) > shown else ""
        return f"class map ({self.how}): {', '.join(parts)}{more}"


def as_class_map(value: Union[ClassMap, Mapping[str, Any], None], source: str = "`class_map`"
                 ) -> Optional[ClassMap]:
    """Parse a class map given as a mapping (see the module docstring for the forms).

    Args:
        value (ClassMap, mapping or None): the map.
        source (str): where it came from, for messages.

    Returns:
        ClassMap or None: the parsed map (``None`` for ``None``).

    Raises:
        TypeError / ValueError: not one of the forms, or a class index that is not a non-negative integer.

    Example::

        >>> as_class_map({"names": {"cat": 7}}).keys
        'names'
        >>> as_class_map({"1": 0, "2": 1}).keys
        'auto'
    """
    if value is None or isinstance(value, ClassMap):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{source} must be a mapping of category ids or names to class indices, got "
                        f"{type(value).__name__}")
    keys, classes = "auto", value
    if len(value) == 1 and next(iter(value)) in KEY_KINDS and isinstance(next(iter(value.values())), Mapping):
        keys, classes = next(iter(value.items()))
    parsed: Dict[str, int] = {}
    for key, index in classes.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"{source} must map each category to a class index (a non-negative integer), got "
                             f"{key!r}: {index!r}")
        parsed[str(key)] = int(index)
    return ClassMap(keys, parsed, source)


class _RepeatedKey(Exception):
    """A JSON object names one key twice (the key is the message)."""


def _without_repeated_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    value: Dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _RepeatedKey(key)
        value[key] = item
    return value


def read_class_map(path: Union[str, Path]) -> ClassMap:
    """Read a class map file (JSON, one of the forms in the module docstring).

    Args:
        path (str or Path): the file.

    Returns:
        ClassMap: the parsed map, its source the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not valid JSON or not a class map (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class map file {str(path)!r} does not exist")
    try:
        value = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_without_repeated_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"class map file {str(path)!r} is not valid JSON: {err}") from None
    except _RepeatedKey as err:  # JSON keeps the last of a repeated key: one category would silently move
        raise ValueError(f"class map file {str(path)!r} gives key {str(err)!r} twice") from None
    if not isinstance(value, dict):
        raise ValueError(f"class map file {str(path)!r} must hold a JSON object of category ids or names → class "
                         f"indices, got {type(value).__name__}")
    try:
        parsed = as_class_map(value, f"class map file {str(path)!r}")
    except TypeError as err:
        raise ValueError(str(err)) from None
    assert parsed is not None
    return parsed


def carried_class_map(folder: Union[str, Path]) -> Optional[ClassMap]:
    """The class map a dataset carries in ``folder`` (:data:`CARRIED_FILE`), or ``None``.

    Args:
        folder (str or Path): the folder of the COCO annotation file, or the VOC root.

    Returns:
        ClassMap or None: the map, its source the file.
    """
    path = Path(folder) / CARRIED_FILE
    return read_class_map(path) if path.is_file() else None


def _keyed(class_map: ClassMap, names: Mapping[int, str]) -> Dict[int, int]:
    """Category id → class index for the categories the map names, once its keys are known to be ids or names."""
    by_id = {str(cid): cid for cid in names}
    by_name: Dict[str, List[int]] = {}
    for cid, name in names.items():
        by_name.setdefault(name, []).append(cid)
    keys = class_map.keys
    if keys == "auto":
        as_ids = all(k in by_id for k in class_map.classes)
        as_names = all(k in by_name for k in class_map.classes)
        clash = [k for k in class_map.classes if k in by_id and k in by_name and by_name[k] != [by_id[k]]]
        if as_ids and as_names and clash:
            k = clash[0]
            raise ValueError(
                f"{class_map.source} is ambiguous: key {k!r} is the id of category {names[by_id[k]]!r} and the name "
                f"of category id {by_name[k][0]}. Say which the keys are: {{\"ids\": {{...}}}} or "
                f"{{\"names\": {{...}}}}")
        if not (as_ids or as_names):
            either = [k for k in class_map.classes if k in by_id or k in by_name]
            unknown = [k for k in class_map.classes if k not in by_id and k not in by_name]
            why = (f"keys {unknown[:5]} are neither category ids nor names" if unknown else
                   f"it mixes category ids and names ({either[:5]})")
            raise ValueError(f"{class_map.source}: {why}; the dataset's categories are "
                             f"{_categories_text(names)}")
        keys = "ids" if as_ids else "names"
    if keys == "ids":
        unknown = [k for k in class_map.classes if k not in by_id]
        if unknown:
            raise ValueError(f"{class_map.source} is keyed by category ids, but {unknown[:5]} are not ids of the "
                             f"dataset's categories {_categories_text(names)}")
        return {by_id[k]: index for k, index in class_map.classes.items()}
    unknown = [k for k in class_map.classes if k not in by_name]
    if unknown:
        raise ValueError(f"{class_map.source} is keyed by category names, but {unknown[:5]} are not names of the "
                         f"dataset's categories {_categories_text(names)}")
    shared = [k for k in class_map.classes if len(by_name[k]) > 1]
    if shared:
        raise ValueError(f"{class_map.source} is keyed by names, but the name {shared[0]!r} belongs to several "
                         f"category ids {by_name[shared[0]]}: key the map by ids")
    return {by_name[k][0]: index for k, index in class_map.classes.items()}


def _categories_text(names: Mapping[int, str]) -> str:
    shown = ", ".join(f"{cid} {name!r}" for cid, name in sorted(names.items())[:6])
    return f"({shown}{', …' if len(names) > 6 else ''})"


def _classes_by_name(names: Mapping[int, str]) -> Optional[Tuple[str, Dict[int, int]]]:
    """The name rules shared by :func:`~captum_ext.evaluation.data.default_class_map` and :func:`resolve_classes`:
    integer names are class indices, else all-VOC names take their :data:`~captum_ext.evaluation.data.VOC_CLASSES`
    position.

    Args:
        names (mapping of int to str): category id → name.

    Returns:
        tuple or None: ``("integers" or "voc", category id → class index)``, or ``None`` when neither rule applies.
    """
    from captum_ext.evaluation.data import VOC_CLASSES, _is_count

    by_name: Dict[str, List[int]] = {}
    for cid, name in names.items():
        by_name.setdefault(name, []).append(cid)
    shared = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    if shared and (all(_is_count(n) for n in names.values()) or all(n in VOC_CLASSES for n in names.values())):
        name, ids = sorted(shared.items())[0]
        raise ValueError(f"categories {', '.join(map(str, sorted(ids)))} are all named {name!r}: a class map by "
                         f"name would merge them; pass a class map keyed by category ids")
    if names and all(_is_count(n) for n in names.values()):
        return "integers", {cid: int(n) for cid, n in names.items()}
    if names and all(n in VOC_CLASSES for n in names.values()):
        return "voc", {cid: VOC_CLASSES.index(n) for cid, n in names.items()}
    return None


def _by_names(names: Mapping[int, str], num_classes: int) -> Optional[ResolvedClasses]:
    """The name rules of :func:`~captum_ext.evaluation.data.default_class_map`, where they apply to the model (the
    VOC rule only to a 20-class model: another model's class 3 is not VOC's "boat")."""
    from captum_ext.evaluation.data import VOC_CLASSES

    found = _classes_by_name(names)
    if found is None:
        return None
    rule, classes = found
    if rule == "integers":
        return ResolvedClasses(classes, "category names are class indices")
    if num_classes == len(VOC_CLASSES):
        return ResolvedClasses(classes, "Pascal VOC class names in their standard order")
    return None


def resolve_classes(used: Sequence[int], names: Mapping[int, str], class_map: Optional[ClassMap],
                    num_classes: int, carried: Optional[ClassMap] = None, ids_are_classes: bool = False
                    ) -> ResolvedClasses:
    """The model class of every category the run scores (see the module docstring for the order of rules).

    Args:
        used (sequence of int): the category ids the run scores.
        names (mapping of int to str): every category id → its name.
        class_map (ClassMap, optional): the user's map.
        num_classes (int): the model's classes (0: unknown, indices not checked).
        carried (ClassMap, optional): the map the dataset carries.
        ids_are_classes (bool): the dataset's ids are class indices by construction (class folders).

    Returns:
        ResolvedClasses: category id → class index for every used category, and how.

    Raises:
        ValueError: an ambiguous or unknown key, a used category the map leaves out, a class index the model does
            not have, or no rule that applies (each named in the message).
    """
    if class_map is not None:
        resolved = ResolvedClasses(_keyed(class_map, names), f"from {class_map.source}")
    elif carried is not None:
        resolved = ResolvedClasses(_keyed(carried, names), f"carried by the dataset: {carried.source}")
    else:
        found = _by_names({c: names.get(c, "") for c in set(used)}, num_classes)
        if found is None and ids_are_classes:
            found = ResolvedClasses({c: c for c in set(used)}, "the class folders' indices")
        if found is None and not used:
            raise ValueError("the dataset has no annotated objects: nothing to score")
        if found is None:
            shown = ", ".join(repr(names.get(c, "?")) for c in sorted(set(used))[:5])
            raise ValueError(f"no class map for categories named {shown}{', …' if len(set(used)) > 5 else ''}: "
                             f"pass a class map (--class-map) from category ids or names to the model's class "
                             f"indices")
        resolved = found
    missing, outside = [], []
    for category in sorted(set(used)):
        index = resolved.classes.get(category)
        if index is None:
            missing.append(f"{category} ({names.get(category, '?')!r})")
        elif num_classes and not 0 <= index < num_classes:
            outside.append(f"{category} ({names.get(category, '?')!r}) → {index}")
    if missing or outside:
        parts = ([f"categories without a class: {', '.join(missing)}"] if missing else []) + \
                ([f"class indices the model ({num_classes} classes) does not have: {', '.join(outside)}"]
                 if outside else [])
        raise ValueError(f"{resolved.how.removeprefix('from ')}: {'; '.join(parts)}")
    return ResolvedClasses({c: resolved.classes[c] for c in sorted(set(used))}, resolved.how)


def resolve_dataset_classes(dataset: "AnnotatedImages", class_map: Optional[ClassMap], num_classes: int
                            ) -> ResolvedClasses:
    """:func:`resolve_classes` for every category an opened dataset scores, with the map it carries and its own
    kind of ids (what ``evaluate`` and ``fit_box_map`` both resolve).

    Args:
        dataset (AnnotatedImages): the opened dataset.
        class_map (ClassMap, optional): the user's map.
        num_classes (int): the model's classes (0: unknown, indices not checked).

    Returns:
        ResolvedClasses: category id → class index for every scored category, and how.

    Raises:
        ValueError: as :func:`resolve_classes`.
    """
    return resolve_classes([c for e in dataset.entries for c in e.categories], dataset.categories, class_map,
                           num_classes, dataset.carried_class_map, dataset.ids_are_classes)
