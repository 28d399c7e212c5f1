"""map.v1 in batch mode (``batch-map``, batchmap.sock) with pynumaflow.batchmapper's server.

Driven by grpcio stubs generated from our protos, step by step as the platform does:
a batch of requests and its EOT, then the batch's responses and EOT are read before
the next batch is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import anyio
import grpc
import pytest

from pynumaflow.batchmapper import (
    BatchMapAsyncServer,
    BatchMapper,
    BatchResponse,
    BatchResponses,
    Datum,
    Message,
    UserMetadata,
)

from conftest import CHANNEL_OPTIONS
from helpers import eventually, v1_request_fields
from procs import END, finish, start_script, wait_for_server_info

pytestmark = pytest.mark.anyio
WAIT = 10.0  # seconds a step may take before the test fails
PROMPT = 10.0


@pytest.fixture
def pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["map_pb2"]


@pytest.fixture
async def stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    target = f"unix://{sock_dir / 'batchmap.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["map_grpc"].MapStub(channel)


@contextlib.asynccontextmanager
async def serving(sock_dir: Path, handler: Any, **options: Any) -> AsyncIterator[None]:
    server = BatchMapAsyncServer(
        handler,
        sock_path=str(sock_dir / "batchmap.sock"),
        server_info_file=str(sock_dir / "mapper-server-info"),
        **options,
    )
    async with server.running():
        yield


def request(pb2: ModuleType, msg_id: str, value: bytes = b"", **fields: Any) -> Any:
    return pb2.MapRequest(
        id=msg_id, request=pb2.MapRequest.Request(**v1_request_fields(value, **fields))
    )


def eot(pb2: ModuleType) -> Any:
    return pb2.MapRequest(status=pb2.TransmissionStatus(eot=True))


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), WAIT)


async def opened(call: Any, pb2: ModuleType) -> Any:
    await call.write(pb2.MapRequest(handshake=pb2.Handshake(sot=True)))
    assert (await read(call)).handshake.sot
    return call


async def send_batch(call: Any, pb2: ModuleType, items: list[tuple[str, bytes]]) -> None:
    for msg_id, value in items:
        await call.write(request(pb2, msg_id, value))
    await call.write(eot(pb2))


async def answers(call: Any, count: int) -> list[Any]:
    """Read ``count`` responses, then the batch's EOT, without sending anything more."""
    responses = [await read(call) for _ in range(count)]
    end = await read(call)
    assert (end.status.eot, end.id, list(end.results)) == (True, "", []), end
    assert not any(r.status.eot for r in responses)
    return responses


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            message = await read(call)
            assert message is not grpc.aio.EOF, "the stream ended OK"
            assert not message.results, f"a response of the failed batch was sent: {message}"
    return caught.value


async def split(datums: AsyncIterable[Datum]) -> BatchResponses:
    """Flat map: each comma-separated part of a value is one message; empty is no output."""
    responses = BatchResponses()
    async for datum in datums:
        response = BatchResponse.from_id(datum.id)
        for part in filter(None, datum.value.split(b",")):
            response.append(Message(part, keys=datum.keys, tags=["t"]))
        responses.append(response)
    return responses


def outputs(response: Any) -> list[bytes]:
    return [r.value for r in response.results]


async def test_each_id_gets_one_response_and_each_batch_its_eot(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Batch after batch on one stream: one response per id (all its results), then EOT."""
    async with serving(sock_dir, split):
        call = await opened(stub.MapFn(), pb2)
        await send_batch(call, pb2, [("v-1-0", b"a,b"), ("v-2-1", b""), ("v-3-2", b"c")])
        first = await answers(call, 3)
        await send_batch(call, pb2, [("\u00e9-9", b"x,y,z")])
        second = await answers(call, 1)
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert [(r.id, outputs(r)) for r in first] == [
        ("v-1-0", [b"a", b"b"]),
        ("v-2-1", []),  # no output: still answered, so the platform acks it
        ("v-3-2", [b"c"]),
    ]
    assert [(r.id, outputs(r)) for r in second] == [("\u00e9-9", [b"x", b"y", b"z"])]
    assert list(first[0].results[0].tags) == ["t"]


async def test_server_info_names_batch_map_mode(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    async with serving(sock_dir, split):
        text = (sock_dir / "mapper-server-info").read_text()
        assert (sock_dir / "batchmap.sock").is_socket()
    info = json.loads(text[: -len(END)])
    assert info["metadata"] == {"MAP_MODE": "batch-map"}


async def test_the_handler_reads_the_batch_while_it_arrives(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """The handler has the first datum before the batch's EOT is sent; datums keep their fields.

    Their headers, user and system metadata (Numaflow >= 1.7) too.
    """
    seen: list[Datum] = []
    first_read = asyncio.Event()

    async def collect(datums: AsyncIterable[Datum]) -> BatchResponses:
        responses = BatchResponses()
        async for datum in datums:
            seen.append(datum)
            first_read.set()
            responses.append(BatchResponse.with_msgs(datum.id, [Message(datum.value)]))
        return responses

    from common import metadata_pb2  # generated beside map.v1 by the stubs fixture

    metadata = metadata_pb2.Metadata(
        previous_vertex="in",
        sys_metadata={"s": metadata_pb2.KeyValueGroup(key_value={"sk": b"sv"})},
        user_metadata={"u": metadata_pb2.KeyValueGroup(key_value={"uk": b"uv"})},
    )
    first = request(pb2, "a", b"1", keys=["k"], headers={"h": "v"})
    first.request.metadata.CopyFrom(metadata)
    async with serving(sock_dir, collect):
        call = await opened(stub.MapFn(), pb2)
        await call.write(first)
        await asyncio.wait_for(first_read.wait(), WAIT)
        await call.write(request(pb2, "b", b"2"))
        await call.write(eot(pb2))
        got = await answers(call, 2)
        await call.done_writing()
    assert [(r.id, outputs(r)) for r in got] == [("a", [b"1"]), ("b", [b"2"])]
    assert (seen[0].id, seen[0].keys, seen[0].headers) == ("a", ["k"], {"h": "v"})
    assert seen[0].user_metadata.value("u", "uk") == b"uv"
    assert seen[0].system_metadata.value("s", "sk") == b"sv"


async def test_sync_handler_and_class_handler(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    """A BatchMapper instance, here with a sync handler reading a plain iterator."""

    class Upper(BatchMapper):
        def handler(self, datums: Iterator[Datum]) -> BatchResponses:
            metadata = UserMetadata()
            metadata.add_key("g", "k", b"v")
            return BatchResponses(
                *(
                    BatchResponse.with_msgs(
                        d.id, [Message(d.value.upper(), user_metadata=metadata)]
                    )
                    for d in datums
                )
            )

    async with serving(sock_dir, Upper()):
        call = await opened(stub.MapFn(), pb2)
        await send_batch(call, pb2, [("a", b"x"), ("b", b"y")])
        got = await answers(call, 2)
        await call.done_writing()
    assert [(r.id, outputs(r)) for r in got] == [("a", [b"X"]), ("b", [b"Y"])]
    assert got[0].results[0].metadata.user_metadata["g"].key_value == {"k": b"v"}


def missing_last(datums: list[Datum]) -> BatchResponses:
    return BatchResponses(*(BatchResponse.from_id(d.id) for d in datums[:-1]))


def unknown_id(datums: list[Datum]) -> BatchResponses:
    return BatchResponses(*(BatchResponse.from_id(d.id) for d in datums), BatchResponse("zz"))


def repeated_id(datums: list[Datum]) -> BatchResponses:
    return BatchResponses(*(BatchResponse.from_id(d.id) for d in [*datums, datums[0]]))


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (missing_last, "has no BatchResponse for 1 of the batch's 2 ids: 'b'"),
        (unknown_id, "answers ids that are not in the batch: 'zz'"),
        (repeated_id, "answers ids more than once: 'a'"),
    ],
)
async def test_not_exactly_one_response_per_id_fails_the_stream(
    sock_dir: Path,
    stub: Any,
    pb2: ModuleType,
    answer: Callable[[list[Datum]], BatchResponses],
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ids missing, unknown or repeated: INTERNAL naming them, nothing of the batch sent."""

    async def handler(datums: AsyncIterable[Datum]) -> BatchResponses:
        return answer([d async for d in datums])

    async with serving(sock_dir, handler):
        call = await opened(stub.MapFn(), pb2)
        await send_batch(call, pb2, [("a", b"1"), ("b", b"2")])
        err = await failure(call)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == (
        "UDF_EXECUTION_ERROR(udf): batch_mapper_instance returned a wrong type: "
        f"BatchResponses {problem}"
    )
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert problem in logged[0].getMessage()


async def test_a_handler_returning_before_the_batch_ends_misses_the_rest(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Ids that arrive after the handler returned are missing: checked at the batch's end."""
    returned = asyncio.Event()

    async def first_only(datums: AsyncIterable[Datum]) -> BatchResponses:
        async for datum in datums:
            returned.set()
            return BatchResponses(BatchResponse.from_id(datum.id))
        return BatchResponses()

    async with serving(sock_dir, first_only):
        call = await opened(stub.MapFn(), pb2)
        await call.write(request(pb2, "a"))
        await asyncio.wait_for(returned.wait(), WAIT)
        await send_batch(call, pb2, [("late", b"")])
        err = await failure(call)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "has no BatchResponse for 1 of the batch's 2 ids: 'late'" in err.details()


async def test_a_raising_handler_fails_the_stream_with_its_traceback(
    sock_dir: Path, stub: Any, pb2: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """INTERNAL UDF_EXECUTION_ERROR with DebugInfo, logged once; the server keeps serving."""
    calls = 0

    async def flaky(datums: AsyncIterable[Datum]) -> BatchResponses:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("batch exploded")
        return await split(datums)

    async with serving(sock_dir, flaky):
        call = await opened(stub.MapFn(), pb2)
        await send_batch(call, pb2, [("a", b"1"), ("b", b"2")])
        err = await failure(call)
        again = await opened(stub.MapFn(), pb2)
        await send_batch(again, pb2, [("a", b"1")])
        retried = await answers(again, 1)
        await again.done_writing()
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "UDF_EXECUTION_ERROR(udf): ValueError('batch exploded')"
    trailing = dict(err.trailing_metadata() or ())
    assert b"DebugInfo" in trailing["grpc-status-details-bin"]
    assert b"Traceback" in trailing["grpc-status-details-bin"]
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert [(r.id, outputs(r)) for r in retried] == [("a", [b"1"])]


async def test_wrong_result_types_fail_the_stream(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    async def messages_not_responses(datums: AsyncIterable[Datum]) -> Any:
        return [Message(d.value) async for d in datums]

    async with serving(sock_dir, messages_not_responses):
        call = await opened(stub.MapFn(), pb2)
        await send_batch(call, pb2, [("a", b"1")])
        err = await failure(call)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "expected BatchResponse objects, found Message" in err.details()


async def test_protocol_errors_are_invalid_argument(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    async with serving(sock_dir, split):
        no_handshake = stub.MapFn()
        await no_handshake.write(request(pb2, "a"))
        first = await failure(no_handshake)
        second = await opened(stub.MapFn(), pb2)
        await second.write(pb2.MapRequest(handshake=pb2.Handshake(sot=True)))
        again = await failure(second)
    assert first.code() == again.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "handshake" in first.details()
    assert "second handshake" in again.details()


async def test_a_bare_eot_gets_a_bare_eot(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    async with serving(sock_dir, split):
        call = await opened(stub.MapFn(), pb2)
        await call.write(eot(pb2))
        assert await answers(call, 0) == []
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_drain_answers_the_batch_in_progress_then_ends(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """On drain an idle stream ends UNAVAILABLE at once; one mid-batch reaches its EOT first."""
    reading = asyncio.Event()

    async def marked(datums: AsyncIterable[Datum]) -> BatchResponses:
        responses = BatchResponses()
        async for datum in datums:
            if datum.id == "mid":
                reading.set()
            responses.append(BatchResponse.from_id(datum.id))
        return responses

    server = BatchMapAsyncServer(
        marked,
        sock_path=str(sock_dir / "batchmap.sock"),
        server_info_file=str(sock_dir / "mapper-server-info"),
        shutdown_grace_period=60.0,
    )
    context = server.running()
    await context.__aenter__()
    try:
        idle, busy = await opened(stub.MapFn(), pb2), await opened(stub.MapFn(), pb2)
        await busy.write(request(pb2, "mid"))
        await asyncio.wait_for(reading.wait(), WAIT)
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        with pytest.raises(grpc.aio.AioRpcError) as idle_end:
            await read(idle)
        await send_batch(busy, pb2, [("last", b"")])
        got = await answers(busy, 2)
        with pytest.raises(grpc.aio.AioRpcError) as busy_end:
            await read(busy)
        with anyio.fail_after(PROMPT):
            await stopping
    except BaseException:
        await context.__aexit__(None, None, None)
        raise
    assert idle_end.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [r.id for r in got] == ["mid", "last"]
    assert busy_end.value.code() == grpc.StatusCode.UNAVAILABLE


SCRIPT = """
from pathlib import Path
from pynumaflow.batchmapper import BatchMapAsyncServer, BatchResponse, BatchResponses, Message

async def handler(datums):
    responses = BatchResponses()
    async for datum in datums:
        if datum.value == b"mark":
            Path(__file__).with_name("started").touch()
        responses.append(BatchResponse.with_msgs(datum.id, [Message(datum.value)]))
    return responses

BatchMapAsyncServer(handler, shutdown_grace_period=60).start()
"""


async def test_sigterm_lets_the_batch_in_progress_reach_its_eot(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM to a real process: the batch being read is answered, then the process exits 0."""
    pb2 = stubs["map_pb2"]
    proc = start_script(SCRIPT, tmp_path)
    try:
        info = await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "mapper-server-info")
        target = f"unix://{tmp_path / 'batchmap.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = await opened(stubs["map_grpc"].MapStub(channel).MapFn(), pb2)
            await call.write(request(pb2, "a", b"mark"))
            await eventually((tmp_path / "started").exists, WAIT)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await send_batch(call, pb2, [("b", b"later")])
            got = await answers(call, 2)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await read(call)
        code, output = await asyncio.to_thread(finish, proc)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert info["metadata"] == {"MAP_MODE": "batch-map"}
    assert code == 0, output
    assert [(r.id, outputs(r)) for r in got] == [("a", [b"mark"]), ("b", [b"later"])]
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert exited - signalled < PROMPT
