"""Count the messages of each key in each window; a new Counter per key and window."""

from collections.abc import AsyncIterable

from pynumaflow.reducer import Datum, Message, Messages, Metadata, ReduceAsyncServer, Reducer


class Counter(Reducer):
    def __init__(self, label: str) -> None:
        self.label = label

    async def handler(
        self, keys: list[str], datums: AsyncIterable[Datum], md: Metadata
    ) -> Messages:
        count = 0
        async for _ in datums:
            count += 1
        window = md.interval_window
        text = f"{self.label} {count} in [{window.start}, {window.end})"
        return Messages(Message(text.encode(), keys=keys))


if __name__ == "__main__":
    ReduceAsyncServer(Counter, init_args=("count:",)).start()
