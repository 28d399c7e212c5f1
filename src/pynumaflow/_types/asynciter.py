"""NonBlockingIterator: an async iterator fed through a queue (as in pynumaflow 0.14.0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar, Union

__all__ = ["STREAM_EOF", "NonBlockingIterator"]

T = TypeVar("T")

STREAM_EOF = "EOF"
"""Put this to end the iteration."""


class NonBlockingIterator(Generic[T]):
    """An async iterator backed by a queue: :meth:`put` items, then :data:`STREAM_EOF`."""

    __slots__ = ("_queue",)

    def __init__(self, size: int = 0) -> None:
        self._queue: asyncio.Queue[Union[T, str]] = asyncio.Queue(maxsize=size)

    async def read_iterator(self) -> AsyncIterator[T]:
        """Yield what was put, until :data:`STREAM_EOF`."""
        while True:
            item = await self._queue.get()
            if isinstance(item, str) and item == STREAM_EOF:
                return
            yield item  # type: ignore[misc]

    async def put(self, item: Union[T, str]) -> None:
        """Add an item (or :data:`STREAM_EOF`), then let the loop run the reader.

        A bounded iterator lets it run only when full: a producer that never awaits
        waits there, every ``size`` items, instead of after each one.
        """
        queue = self._queue
        await queue.put(item)
        if not queue.maxsize:
            await asyncio.sleep(0)  # a producer that never awaits would starve the reader
