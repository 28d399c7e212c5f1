"""Reduce stream: counts each key's datums in a window, sending a count every 2 datums.

Each count goes downstream as soon as it is put on ``output``, while the window is
still open; the final count follows when the window closes.
"""

from collections.abc import AsyncIterable
from typing import List

from pynumaflow.reducestreamer import (
    Datum,
    Message,
    Metadata,
    NonBlockingIterator,
    ReduceStreamAsyncServer,
    ReduceStreamer,
)


class Counter(ReduceStreamer):
    """A new instance per key and window."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0

    async def handler(
        self,
        keys: List[str],
        datums: AsyncIterable[Datum],
        output: NonBlockingIterator[Message],
        md: Metadata,
    ) -> None:
        async for _ in datums:
            self.count += 1
            if self.count % self.every == 0:
                await output.put(Message(f"so far:{self.count}".encode(), keys=keys))
        window = md.interval_window
        text = f"total:{self.count} window:{window.start.isoformat()}/{window.end.isoformat()}"
        await output.put(Message(text.encode(), keys=keys))


if __name__ == "__main__":
    ReduceStreamAsyncServer(Counter, init_args=(2,)).start()
