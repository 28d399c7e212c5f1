"""Session reduce: counts each key's datums per session (a burst of activity).

When the platform merges two sessions, the count of each merged-away session is handed
to the merged session's new instance through ``accumulator``/``merge_accumulator``.
"""

from collections.abc import AsyncIterable
from typing import List

from pynumaflow.sessionreducer import (
    Datum,
    Message,
    NonBlockingIterator,
    SessionReduceAsyncServer,
    SessionReducer,
)


class SessionCounter(SessionReducer):
    """A new instance per session."""

    def __init__(self) -> None:
        self.count = 0

    async def session_reduce(
        self, keys: List[str], datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]
    ) -> None:
        async for _ in datums:
            self.count += 1
        await output.put(Message(f"clicks:{self.count}".encode(), keys=keys))

    def accumulator(self) -> bytes:
        return str(self.count).encode()

    def merge_accumulator(self, accumulator: bytes) -> None:
        self.count += int(accumulator)


if __name__ == "__main__":
    SessionReduceAsyncServer(SessionCounter).start()
