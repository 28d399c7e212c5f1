"""The kind probe of the `pynumaflow` command, against the real server.

`pynumaflow run` finds what a script serves by sending each function RPC a malformed
body: a server without that handler answers UNIMPLEMENTED before it reads the body, one
with it answers INVALID_ARGUMENT. These tests keep that true, and check that the probe
never runs user code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pynumaflow._cli._kinds import served_kinds, wait_until_ready
from pynumaflow._client.legacy import Connection
from pynumaflow._faces import kinds as kind_table
from pynumaflow._faces.kinds import Kind
from pynumaflow.function import Datum, Message, Messages, Metadata
from pynumaflow.sink import AsyncSink, Responses

from helpers import serving

pytestmark = pytest.mark.anyio

CALLED: list[str] = []


def map_handler(keys: list[str], datum: Datum) -> Messages:
    CALLED.append("map")
    return Messages()


def mapt_handler(keys: list[str], datum: Datum) -> Messages:
    CALLED.append("mapt")
    return Messages()


async def map_stream_handler(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    CALLED.append("map_stream")
    yield Message(b"")


async def reduce_handler(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
    CALLED.append("reduce")
    return Messages()


HANDLERS: dict[Kind, tuple[str, Any]] = {
    kind_table.MAP: ("map_handler", map_handler),
    kind_table.MAPT: ("mapt_handler", mapt_handler),
    kind_table.MAP_STREAM: ("map_stream_handler", map_stream_handler),
    kind_table.REDUCE: ("reduce_handler", reduce_handler),
}


@pytest.fixture(autouse=True)
def no_calls() -> Iterator[None]:
    CALLED.clear()
    yield
    assert CALLED == [], "the probe ran a handler"


@pytest.mark.parametrize(
    "kinds",
    [
        [kind_table.MAP],
        [kind_table.MAPT],
        [kind_table.MAP_STREAM],
        [kind_table.REDUCE],
        [kind_table.MAP, kind_table.MAPT, kind_table.MAP_STREAM, kind_table.REDUCE],
        [kind_table.MAPT, kind_table.REDUCE],
    ],
    ids=lambda kinds: "+".join(k.name for k in kinds),
)
async def test_probe_finds_exactly_the_served_kinds(
    kinds: list[Kind], sock_path: str, info_path: str
) -> None:
    """Each function kind is found if and only if its handler was given."""
    handlers = dict(HANDLERS[kind] for kind in kinds)
    # The probe speaks function.v1; map with map stream exists only there.
    async with serving(sock_path, info_path, protocols=["legacy"], **handlers):
        with Connection(sock_path, timeout=5) as connection:
            assert await wait_until_ready(connection, deadline=float("inf")) == "function"
            assert await served_kinds(connection) == kinds


async def test_a_sink_is_told_apart_from_a_function_server(sock_dir: Any, info_path: str) -> None:
    """IsReady of the sink service answers, that of the function service does not."""
    sock = str(sock_dir / "udsink.sock")
    sink = AsyncSink(lambda datums: Responses(), sock_path=sock, server_info_file=info_path)
    async with sink.running():
        with Connection(sock, timeout=5) as connection:
            assert not await connection.is_ready("function")
            assert await wait_until_ready(connection, deadline=float("inf")) == "sink"
