"""MapStreamFn: async and sync generators, each message sent as soon as it is yielded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow.function import Datum, Message

from helpers import datum_request, serving

pytestmark = pytest.mark.anyio


async def async_split(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    for part in datum.value.split(b","):
        await asyncio.sleep(0)
        yield Message(part, keys=keys, tags=["part"])


def sync_split(keys: list[str], datum: Datum) -> Iterator[Message]:
    for part in datum.value.split(b","):
        yield Message(part, keys=keys, tags=["part"])


@pytest.mark.parametrize("handler", [async_split, sync_split], ids=["async", "sync"])
async def test_map_stream_sends_every_message_in_order(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Every yielded message arrives, in order, with keys, value and tags."""
    async with serving(sock_path, info_path, map_stream_handler=handler):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2, b"a,b,c", keys=["k"]))
        replies = [reply async for reply in call]
    assert [(list(r.keys), r.value, list(r.tags)) for r in replies] == [
        (["k"], b"a", ["part"]),
        (["k"], b"b", ["part"]),
        (["k"], b"c", ["part"]),
    ]


async def test_async_map_stream_sends_before_the_generator_finishes(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """The first message reaches the client while the async generator is still suspended."""
    first_seen = asyncio.Event()

    async def waits_for_client(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        yield Message(b"first")
        await asyncio.wait_for(first_seen.wait(), 10)
        yield Message(b"second")

    async with serving(sock_path, info_path, map_stream_handler=waits_for_client):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        first = await call.read()
        first_seen.set()
        second = await call.read()
        # Read the call to its end on this test's event loop: a status still on its way
        # when the loop closes reaches grpcio's poller later, in another test.
        code = await call.code()
    assert (first.value, second.value, code) == (b"first", b"second", grpc.StatusCode.OK)


async def test_sync_map_stream_sends_before_the_generator_finishes(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """The first message reaches the client while the sync generator blocks in its thread."""
    first_seen = threading.Event()

    def waits_for_client(keys: list[str], datum: Datum) -> Iterator[Message]:
        yield Message(b"first")
        assert first_seen.wait(10)
        yield Message(b"second")

    async with serving(sock_path, info_path, map_stream_handler=waits_for_client):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        first = await call.read()
        first_seen.set()
        second = await call.read()
        # Read the call to its end on this test's event loop: a status still on its way
        # when the loop closes reaches grpcio's poller later, in another test.
        code = await call.code()
    assert (first.value, second.value, code) == (b"first", b"second", grpc.StatusCode.OK)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_map_stream_error_after_some_messages(
    kind: str, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Messages yielded before an error stay sent; then the call ends UNKNOWN with the text."""

    async def async_fails(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        yield Message(b"one")
        raise ValueError("stream broke")

    def sync_fails(keys: list[str], datum: Datum) -> Iterator[Message]:
        yield Message(b"one")
        raise ValueError("stream broke")

    handler = async_fails if kind == "async" else sync_fails
    received = []
    async with serving(sock_path, info_path, map_stream_handler=handler):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for reply in call:
                received.append(reply.value)
    assert received == [b"one"]
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "ValueError: stream broke" in failure.value.details()


async def test_map_stream_wrong_item_type(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Yielding something other than a Message fails the call with a clear status."""

    async def yields_bytes(keys: list[str], datum: Datum) -> AsyncIterator[Any]:
        yield b"raw bytes"

    async with serving(sock_path, info_path, map_stream_handler=yields_bytes):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for _ in call:
                pass
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "yielded bytes; expected Message" in failure.value.details()


async def test_sync_map_stream_stops_when_client_cancels(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A client cancelling mid-stream stops the sync generator and frees its thread."""
    closed = threading.Event()

    def endless(keys: list[str], datum: Datum) -> Iterator[Message]:
        try:
            while True:
                yield Message(b"tick")
        finally:
            closed.set()

    async with serving(sock_path, info_path, map_stream_handler=endless):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        for _ in range(5):
            await call.read()
        call.cancel()
        for _ in range(100):
            if closed.is_set():
                break
            await asyncio.sleep(0.05)
    assert closed.is_set()
    for _ in range(100):  # the stopped pool's idle threads exit on their own
        if not [t for t in threading.enumerate() if t.name.startswith("pynumaflow-handler")]:
            break
        await asyncio.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("pynumaflow-handler")]


async def test_a_sync_map_stream_runs_a_bounded_distance_ahead_of_a_slow_client(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """While the client does not read, the generator is paused, not buffered without end."""
    produced = 0

    def endless(keys: list[str], datum: Datum) -> Iterator[Message]:
        nonlocal produced
        while True:
            produced += 1
            if produced > 5_000:  # far beyond the bound: stop rather than fill memory
                return
            yield Message(b"x" * 16_384)

    async with serving(sock_path, info_path, map_stream_handler=endless):
        call = fn_stub.MapStreamFn(datum_request(fn_pb2))
        await call.read()
        await asyncio.sleep(0.5)  # the client's flow-control window fills; the server waits
        first = produced
        await asyncio.sleep(0.3)
        assert produced == first  # no progress without reads
        # 64 ahead of the loop, plus what the HTTP/2 windows (grpcio grows its window to
        # a few MiB) and the socket buffers hold: 370-440 messages of 16 KiB here.
        assert produced < 1_000
        for _ in range(10):
            assert (await call.read()).value == b"x" * 16_384
        call.cancel()
