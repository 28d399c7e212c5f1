"""SyncIterator: an iterator fed through a thread-safe queue (as in pynumaflow 0.14.0)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

from pynumaflow.shared.asynciter import STREAM_EOF

__all__ = ["SyncIterator"]


class SyncIterator:
    """An iterator backed by a queue: :meth:`put` items, then ``STREAM_EOF`` or :meth:`close`."""

    __slots__ = ("_queue",)

    def __init__(self, size: int = 0) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)

    def read_iterator(self) -> Iterator[Any]:
        """Yield what was put, until ``STREAM_EOF``."""
        while True:
            item = self._queue.get()
            if isinstance(item, str) and item == STREAM_EOF:
                return
            yield item

    def put(self, item: Any) -> None:
        """Add an item (or ``STREAM_EOF``)."""
        self._queue.put(item)

    def close(self) -> None:
        """End the iteration."""
        self._queue.put(STREAM_EOF)
