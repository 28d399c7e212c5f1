"""An async sink: store JSON records through an async client, answer every datum.

The handler reads the batch while it arrives and answers each datum by its id. Datums
that are not JSON objects are answered as failed: the platform retries those (a real
sink would also count them, or route them to a dead-letter store).
"""

import asyncio
import json
from collections.abc import AsyncIterable
from typing import Any

import aiorun

from pynumaflow.sink import AsyncSink, Datum, Response, Responses


async def store(record: dict[str, Any]) -> None:
    await asyncio.sleep(0)  # stands for an async client call, e.g. a database insert
    print("stored", json.dumps(record, sort_keys=True))


async def json_sink(datums: AsyncIterable[Datum]) -> Responses:
    responses = Responses()
    async for datum in datums:
        try:
            record = json.loads(datum.value)
        except ValueError as err:
            responses.append(Response.as_failure(datum.id, f"not JSON: {err}"))
            continue
        if not isinstance(record, dict):
            responses.append(Response.as_failure(datum.id, "not a JSON object"))
            continue
        await store(record)
        responses.append(Response.as_success(datum.id))
    return responses


if __name__ == "__main__":
    aiorun.run(AsyncSink(json_sink).start())
