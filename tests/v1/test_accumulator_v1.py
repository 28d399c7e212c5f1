"""accumulator.v1 over a real socket with grpcio stubs from our protos.

What the 0.14.0 wheel's JSON client cannot show (far-future windows), SIGTERM, server-info.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rawh2 import Outcome, RawConnection, frame

from pynumaflow.accumulator import AccumulatorAsyncServer, Datum, Message, NonBlockingIterator

from conftest import CHANNEL_OPTIONS
from helpers import converse, eventually
from procs import finish, start_script, wait_for_server_info

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# Numaflow 1.8.1+: OPEN/APPEND windows end at chrono's DateTime<Utc>::MAX_UTC.
MAX_UTC = Timestamp(seconds=8210266876799, nanos=999999999)


def window(pb2: ModuleType, keys: list[str], end: Timestamp) -> Any:
    return pb2.KeyedWindow(start=Timestamp(seconds=100), end=end, slot="0", keys=keys)


def request(pb2: ModuleType, event: str, keys: list[str], value: bytes, second: int) -> Any:
    op = pb2.AccumulatorRequest.WindowOperation
    return pb2.AccumulatorRequest(
        payload=pb2.Payload(
            keys=keys,
            value=value,
            event_time=Timestamp(seconds=second),
            watermark=Timestamp(seconds=second - 1),
            id=f"id-{second}",
        ),
        operation=op(event=getattr(op, event), keyedWindow=window(pb2, keys, MAX_UTC)),
    )


def close(pb2: ModuleType, keys: list[str], end: Timestamp) -> Any:
    op = pb2.AccumulatorRequest.WindowOperation
    return pb2.AccumulatorRequest(operation=op(event=op.CLOSE, keyedWindow=window(pb2, keys, end)))


def raw_call(sock: Path, method: str, body: bytes) -> Outcome:
    """Send ``body`` in one DATA frame on a new ``method`` stream, half-close, read the answer."""
    connection = RawConnection(str(sock))
    try:
        stream_id = connection.open(method)
        connection.send(stream_id, body, end_stream=True)
        return connection.wait(stream_id, timeout=30)
    finally:
        connection.close()


async def forward(datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]) -> None:
    async for d in datums:
        await output.put(Message.from_datum(d))


async def test_the_far_future_window_end_of_1_8_1_is_served(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    """Windows ending in year 262142 are never converted; the EOF echoes the CLOSE's."""
    pb2 = stubs["accumulator_pb2"]
    server = AccumulatorAsyncServer(
        forward,
        sock_path=str(sock_dir / "accumulator.sock"),
        server_info_file=str(sock_dir / "accumulator-server-info"),
    )
    close_end = Timestamp(seconds=1_000_060, nanos=5)
    async with server.running():
        target = f"unix://{sock_dir / 'accumulator.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["accumulator_grpc"].AccumulatorStub(channel)
            talk = await converse(
                stub.AccumulateFn(),
                [
                    request(pb2, "OPEN", ["k"], b"1", 1_000_000),
                    request(pb2, "APPEND", ["k"], b"2", 1_000_010),
                    close(pb2, ["k"], close_end),
                ],
                await_first=False,
            )
    assert talk.code == grpc.StatusCode.OK, talk.details
    first, second, eof = talk.responses
    assert [r.payload.value for r in (first, second)] == [b"1", b"2"]
    assert [r.payload.id for r in (first, second)] == ["id-1000000", "id-1000010"]
    assert second.window.end == Timestamp(seconds=1_000_009)
    assert list(second.window.keys) == ["k"]
    assert eof.EOF
    assert not eof.HasField("payload")
    assert eof.window == window(pb2, ["k"], close_end)


SCRIPT = """
import asyncio
from pathlib import Path
from pynumaflow.accumulator import AccumulatorAsyncServer, Message

async def handler(datums, output):
    async for d in datums:
        Path(__file__).with_name("started").touch()
        await output.put(Message.from_datum(d))
    await output.put(Message(b"flushed"))

AccumulatorAsyncServer(handler, shutdown_grace_period=30).start()
"""


async def test_sigterm_serves_the_stream_until_the_platform_half_closes(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """On SIGTERM the open stream is not cut.

    Once the client half-closes, every key flushes and gets its EOF, the stream ends OK
    and the process exits 0.
    """
    pb2 = stubs["accumulator_pb2"]
    proc = start_script(SCRIPT, tmp_path)
    try:
        info = await asyncio.to_thread(
            wait_for_server_info, proc, tmp_path / "accumulator-server-info"
        )
        target = f"unix://{tmp_path / 'accumulator.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = stubs["accumulator_grpc"].AccumulatorStub(channel).AccumulateFn()
            await call.write(request(pb2, "OPEN", ["k"], b"1", 50))
            first = await call.read()
            await eventually((tmp_path / "started").exists, 10)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the server drains; the stream stays up
            await call.write(request(pb2, "APPEND", ["k"], b"2", 60))
            second = await call.read()
            await call.done_writing()
            rest = []
            while (reply := await call.read()) is not grpc.aio.EOF:
                rest.append(reply)
            code = await call.code()
        exit_code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert info["minimum_numaflow_version"] == "1.6.0-z"
    assert info["metadata"] == {}
    assert (first.payload.value, second.payload.value) == (b"1", b"2")
    flushed, eof = rest
    assert flushed.payload.value == b"flushed"
    assert eof.EOF
    assert list(eof.window.keys) == ["k"]
    assert eof.window.end == Timestamp(seconds=59)
    assert code == grpc.StatusCode.OK
    assert exit_code == 0, output


async def test_a_malformed_request_is_refused(stubs: dict[str, ModuleType], sock_dir: Path) -> None:
    server = AccumulatorAsyncServer(
        forward,
        sock_path=str(sock_dir / "accumulator.sock"),
        server_info_file=str(sock_dir / "accumulator-server-info"),
    )
    async with server.running():
        target = f"unix://{sock_dir / 'accumulator.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = channel.stream_stream(
                "/accumulator.v1.Accumulator/AccumulateFn",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )()
            await call.write(b"\x0a\x05\x0a")  # a payload overrunning its message
            await call.done_writing()
            code = await call.code()
            details = await call.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("malformed AccumulatorRequest")


async def test_the_datum_shows_user_and_system_metadata(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    """Numaflow 1.7+ metadata reaches the handler, user and system groups alike."""
    pb2, common = stubs["accumulator_pb2"], stubs["common_pb2"]
    seen: list[tuple[Any, Any]] = []

    async def look(datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]) -> None:
        async for d in datums:
            seen.append((d.user_metadata.value("u", "k"), d.system_metadata.value("s", "k")))
            await output.put(Message.from_datum(d))

    request_ = request(pb2, "OPEN", ["k"], b"1", 10)
    request_.payload.metadata.CopyFrom(
        common.Metadata(
            user_metadata={"u": common.KeyValueGroup(key_value={"k": b"user"})},
            sys_metadata={"s": common.KeyValueGroup(key_value={"k": b"system"})},
        )
    )
    server = AccumulatorAsyncServer(
        look,
        sock_path=str(sock_dir / "accumulator.sock"),
        server_info_file=str(sock_dir / "accumulator-server-info"),
    )
    async with server.running():
        target = f"unix://{sock_dir / 'accumulator.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["accumulator_grpc"].AccumulatorStub(channel)
            talk = await converse(stub.AccumulateFn(), [request_], await_first=False)
    assert talk.code == grpc.StatusCode.OK, talk.details
    assert seen == [(b"user", b"system")]


async def test_the_results_of_a_loop_pass_leave_in_one_data_frame(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    """300 datums over 10 keys sent at once: a few DATA frames, not one per response.

    Every datum is passed on in its key's order, then an EOF per key echoes its CLOSE.
    """
    pb2 = stubs["accumulator_pb2"]
    keys = [[f"k{k}"] for k in range(10)]
    requests = [
        request(pb2, "OPEN" if i < 10 else "APPEND", keys[i % 10], str(i).encode(), 1000 + i)
        for i in range(300)
    ]
    requests += [close(pb2, k, Timestamp(seconds=5000)) for k in keys]
    body = b"".join(frame(r.SerializeToString()) for r in requests)
    server = AccumulatorAsyncServer(
        forward,
        sock_path=str(sock_dir / "accumulator.sock"),
        server_info_file=str(sock_dir / "accumulator-server-info"),
    )
    async with server.running():
        method = "/accumulator.v1.Accumulator/AccumulateFn"
        outcome = await asyncio.to_thread(raw_call, sock_dir / "accumulator.sock", method, body)
    assert outcome.status == 0, outcome.message
    responses = [pb2.AccumulatorResponse.FromString(m) for m in outcome.messages()]
    for k, key in enumerate(keys):
        mine = [r for r in responses if list(r.window.keys) == key]
        assert [r.payload.value for r in mine[:-1]] == [str(i).encode() for i in range(k, 300, 10)]
        assert mine[-1].EOF
        assert mine[-1].window == window(pb2, key, Timestamp(seconds=5000))
    assert len(responses) == 310
    assert outcome.data_frames <= 20, outcome.data_frames  # one per response before
