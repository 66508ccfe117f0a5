"""Explain and score a whole annotated dataset: the engine behind ``captum-ext evaluate``.

Work is split into global batches of consecutive images, the same whatever the number of processes; process ``r``
of ``W`` computes batches ``r, r + W, …`` (disjoint, unpadded). Each finished batch leaves its maps in the Zarr
store and one record file; a rerun with ``resume`` skips recorded batches and replays their metric contributions,
so an interrupted run ends exactly as an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from captum_ext._utils.attribution import eval_mode
from captum_ext.evaluation import scoring
from captum_ext.evaluation._fingerprints import changed_inputs, run_fingerprint
from captum_ext.evaluation._forward_tap import PLAIN_FORWARD_METHODS, ForwardTap
from captum_ext.evaluation._writer import BackgroundWriter
from captum_ext.evaluation.class_maps import ClassMap, as_class_map, resolve_dataset_classes
from captum_ext.evaluation.distributed import Processes, batches_of, my_batches, processes
from captum_ext.evaluation.methods import MapFunction, build_method, scale_to_unit
from captum_ext.evaluation.models import EvaluationModel, load_evaluation_model
from captum_ext.evaluation.store import MAP_DTYPES, BatchRecords, MapStore, from_json, to_json
from captum_ext.metrics.ground_truth import GroundTruth

DataArgument = Union[str, "torch.utils.data.Dataset", DataLoader]
#: Perturbed images per forward pass of the deletion and insertion curves (at least the run's batch size).
FAITHFULNESS_FORWARD_BATCH = 64


@dataclass
class _Run:
    """What every batch needs."""

    model: nn.Module
    method: MapFunction
    multi_label: bool
    class_of: Dict[int, int]
    pair_start: List[int]
    metrics: Dict[str, Any]
    accuracy: scoring.PairAccuracy
    store: MapStore
    map_dtype: torch.dtype
    group: Processes
    pair_batch: int
    faithfulness: Dict[str, Any]
    faithfulness_steps: int
    faithfulness_baseline: Optional[str]
    tap: ForwardTap


def _dataset_of(data: DataArgument, resize: Optional[Tuple[int, int]], skip_bad: bool,
                class_map: Optional[ClassMap] = None) -> Any:
    from captum_ext.evaluation.data import AnnotatedImages, open_dataset

    if isinstance(data, str):
        return open_dataset(data, resize=resize, skip_bad=skip_bad, class_map=class_map)
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(dataset, AnnotatedImages):
        raise TypeError(f"`data` must be a dataset spec, an AnnotatedImages dataset or a DataLoader over one, got "
                        f"{type(dataset).__name__}")
    return dataset


def _model_of(model: Union[str, nn.Module, EvaluationModel], device: torch.device) -> EvaluationModel:
    if isinstance(model, str):
        loaded = load_evaluation_model(model)
    elif isinstance(model, EvaluationModel):
        loaded = model
    elif isinstance(model, nn.Module):
        from captum_ext.evaluation.models import _output_classes
        from captum_ext.explain import default_layers

        try:
            layers = default_layers(model)
        except ValueError:
            layers = []
        loaded = EvaluationModel(model, [str(c) for c in range(_output_classes(model))], layers, False, "nn.Module")
    else:
        raise TypeError(f"`model` must be a model spec, an nn.Module or an EvaluationModel, got "
                        f"{type(model).__name__}")
    first = next(iter(loaded.model.parameters()), None)
    if first is not None and first.device != device:
        # Work on a copy on the device: the caller's model stays where it was.
        moved = copy.deepcopy(loaded.model).to(device).eval()
        index = {id(m): name for name, m in loaded.model.named_modules()}
        modules = dict(moved.named_modules())
        loaded = EvaluationModel(moved, loaded.class_names, [modules[index[id(layer)]] for layer in loaded.layers],
                                 loaded.multi_label, loaded.spec)
    return loaded


def _compute_batch(samples: Sequence[Any], run: _Run) -> Tuple[Dict[str, Any], List[Tuple[List[int], Tensor]]]:
    """Rows and metric contributions (the batch record) of one batch, and its maps to write, per size group."""
    writes: List[Tuple[List[int], Tensor]] = []
    rows: List[Dict[str, Any]] = []
    deltas: Dict[str, Dict[str, Tensor]] = {}
    skipped = [sample.error for sample in samples if sample.image is None]
    by_size: Dict[Tuple[int, int], List[Any]] = {}
    for sample in samples:
        if sample.image is not None and sample.truths:
            by_size.setdefault(tuple(sample.image.shape[-2:]), []).append(sample)
    for group in by_size.values():
        images = torch.stack([sample.image for sample in group]).to(run.group.device)
        owner = [j for j, sample in enumerate(group) for _ in sample.truths]
        categories = [t.category for sample in group for t in sample.truths]
        truths = [GroundTruth(run.class_of[t.category], t.boxes, t.mask) for sample in group for t in sample.truths]
        pair_ids = [run.pair_start[sample.index] + k for sample in group for k in range(len(sample.truths))]
        classes = torch.tensor([t.category for t in truths], dtype=torch.long)
        maps, boxes, tapped = [], [], []
        for start in range(0, len(truths), run.pair_batch):
            part = slice(start, start + run.pair_batch)
            (chunk, chunk_boxes), pair_scores = run.tap.call(run.method, images[owner[part]],
                                                             classes[part].to(run.group.device))
            maps.append(scale_to_unit(chunk)[:, 0].to(run.map_dtype))
            boxes.append(chunk_boxes)
            tapped.append(pair_scores)
        if all(t is not None for t in tapped):  # the method's own forward: each image's first pair's row
            scores = torch.cat(tapped)[[owner.index(j) for j in range(len(group))]]
        else:
            with torch.no_grad():
                scores = run.model(images)
        probabilities = (torch.sigmoid(scores) if run.multi_label else torch.softmax(scores, dim=1)).cpu()
        on_device = torch.cat(maps)
        writes.append((pair_ids, on_device.cpu()))
        # Scored as stored (reruns score the same) and where the maps are: on a GPU the metrics label and measure
        # them there, with the values the host computes. One float32 copy serves every metric.
        as_float = on_device.to(torch.float32)
        scored = list(as_float)
        predicted_boxes = torch.cat([b.cpu() for b in boxes]) if boxes[0] is not None else None
        group_deltas, columns = scoring.batch_statistics(run.metrics, scored, truths, predicted_boxes)
        if run.faithfulness:
            aucs = _faithfulness(run, images[owner], as_float, classes.to(images.device))
            for key, metric in run.faithfulness.items():
                group_deltas[key], per_pair = metric.statistics(aucs[metric.mode])
                columns.update(per_pair)
        predicted = probabilities[owner].argmax(dim=1)
        class_probability = probabilities[owner].gather(1, classes[:, None])[:, 0]
        recognised = class_probability >= 0.5 if run.multi_label else predicted == classes
        accuracy_delta, _ = run.accuracy.statistics(recognised)
        scoring.add_deltas(deltas, {**group_deltas, "accuracy": accuracy_delta})
        for k, (pair_id, truth) in enumerate(zip(pair_ids, truths)):
            sample = group[owner[k]]
            row = {"pair": pair_id, "image_index": sample.index, "image_id": sample.image_id,
                   "category": categories[k], "class_index": truth.category, "predicted": int(predicted[k]),
                   "predicted_score": float(probabilities[owner[k], predicted[k]]),
                   "class_score": float(probabilities[owner[k], truth.category]), "recognised": bool(recognised[k])}
            row.update({name: (values[k].item() if isinstance(values[k], Tensor) else values[k])
                        for name, values in columns.items()})
            rows.append(row)
    return {"rows": rows, "deltas": to_json(deltas), "skipped": skipped}, writes


def evaluate(
    model: Union[str, nn.Module, EvaluationModel],
    method: Union[str, MapFunction],
    data: DataArgument,
    out: Union[str, Path],
    batch_size: int = 16,
    tolerance: Optional[float] = None,
    class_map: Optional[Union[Dict[str, Any], ClassMap]] = None,
    resume: bool = False,
    device: str = "cpu",
    resize: Optional[Tuple[int, int]] = None,
    layer: Optional[str] = None,
    box_map: Optional[Union[str, Path]] = None,
    map_dtype: str = "float16",
    num_workers: int = 0,
    skip_bad: bool = False,
    show_progress: bool = True,
    metrics: Optional[Sequence[str]] = None,
    faithfulness_steps: int = 32,
    faithfulness_baseline: Optional[str] = None,
) -> Dict[str, Any]:
    r"""Explain every (image, annotated class) pair of a dataset and score the maps; under ``torchrun`` the work
    is split over the processes and the metrics are summed across them.

    Args:
        model (str, nn.Module or EvaluationModel): a spec (see :func:`load_evaluation_model`) or a model taking
            images in ``[0, 1]``.
        method (str or callable): one of :data:`captum_ext.evaluation.methods.METHODS`, or ``f(images, targets)
            -> (maps N×1×H×W, boxes or None)``.
        data (str, Dataset or DataLoader): a dataset spec (see :func:`captum_ext.evaluation.data.open_dataset`),
            an :class:`~captum_ext.evaluation.data.AnnotatedImages`, or a DataLoader over one (its dataset is used;
            batching is this function's, so that any number of processes computes the same batches).
        out (str or Path): the results folder (created).
        batch_size (int, optional): images per batch. Default: 16.
        tolerance (float, optional): the pointing game's tolerance in pixels. Default: ``None``, 15 px per 224 px
            of each image's longer side (:func:`captum_ext.metrics.pointing.default_tolerance`).
        class_map (dict or ClassMap, optional): dataset category → the model's class index, keyed by category ids
            or by names (``{"ids": {...}}``, ``{"names": {...}}`` or a plain mapping that can be read only one way;
            see :mod:`captum_ext.evaluation.class_maps`). Default: the map the dataset carries, else the category
            names when they are class indices (or VOC classes for a 20-class model), else the class folders'
            indices; anything else is refused. The resolved map is printed at start and saved in ``metrics.json``.
        resume (bool, optional): continue the run in ``out``: recorded batches are not computed again. Refused
            when an input changed since the run began (annotation files, image list, class map, model weights,
            box map), naming what changed.
        device (str, optional): ``"cpu"`` or ``"cuda"`` (under torchrun: one GPU per process). Default: cpu.
        resize (tuple of int, optional): ``(H, W)`` to resize images (and their annotations) to.
        layer (str, optional): grad_cam's layer (a dotted submodule name).
        box_map (str or Path, optional): a SensitivityBBox box map for learned boxes (``sensitivity``).
        map_dtype (str, optional): ``"float16"`` or ``"float32"`` maps in the store. Default: float16.
        num_workers (int, optional): DataLoader workers that read images. Default: 0.
        skip_bad (bool, optional): list images that do not decode, and skip (image, class) pairs with bad
            annotations (named in ``metrics.json``'s ``skipped``), instead of stopping.
        show_progress (bool, optional): on rank 0, the resolved class map, where a resumed run starts and a
            progress bar (images/s). Default: True.
        metrics (sequence of str, optional): the metrics to compute: localisation metrics (from
            :data:`~captum_ext.evaluation.scoring.LOCALISATION_METRICS`) and the faithfulness metrics
            ``"deletion"`` and ``"insertion"`` (:mod:`captum_ext.metrics.faithfulness`: keys ``deletion_auc`` and
            ``insertion_auc``, a column each in ``pairs.csv``; they need no annotations but cost
            ``faithfulness_steps + 1`` forward passes per pair); ``()`` for none: maps, table and accuracy only.
            Default: every localisation metric the annotations support.
        faithfulness_steps (int, optional): steps of the deletion and insertion curves. Default: 32.
        faithfulness_baseline (str, optional): ``"zero"``, ``"blur"`` or ``"mean"``. Default: RISE's, zeros for
            deletion and a blurred copy for insertion.

    Returns:
        dict: the content of ``metrics.json`` (the same on every process).

    Raises:
        ValueError: bad arguments, an ``out`` folder holding another run (or a finished one without
            ``resume``), categories the model does not have.
    """
    from captum_ext._utils.validation import check_in_choices, check_scalar
    from captum_ext.evaluation.report import write_reports
    from captum_ext.metrics.pointing import _check_tolerance

    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    tolerance = _check_tolerance(tolerance)
    class_map = as_class_map(class_map)
    faithfulness_steps = int(check_scalar(faithfulness_steps, "faithfulness_steps", low=1, integer=True))
    if faithfulness_baseline is not None:
        from captum_ext.metrics.faithfulness import BASELINES

        check_in_choices(faithfulness_baseline, "faithfulness_baseline", BASELINES)
    check_in_choices(map_dtype, "map_dtype", MAP_DTYPES)
    out = Path(out)
    with processes(device) as group, ExitStack() as restore:
        dataset = _dataset_of(data, resize, skip_bad, class_map)
        loaded = _model_of(model, group.device)
        # Eval mode for the run (BatchNorm on its running statistics), the model's own flags restored afterwards,
        # also after an exception.
        restore.enter_context(eval_mode(loaded.model))
        num_classes = len(loaded.class_names)
        resolved = resolve_dataset_classes(dataset, class_map, num_classes)
        class_of = resolved.classes
        talk = show_progress and group.is_main
        if talk:
            tqdm.write(resolved.describe(dataset.categories, loaded.class_names), file=sys.stderr)
        method_name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
        map_function = build_method(method, loaded.model, loaded.layers, layer, box_map, loaded.multi_label) \
            if isinstance(method, str) else method
        settings = {"model": loaded.spec, "method": method_name, "data": getattr(dataset, "spec", "dataset"),
                    "batch_size": batch_size, "tolerance": tolerance, "resize": list(resize) if resize else None,
                    "layer": layer, "box_map": str(box_map) if box_map else None, "skip_bad": bool(skip_bad),
                    "map_dtype": map_dtype, "maps": "each map scaled so its maximum is 1, scored as stored",
                    "metrics": list(metrics) if metrics is not None else None,
                    "faithfulness": {"steps": faithfulness_steps, "baseline": faithfulness_baseline},
                    "inputs": run_fingerprint(dataset, class_of, loaded.model, box_map)}
        records = BatchRecords(out / "progress")
        _check_out(out, settings, resume, records, group)
        entries = dataset.entries
        pair_start, total = [], 0
        for entry in entries:
            pair_start.append(total)
            total += len(entry.categories)
        store = MapStore(out / "maps.zarr")
        if group.is_main:
            pairs = [(e, c) for e in entries for c in e.categories]  # the store's pair order
            sizes = [dataset.stored_size(e) for e, _ in pairs]
            # With the same number of pairs per image (one, for a classification set), every batch's maps fill
            # one shard: a file per batch instead of one per map, each written whole by one process.
            per_image = {len(e.categories) for e in entries}
            shard = batch_size * per_image.pop() if len(per_image) == 1 and 0 not in per_image else None
            store.create([e.index for e, _ in pairs], [c for _, c in pairs], [class_of[c] for _, c in pairs],
                         [h for h, _ in sizes], [w for _, w in sizes], map_dtype,
                         native=([e.height for e, _ in pairs], [e.width for e, _ in pairs]), pairs_per_shard=shard)
        group.barrier()
        localisation, faithful = scoring.split_metric_names(metrics)
        scorers = scoring.localisation_metrics(max(num_classes, 1), tolerance, dataset.has_boxes, dataset.has_masks,
                                               localisation)
        faithfulness = scoring.faithfulness_metrics(faithful)
        accuracy = scoring.PairAccuracy()
        for metric in (*scorers.values(), *faithfulness.values(), accuracy):
            metric.to(group.device)
        # The predictions come from the method's own forward where it runs the plain model on the images.
        tap = restore.enter_context(ForwardTap(loaded.model, isinstance(method, str)
                                               and method in PLAIN_FORWARD_METHODS))
        run = _Run(loaded.model, map_function, loaded.multi_label, class_of, pair_start, scorers, accuracy, store,
                   getattr(torch, map_dtype), group, max(batch_size, 1), faithfulness, faithfulness_steps,
                   faithfulness_baseline, tap)
        batches = batches_of(len(dataset), batch_size)
        mine = my_batches(len(batches), group)
        todo = [k for k in mine if not records.done(k)]
        for k in sorted(set(mine) - set(todo)):  # finished earlier: replay their contributions
            _apply(records.read(k), run)
        loader = DataLoader(dataset, batch_sampler=[batches[k] for k in todo], collate_fn=list,
                            num_workers=num_workers)
        done_before = sum(len(batches[k]) for k in mine) - sum(len(batches[k]) for k in todo)
        if talk and done_before:
            tqdm.write(f"resuming: {done_before} of {sum(len(batches[k]) for k in mine)} images done"
                       + (" (this process's share)" if group.world_size > 1 else ""), file=sys.stderr)
        bar = tqdm(total=sum(len(batches[k]) for k in mine), initial=done_before, unit="img", disable=not talk,
                   desc=f"evaluate ({method_name}, rank 0 of {group.world_size})")
        started, computed = time.perf_counter(), 0
        # Maps and records go to disk on a thread while the next batch is computed; a batch is done (and skipped
        # by a resume) only once its record is written, after its maps.
        with BackgroundWriter(store, records) as writer:
            for k, samples in zip(todo, loader):
                record, writes = _compute_batch(samples, run)
                writer.submit(k, writes, record)
                _apply(record, run)
                bar.update(len(samples))
                computed += len(samples)
        bar.close()
        # This process's throughput, for benchmarks and capacity planning (not part of the results).
        (out / "progress").mkdir(parents=True, exist_ok=True)
        (out / "progress" / f"timing-rank{group.rank}.json").write_text(json.dumps(
            {"rank": group.rank, "world_size": group.world_size, "images": computed,
             "seconds": time.perf_counter() - started}), encoding="utf-8")
        results = scoring.compute_all({**scorers, **faithfulness, "accuracy": accuracy})
        group.barrier()
        bad = [f"skipped pair: {item}" for item in dataset.bad_annotations]
        summary = {"n_images": len(entries), "n_pairs": total, **results,
                   "skipped": bad + (records.skipped(len(batches)) if group.is_main else []),
                   "class_map": resolved.report(dataset.categories, loaded.class_names),
                   "settings": {**settings, "processes": group.world_size}}
        if group.is_main:
            write_reports(out, summary, records, len(batches), dataset, store)
        group.barrier()
    return summary


def _faithfulness(run: _Run, images: Tensor, maps: Tensor, classes: Tensor) -> Dict[str, Tensor]:
    """Each asked-for mode's AUC per pair, from the float32 copy of the maps as stored (so a rerun scores the
    same)."""
    from captum_ext.metrics.faithfulness import curve_auc, deletion_insertion_curves

    return {metric.mode: curve_auc(deletion_insertion_curves(
        run.model, images, maps, classes, metric.mode, run.faithfulness_steps,
        run.faithfulness_baseline, run.multi_label, batch_size=max(run.pair_batch, FAITHFULNESS_FORWARD_BATCH)))
        for metric in run.faithfulness.values()}


def _apply(record: Dict[str, Any], run: _Run) -> None:
    """Add a batch record's contributions to the metric states."""
    deltas = from_json(record["deltas"])
    for name, metric in (*run.metrics.items(), *run.faithfulness.items(), ("accuracy", run.accuracy)):
        if name in deltas:
            metric.update_from_statistics(deltas[name])


def _check_out(out: Path, settings: Dict[str, Any], resume: bool, records: BatchRecords, group: Processes) -> None:
    """Refuse to mix runs: ``out`` is new, or holds this very run and ``resume`` is set."""
    run_file = out / "run.json"
    if run_file.is_file():
        try:
            earlier = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the run settings {str(run_file)!r} are corrupt ({err}); use another folder") from None
        now = json.loads(json.dumps(settings))
        inputs = changed_inputs(earlier.get("inputs", {}), now.get("inputs", {}))
        if inputs:
            raise ValueError(f"`out` {str(out)!r} holds a run whose inputs have changed since: "
                             f"{', '.join(inputs)}; continuing would mix results, so start again in another folder")
        changed = sorted(k for k in set(earlier) | set(now) if k != "inputs" and earlier.get(k) != now.get(k))
        if changed:
            raise ValueError(f"`out` {str(out)!r} holds a run with other settings ({', '.join(changed)}); use "
                             f"another folder")
        if not resume:
            raise ValueError(f"`out` {str(out)!r} holds results of this run already: pass resume=True "
                             f"(--resume) to continue it, or use another folder")
    elif records.any():
        raise ValueError(f"`out` {str(out)!r} holds progress records without run settings; use another folder")
    group.barrier()
    if group.is_main and not run_file.is_file():
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    group.barrier()
