"""Finished batches go to disk on a thread of their own, so the model does not wait for compression and files."""
from __future__ import annotations

import queue
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

from torch import Tensor

from captum_ext.evaluation.store import BatchRecords, MapStore

#: Batches that may wait for the disk before the next one blocks: memory stays flat however large the dataset.
QUEUE_DEPTH = 2

_STOP = object()


class BackgroundWriter:
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
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="captum-ext-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue
            batch, maps, record = item
            try:
                for pair_ids, values in maps:
                    self._store.write(pair_ids, values)
                self._records.write(batch, record)
            except BaseException as error:  # handed to the caller, which decides
                self._error = error

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, batch: int, maps: Sequence[Tuple[Sequence[int], Tensor]], record: Dict[str, Any]) -> None:
        """Queue a finished batch (blocks while :data:`QUEUE_DEPTH` batches wait).

        Args:
            batch (int): the batch number.
            maps (sequence of tuple): ``(pair_ids, N×H×W maps on the CPU)`` per group of one size.
            record (dict): the batch record (rows, metric deltas, skipped files).

        Raises:
            BaseException: an error the thread met writing an earlier batch.
        """
        self._raise_pending()
        self._queue.put((batch, list(maps), record))

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise any error it met.

        Raises:
            BaseException: an error the thread met.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.close()
            return
        try:  # the caller's error wins; what was finished is still written
            self.close()
        except BaseException:
            pass

