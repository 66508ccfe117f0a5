"""Fit SensitivityBBox's box map on an annotated dataset, in one process or many: the engine behind
``captum-ext fit-boxes``, whose output ``captum-ext evaluate --method sensitivity --box-map`` reads."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from captum_ext._utils.attribution import check_batch_size, eval_mode
from captum_ext.evaluation.class_maps import as_class_map, resolve_dataset_classes
from captum_ext.evaluation.distributed import batches_of, my_batches, processes
from captum_ext.evaluation.models import EvaluationModel


def check_writable(path: Path, name: str) -> None:
    """Refuse an output file that cannot be written, before the work that would fill it.

    Args:
        path (Path): the file to write later.
        name (str): the argument, for the message.

    Raises:
        ValueError: ``path`` is a folder, an existing file other than a box map (which a refit may replace), or its
            folder cannot be created or written (naming the path).
    """
    if path.is_dir():
        raise ValueError(f"`{name}` {str(path)!r} is a folder; give a file name, e.g. {str(path / 'boxes.pt')!r}")
    if path.is_file() and not _is_box_map(path):  # a refit may replace a box map, never another file
        raise ValueError(f"`{name}` {str(path)!r} exists and is not a box map: it would be replaced; give another "
                         f"file name")
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"`{name}` {str(path)!r} cannot be written: {err.strerror or err}") from None


def _is_box_map(path: Path) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for files that are not its own
        return False
    return isinstance(state, dict) and {"version", "weight", "bias", "ridge"} <= set(state)


def training_box(boxes: Tensor) -> Tensor:
    """The one box a pair trains on: its largest instance (SensitivityBBox predicts one box per class).

    Args:
        boxes (Tensor): ``K×4`` instance boxes, ``K >= 1``.

    Returns:
        Tensor: ``4`` float32.
    """
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(areas.argmax())].to(torch.float32)


def fit_box_map(
    model: Union[str, nn.Module, EvaluationModel],
    data: Any,
    out: Union[str, Path],
    batch_size: int = 32,
    ridge: Optional[float] = None,
    class_map: Optional[Dict[str, int]] = None,
    device: str = "cpu",
    resize: Optional[Tuple[int, int]] = None,
    num_workers: int = 0,
    features: Optional[Union[str, Sequence[str]]] = None,
    skip_bad: bool = False,
) -> Dict[str, Any]:
    """Fit a SensitivityBBox box map on every (image, class) pair with boxes, and save it (rank 0).

    Under ``torchrun`` each process reads its own shard of batches and ``XᵀX``, ``Xᵀy`` are summed across the
    processes, so the map equals the one-process fit.

    Args:
        model (str, nn.Module or EvaluationModel): as in :func:`captum_ext.evaluation.evaluate`.
        data: a dataset spec or :class:`~captum_ext.evaluation.data.AnnotatedImages` with boxes.
        out (str or Path): the box map file to write (``torch.save`` of ``SensitivityBBox.state_dict()``).
        batch_size (int, optional): images per batch. Default: 32.
        ridge (float, optional): the ridge penalty. Default: ``None``, chosen by generalised cross-validation
            (see :meth:`SensitivityBBox.fit <captum_ext.SensitivityBBox.fit>`).
        class_map (dict or ClassMap, optional): category → class index, resolved as in ``evaluate``.
        device (str, optional): ``"cpu"`` or ``"cuda"``.
        resize (tuple of int, optional): ``(H, W)`` to resize images to.
        num_workers (int, optional): DataLoader workers.
        features (str or sequence of str, optional): the box feature blocks (see
            :class:`~captum_ext.SensitivityBBox`); recorded in the file. ``"class"`` takes the
            number of classes from the model. Default: ``None``, SensitivityBBox's default set.
        skip_bad (bool, optional): skip (image, class) pairs with bad annotations and images that do not decode
            instead of stopping (as ``evaluate`` does). Default: False.

    Returns:
        dict: the fitted state (the same on every process).

    Raises:
        ValueError: a dataset without boxes, bad annotations (unless ``skip_bad``), categories the model does not
            have, a ``batch_size`` below 1, or an ``out`` that cannot be written (checked before any fitting).
    """
    from captum_ext import SensitivityBBox
    from captum_ext.attr._box_features import DEFAULT_FEATURES
    from captum_ext.evaluation.runner import _dataset_of, _model_of

    class_map = as_class_map(class_map)
    batch_size = check_batch_size(batch_size)
    with processes(device) as group, eval_mode(model if isinstance(model, nn.Module) else None):
        if group.is_main:
            check_writable(Path(out), "out")
        dataset = _dataset_of(data, resize, skip_bad, class_map)[0]
        spec = getattr(dataset, "spec", "")
        if spec.startswith("scenes:") and not spec.endswith(":train") and group.is_main:
            warnings.warn(f"`data` {spec!r} are the held-out scenes that evaluate scores: a box map fitted on them "
                          f"is scored on its own training data; fit on {spec}:train", stacklevel=2)
        if not dataset.has_boxes:
            raise ValueError(f"`data` {getattr(dataset, 'spec', '')!r} has no boxes to fit a box map on")
        loaded = _model_of(model, group.device)
        class_of = resolve_dataset_classes(dataset, class_map, len(loaded.class_names)).classes
        batches = batches_of(len(dataset), batch_size)
        mine = [batches[k] for k in my_batches(len(batches), group)]
        loader = DataLoader(dataset, batch_sampler=mine, collate_fn=list, num_workers=num_workers)

        def pairs() -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
            for samples in loader:
                by_size: Dict[Tuple[int, int], list] = {}
                for sample in samples:
                    for truth in sample.truths if sample.image is not None else ():
                        if truth.boxes.shape[0]:
                            by_size.setdefault(tuple(sample.image.shape[-2:]), []).append((sample.image, truth))
                for group_pairs in by_size.values():
                    yield (torch.stack([image for image, _ in group_pairs]).to(group.device),
                           torch.stack([training_box(t.boxes) for _, t in group_pairs]),
                           torch.tensor([class_of[t.category] for _, t in group_pairs], device=group.device))

        feature_set = DEFAULT_FEATURES if features is None else features
        box_map = SensitivityBBox(loaded.model, features=feature_set, num_classes=len(loaded.class_names))
        box_map = box_map.fit(pairs(), ridge=ridge)
        state = box_map.state_dict()
        if group.is_main:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, Path(out))
        group.barrier()
    return state
