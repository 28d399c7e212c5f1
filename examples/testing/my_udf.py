"""The handlers that test_my_udf.py tests: a map, a reduce and a sink.

Run the map as a UDF with `python my_udf.py`, or try it without a cluster:
`pynumaflow run examples/testing/my_udf.py --input -` (then type lines, Ctrl-D to end).
"""

from collections.abc import AsyncIterable, AsyncIterator

from pynumaflow.function import Datum, Message, Messages, Metadata, Server
from pynumaflow.sink import Datum as SinkDatum
from pynumaflow.sink import Response, Responses


def shout(keys: list[str], datum: Datum) -> Messages:
    """Upper-case the text; drop blank inputs; tag long ones "long"."""
    text = datum.value.decode("utf-8").strip()  # bytes that are not UTF-8 fail the call
    if not text:
        return Messages(Message.to_drop())
    tags = ["long"] if len(text) > 10 else []
    return Messages(Message(text.upper().encode(), keys=keys, tags=tags))


async def count_words(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
    """Count the words of a key's datums in the window."""
    words = 0
    async for datum in datums:
        words += len(datum.value.split())
    return Messages(Message(str(words).encode(), keys=keys))


async def reject_blank(datums: AsyncIterable[SinkDatum]) -> Responses:
    """Accept datums with text, fail blank ones."""
    responses = Responses()
    async for datum in datums:
        if datum.value.strip():
            responses.append(Response.as_success(datum.id))
        else:
            responses.append(Response.as_failure(datum.id, "blank"))
    return responses


if __name__ == "__main__":
    Server(map_handler=shout).start()
