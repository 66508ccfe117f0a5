"""Finished batches go to disk on a thread of their own, so the model does not wait for compression and files."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from torch import Tensor

from captum_ext.evaluation._pipeline import QUEUE_DEPTH, BackgroundStage
from captum_ext.evaluation.store import BatchRecords, MapStore


class BackgroundWriter(BackgroundStage):
    """Writes each finished batch on a background thread, in order: its maps into the store, then its record.

    A batch counts as done only once its record exists, and the record is written after the maps, so a process
    killed with batches still queued loses exactly those batches, which ``resume`` computes again. An error on the
    thread (a full disk, say) is raised in the caller at the next :meth:`submit` or at :meth:`close`; until then
    the thread keeps taking batches (without writing them) so the caller never blocks on a dead writer.

    Args:
        store (MapStore): where the maps go.
        records (BatchRecords): where the batch records go.
        depth (int): batches that may wait before :meth:`submit` blocks.
    """

    def __init__(self, store: MapStore, records: BatchRecords, depth: int = QUEUE_DEPTH) -> None:
        self._store, self._records = store, records
        super().__init__(self._write, "captum-ext-writer", depth)

    def _write(self, item: Tuple[int, Sequence[Tuple[Sequence[int], Tensor]], Dict[str, Any]]) -> None:
        batch, maps, record = item
        for pair_ids, values in maps:
            self._store.write(pair_ids, values)
        self._records.write(batch, record)

    def submit(self, batch: int, maps: Sequence[Tuple[Sequence[int], Tensor]],  # type: ignore[override]
               record: Dict[str, Any]) -> None:
        """Queue a finished batch (blocks while ``depth`` batches wait).

        Args:
            batch (int): the batch number.
            maps (sequence of tuple): ``(pair_ids, N×H×W maps on the CPU)`` per group of one size.
            record (dict): the batch record (rows, metric deltas, skipped files).

        Raises:
            BaseException: an error the thread met writing an earlier batch.
        """
        super().submit((batch, list(maps), record))
