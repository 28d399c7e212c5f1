import aiorun
import asyncio
from typing import Iterator, List
from pynumaflow.function import Messages, Message, Datum, Metadata, AsyncServer


async def my_handler(keys: List[str], datums: Iterator[Datum], md: Metadata) -> Messages:
    interval_window = md.interval_window
    counter = 0
    async for _ in datums:
        counter += 1
    msg = (
        f"counter:{counter} interval_window_start:{interval_window.start} "
        f"interval_window_end:{interval_window.end}"
    )
    return Messages(Message(str.encode(msg), keys))


if __name__ == "__main__":
    grpc_server = AsyncServer(reduce_handler=my_handler)
    aiorun.run(grpc_server.start())
