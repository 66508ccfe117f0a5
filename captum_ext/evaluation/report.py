"""What an evaluation run leaves for people: ``metrics.json``, the per-pair table ``pairs.csv`` and the summary
figure ``summary.png`` (metric bars, best and worst examples). Written by rank 0 from the batch records, one batch
in memory at a time."""
from __future__ import annotations

import csv
import heapq
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from captum_ext.evaluation.store import BatchRecords, MapStore

#: The per-pair column that ranks examples for the summary figure, by preference.
RANKING_COLUMNS = ("energy", "pointing_hit", "class_score")
EXAMPLES = 3


def write_reports(out: Path, summary: Dict[str, Any], records: BatchRecords, n_batches: int, dataset: Any,
                  store: MapStore) -> None:
    """Write ``metrics.json``, ``pairs.csv`` and ``summary.png`` into ``out``.

    Args:
        out (Path): the results folder.
        summary (dict): the metrics and settings.
        records (BatchRecords): the run's batch records.
        n_batches (int): how many batches the run has.
        dataset: the evaluated dataset (for the example images).
        store (MapStore): the run's maps.
    """
    # allow_nan=False: a NaN would make the file invalid JSON; undefined values are None (null) upstream.
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False),
                                      encoding="utf-8")
    best, worst, column = _write_table(out / "pairs.csv", records, n_batches, dataset.categories)
    _figure(out / "summary.png", summary, best, worst, column, dataset, store)


def _write_table(path: Path, records: BatchRecords, n_batches: int, names: Dict[int, str]
                 ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], str]:
    """Stream every row into the CSV (sorted by pair, as batches are consecutive) and keep the best and worst.

    Each row gains ``category_name`` after ``category``: a VOC category's id is this reader's numbering, which a
    class map may change, so tables of two runs join by image id and category name."""
    best: List[Tuple[float, int, Dict[str, Any]]] = []
    worst: List[Tuple[float, int, Dict[str, Any]]] = []
    column = ""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = None
        for row in records.rows(n_batches):
            row = _with_category_name(row, names)
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
                column = next((c for c in RANKING_COLUMNS if c in row), "")
            writer.writerow(row)
            if column:
                value = float(row[column])
                heapq.heappush(best, (value, -row["pair"], row))
                heapq.heappush(worst, (-value, -row["pair"], row))
                if len(best) > EXAMPLES:
                    heapq.heappop(best)
                if len(worst) > EXAMPLES:
                    heapq.heappop(worst)
    return ([r for _, _, r in sorted(best, key=lambda item: -item[0])],
            [r for _, _, r in sorted(worst, key=lambda item: -item[0])], column)


def _with_category_name(row: Dict[str, Any], names: Dict[int, str]) -> Dict[str, Any]:
    named: Dict[str, Any] = {}
    for key, value in row.items():
        named[key] = value
        if key == "category":
            named["category_name"] = names.get(value, "")
    return named


def _figure(path: Path, summary: Dict[str, Any], best: List[Dict[str, Any]], worst: List[Dict[str, Any]],
            column: str, dataset: Any, store: MapStore) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names = [k for k in ("accuracy", "pointing_game", "energy_pointing_game", "corloc", "maxboxacc_v2", "pxap",
                         "deletion_auc", "insertion_auc")
             if isinstance(summary.get(k), float)]
    examples = [("best", r) for r in best] + [("worst", r) for r in worst]
    columns = max(len(examples), 1)
    # A fixed layout in inches (room for the metric names, the ticks and two-line titles) instead of tight_layout,
    # which measured every text of the figure and took about as long as drawing it.
    width, height = max(2.4 * columns, 6.0), 5.6
    fig = plt.figure(figsize=(width, height))
    bars = fig.add_axes((2.0 / width, 3.2 / height, (width - 2.5) / width, 1.9 / height))
    values = [summary[k] for k in names]
    # Deletion is the one metric of this chart where lower is better: its bar says so, and has its own colour.
    bars.barh([f"{k}\n(lower is better)" if k == "deletion_auc" else k for k in names], values,
              color=["#cc6677" if k == "deletion_auc" else "#4477aa" for k in names])
    for y, value in enumerate(values):
        bars.text(min(value, 1.0) + 0.01, y, f"{value:.3f}", va="center", fontsize=8)
    bars.set_xlim(0, 1.15)
    settings = summary["settings"]
    kind, _, where = str(settings["data"]).partition(":")
    data = f"{kind}:…/{Path(where.split(':')[0]).name}" if "/" in where else str(settings["data"])  # no long paths
    bars.set_title(f"{settings['method']} on {data} — {summary['n_pairs']} pairs, {summary['n_images']} images",
                   fontsize=9)
    for k, (kind, row) in enumerate(examples):
        cell = (width - 0.2) / columns
        axis = fig.add_axes(((0.1 + k * cell + 0.04) / width, 0.1 / height, (cell - 0.08) / width, 2.4 / height))
        sample = dataset[row["image_index"]]
        if sample.image is not None:
            axis.imshow(sample.image.permute(1, 2, 0).clamp(0, 1).numpy())
            axis.imshow(store.read(row["pair"]).numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            truth = next((t for t in sample.truths if t.category == row["category"]), None)
            for box in (truth.boxes if truth is not None else torch.zeros(0, 4)).tolist():
                axis.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1],
                                         fill=False, edgecolor="white", linewidth=1.2))
        score = f"{column} {float(row[column]):.2f}" if column else ""
        axis.set_title(f"{kind}: image {row['image_id']}\nclass {row['category']} {score}", fontsize=7)
        axis.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)
