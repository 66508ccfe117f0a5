"""Work handed to a thread of its own, in order, through a bounded queue: the stages of the dataset driver that need
no model (scoring the maps, writing them), so that the model's next batch does not wait for them."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

#: Items that may wait for a stage before :meth:`BackgroundStage.submit` blocks: memory stays flat however large
#: the dataset, and a stage slower than the model holds the model back rather than piling up batches.
QUEUE_DEPTH = 2

_STOP = object()


class BackgroundStage:
    """Runs ``work(item)`` on a background thread for each submitted item, one at a time, in submission order.

    An error on the thread is raised in the caller at the next :meth:`submit` or at :meth:`close`; from then on the
    thread takes the remaining items without working on them, so the caller never blocks on a dead stage. Items
    submitted before the failing one have been worked on completely.

    Args:
        work (callable): ``work(item)``, called on the stage's thread.
        name (str): the thread's name.
        depth (int): items that may wait before :meth:`submit` blocks. Default: :data:`QUEUE_DEPTH`.
        device (torch.device, optional): a CUDA device to make current on the thread (the current device is
            per thread, and tensors made without a device go to the current one). Default: none.
    """

    def __init__(self, work: Callable[[Any], None], name: str, depth: int = QUEUE_DEPTH,
                 device: Optional[torch.device] = None) -> None:
        self._work, self._device = work, device
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue
            try:
                self._work(item)
            except BaseException as error:  # handed to the caller, which decides
                self._error = error

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, item: Any) -> None:
        """Queue an item (blocks while ``depth`` items wait).

        Args:
            item: what ``work`` is called with.

        Raises:
            BaseException: an error the thread met working on an earlier item.
        """
        self._raise_pending()
        self._queue.put(item)

    def close(self) -> None:
        """Work through what is queued, stop the thread, and raise any error it met.

        Raises:
            BaseException: an error the thread met.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "BackgroundStage":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.close()
            return
        try:  # the caller's error wins; what was queued before it is still worked through
            self.close()
        except BaseException:
            pass


def prefetched(items: Iterable[Any], depth: int = QUEUE_DEPTH) -> Iterator[Any]:
    """``items``, produced ahead on a background thread: with a DataLoader without worker processes, images are read
    and decoded (the decoders release the GIL) while the model works on the batch before.

    Args:
        items (iterable): what to iterate; iterated on the background thread.
        depth (int): items produced ahead at most. Default: :data:`QUEUE_DEPTH`.

    Yields:
        the items of ``items``, in order; an error raised while producing one is raised here, in its place.
    """
    ready: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome: Any = (False, _STOP)
        except BaseException as error:  # raised in the consumer, in the failed item's place
            outcome = (False, error)
        while not stop.is_set():
            try:
                ready.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="captum-ext-reader", daemon=True)
    thread.start()
    try:
        while True:
            is_item, item = ready.get()
            if is_item:
                yield item
            elif item is _STOP:
                return
            else:
                raise item
    finally:  # the consumer stopped early (an error, a break): the producer stops at its next item
        stop.set()
        thread.join()
