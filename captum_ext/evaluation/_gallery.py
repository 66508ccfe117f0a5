"""The picture part of ``captum-ext compare``'s page: the same pairs across methods, and each method's best and worst
pairs per metric, as small JPEG thumbnails (map over image, the class's boxes and mask outline drawn) embedded in
the HTML. Images come from the dataset the runs name; where it cannot be opened, the maps are shown alone."""
from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

#: Per-pair columns whose value ranks pairs (label, better); binary hits have no best or worst pair.
RANKED_COLUMNS: Dict[str, Tuple[str, str]] = {
    "energy": ("energy", "higher"),
    "best_iou": ("box IoU", "higher"),
    "deletion_auc": ("deletion AUC", "lower"),
    "insertion_auc": ("insertion AUC", "higher"),
    "infidelity": ("infidelity", "lower"),
    "sensitivity_max": ("max-sensitivity", "lower"),
    "road_morf": ("ROAD MoRF", "lower"),
    "road_lerf": ("ROAD LeRF", "higher"),
}
THUMBNAIL = 112  # pixels, the longer side


def _open_images(runs: Sequence[Any]) -> Tuple[Optional[Any], str]:
    """The dataset the runs were made on, or ``None`` and why it is not shown."""
    from captum_ext.evaluation.data import open_dataset

    settings = runs[0].summary.get("settings", {})
    specs = _dataset_specs(runs)
    if len(specs) != 1:
        return None, "the runs name different datasets, so only their maps are shown"
    resize = settings.get("resize")
    try:
        return open_dataset(specs.pop(), resize=tuple(resize) if resize else None, skip_bad=True), ""
    except (FileNotFoundError, ValueError, TypeError, OSError) as err:
        return None, f"the dataset could not be opened ({err}), so only the maps are shown"


def _dataset_specs(runs: Sequence[Any]) -> set:
    return {str(r.summary.get("settings", {}).get("data")) for r in runs}


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (in the mask, with a 4-neighbour outside it)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def thumbnail(image: Optional[np.ndarray], saliency: Optional[np.ndarray], boxes: np.ndarray,
              mask: Optional[np.ndarray]) -> str:
    """One pair as a base64 JPEG of at most :data:`THUMBNAIL` pixels a side.

    Args:
        image (numpy.ndarray, optional): ``H×W×3`` in ``[0, 1]``.
        saliency (numpy.ndarray, optional): ``H×W`` map in ``[0, 1]``, drawn in the jet colours over the image.
        boxes (numpy.ndarray): ``K×4`` boxes ``(x1, y1, x2, y2)`` in the image's pixels, drawn in white.
        mask (numpy.ndarray, optional): ``H×W`` bools, outlined in white.

    Returns:
        str: the JPEG's bytes in base64.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    shape = (saliency if saliency is not None else image).shape[:2]
    picture = np.full((*shape, 3), 0.5) if image is None else np.asarray(image, dtype=np.float64)
    if saliency is not None:
        colours = colormaps["jet"](np.clip(np.nan_to_num(saliency), 0.0, 1.0))[..., :3]
        picture = colours if image is None else 0.55 * picture + 0.45 * colours
    if mask is not None and mask.shape == picture.shape[:2]:
        picture = np.where(_outline(mask.astype(bool))[..., None], 1.0, picture)
    height, width = picture.shape[:2]
    scale = THUMBNAIL / max(height, width)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    drawn = Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    pen = ImageDraw.Draw(drawn)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        pen.rectangle([x1 * scale, y1 * scale, max(x2 * scale - 1, x1 * scale), max(y2 * scale - 1, y1 * scale)],
                      outline=(255, 255, 255))
    buffer = io.BytesIO()
    drawn.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _unique_names(categories: Mapping[object, object]) -> Dict[str, str]:
    """Category id → name (both as text), for the names that one category alone bears."""
    counts = Counter(str(name) for name in categories.values())
    return {str(cid): str(name) for cid, name in categories.items() if counts[str(name)] == 1}


class _Pictures:
    """Thumbnails of a set of runs, each drawn once."""

    def __init__(self, runs: Sequence[Any], dataset: Optional[Any]) -> None:
        self.dataset, self.cache = dataset, {}  # type: ignore[var-annotated]
        self.stores = {run.name: _store(run.folder) for run in runs}
        # The gallery opens the dataset without the runs' class maps, and a map can renumber a dataset's categories
        # (VOC numbers them by the map's names), so a pair's truth is found by its category's name.
        self.names = {run.name: _unique_names({c.get("id"): c.get("name") for c in run.summary.get(
            "class_map", {}).get("categories", [])}) for run in runs}
        self.named = None if dataset is None else {
            name: cid for cid, name in _unique_names(dataset.categories).items()}

    def truth(self, run_name: str, row: Dict[str, str]
              ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
        category = row["category"]
        name = self.names[run_name].get(category)
        if self.named is not None and name is not None and name in self.named:
            category = str(self.named[name])  # the dataset's own id of the run's category
        key = ("truth", row["image_index"], category)
        if key not in self.cache:
            self.cache[key] = self._read_truth(row["image_index"], category)
        return self.cache[key]

    def _read_truth(self, image_index: str, category: str
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
        if self.dataset is None:
            return None, np.zeros((0, 4)), None
        sample = self.dataset[int(image_index)]
        if sample.image is None:
            return None, np.zeros((0, 4)), None
        truth = next((t for t in sample.truths if str(t.category) == category), None)
        boxes = truth.boxes.numpy() if truth is not None else np.zeros((0, 4))
        mask = truth.mask.numpy() if truth is not None and truth.mask is not None else None
        return sample.image.permute(1, 2, 0).clamp(0, 1).numpy(), boxes, mask

    def image(self, run_name: str, row: Dict[str, str]) -> Optional[str]:
        key = ("image", run_name, row["image_index"], row["category"])
        if key not in self.cache:
            image, boxes, mask = self.truth(run_name, row)
            self.cache[key] = None if image is None else thumbnail(image, None, boxes, mask)
        return self.cache[key]

    def pair(self, run_name: str, row: Dict[str, str]) -> Optional[str]:
        key = (run_name, row["pair"])
        if key not in self.cache:
            store = self.stores[run_name]
            saliency = store.read(int(row["pair"])).numpy() if store is not None else None
            image, boxes, mask = self.truth(run_name, row)
            self.cache[key] = None if saliency is None and image is None else thumbnail(image, saliency, boxes, mask)
        return self.cache[key]


def _store(folder: Path) -> Optional[Any]:
    from captum_ext.evaluation.store import MapStore

    return MapStore(folder / "maps.zarr") if (folder / "maps.zarr").is_dir() else None


def _figure(data: Optional[str], caption: str) -> str:
    picture = (f"<img alt='{html.escape(caption)}' src='data:image/jpeg;base64,{data}'>" if data
               else "<div class='missing'>no map</div>")
    return f"<figure>{picture}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _value(row: Dict[str, str], column: str) -> float:
    try:
        value = float(row.get(column, ""))
    except ValueError:
        return math.nan
    return value


def _same_pairs(runs: Sequence[Any], pictures: _Pictures, count: int) -> str:
    """Up to ``count`` pairs every run has, evenly spread over the dataset, one row each."""
    # Pairs are matched by image and category name: runs with different class maps may number categories apart.
    keyed = [{(r["image_id"], pictures.names[run.name].get(r["category"]) or r["category"]): r for r in run.rows}
             for run in runs]
    common = [key for key in keyed[0] if all(key in table for table in keyed[1:])]
    if not common or count <= 0:
        return "<p>The runs share no (image, class) pair.</p>"
    shown = min(count, len(common))  # spread over the common pairs; all of them when there are fewer than asked
    chosen = [common[int(k * len(common) / shown)] for k in range(shown)]
    head = "<th>image</th>" + "".join(f"<th>{html.escape(run.name)}</th>" for run in runs)
    body = []
    for key in chosen:
        first = keyed[0][key]
        cells = [f"<td>{_figure(pictures.image(runs[0].name, first), f'image {key[0]}, class {key[1]}')}</td>"]
        for run, table in zip(runs, keyed):
            energy = _value(table[key], "energy")
            caption = f"energy {energy:.2f}" if not math.isnan(energy) else run.name
            cells.append(f"<td>{_figure(pictures.pair(run.name, table[key]), caption)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='gallery'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _best_and_worst(runs: Sequence[Any], pictures: _Pictures, count: int) -> str:
    """Per ranked metric, a folding section: each run's ``count`` best and ``count`` worst pairs."""
    sections = []
    for column, (label, better) in RANKED_COLUMNS.items():
        if not any(run.rows and column in run.rows[0] for run in runs):
            continue
        rows = []
        for run in runs:
            scored = [(v, int(r["pair"]), r) for r in run.rows for v in [_value(r, column)] if not math.isnan(v)]
            if not scored:
                continue
            sign = -1.0 if better == "higher" else 1.0
            ordered = sorted(scored, key=lambda item: (sign * item[0], item[1]))
            best, worst = ordered[:count], ordered[::-1][:count]
            cells = [_figure(pictures.pair(run.name, r), f"{kind} {v:.3f}, image {r['image_id']}, class {r['category']}")
                     for kind, part in (("best", best), ("worst", worst)) for v, _, r in part]
            rows.append(f"<tr><th>{html.escape(run.name)}</th><td><div class='strip'>{''.join(cells)}</div></td></tr>")
        opened = " open" if not sections else ""
        sections.append(f"<details{opened}><summary>{html.escape(label)} ({better} is better)</summary>"
                        f"<div class='scroll'><table class='gallery'>{''.join(rows)}</table></div></details>")
    return "".join(sections) or "<p>The runs have no per-pair metric that ranks pairs.</p>"


def gallery_html(runs: Sequence[Any], same_pairs: int = 6, examples: int = 2) -> str:
    """The gallery sections of the comparison page.

    Args:
        runs (sequence of Run): the compared runs (see :func:`captum_ext.evaluation.compare.read_run`).
        same_pairs (int): how many pairs to show across every method. Default: 6.
        examples (int): best and worst pairs per run and metric. Default: 2.

    Returns:
        str: HTML (headings, tables and embedded thumbnails), empty for ``same_pairs = examples = 0``.
    """
    if same_pairs <= 0 and examples <= 0:
        return ""
    dataset, why = _open_images(runs)
    pictures = _Pictures(runs, dataset)
    note = f"<p class='note'>{html.escape(why)}</p>" if why else ""
    parts = []
    if same_pairs > 0 and len(_dataset_specs(runs)) > 1:
        parts = ["<h2>The same pairs across methods</h2>",
                 "<p>The runs are on different datasets, so they share no pair.</p>"]
    elif same_pairs > 0:
        parts = ["<h2>The same pairs across methods</h2>", note,
                 "<p>Each map over its image, the class's boxes and mask outline in white.</p>",
                 _same_pairs(runs, pictures, same_pairs)]
        note = ""  # said once, in the first section
    if examples > 0:
        parts += ["<h2>Best and worst pairs per metric</h2>", note, _best_and_worst(runs, pictures, examples)]
    return "".join(parts)
