"""Split comma-separated values, sending each part as soon as it is ready (map stream)."""

from collections.abc import AsyncIterator

from pynumaflow.mapstreamer import Datum, MapStreamAsyncServer, Message


async def split(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    for part in datum.value.split(b","):
        if part.strip():
            yield Message(part.strip(), keys=keys)


if __name__ == "__main__":
    MapStreamAsyncServer(split).start()
