"""Map stream: send each output as soon as it is ready, instead of all at the end.

An async generator handler: every ``yield`` goes to the platform at once, which keeps
latency low when one input makes many outputs or each output takes a while.
"""

import asyncio
from collections.abc import AsyncIterator

import aiorun

from pynumaflow.function import AsyncServer, Datum, Message


async def split_lines(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    for line in datum.value.splitlines():
        await asyncio.sleep(0)  # stands for per-output work, e.g. an async lookup
        yield Message(line, keys=keys)


if __name__ == "__main__":
    aiorun.run(AsyncServer(map_stream_handler=split_lines).start())
