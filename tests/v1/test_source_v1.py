"""source.v1 (Numaflow >= 1.4) over source.sock: handshakes, read batches and their EOT, acks."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import grpc
import pytest
from rawh2 import Outcome, RawConnection, frame
from sources import Failing, MemorySource
from test_drain import ends_with

from pynumaflow.sourcer import (
    Message,
    Offset,
    ReadOutput,
    ReadRequest,
    SourceAsyncServer,
    Sourcer,
)

from conftest import CHANNEL_OPTIONS
from helpers import converse, eventually, held_open
from procs import finish, start_script, wait_for_server_info

pytestmark = pytest.mark.anyio
UTC = timezone.utc
WAIT = 10.0


@pytest.fixture
def pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["source_pb2"]


@pytest.fixture
async def stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    target = f"unix://{sock_dir / 'source.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["source_grpc"].SourceStub(channel)


def serve(source: Sourcer, sock_dir: Path) -> SourceAsyncServer:
    return SourceAsyncServer(
        source,
        sock_path=str(sock_dir / "source.sock"),
        server_info_file=str(sock_dir / "sourcer-server-info"),
    )


def read_handshake(pb2: ModuleType) -> Any:
    return pb2.ReadRequest(handshake=pb2.Handshake(sot=True))


def read(pb2: ModuleType, num: int, timeout_ms: int = 1000) -> Any:
    return pb2.ReadRequest(
        request=pb2.ReadRequest.Request(num_records=num, timeout_in_ms=timeout_ms)
    )


def ack_handshake(pb2: ModuleType) -> Any:
    return pb2.AckRequest(handshake=pb2.Handshake(sot=True))


def ack(pb2: ModuleType, *indexes: int) -> Any:
    offsets = [pb2.Offset(offset=str(i).encode(), partition_id=3) for i in indexes]
    return pb2.AckRequest(request=pb2.AckRequest.Request(offsets=offsets))


def batches(responses: list[Any]) -> list[list[bytes]]:
    """The payloads of each batch, split at the EOTs (the handshake answer left out)."""
    out: list[list[bytes]] = [[]]
    for response in responses:
        if response.HasField("handshake"):
            continue
        if response.status.eot:
            out.append([])
        else:
            out[-1].append(response.result.payload)
    assert out[-1] == [], "the last batch has no EOT"
    return out[:-1]


async def test_read_handshake_then_batches_each_ending_with_eot(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """The handshake is answered first; each read gets its messages, then one EOT."""
    source = MemorySource(limit=5)
    async with serve(source, sock_dir).running():
        talk = await converse(
            stub.ReadFn(), [read_handshake(pb2), read(pb2, 3), read(pb2, 3), read(pb2, 3)]
        )
    assert talk.code == grpc.StatusCode.OK
    first = talk.responses[0]
    assert first.handshake.sot
    assert first.HasField("status")
    assert not first.status.eot
    assert not first.HasField("result")
    assert batches(talk.responses) == [[b"0", b"1", b"2"], [b"3", b"4"], []]
    result = talk.responses[1].result
    assert (result.offset.offset, result.offset.partition_id) == (b"0", 3)
    assert list(result.keys) == ["k"]
    assert dict(result.headers) == {"h": "0"}
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert (result.event_time.seconds, result.event_time.nanos) == (int(moment), 0)
    assert talk.responses[2].result.event_time.nanos == 1000
    assert [r.num_records for r in source.reads] == [3, 3, 3]
    assert source.acked == []  # the server never acks on its own


class Upstream(MemorySource):
    """Reads from a queue that is slow or empty: waits for each message."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.cancelled = 0

    async def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:
        try:
            for _ in range(datum.num_records):
                index = await self.queue.get()
                await output.put(Message(b"x", Offset(str(index).encode(), 0), datetime.now()))
                self.in_flight.add(index)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_an_empty_upstream_is_answered_with_an_eot_by_the_timeout(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """A read from an empty or slow upstream ends at the timeout with what was read."""
    source = Upstream()
    async with serve(source, sock_dir).running():
        call = stub.ReadFn()
        await call.write(read_handshake(pb2))
        assert (await asyncio.wait_for(call.read(), WAIT)).handshake.sot
        started = time.monotonic()
        await call.write(read(pb2, 10, timeout_ms=300))
        eot = await asyncio.wait_for(call.read(), WAIT)
        elapsed = time.monotonic() - started
        assert eot.status.eot
        assert not eot.HasField("result")
        assert 0.25 <= elapsed < 3.0
        source.queue.put_nowait(7)  # a slow upstream: one message, then nothing
        await call.write(read(pb2, 10, timeout_ms=300))
        got = await asyncio.wait_for(call.read(), WAIT)
        assert got.result.offset.offset == b"7"
        assert (await asyncio.wait_for(call.read(), WAIT)).status.eot
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert source.cancelled == 2
    assert source.in_flight == {7}


async def test_acks_are_answered_one_each_after_the_handler(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Ack handshake first, with result.success; then exactly one response per request."""
    source = MemorySource()
    async with serve(source, sock_dir).running():
        talk = await converse(stub.AckFn(), [ack_handshake(pb2), ack(pb2, 1, 2), ack(pb2, 0)])
    assert talk.code == grpc.StatusCode.OK
    first, *answers = talk.responses
    assert first.handshake.sot
    assert first.result.HasField("success")
    assert len(answers) == 2
    assert all(a.result.HasField("success") and not a.HasField("handshake") for a in answers)
    assert source.acked == [1, 2, 0]


async def test_offsets_read_on_a_dropped_stream_stay_unacked_and_ack_later(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """A read stream that drops before the ack loses nothing: the offsets wait for an ack."""
    source = MemorySource()
    async with serve(source, sock_dir).running():
        call = stub.ReadFn()
        await call.write(read_handshake(pb2))
        await call.write(read(pb2, 2))
        for _ in range(3):  # handshake, two results
            await asyncio.wait_for(call.read(), WAIT)
        call.cancel()
        await asyncio.sleep(0.1)
        assert source.in_flight == {0, 1}
        assert source.acked == []
        talk = await converse(stub.AckFn(), [ack_handshake(pb2), ack(pb2, 0, 1)])
        assert talk.code == grpc.StatusCode.OK
    assert source.acked == [0, 1]
    assert source.in_flight == set()


async def test_nack_takes_every_request_of_the_repeated_shape(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """1.8.2+ sends one Request per offset (with nack_options): all reach the handler."""
    source = MemorySource()
    source.in_flight = {4, 5}
    requests = [
        pb2.NackRequest.Request(
            offsets=[pb2.Offset(offset=b"4", partition_id=3)],
            nack_options={"reason": "later", "delay": 500},
        ),
        pb2.NackRequest.Request(offsets=[pb2.Offset(offset=b"5", partition_id=3)]),
    ]
    async with serve(source, sock_dir).running():
        answer = await stub.NackFn(pb2.NackRequest(request=requests))
    assert answer.result.HasField("success")
    assert source.nacked == [4, 5]
    assert source.in_flight == set()


@pytest.mark.parametrize("total", [None, 8])
async def test_pending_and_partitions(
    total: Optional[int], sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Pending is the backlog; partitions always carry result, the total only when known."""
    empty = pb2.google_dot_protobuf_dot_empty__pb2.Empty()
    source = MemorySource(limit=10, total=total)
    async with serve(source, sock_dir).running():
        pending = await stub.PendingFn(empty)
        partitions = await stub.PartitionsFn(empty)
    assert pending.HasField("result")
    assert pending.result.count == 10
    assert list(partitions.result.partitions) == [3]
    assert partitions.result.HasField("total_partitions") == (total is not None)
    assert partitions.result.total_partitions == (total or 0)


@pytest.mark.parametrize("where", ["read", "ack", "pending"])
async def test_a_handler_error_fails_the_call_internal_logged_once(
    where: str,
    sock_dir: Path,
    stub: Any,
    pb2: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INTERNAL UDF_EXECUTION_ERROR(udsource), no EOT after a failed read; the server serves on."""
    caplog.set_level(logging.ERROR, logger="pynumaflow")
    stop = asyncio.Event()
    async with serve(Failing(where), sock_dir).running():
        if where == "pending":
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PendingFn(pb2.google_dot_protobuf_dot_empty__pb2.Empty())
            code, details = info.value.code(), info.value.details()
            responses: list[Any] = []
        else:
            if where == "read":
                call = stub.ReadFn(held_open([read_handshake(pb2), read(pb2, 2)], stop))
            else:
                call = stub.AckFn(held_open([ack_handshake(pb2), ack(pb2, 1)], stop))
            responses = [r async for r in _until_end(call)]
            code, details = await call.code(), await call.details()
        stop.set()
        ready = await stub.IsReady(pb2.google_dot_protobuf_dot_empty__pb2.Empty())
    assert ready.ready
    assert code == grpc.StatusCode.INTERNAL
    assert details.startswith("UDF_EXECUTION_ERROR(udsource): RuntimeError(")
    if where == "read":
        assert [r.result.payload for r in responses[1:]] == [b"a"]  # no EOT
        assert not any(r.status.eot for r in responses)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


async def _until_end(call: Any) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError:
        return


async def test_the_first_read_message_must_be_a_handshake(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    async with serve(MemorySource(), sock_dir).running():
        talk = await converse(stub.ReadFn(), [read(pb2, 1)], await_first=False)
    assert talk.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "handshake" in talk.details


def test_read_handler_must_be_async() -> None:
    class SyncRead(MemorySource):
        def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match="read_handler must be a coroutine function"):
        SourceAsyncServer(SyncRead())


def test_a_missing_handler_is_refused() -> None:
    with pytest.raises(TypeError, match=r"sourcer_instance\.read_handler must be callable"):
        SourceAsyncServer(object())  # type: ignore[arg-type]


# --- SIGTERM to a real server process ------------------------------------------------------

GRACE = 60.0
PROMPT = 10.0

SOURCE_SCRIPT = f"""
import asyncio
from datetime import datetime
from pathlib import Path
from pynumaflow.sourcer import (
    Message, Offset, PartitionsResponse, PendingResponse, SourceAsyncServer, Sourcer,
)

class Slow(Sourcer):
    async def read_handler(self, datum, output):
        Path(__file__).with_name("started").touch()
        await asyncio.sleep(1)
        await output.put(Message(b"late", Offset(b"1", 0), datetime.now()))

    async def ack_handler(self, ack_request):
        pass

    async def nack_handler(self, nack_request):
        pass

    async def pending_handler(self):
        return PendingResponse(0)

    async def active_partitions_handler(self):
        return PartitionsResponse([0])

SourceAsyncServer(Slow(), shutdown_grace_period={GRACE}).start()
"""


async def test_sigterm_finishes_the_read_batch_in_progress_then_ends_the_streams(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM: an idle ack stream ends UNAVAILABLE at once; a read batch gets its EOT first."""
    pb2 = stubs["source_pb2"]
    proc = start_script(SOURCE_SCRIPT, tmp_path)
    try:
        info = await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "sourcer-server-info")
        target = f"unix://{tmp_path / 'source.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["source_grpc"].SourceStub(channel)
            reads, acks = stub.ReadFn(), stub.AckFn()
            await reads.write(read_handshake(pb2))
            await acks.write(ack_handshake(pb2))
            assert (await asyncio.wait_for(reads.read(), WAIT)).handshake.sot
            assert (await asyncio.wait_for(acks.read(), WAIT)).handshake.sot
            await reads.write(read(pb2, 5, timeout_ms=5000))
            await eventually((tmp_path / "started").exists, WAIT)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            ack_code = await ends_with(acks)
            late = await asyncio.wait_for(reads.read(), WAIT)
            eot = await asyncio.wait_for(reads.read(), WAIT)
            read_code = await ends_with(reads)
        code, output = await asyncio.to_thread(finish, proc)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    assert (info["protocol"], info["metadata"]) == ("uds", {})
    assert info["minimum_numaflow_version"] == "1.4.0-z"
    assert ack_code == grpc.StatusCode.UNAVAILABLE
    assert late.result.payload == b"late"
    assert eot.status.eot
    assert read_code == grpc.StatusCode.UNAVAILABLE
    assert exited - signalled < PROMPT


async def test_the_udsource_role_serves_it_and_another_role_refuses(
    sock_dir: Path, stub: Any, pb2: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NUMAFLOW_UD_CONTAINER_TYPE=udsource: source.sock; a udf container cannot serve it."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udsource")
    async with serve(MemorySource(limit=1), sock_dir).running():
        talk = await converse(stub.ReadFn(), [read_handshake(pb2), read(pb2, 5)])
    assert batches(talk.responses) == [[b"0"]]
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")
    with pytest.raises(ValueError, match="this container must serve map or map stream or reduce"):
        serve(MemorySource(), sock_dir)


async def test_the_timeout_ends_the_batch_even_when_its_timer_runs_early(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """The loop runs a timer up to its clock resolution early (15.6 ms on some systems).

    Here the resolution is 50 ms and a ticker wakes the loop every 5 ms, so the read's
    timer runs before its deadline: the batch must end all the same.
    """
    loop = asyncio.get_running_loop()
    resolution = loop._clock_resolution  # type: ignore[attr-defined]

    async def tick() -> None:
        for _ in range(int(WAIT / 0.005)):  # cancelled long before
            await asyncio.sleep(0.005)

    ticker = asyncio.ensure_future(tick())
    loop._clock_resolution = 0.05  # type: ignore[attr-defined]
    try:
        async with serve(Upstream(), sock_dir).running():
            talk = await asyncio.wait_for(
                converse(stub.ReadFn(), [read_handshake(pb2), read(pb2, 5, timeout_ms=200)]), WAIT
            )
    finally:
        loop._clock_resolution = resolution  # type: ignore[attr-defined]
        ticker.cancel()
    assert talk.code == grpc.StatusCode.OK
    assert batches(talk.responses) == [[]]


async def test_a_read_batch_leaves_in_a_few_data_frames(sock_dir: Path, pb2: ModuleType) -> None:
    """300 messages put for one read: a few DATA frames, not one per message.

    All of them in order, then the EOT; a frame per loop pass of the sender.
    """
    body = b"".join(frame(m.SerializeToString()) for m in (read_handshake(pb2), read(pb2, 300)))
    async with serve(MemorySource(), sock_dir).running():
        outcome = await asyncio.to_thread(_raw_read, sock_dir / "source.sock", body)
    assert outcome.status == 0, outcome.message
    responses = [pb2.ReadResponse.FromString(m) for m in outcome.messages()]
    assert batches(responses) == [[str(i).encode() for i in range(300)]]
    assert outcome.data_frames <= 20, outcome.data_frames  # 302 before


def _raw_read(sock: Path, body: bytes) -> Outcome:
    connection = RawConnection(str(sock))
    try:
        stream_id = connection.open("/source.v1.Source/ReadFn")
        connection.send(stream_id, body, end_stream=True)
        return connection.wait(stream_id, timeout=30)
    finally:
        connection.close()
