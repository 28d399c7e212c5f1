"""Accumulator: passes each key's datums on in event-time order.

Datums may arrive out of order; they are held until the watermark passes their event
time, then sent sorted. What is still held when the key is closed is flushed.
"""

from collections.abc import AsyncIterable
from datetime import datetime
from typing import List, Optional

from pynumaflow.accumulator import (
    Accumulator,
    AccumulatorAsyncServer,
    Datum,
    Message,
    NonBlockingIterator,
)


class StreamSorter(Accumulator):
    """A new instance per key."""

    def __init__(self) -> None:
        self.held: List[Datum] = []

    async def handler(
        self, datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]
    ) -> None:
        async for datum in datums:
            self.held.append(datum)
            await self.flush(output, datum.watermark)
        await self.flush(output, None)

    async def flush(self, output: NonBlockingIterator[Message], upto: Optional[datetime]) -> None:
        self.held.sort(key=lambda d: d.event_time)
        while self.held and (upto is None or self.held[0].event_time <= upto):
            await output.put(Message.from_datum(self.held.pop(0)))


if __name__ == "__main__":
    AccumulatorAsyncServer(StreamSorter).start()
