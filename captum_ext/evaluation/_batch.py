"""One batch of an evaluation run: every method's maps, the model's predictions (once for all methods), and each
method's table rows, metric contributions and maps to write.

A batch is computed in two parts: :func:`explain_batch` needs the model (maps, predictions, faithfulness metrics),
:func:`score_batch` needs only the maps and the annotations, so the dataset driver scores batch ``k`` on a thread of
its own while the model explains batch ``k + 1``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_ext._utils.attribution import batch_mixing_layers
from captum_ext.evaluation import scoring
from captum_ext.evaluation._forward_tap import ForwardTap
from captum_ext.evaluation.distributed import Processes
from captum_ext.evaluation.methods import MapFunction, scale_to_unit
from captum_ext.evaluation.store import BatchRecords, MapStore, from_json, to_json
from captum_ext.metrics.ground_truth import GroundTruth

#: Perturbed images per forward pass of the deletion and insertion curves (at least the run's batch size).
FAITHFULNESS_FORWARD_BATCH = 64
#: ``(pair ids, maps)`` of one size group, for the store.
Writes = List[Tuple[List[int], Tensor]]


@dataclass
class Shared:
    """What every method of a run shares: the model, the dataset's pairs, the processes, the settings."""

    model: nn.Module
    multi_label: bool
    class_of: Dict[int, int]
    pair_start: List[int]
    map_dtype: torch.dtype
    group: Processes
    pair_batch: int
    faithfulness_steps: int
    faithfulness_baseline: Optional[str]
    tap: ForwardTap
    #: Infidelity and max-sensitivity: ``samples``, ``noise`` and ``radius``.
    perturbation: Dict[str, float] = field(default_factory=dict)


@dataclass
class MethodRun:
    """One method of a run: its map function, metric states and output folder's store and records."""

    name: str
    method: MapFunction
    plain_forward: bool
    settings: Dict[str, Any]
    metrics: Dict[str, Any]
    faithfulness: Dict[str, Any]
    accuracy: scoring.PairAccuracy
    store: MapStore
    records: BatchRecords
    #: Seconds spent in this process on the method's maps (``"method"``) and on each metric, and the pairs computed.
    seconds: Dict[str, float] = field(default_factory=dict)
    pairs: int = 0

    def apply(self, record: Dict[str, Any]) -> None:
        """Add a batch record's contributions to the metric states.

        Args:
            record (dict): a batch record, as :func:`score_batch` makes and :class:`BatchRecords` stores it.
        """
        deltas = from_json(record["deltas"])
        for name, metric in (*self.metrics.items(), *self.faithfulness.items(), ("accuracy", self.accuracy)):
            if name in deltas:
                metric.update_from_statistics(deltas[name])


@dataclass
class ExplainedGroup:
    """One size group of a batch after the model's part: what scoring needs, without the images.

    ``maps``, ``boxes`` and ``faithfulness`` hold one entry per method of the batch, in order.
    """

    pair_ids: List[int]
    #: Each pair's image, as a position among ``images``.
    owner: List[int]
    #: ``(dataset index, image id)`` of each image.
    images: List[Tuple[int, Any]]
    categories: List[int]
    truths: List[GroundTruth]
    classes: Tensor
    #: The model's class scores per image, on the device.
    scores: Tensor
    #: Maps as stored (``N×H×W`` in the store's dtype), on the device.
    maps: List[Tensor]
    boxes: List[Optional[Tensor]]
    faithfulness: List[Dict[str, Tensor]]


@dataclass
class ExplainedBatch:
    """A batch after the model's part (:func:`explain_batch`), ready for :func:`score_batch`."""

    skipped: List[str]
    groups: List[ExplainedGroup]
    #: The batch's image files as read (:attr:`SampleBatch.files`), for its record.
    files: Dict[str, List[Any]] = field(default_factory=dict)


@dataclass
class SampleBatch:
    """A batch as the data loader hands it over (:func:`collate_samples`): the images with annotations stacked per
    size, made in the loader's workers and, for a model on a GPU, pinned by the loader's pin-memory thread, so that
    the copy to the GPU neither waits for the host nor holds the host up."""

    #: Images in the batch, read or not.
    size: int
    #: Why images could not be read (``skip_bad``), naming the files.
    skipped: List[str]
    #: ``(samples, images)`` per image size: the samples without their images, and their images stacked.
    groups: List[Tuple[List[Any], Tensor]]
    #: Dataset index (as a string, a JSON key) → the image file's size, time and SHA-256 when read.
    files: Dict[str, List[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.size

    def pin_memory(self) -> "SampleBatch":
        """The batch with its stacked images in page-locked memory (called by ``DataLoader(pin_memory=True)``).

        Returns:
            SampleBatch: a batch whose images are pinned.
        """
        return SampleBatch(self.size, self.skipped, [(group, images.pin_memory()) for group, images in self.groups],
                           self.files)


def collate_samples(samples: Sequence[Any]) -> SampleBatch:
    """A loader's batch of samples as a :class:`SampleBatch` (the ``collate_fn`` of the dataset driver).

    Args:
        samples (sequence of Sample): the batch's samples, in dataset order.

    Returns:
        SampleBatch: images without annotations (nothing to explain) and unread ones are left out of the groups.
    """
    by_size: Dict[Tuple[int, int], List[Any]] = {}
    for sample in samples:
        if sample.image is not None and sample.truths:
            by_size.setdefault(tuple(sample.image.shape[-2:]), []).append(sample)
    groups = [([replace(sample, image=None) for sample in group], torch.stack([sample.image for sample in group]))
              for group in by_size.values()]
    files = {str(sample.index): sample.file_state for sample in samples if sample.file_state is not None}
    return SampleBatch(len(samples), [sample.error for sample in samples if sample.image is None], groups, files)


def explain_batch(samples: Union["SampleBatch", Sequence[Any]], shared: Shared, runs: Sequence[MethodRun],
                  batch: int = 0) -> ExplainedBatch:
    """The part of a batch that needs the model: each method's maps, the predictions (once for all methods) and the
    faithfulness metrics (they run the model on perturbed images). It must run where the methods run, one batch at a
    time, since methods may hook or rewrite the model while they work.

    Args:
        samples (SampleBatch or sequence of Sample): the batch's images.
        shared (Shared): the run's common state.
        runs (sequence of MethodRun): the methods to compute the batch for.
        batch (int, optional): the global batch number (seeds the perturbations of infidelity and
            max-sensitivity). Default: 0.

    Returns:
        ExplainedBatch: the maps and scores on the model's device, per group of images of one size.
    """
    loaded = samples if isinstance(samples, SampleBatch) else collate_samples(samples)
    groups = []
    for group_number, (group, stacked) in enumerate(loaded.groups):
        images = _to_device(stacked, shared.group.device)
        owner = [j for j, sample in enumerate(group) for _ in sample.truths]
        categories = [t.category for sample in group for t in sample.truths]
        truths = [GroundTruth(shared.class_of[c.category], c.boxes, c.mask) for sample in group for c in sample.truths]
        classes = torch.tensor([t.category for t in truths], dtype=torch.long)
        computed = []
        for run in runs:
            started = time.perf_counter()
            computed.append(_maps(run, images, owner, classes, shared))
            run.seconds["method"] = run.seconds.get("method", 0.0) + time.perf_counter() - started
            run.pairs += len(owner)
        scores = next((tapped for _, _, tapped in computed if tapped is not None), None)
        if scores is None:
            with torch.no_grad():
                scores = shared.model(images)
        faithfulness = []
        for run, (on_device, _, _) in zip(runs, computed):
            seed = (batch << 16) + group_number  # what a pair's perturbations depend on
            faithfulness.append(_faithfulness(run, shared, images[owner], on_device.to(torch.float32),
                                              classes.to(images.device), seed, run.seconds)
                                if run.faithfulness else {})
        pair_ids = [shared.pair_start[sample.index] + k for sample in group for k in range(len(sample.truths))]
        groups.append(ExplainedGroup(pair_ids, owner, [(sample.index, sample.image_id) for sample in group],
                                     categories, truths, classes, scores.detach(), [maps for maps, _, _ in computed],
                                     [boxes for _, boxes, _ in computed], faithfulness))
    return ExplainedBatch(loaded.skipped, groups, loaded.files)


def score_batch(explained: ExplainedBatch, shared: Shared, runs: Sequence[MethodRun]
                ) -> List[Tuple[Dict[str, Any], Writes]]:
    """The part of a batch that needs only the maps and the annotations: table rows, localisation metrics, accuracy
    and the maps to write. It does not touch the model, so it may run on another thread while the next batch is
    explained.

    Args:
        explained (ExplainedBatch): the batch from :func:`explain_batch`.
        shared (Shared): the run's common state.
        runs (sequence of MethodRun): the methods ``explained`` was computed for, in the same order.

    Returns:
        list: ``(record, writes)`` for each of ``runs``, in order.
    """
    results: List[Tuple[Dict[str, Any], Writes]] = []
    for _ in runs:
        results.append(({"rows": [], "deltas": {}, "skipped": list(explained.skipped), "files": explained.files}, []))
    deltas: List[Dict[str, Dict[str, Tensor]]] = [{} for _ in runs]
    for group in explained.groups:
        owner, classes, truths = group.owner, group.classes, group.truths
        probabilities = (torch.sigmoid(group.scores) if shared.multi_label else torch.softmax(group.scores, dim=1)
                         ).cpu()
        predicted = probabilities[owner].argmax(dim=1)
        class_probability = probabilities[owner].gather(1, classes[:, None])[:, 0]
        recognised = class_probability >= 0.5 if shared.multi_label else predicted == classes
        common = []
        for k, (pair_id, truth) in enumerate(zip(group.pair_ids, truths)):
            index, image_id = group.images[owner[k]]
            common.append({"pair": pair_id, "image_index": index, "image_id": image_id,
                           "category": group.categories[k], "class_index": truth.category,
                           "predicted": int(predicted[k]),
                           "predicted_score": float(probabilities[owner[k], predicted[k]]),
                           "class_score": float(probabilities[owner[k], truth.category]),
                           "recognised": bool(recognised[k])})
        for run, on_device, boxes, values, (record, writes), run_deltas in zip(
                runs, group.maps, group.boxes, group.faithfulness, results, deltas):
            writes.append((group.pair_ids, on_device.cpu()))
            # Scored as stored (reruns score the same) and where the maps are: on a GPU the metrics label and
            # measure them there, with the values the host computes. One float32 copy serves every metric.
            as_float = on_device.to(torch.float32)
            group_deltas, columns = scoring.batch_statistics(run.metrics, as_float, truths, boxes, run.seconds)
            for key, metric in run.faithfulness.items():
                group_deltas[key], per_pair = metric.statistics(values[key])
                columns.update(per_pair)
            accuracy_delta, _ = run.accuracy.statistics(recognised)
            scoring.add_deltas(run_deltas, {**group_deltas, "accuracy": accuracy_delta})
            for k, row in enumerate(common):
                record["rows"].append({**row, **{name: (values[k].item() if isinstance(values[k], Tensor)
                                                        else values[k]) for name, values in columns.items()}})
    for (record, _), run_deltas in zip(results, deltas):
        record["deltas"] = to_json(run_deltas)
    return results


def _to_device(images: Tensor, device: torch.device) -> Tensor:
    """Images on the model's device; from pinned memory (see :meth:`Sample.pin_memory`) the copy is asynchronous."""
    if images.device == device:
        return images
    return images.to(device, non_blocking=images.is_pinned())


def _maps(run: MethodRun, images: Tensor, owner: List[int], classes: Tensor, shared: Shared
          ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """One method's maps (as stored) and boxes for a size group's pairs, and the model's scores per image when the
    method's own forward gave them (each image's first pair's row)."""
    maps, boxes, tapped = [], [], []
    for start in range(0, len(owner), shared.pair_batch):
        part = slice(start, start + shared.pair_batch)
        (chunk, chunk_boxes), pair_scores = shared.tap.call(run.method, images[owner[part]],
                                                            classes[part].to(shared.group.device),
                                                            watch=run.plain_forward)
        maps.append(scale_to_unit(chunk)[:, 0].to(shared.map_dtype))
        boxes.append(chunk_boxes)
        tapped.append(pair_scores)
    scores = None
    if all(t is not None for t in tapped):
        scores = torch.cat(tapped)[[owner.index(j) for j in range(owner[-1] + 1)]]
    predicted_boxes = torch.cat([b.cpu() for b in boxes]) if boxes[0] is not None else None
    return torch.cat(maps), predicted_boxes, scores


def _faithfulness(run: MethodRun, shared: Shared, images: Tensor, maps: Tensor, classes: Tensor, seed: int,
                  seconds: Dict[str, float]) -> Dict[str, Tensor]:
    """Each asked-for faithfulness metric's value per pair, by key, from the float32 copy of the maps as stored (so
    a rerun scores the same); the perturbations of infidelity and max-sensitivity come from generators seeded by
    ``seed`` (each method of a run gets the same ones)."""
    from captum_ext.metrics.faithfulness import curve_auc, deletion_insertion_curves
    from captum_ext.metrics.perturbation import infidelity_per_pair, sensitivity_max_per_pair
    from captum_ext.metrics.road import road_curves

    # A model whose BatchNorm keeps no running statistics scores one image per forward pass (the run refused it
    # with larger batches), as the scores would otherwise depend on the images scored together.
    per_forward = 1 if batch_mixing_layers(shared.model) else max(shared.pair_batch, FAITHFULNESS_FORWARD_BATCH)
    values = {}
    for key, metric in run.faithfulness.items():
        started = time.perf_counter()
        if key == "infidelity":
            values[key] = infidelity_per_pair(
                shared.model, images, maps, classes, shared.multi_label, torch.Generator().manual_seed(2 * seed),
                int(shared.perturbation["samples"]), shared.perturbation["noise"], per_forward)
        elif key == "sensitivity_max":
            def explain(inputs: Tensor, targets: Tensor) -> Tensor:
                return scale_to_unit(run.method(inputs, targets)[0])

            values[key] = sensitivity_max_per_pair(
                explain, images, classes, torch.Generator().manual_seed(2 * seed + 1),
                int(shared.perturbation["samples"]), shared.perturbation["radius"], per_forward)
        elif key in scoring.ROAD_METRICS:
            order = key.split("_")[1]
            generator = torch.Generator().manual_seed((1 << 40) + 2 * seed + (order == "lerf"))
            values[key] = road_curves(shared.model, images, maps, classes, order, multi_label=shared.multi_label,
                                      generator=generator, batch_size=per_forward).to(torch.float64).mean(dim=1)
        else:
            values[key] = curve_auc(deletion_insertion_curves(
                shared.model, images, maps, classes, metric.mode, shared.faithfulness_steps,
                shared.faithfulness_baseline, shared.multi_label, batch_size=per_forward))
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
    return values
