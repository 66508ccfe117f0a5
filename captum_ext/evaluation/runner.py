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
import warnings
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from captum_ext._utils.attribution import check_examples_independent, eval_mode
from captum_ext.evaluation import scoring
from captum_ext.evaluation._fingerprints import (check_image_files, check_out_folder, library_versions,
                                                 run_fingerprint)
from captum_ext.evaluation._batch import ExplainedBatch, MethodRun, Shared, collate_samples, explain_batch, score_batch
from captum_ext.evaluation._forward_tap import PLAIN_FORWARD_METHODS, ForwardTap
from captum_ext.evaluation._pipeline import BackgroundStage, prefetched
from captum_ext.evaluation._writer import BackgroundWriter
from captum_ext.evaluation.class_maps import ClassMap, as_class_map, resolve_dataset_classes
from captum_ext.evaluation._lock import exclusive_folder
from captum_ext.evaluation.distributed import batches_of, my_batches, processes
from captum_ext.evaluation.methods import METHODS, MapFunction, build_method
from captum_ext.evaluation.models import EvaluationModel, load_evaluation_model
from captum_ext.evaluation.store import MAP_DTYPES, BatchRecords, MapStore

DataArgument = Union[str, "torch.utils.data.Dataset", DataLoader]


def _dataset_of(data: DataArgument, resize: Optional[Tuple[int, int]], skip_bad: bool,
                class_map: Optional[ClassMap] = None) -> Tuple[Any, Optional[Tuple[int, int]], bool]:
    """The dataset, and the ``resize`` and ``skip_bad`` it applies (those of an opened dataset are its own: one
    that disagrees with the arguments is refused, since they would be recorded but not applied)."""
    from captum_ext.evaluation.data import AnnotatedImages, _check_resize, open_dataset

    if isinstance(data, str):
        return open_dataset(data, resize=resize, skip_bad=skip_bad, class_map=class_map), resize, skip_bad
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(dataset, AnnotatedImages):
        raise TypeError(f"`data` must be a dataset spec, an AnnotatedImages dataset or a DataLoader over one, got "
                        f"{type(dataset).__name__}")
    own = tuple(dataset.resize) if dataset.resize is not None else None
    if resize is not None and _check_resize(resize) != own:
        raise ValueError(f"`resize` {tuple(resize)} differs from the dataset's own ({own}): open the dataset with "
                         f"resize={tuple(resize)}, or leave `resize` out")
    if skip_bad and not dataset.skip_bad:
        raise ValueError("`skip_bad` is True but the dataset was opened with skip_bad=False: open it with "
                         "skip_bad=True, or leave `skip_bad` out")
    return dataset, own, bool(dataset.skip_bad)


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


def evaluate(
    model: Union[str, nn.Module, EvaluationModel],
    method: Union[str, MapFunction, Sequence[str]],
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
    perturbation_samples: int = 10,
    infidelity_noise: float = 0.1,
    sensitivity_radius: float = 0.02,
) -> Dict[str, Any]:
    r"""Explain every (image, annotated class) pair of a dataset and score the maps; under ``torchrun`` the work
    is split over the processes and the metrics are summed across them.

    Args:
        model (str, nn.Module or EvaluationModel): a spec (see :func:`load_evaluation_model`) or a model taking
            images in ``[0, 1]``.
        method (str, sequence of str or callable): one of :data:`captum_ext.evaluation.methods.METHODS`, or
            ``f(images, targets) -> (maps N×1×H×W, boxes or None)``; or several names (a sequence, or one string
            separated by commas), computed in one pass over the data: the images are read once, the predictions
            come from one forward, each method's results go to ``out/<method>/`` (each a run of its own, resumable
            alone) and a leaderboard of them to ``out`` (:func:`captum_ext.evaluation.compare.compare`).
            ``layer`` then applies to ``grad_cam`` and ``box_map`` to ``sensitivity``.
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
            box map, the image files of finished batches) or under other versions of captum_ext, Captum or
            torch, naming what changed.
        device (str, optional): ``"cpu"`` or ``"cuda"`` (under torchrun: one GPU per process). Default: cpu.
        resize (tuple of int, optional): ``(H, W)`` to resize images (and their annotations) to.
        layer (str, optional): grad_cam's layer (a dotted submodule name).
        box_map (str or Path, optional): a SensitivityBBox box map for learned boxes (``sensitivity``).
        map_dtype (str, optional): ``"float16"`` or ``"float32"`` maps in the store. Default: float16.
        num_workers (int, optional): DataLoader worker processes that read images. Default: 0, images read on a
            thread of this process, ahead of the model.
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
        perturbation_samples (int, optional): perturbations per pair of ``"infidelity"`` and
            ``"sensitivity_max"`` (:mod:`captum_ext.metrics.perturbation`, through Captum's own metrics; seeded by
            the batch, so reproducible in any process and after a resume). Default: 10 (Captum's).
        infidelity_noise (float, optional): the standard deviation of infidelity's Gaussian perturbations, in
            image units (``[0, 1]``). Default: 0.1.
        sensitivity_radius (float, optional): max-sensitivity's perturbation bound per pixel. Default: 0.02
            (Captum's).

    ``"road_morf"`` and ``"road_lerf"`` (:mod:`captum_ext.metrics.road`) are ROAD's scores with its own settings:
    the class probability averaged over 10 %, …, 90 % of the pixels removed (most or least relevant first) and
    imputed by noisy linear imputation (noise 0.01, seeded by the batch).

    Returns:
        dict: the content of ``metrics.json`` (the same on every process); for several methods, one such dict
        per method name.

    Raises:
        ValueError: bad arguments, an ``out`` folder holding another run (or a finished one without
            ``resume``), categories the model does not have.
    """
    from captum_ext._utils.validation import check_in_choices, check_scalar
    from captum_ext.metrics.pointing import _check_tolerance

    methods = _method_list(method, layer, box_map)
    several = len(methods) > 1
    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    num_workers = int(check_scalar(num_workers, "num_workers", low=0, integer=True))
    tolerance = _check_tolerance(tolerance)
    class_map = as_class_map(class_map)
    faithfulness_steps = int(check_scalar(faithfulness_steps, "faithfulness_steps", low=1, integer=True))
    if faithfulness_baseline is not None:
        from captum_ext.metrics.faithfulness import BASELINES

        check_in_choices(faithfulness_baseline, "faithfulness_baseline", BASELINES)
    check_in_choices(map_dtype, "map_dtype", MAP_DTYPES)
    metrics = list(metrics) if metrics is not None and not isinstance(metrics, str) else metrics  # read once
    scoring.split_metric_names(metrics)  # unknown or repeated names: refused before anything is read or written
    perturbation = {"samples": int(check_scalar(perturbation_samples, "perturbation_samples", low=1, integer=True)),
                    "noise": float(check_scalar(infidelity_noise, "infidelity_noise", low=0.0, low_open=True)),
                    "radius": float(check_scalar(sensitivity_radius, "sensitivity_radius", low=0.0, low_open=True))}
    out = Path(out)
    if (out / "run.json").is_file() if several else any((out / name / "run.json").is_file() for name in METHODS):
        held, given = ("one method", "several methods") if several else ("several methods", "one method")
        raise ValueError(f"`out` {str(out)!r} holds a run of {held}; give {given} another folder")
    # The leaderboard written at the end compares the listed methods only: refuse now, not after the work.
    left_out = sorted(p.parent.name for p in out.glob("*/metrics.json") if p.parent.name not in methods) \
        if several else []
    if left_out:
        raise ValueError(f"`out` {str(out)!r} holds finished results of {', '.join(left_out)}, which this run's "
                         f"leaderboard would leave out: list them too, or use another folder")
    with processes(device) as group, ExitStack() as restore:
        restore.enter_context(exclusive_folder(out, group))
        dataset, resize, skip_bad = _dataset_of(data, resize, skip_bad, class_map)
        loaded = _model_of(model, group.device)
        # Eval mode for the run (BatchNorm on its running statistics), the model's own flags restored afterwards,
        # also after an exception.
        restore.enter_context(eval_mode(loaded.model))
        check_examples_independent(loaded.model, batch_size, what="maps and scores",
                                   remedy="pass batch_size=1 (--batch-size 1)")
        num_classes = len(loaded.class_names)
        resolved = resolve_dataset_classes(dataset, class_map, num_classes)
        talk = show_progress and group.is_main
        if talk:
            tqdm.write(resolved.describe(dataset.categories, loaded.class_names), file=sys.stderr)
        common = {"model": loaded.spec, "data": getattr(dataset, "spec", "dataset"), "batch_size": batch_size,
                  "tolerance": tolerance, "resize": list(resize) if resize else None, "skip_bad": bool(skip_bad),
                  "map_dtype": map_dtype, "maps": "each map scaled so its maximum is 1, scored as stored",
                  "metrics": list(metrics) if metrics is not None else None,
                  "faithfulness": {"steps": faithfulness_steps, "baseline": faithfulness_baseline},
                  "inputs": run_fingerprint(dataset, resolved.classes, loaded.model, box_map),
                  "versions": library_versions()}
        if set(metrics or ()) & {"infidelity", "sensitivity_max"}:
            common["perturbation"] = perturbation
        if set(metrics or ()) & set(scoring.ROAD_METRICS):
            from captum_ext.metrics.road import ROAD_FRACTIONS

            common["road"] = {"fractions": list(ROAD_FRACTIONS), "noise": 0.01, "imputation": "noisy linear"}
        entries = dataset.entries
        pair_start, total = [], 0
        for entry in entries:
            pair_start.append(total)
            total += len(entry.categories)
        # The predictions come from a method's own forward where it runs the plain model on the images.
        plain = [isinstance(m, str) and m in PLAIN_FORWARD_METHODS for m in methods]
        tap = restore.enter_context(ForwardTap(loaded.model, any(plain)))
        shared = Shared(loaded.model, loaded.multi_label, resolved.classes, pair_start, getattr(torch, map_dtype),
                        group, batch_size, faithfulness_steps, faithfulness_baseline, tap, perturbation)
        folders = [out / m if several else out for m in methods]  # several methods: names only (checked)
        opening = _Opening(dataset, loaded, shared, common, metrics, tolerance, resume, num_classes)
        runs = [opening.open(m, folder, layer if m == "grad_cam" or not several else None,
                             box_map if m == "sensitivity" or not several else None, watch)
                for m, folder, watch in zip(methods, folders, plain)]
        batches = batches_of(len(dataset), batch_size)
        mine = my_batches(len(batches), group)
        todo_of = [{k for k in mine if not run.records.done(k)} for run in runs]
        files = {str(entry.index): entry.file for entry in entries if entry.file is not None}
        for run in runs:  # every process checks every finished batch, so that all of them stop together
            check_image_files(out, files, (run.records.read(k) for k in range(len(batches)) if run.records.done(k)))
        for run, todo in zip(runs, todo_of):
            for k in sorted(set(mine) - todo):  # finished earlier: replay their contributions
                run.apply(run.records.read(k))
        todo = sorted(set().union(*todo_of))
        loader = DataLoader(dataset, batch_sampler=[batches[k] for k in todo], collate_fn=collate_samples,
                            num_workers=num_workers, pin_memory=group.device.type == "cuda")
        done_before = sum(len(batches[k]) for k in mine) - sum(len(batches[k]) for k in todo)
        if talk and done_before:
            tqdm.write(f"resuming: {done_before} of {sum(len(batches[k]) for k in mine)} images done"
                       + (" (this process's share)" if group.world_size > 1 else ""), file=sys.stderr)
        elif resume and group.is_main and not any(run.records.any() for run in runs):
            # A mistyped --out would otherwise start afresh without a word: said without progress output too.
            notice = f"resuming: nothing done yet in {out}; starting the run"
            if talk:
                tqdm.write(notice, file=sys.stderr)
            else:
                warnings.warn(notice, UserWarning, stacklevel=2)
        names = ", ".join(run.name for run in runs)
        bar = tqdm(total=sum(len(batches[k]) for k in mine), initial=done_before, unit="img", disable=not talk,
                   desc=f"evaluate ({names}, rank 0 of {group.world_size})")
        started, computed = time.perf_counter(), 0
        # A pipeline of three threads: this one explains batch k + 1 (everything that needs the model) while a
        # scoring thread scores batch k and a writer thread puts batch k - 1's maps and record on disk. Queues are
        # short, so memory stays flat; a batch is done (and skipped by a resume) only once its record is written,
        # after its maps. Metric states are updated on the scoring thread only, in batch order.
        with ExitStack() as stages:
            writers = [stages.enter_context(BackgroundWriter(run.store, run.records)) for run in runs]

            def score(item: Tuple[int, List[int], ExplainedBatch]) -> None:
                k, needed, explained = item
                with torch.no_grad():
                    scored = score_batch(explained, shared, [runs[j] for j in needed])
                for j, (record, writes) in zip(needed, scored):
                    writers[j].submit(k, writes, record)
                    runs[j].apply(record)

            scorer = stages.enter_context(BackgroundStage(score, "captum-ext-scoring", device=group.device))
            # Without worker processes, the images are read on a thread, ahead of the model.
            loaded_batches = loader if num_workers else stages.enter_context(closing(prefetched(loader)))
            for k, samples in zip(todo, loaded_batches):
                needed = [j for j, pending in enumerate(todo_of) if k in pending]
                scorer.submit((k, needed, explain_batch(samples, shared, [runs[j] for j in needed], k)))
                bar.update(len(samples))
                computed += len(samples)
        bar.close()
        timing = {"rank": group.rank, "world_size": group.world_size, "images": computed,
                  "seconds": time.perf_counter() - started, "methods": [run.name for run in runs]}
        summaries = {run.name: opening.finish(run, folder, timing, len(batches), resolved)
                     for run, folder in zip(runs, folders)}
        if several and group.is_main:
            from captum_ext.evaluation.compare import compare

            compare(folders, out)
        group.barrier()
    return summaries if several else next(iter(summaries.values()))


def _method_list(method: Union[str, MapFunction, Sequence[str]], layer: Optional[str],
                 box_map: Optional[Union[str, Path]]) -> List[Union[str, MapFunction]]:
    """The run's methods: one name or callable, or several names (a sequence or one comma-separated string)."""
    if callable(method) and not isinstance(method, str):
        return [method]
    names = [m.strip() for m in method.split(",")] if isinstance(method, str) else list(method)
    if not names or any(not isinstance(m, str) for m in names):
        raise TypeError(f"`method` must be a method name, a comma-separated list of names, a sequence of names or "
                        f"a map function, got {method!r}")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"`method` must name methods of {list(METHODS)}, got {', '.join(map(repr, unknown))}")
    if len(set(names)) < len(names):
        raise ValueError(f"`method` names a method twice: {method!r}")
    if len(names) > 1 and layer is not None and "grad_cam" not in names:
        raise ValueError("`layer` is for the grad_cam method only, and grad_cam is not among the methods")
    if box_map is not None and "sensitivity" not in names:  # before the box map file is read and digested
        raise ValueError("`box_map` is for the sensitivity method only, and sensitivity is not among the methods")
    return list(names)


class _Opening:
    """Opens each method's part of a run (settings checked against ``out``, store created, metric states) and
    finishes it (metrics computed across processes, reports written)."""

    def __init__(self, dataset: Any, loaded: EvaluationModel, shared: Shared, common: Dict[str, Any],
                 metrics: Optional[Sequence[str]], tolerance: float, resume: bool, num_classes: int) -> None:
        self.dataset, self.loaded, self.shared, self.common = dataset, loaded, shared, common
        self.metrics, self.tolerance, self.resume, self.num_classes = metrics, tolerance, resume, num_classes

    def open(self, method: Union[str, MapFunction], folder: Path, layer: Optional[str],
             box_map: Optional[Union[str, Path]], plain_forward: bool) -> MethodRun:
        """The method's run state; its folder is checked (and created) first."""
        dataset, group = self.dataset, self.shared.group
        name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
        map_function = build_method(method, self.loaded.model, self.loaded.layers, layer, box_map,
                                    self.loaded.multi_label) if isinstance(method, str) else method
        settings = {**self.common, "method": name, "layer": layer, "box_map": str(box_map) if box_map else None}
        records = BatchRecords(folder / "progress")
        check_out_folder(folder, settings, self.resume, records, group)
        store = MapStore(folder / "maps.zarr")
        if group.is_main:
            entries, class_of = dataset.entries, self.shared.class_of
            pairs = [(e, c) for e in entries for c in e.categories]  # the store's pair order
            sizes = [dataset.stored_size(e) for e, _ in pairs]
            # With the same number of pairs per image (one, for a classification set), every batch's maps fill
            # one shard: a file per batch instead of one per map, each written whole by one process.
            per_image = {len(e.categories) for e in entries}
            batch_size = self.common["batch_size"]
            shard = batch_size * per_image.pop() if len(per_image) == 1 and 0 not in per_image else None
            store.create([e.index for e, _ in pairs], [c for _, c in pairs], [class_of[c] for _, c in pairs],
                         [h for h, _ in sizes], [w for _, w in sizes], self.common["map_dtype"],
                         native=([e.height for e, _ in pairs], [e.width for e, _ in pairs]), pairs_per_shard=shard)
        group.barrier()
        localisation, faithful = scoring.split_metric_names(self.metrics)
        scorers = scoring.localisation_metrics(max(self.num_classes, 1), self.tolerance, dataset.has_boxes,
                                               dataset.has_masks, localisation)
        faithfulness = scoring.faithfulness_metrics(faithful)
        accuracy = scoring.PairAccuracy()
        for metric in (*scorers.values(), *faithfulness.values(), accuracy):
            metric.to(group.device)
        return MethodRun(name, map_function, plain_forward, settings, scorers, faithfulness, accuracy, store, records)

    def finish(self, run: MethodRun, folder: Path, timing: Dict[str, Any], n_batches: int, resolved: Any
               ) -> Dict[str, Any]:
        """The method's ``metrics.json`` content (the same on every process), its reports written by rank 0."""
        from captum_ext.evaluation.report import write_reports

        group, dataset = self.shared.group, self.dataset
        # This process's throughput, for benchmarks and capacity planning (not part of the results).
        (folder / "progress").mkdir(parents=True, exist_ok=True)
        own = {"pairs": run.pairs, "seconds_by_part": {k: round(v, 6) for k, v in run.seconds.items()}}
        (folder / "progress" / f"timing-rank{group.rank}.json").write_text(json.dumps({**timing, **own}),
                                                                             encoding="utf-8")
        results = scoring.compute_all({**run.metrics, **run.faithfulness, "accuracy": run.accuracy})
        scored = run.accuracy.scored()  # the pairs in pairs.csv: not those of images that did not decode
        group.barrier()
        bad = [f"skipped pair: {item}" for item in dataset.bad_annotations]
        # Every process reads the records (the run's folder is shared), so every process returns the same summary.
        images, unreadable = run.records.tally(n_batches)  # the images of pairs.csv: not the skipped ones
        results.update(scoring.constant_maps(run.name, run.metrics, scored, warn=group.is_main))
        summary = {"n_images": images, "n_pairs": scored, **results, "skipped": bad + unreadable,
                   "class_map": resolved.report(dataset.categories, self.loaded.class_names),
                   "settings": {**run.settings, "processes": group.world_size}}
        if group.is_main:
            write_reports(folder, summary, run.records, n_batches, dataset, run.store)
        group.barrier()
        return summary
