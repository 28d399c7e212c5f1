"""Shutdown: the long-lived v1 streams end promptly on drain; stop never waits on clients.

The platform keeps one map.v1, sourcetransformer.v1 or sink.v1 stream open per
connection and half-closes it only when it stops itself. On SIGTERM such a stream ends
``UNAVAILABLE`` as soon as it owes the client nothing (every request read answered, no
sink batch in progress), instead of holding the drain for the whole grace period. And
from Python 3.12 asyncio's ``Server.wait_closed`` waits for every client connection to
close: the server hangs up on its clients first, so stopping cannot hang on one.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import anyio
import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from test_map_v1 import handshake as map_handshake
from test_map_v1 import request as map_request
from test_sink_v1 import batch, eot
from test_sink_v1 import request as sink_request
from test_transform_v1 import handshake as transform_handshake
from test_transform_v1 import request as transform_request

from pynumaflow.function import AsyncServer, Datum, Message, Messages, MessageT, MessageTs
from pynumaflow.sink import AsyncSink, Response, Responses

from conftest import CHANNEL_OPTIONS
from helpers import datum_request, eventually
from procs import finish, start_script, wait_for_server_info

pytestmark = pytest.mark.anyio

GRACE = 60.0  # the servers' grace period: every drain here must end long before it
PROMPT = 10.0  # "long before": generous for a loaded 2-core machine
WAIT = 10.0


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), WAIT)


async def ends_with(call: Any) -> grpc.StatusCode:
    """Read the call to its end, which must come without another response."""
    try:
        message = await read(call)
    except grpc.aio.AioRpcError as err:
        return err.code()
    assert message is grpc.aio.EOF, message
    return await call.code()  # type: ignore[no-any-return]


@pytest.fixture
def channel_to(sock_dir: Path) -> Callable[[str], grpc.aio.Channel]:
    def open_channel(sock_name: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix://{sock_dir / sock_name}", options=CHANNEL_OPTIONS)

    return open_channel


# --- v1 streams end on drain (in process) --------------------------------------------------


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


async def split(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    yield Message(datum.value)


def keep_time(keys: list[str], datum: Datum) -> MessageTs:
    return MessageTs(MessageT(datum.value, datum.event_time))


# kind: (AsyncServer handler argument, handler, socket, proto (STUBS, pb2), handshake, request)
STREAMS = {
    "map": ("map_handler", echo, "map.sock", "map", map_handshake, map_request),
    "map-stream": (
        "map_stream_handler",
        split,
        "mapstream.sock",
        "map",
        map_handshake,
        map_request,
    ),
    "transformer": (
        "mapt_handler",
        keep_time,
        "sourcetransform.sock",
        "transform",
        transform_handshake,
        transform_request,
    ),
}
STUBS = {
    "map": ("map_grpc", "MapStub", "MapFn"),
    "transform": (
        "transform_grpc",
        "SourceTransformStub",
        "SourceTransformFn",
    ),
}


@pytest.mark.parametrize("kind", list(STREAMS))
async def test_idle_v1_stream_ends_unavailable_at_once_on_drain(
    kind: str,
    sock_dir: Path,
    stubs: dict[str, ModuleType],
    channel_to: Callable[[str], grpc.aio.Channel],
) -> None:
    """A stream whose requests are all answered ends UNAVAILABLE when the drain starts."""
    option, handler, sock_name, proto, make_handshake, make_request = STREAMS[kind]
    grpc_module, stub_class, method = STUBS[proto]
    pb2 = stubs[f"{proto}_pb2"]
    server = AsyncServer(
        **{option: handler},
        sock_path=str(sock_dir / "function.sock"),
        server_info_file=str(sock_dir / "server-info"),
        shutdown_grace_period=GRACE,
    )
    async with channel_to(sock_name) as channel:
        stub = getattr(stubs[grpc_module], stub_class)(channel)
        context = server.running()
        await context.__aenter__()
        call = getattr(stub, method)()
        await call.write(make_handshake(pb2))
        assert (await read(call)).handshake.sot
        await call.write(make_request(pb2, "id-1", b"v"))
        answer = await read(call)
        if kind == "map-stream":
            assert (await read(call)).status.eot
        started = time.monotonic()
        with anyio.fail_after(PROMPT):
            await context.__aexit__(None, None, None)
        took = time.monotonic() - started
        code = await ends_with(call)
    assert answer.id == "id-1"
    assert answer.results[0].value == b"v"
    assert code == grpc.StatusCode.UNAVAILABLE
    assert took < PROMPT


async def test_map_stream_answers_requests_read_before_the_drain(
    sock_dir: Path, stubs: dict[str, ModuleType], channel_to: Callable[[str], grpc.aio.Channel]
) -> None:
    """Requests in progress when the drain starts are answered, then the stream ends."""
    pb2 = stubs["map_pb2"]
    started: list[bytes] = []
    all_started = asyncio.Event()
    release = asyncio.Event()

    async def waits(keys: list[str], datum: Datum) -> Messages:
        started.append(datum.value)
        if len(started) == 3:
            all_started.set()
        await release.wait()
        return Messages(Message(datum.value))

    server = AsyncServer(
        map_handler=waits,
        sock_path=str(sock_dir / "function.sock"),
        server_info_file=str(sock_dir / "server-info"),
        shutdown_grace_period=GRACE,
    )
    async with channel_to("map.sock") as channel:
        stub = stubs["map_grpc"].MapStub(channel)
        context = server.running()
        await context.__aenter__()
        call = stub.MapFn()
        await call.write(map_handshake(pb2))
        await read(call)
        for i in range(3):
            await call.write(map_request(pb2, f"id-{i}", str(i).encode()))
        await asyncio.wait_for(all_started.wait(), WAIT)
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        await asyncio.sleep(0.3)
        assert not stopping.done()  # the drain waits for the answers
        release.set()
        answers = [await read(call) for _ in range(3)]
        code = await ends_with(call)
        with anyio.fail_after(PROMPT):
            await stopping
    assert sorted((a.id, a.results[0].value) for a in answers) == [
        ("id-0", b"0"),
        ("id-1", b"1"),
        ("id-2", b"2"),
    ]
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_sink_stream_finishes_its_batch_then_ends_on_drain(
    sock_dir: Path, stubs: dict[str, ModuleType], channel_to: Callable[[str], grpc.aio.Channel]
) -> None:
    """A sink stream mid-batch is answered up to its EOT, then ends; an idle one at once."""
    pb2 = stubs["sinkv1_pb2"]
    reading = asyncio.Event()

    async def ack(datums: AsyncIterator[Any]) -> Responses:
        ids = []
        async for datum in datums:
            if datum.id == "second-0":
                reading.set()
            ids.append(datum.id)
        return Responses(*(Response.as_success(i) for i in ids))

    server = AsyncSink(
        ack,
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "server-info"),
        shutdown_grace_period=GRACE,
    )
    async with channel_to("sink.sock") as channel:
        stub = stubs["sinkv1_grpc"].SinkStub(channel)
        context = server.running()
        await context.__aenter__()
        idle, busy = stub.SinkFn(), stub.SinkFn()
        for call in (idle, busy):
            await call.write(pb2.SinkRequest(handshake=pb2.Handshake(sot=True)))
            assert (await read(call)).handshake.sot
            for item in [*batch(pb2, 2, "first"), eot(pb2)]:
                await call.write(item)
            assert len((await read(call)).results) == 2
            assert (await read(call)).status.eot
        await busy.write(sink_request(pb2, "second-0"))
        await asyncio.wait_for(reading.wait(), WAIT)
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        idle_code = await ends_with(idle)  # while the other stream's batch waits for its EOT
        await busy.write(sink_request(pb2, "second-1"))
        await busy.write(eot(pb2))
        results = (await read(busy)).results
        assert (await read(busy)).status.eot
        busy_code = await ends_with(busy)
        with anyio.fail_after(PROMPT):
            await stopping
    assert idle_code == grpc.StatusCode.UNAVAILABLE
    assert [(r.id, r.status) for r in results] == [("second-0", 0), ("second-1", 0)]
    assert busy_code == grpc.StatusCode.UNAVAILABLE


# --- SIGTERM to a real server process ------------------------------------------------------

MAP_SCRIPT = f"""
import asyncio
from pathlib import Path
from pynumaflow.function import AsyncServer, Message, Messages

async def handler(keys, datum):
    if datum.value == b"slow":
        Path(__file__).with_name("started").touch()
        await asyncio.sleep(2)
    return Messages(Message(datum.value))

server = AsyncServer(map_handler=handler, protocols=["v1"], shutdown_grace_period={GRACE})
asyncio.run(server.start())
"""

SINK_SCRIPT = f"""
import asyncio
from pathlib import Path
from pynumaflow.sink import AsyncSink, Response, Responses

async def handler(datums):
    ids = []
    async for datum in datums:
        if datum.value == b"mark":
            Path(__file__).with_name("started").touch()
        ids.append(datum.id)
    return Responses(*(Response.as_success(i) for i in ids))

asyncio.run(AsyncSink(handler, protocols=["v1"], shutdown_grace_period={GRACE}).start())
"""


async def test_sigterm_ends_idle_map_streams_and_answers_requests_in_flight(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM: an idle map.v1 stream ends at once, a request in progress gets its answer.

    The process then exits 0 long before its 60 s grace period.
    """
    pb2 = stubs["map_pb2"]
    proc = start_script(MAP_SCRIPT, tmp_path)
    try:
        await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "mapper-server-info")
        target = f"unix://{tmp_path / 'map.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["map_grpc"].MapStub(channel)
            idle, busy = stub.MapFn(), stub.MapFn()
            for call in (idle, busy):
                await call.write(map_handshake(pb2))
                assert (await read(call)).handshake.sot
            await idle.write(map_request(pb2, "early", b"early"))
            early = await read(idle)
            await busy.write(map_request(pb2, "slow", b"slow"))
            await eventually((tmp_path / "started").exists, WAIT)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            idle_code = await ends_with(idle)
            idle_ended = time.monotonic()
            slow = await read(busy)
            slow_answered = time.monotonic()
            busy_code = await ends_with(busy)
        code, output = await asyncio.to_thread(finish, proc)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    assert (early.id, early.results[0].value) == ("early", b"early")
    assert idle_code == grpc.StatusCode.UNAVAILABLE
    assert idle_ended < slow_answered  # it did not wait for the other stream's request
    assert (slow.id, slow.results[0].value) == ("slow", b"slow")
    assert busy_code == grpc.StatusCode.UNAVAILABLE
    assert exited - signalled < PROMPT
    assert not (tmp_path / "map.sock").exists()


async def test_sigterm_lets_the_sink_batch_in_progress_reach_its_eot(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM: an idle sink.v1 stream ends at once; one mid-batch is answered, then ends.

    The process then exits 0 long before its 60 s grace period.
    """
    pb2 = stubs["sinkv1_pb2"]
    proc = start_script(SINK_SCRIPT, tmp_path)
    try:
        await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "sinker-server-info")
        target = f"unix://{tmp_path / 'sink.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["sinkv1_grpc"].SinkStub(channel)
            idle, busy = stub.SinkFn(), stub.SinkFn()
            for call in (idle, busy):
                await call.write(pb2.SinkRequest(handshake=pb2.Handshake(sot=True)))
                assert (await read(call)).handshake.sot
            await busy.write(sink_request(pb2, "a", b"mark"))
            await eventually((tmp_path / "started").exists, WAIT)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            idle_code = await ends_with(idle)
            await busy.write(sink_request(pb2, "b", b"later"))
            await busy.write(eot(pb2))
            results = (await read(busy)).results
            assert (await read(busy)).status.eot
            busy_code = await ends_with(busy)
        code, output = await asyncio.to_thread(finish, proc)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    assert idle_code == grpc.StatusCode.UNAVAILABLE
    assert [r.id for r in results] == ["a", "b"]
    assert busy_code == grpc.StatusCode.UNAVAILABLE
    assert exited - signalled < PROMPT


# --- stop hangs up on clients (Python 3.12+ wait_closed) -------------------------------------


async def test_stop_hangs_up_on_a_client_keeping_its_connection_open(
    sock_path: str, info_path: str, stubs: dict[str, ModuleType]
) -> None:
    """Stopping returns while a client's connection is still open, and closes that connection.

    On Python 3.12+ this hangs without the hang-up before ``wait_closed``.
    """
    pb2 = stubs["fn_pb2"]
    server = AsyncServer(map_handler=echo, sock_path=sock_path, server_info_file=info_path)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # connected, never says a word
    async with grpc.aio.insecure_channel(f"unix://{sock_path}") as channel:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        with anyio.fail_after(PROMPT):
            async with server.running():
                assert (await stub.MapFn(datum_request(pb2, b"x"))).elements[0].value == b"x"
                raw.connect(sock_path)
                raw.settimeout(WAIT)
                greeting = await asyncio.to_thread(raw.recv, 65536)  # accepted: SETTINGS
                assert channel.get_state() == grpc.ChannelConnectivity.READY
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), WAIT)
    with raw:
        goaway = b""
        while chunk := raw.recv(65536):  # the server's GOAWAY, then EOF
            goaway += chunk
    frames = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    frames.initiate_connection()
    events = frames.receive_data(greeting + goaway)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def _grpc_frame(message: bytes) -> bytes:
    return struct.pack(">?I", False, len(message)) + message


async def test_stop_aborts_a_connection_whose_client_does_not_read(
    sock_path: str, info_path: str, stubs: dict[str, ModuleType]
) -> None:
    """A client that stops reading (its answer stuck in the server's buffers) cannot hold stop.

    On Python 3.12+ closing such a connection never completes; it is aborted instead.
    """
    big = b"x" * (8 * 1024 * 1024)
    answering = asyncio.Event()

    def large(keys: list[str], datum: Datum) -> Messages:
        answering.set()
        return Messages(Message(big))

    server = AsyncServer(
        map_handler=large,
        sock_path=sock_path,
        server_info_file=info_path,
        shutdown_grace_period=0.5,
    )
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    window = 2**31 - 1
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    client.increment_flow_control_window(window - 65535)
    stream_id = client.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/function.v1.UserDefinedFunction/MapFn"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    client.send_headers(stream_id, headers)
    request = datum_request(stubs["fn_pb2"], b"x").SerializeToString()
    client.send_data(stream_id, _grpc_frame(request), end_stream=True)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with raw:
        with anyio.fail_after(PROMPT):
            async with server.running():
                raw.connect(sock_path)
                raw.sendall(client.data_to_send())  # and never read
                await asyncio.wait_for(answering.wait(), WAIT)
                await asyncio.sleep(0.2)
    assert not Path(sock_path).exists()
