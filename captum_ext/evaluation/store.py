"""Where an evaluation run keeps its results on disk: the maps in a Zarr store, one chunk per map (grouped into one
shard file per batch where the batches allow), and one record file per finished batch. Both are written so that
a process killed at any moment leaves nothing half-counted."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import Tensor

MAP_DTYPES = ("float16", "float32")


def sharding_supported() -> bool:
    """Whether the installed Zarr writes sharded arrays.

    Returns:
        bool: True with Zarr 3 or newer.
    """
    import zarr

    return int(zarr.__version__.split(".")[0]) >= 3


class MapStore:
    """The maps of a run: ``maps`` (``pairs×H×W``, each map in the top-left ``height×width`` corner of its chunk;
    with ``pairs_per_shard``, chunks are grouped into shard files, one per batch),
    with ``image_index`` (the image's position in the dataset; its id, which may be a name, is in the pair table),
    ``category``, ``class_index``, ``height`` and ``width`` (the stored map's size: the resized size when the run
    resizes images) and ``native_height`` and ``native_width`` (the image file's size) arrays, one entry per pair.

    Args:
        path (Path): the store folder (``DIR/maps.zarr``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def create(self, image_indices: Sequence[int], categories: Sequence[int], class_indices: Sequence[int],
               heights: Sequence[int], widths: Sequence[int], dtype: str = "float16",
               native: Optional[Tuple[Sequence[int], Sequence[int]]] = None,
               pairs_per_shard: Optional[int] = None) -> None:
        """Create (or re-open, keeping written chunks) the arrays for every pair of the run.

        Args:
            image_indices, categories, class_indices (sequence of int): one entry per pair.
            heights, widths (sequence of int): the size of each stored map.
            dtype (str): ``"float16"`` or ``"float32"``.
            native (tuple of sequences, optional): ``(heights, widths)`` of the image files, when the maps were
                resized from them. Default: the stored sizes.
            pairs_per_shard (int, optional): store the maps of this many consecutive pairs in one shard file
                (Zarr 3 sharding; each map stays its own chunk inside, readable alone). Only safe when every
                shard is written by one batch, i.e. the batches start at multiples of it; ignored with Zarr 2.
                Default: one file per map.
        """
        import zarr

        n = len(image_indices)
        size = (max(heights, default=1), max(widths, default=1))
        zarr.open_group(str(self.path), mode="a")  # the folder is a Zarr group: zarr.open_group lists the arrays
        fresh = not any((self.path / "maps" / meta).is_file() for meta in ("zarr.json", ".zarray"))
        if fresh and pairs_per_shard and sharding_supported():
            maps = zarr.create_array(str(self.path / "maps"), shape=(n, *size), chunks=(1, *size),
                                     shards=(pairs_per_shard, *size), dtype=dtype, fill_value=0)
        else:
            maps = zarr.open_array(str(self.path / "maps"), mode="a", shape=(n, *size), chunks=(1, *size),
                                   dtype=dtype, fill_value=0)
        if tuple(maps.shape) != (n, *size) or str(maps.dtype) != dtype:
            raise ValueError(f"the map store {str(self.path)!r} holds {tuple(maps.shape)} {maps.dtype} maps, this "
                             f"run needs {(n, *size)} {dtype}: use another `out` folder")
        native_heights, native_widths = native if native is not None else (heights, widths)
        for name, values in (("image_index", image_indices), ("category", categories), ("class_index", class_indices),
                             ("height", heights), ("width", widths), ("native_height", native_heights),
                             ("native_width", native_widths)):
            array = zarr.open_array(str(self.path / name), mode="a", shape=(n,), chunks=(max(n, 1),),
                                    dtype="int64", fill_value=-1)
            array[:] = np.asarray(values, dtype=np.int64)

    def _maps(self) -> Any:
        import zarr

        if getattr(self, "_array", None) is None:  # opened once per process: opening reads the metadata
            self._array = zarr.open_array(str(self.path / "maps"), mode="r+")
        return self._array

    def write(self, pair_ids: Sequence[int], maps: Tensor) -> None:
        """Write ``N`` maps of one size (``N×H×W``) into their chunks, each run of consecutive pairs in one call
        (Zarr then writes the chunks concurrently). A chunk written again on a rerun gets the same values.

        Args:
            pair_ids (sequence of int): the pairs, increasing.
            maps (Tensor): ``N×H×W`` maps.
        """
        values = maps.cpu().numpy()
        height, width = values.shape[-2:]
        start = 0
        for end in range(1, len(pair_ids) + 1):
            if end == len(pair_ids) or pair_ids[end] != pair_ids[end - 1] + 1:
                first = pair_ids[start]
                self._maps()[first:first + end - start, :height, :width] = values[start:end]
                start = end

    def read(self, pair_index: int) -> Tensor:
        """One map, cropped to its image's size, as float32.

        Args:
            pair_index (int): the pair.

        Returns:
            Tensor: ``H×W`` float32.
        """
        import zarr

        height = int(zarr.open_array(str(self.path / "height"), mode="r")[pair_index])
        width = int(zarr.open_array(str(self.path / "width"), mode="r")[pair_index])
        maps = zarr.open_array(str(self.path / "maps"), mode="r")
        return torch.from_numpy(np.asarray(maps[pair_index, :height, :width], dtype=np.float32))


class BatchRecords:
    """One JSON file per finished batch (``DIR/progress/batch-NNNNNNNN.json``): its table rows, its contribution to
    every metric's state, and its skipped files. A batch counts as done exactly when its file exists; files are
    written to a temporary name and renamed, so a killed process never leaves a partial record.

    Args:
        folder (Path): the progress folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, batch: int) -> Path:
        return self.folder / f"batch-{batch:08d}.json"

    def done(self, batch: int) -> bool:
        """Whether the batch's record exists.

        Args:
            batch (int): the batch number.

        Returns:
            bool: True once the batch is finished.
        """
        return self._path(batch).is_file()

    def any(self) -> bool:
        """Whether any batch is recorded.

        Returns:
            bool: True if the folder holds a batch record.
        """
        return self.folder.is_dir() and any(self.folder.glob("batch-*.json"))

    def write(self, batch: int, record: Dict[str, Any]) -> None:
        """Write a batch's record atomically (temporary file, fsync, rename).

        Args:
            batch (int): the batch number.
            record (dict): rows, metric deltas (:func:`to_json`) and skipped files.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".batch-{batch:08d}.json.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path(batch))

    def read(self, batch: int) -> Dict[str, Any]:
        """A batch's record.

        Args:
            batch (int): the batch number.

        Returns:
            dict: what :meth:`write` stored.

        Raises:
            ValueError: the file is not valid JSON (named in the message).
        """
        path = self._path(batch)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"the progress record {str(path)!r} is corrupt ({err}); delete it to recompute that "
                             f"batch") from err

    def rows(self, n_batches: int) -> Iterator[Dict[str, Any]]:
        """Every recorded row, in batch order (one batch in memory at a time).

        Args:
            n_batches (int): the run's number of batches.

        Returns:
            Iterator[dict]: the rows.
        """
        for batch in range(n_batches):
            if self.done(batch):
                yield from self.read(batch)["rows"]

    def tally(self, n_batches: int) -> Tuple[int, List[str]]:
        """The images the recorded rows score, and every file a batch skipped (``skip_bad``), in one pass.

        Args:
            n_batches (int): the run's number of batches.

        Returns:
            tuple: ``(images, skipped)``: how many images have a row (an image that did not decode, or whose
            every pair was skipped, has none) and the skipped files with their errors, in batch order.
        """
        images: Set[int] = set()
        skipped: List[str] = []
        for batch in range(n_batches):
            if self.done(batch):
                record = self.read(batch)
                images.update(int(row["image_index"]) for row in record["rows"])
                skipped += record["skipped"]
        return len(images), skipped


def to_json(deltas: Dict[str, Dict[str, Tensor]]) -> Dict[str, Dict[str, Any]]:
    """Metric state deltas as JSON: integer tensors as ints, float tensors as floats (JSON keeps float64 exactly).

    Args:
        deltas (dict): ``{metric: {state: tensor}}``.

    Returns:
        dict: the same with each tensor as ``{"dtype", "shape", "values"}``.
    """
    return {metric: {name: {"dtype": str(value.dtype).replace("torch.", ""), "shape": list(value.shape),
                            "values": value.detach().cpu().reshape(-1).tolist()}
                     for name, value in states.items()} for metric, states in deltas.items()}


def from_json(deltas: Dict[str, Dict[str, Any]], device: Optional[torch.device] = None
              ) -> Dict[str, Dict[str, Tensor]]:
    """Undo :func:`to_json`.

    Args:
        deltas (dict): the output of :func:`to_json`.
        device (torch.device, optional): where to put the tensors.

    Returns:
        dict: ``{metric: {state: tensor}}``.
    """
    return {metric: {name: torch.tensor(item["values"], dtype=getattr(torch, item["dtype"]),
                                        device=device).reshape(item["shape"])
                     for name, item in states.items()} for metric, states in deltas.items()}
