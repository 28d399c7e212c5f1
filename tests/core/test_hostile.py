"""Faults a hostile or broken HTTP/2 client makes, spoken by hand (tests/rawh2.py).

Bad gRPC framing on every RPC, a length prefix announcing more than the limit, streams
reset before their handler starts, connections that stall inside the preface or a
frame, and idle connections' memory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import h2.errors
import h2.exceptions
import pytest
from rawh2 import PREFACE, RawConnection, closed_by_server, frame

import pynumaflow._core.transport as core_module
from pynumaflow.function import AsyncServer, Datum, Message, Messages
from pynumaflow.sink import AsyncSink, Responses
from pynumaflow.sink import Response as SinkResponse

from helpers import datum_request
from procs import finish, start_script, wait_for_server_info

INTERNAL, UNIMPLEMENTED, RESOURCE_EXHAUSTED = 13, 12, 8

# Every RPC we serve, by the socket it is served on.
RPCS = {
    "function.sock": [
        "/function.v1.UserDefinedFunction/MapFn",
        "/function.v1.UserDefinedFunction/MapStreamFn",
        "/function.v1.UserDefinedFunction/MapTFn",
        "/function.v1.UserDefinedFunction/ReduceFn",
        "/function.v1.UserDefinedFunction/IsReady",
    ],
    "map.sock": ["/map.v1.Map/MapFn", "/map.v1.Map/IsReady"],
    "sourcetransform.sock": [
        "/sourcetransformer.v1.SourceTransform/SourceTransformFn",
        "/sourcetransformer.v1.SourceTransform/IsReady",
    ],
    "reduce.sock": ["/reduce.v1.Reduce/ReduceFn", "/reduce.v1.Reduce/IsReady"],
    "udsink.sock": ["/sink.v1.UserDefinedSink/SinkFn", "/sink.v1.UserDefinedSink/IsReady"],
    "sink.sock": ["/sink.v1.Sink/SinkFn", "/sink.v1.Sink/IsReady"],
}
assert sum(map(len, RPCS.values())) == 15

# The body each fault sends (then END_STREAM), and the status it must get.
FRAMING_FAULTS = {
    "truncated prefix": (b"\x00\x00\x00", INTERNAL),
    "truncated body": (frame(b"\x0a\x01k")[:-1], INTERNAL),
    "prefix past the body": (struct.pack(">BI", 0, 100) + b"\x0a\x01k", INTERNAL),
    "compressed flag": (frame(b"", compressed=True), UNIMPLEMENTED),
}


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


async def count(keys: list[str], datums: Any, md: Any) -> Messages:
    return Messages(Message(str(len([d async for d in datums])).encode()))


async def stream(keys: list[str], datum: Datum) -> Any:
    yield Message(datum.value)


async def ack(datums: Any) -> Responses:
    return Responses(*[SinkResponse.as_success(d.id) async for d in datums])


@pytest.fixture
async def every_rpc(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """All 15 RPCs, legacy and v1, served on sockets in ``sock_dir``."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    legacy = AsyncServer(
        map_handler=echo,
        mapt_handler=echo,
        map_stream_handler=stream,  # beside map_handler only in the legacy protocol
        reduce_handler=count,
        sock_path=str(sock_dir / "function.sock"),
        server_info_file=str(sock_dir / "server-info"),
        protocols=["legacy"],
    )
    v1 = AsyncServer(
        map_handler=echo,
        mapt_handler=echo,
        reduce_handler=count,
        sock_path=str(sock_dir / "function.sock"),
        server_info_file=str(sock_dir / "server-info"),
        protocols=["v1"],
    )
    sink = AsyncSink(
        ack,
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "sink-server-info"),
    )
    async with legacy.running(), v1.running(), sink.running():
        yield sock_dir


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FRAMING_FAULTS)
async def test_bad_framing_on_every_rpc_is_one_status_and_one_log_line(
    fault: str, every_rpc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad framing gets INTERNAL (compression UNIMPLEMENTED), one warning line, no traceback."""
    body, expected = FRAMING_FAULTS[fault]
    answers = {}
    caplog.set_level(logging.INFO, logger="pynumaflow")
    for sock, paths in RPCS.items():
        connection = RawConnection(str(every_rpc / sock))
        try:
            for path in paths:
                outcome = await asyncio.to_thread(connection.call, path, body)
                answers[path] = outcome.status
            # The connection still serves: a good IsReady on it.
            ready = await asyncio.to_thread(connection.call, paths[-1], frame(b""))
        finally:
            connection.close()
        assert ready.status == 0
    assert answers == {path: expected for paths in RPCS.values() for path in paths}
    refusals = [r for r in caplog.records if "refused a" in r.getMessage()]
    assert len(refusals) == 15
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in refusals)
    assert all("\n" not in r.getMessage() for r in refusals)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _push_until_refused(connection: RawConnection, stream_id: int, limit: int) -> int:
    """Send DATA as flow control allows until the stream ends or ``limit`` bytes; return sent."""
    chunk = b"\x00" * connection.conn.max_outbound_frame_size
    sent = 0
    outcome = connection.outcomes[stream_id]
    deadline = time.monotonic() + 20
    while sent < limit and not (outcome.ended or outcome.reset) and time.monotonic() < deadline:
        window = connection.conn.local_flow_control_window(stream_id)
        if window <= 0:
            connection.pump(0.2)  # wait for WINDOW_UPDATE (or the refusal)
            continue
        try:
            connection.conn.send_data(stream_id, chunk[: min(window, len(chunk))])
        except h2.exceptions.StreamClosedError:
            break
        sent += min(window, len(chunk))
        connection.flush()
        connection.pump(0.0001)
    return sent


@pytest.mark.anyio
async def test_an_oversize_length_prefix_is_refused_before_the_body_is_read(
    every_rpc: Path,
) -> None:
    """A prefix announcing 4 GiB - 1: RESOURCE_EXHAUSTED and a reset, at most a window read."""
    connection = RawConnection(str(every_rpc / "function.sock"))
    try:
        stream_id = connection.open("/function.v1.UserDefinedFunction/MapFn")
        connection.send(stream_id, struct.pack(">BI", 0, 2**32 - 1))
        sent = await asyncio.to_thread(_push_until_refused, connection, stream_id, 64 << 20)
        outcome = await asyncio.to_thread(connection.wait, stream_id)
        good = await asyncio.to_thread(
            connection.call, "/function.v1.UserDefinedFunction/IsReady", frame(b"")
        )
    finally:
        connection.close()
    assert outcome.status == RESOURCE_EXHAUSTED
    assert "exceeds max_message_size" in outcome.message
    assert outcome.reset
    # grpclib's windows are 4 MiB: the body was never read, so never acknowledged.
    assert sent <= 8 << 20, f"the server let the client send {sent} bytes"
    assert good.status == 0


def _live_streams(server: Any) -> int:
    """Streams the servers' connections still hold (grpclib's table per connection)."""
    return sum(
        len(protocol.processor.streams)
        for grpclib_server in server._servers
        for protocol in grpclib_server._live
    )


@pytest.mark.anyio
async def test_streams_reset_before_their_handler_starts_are_freed(
    sock_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """2,000 HEADERS each followed at once by RST_STREAM leave no stream behind."""
    server = AsyncServer(
        map_handler=echo,
        sock_path=str(sock_dir / "function.sock"),
        server_info_file=str(sock_dir / "server-info"),
        protocols=["legacy"],
    )
    body = frame(bytes(datum_request(stubs["fn_pb2"], b"x").SerializeToString()))
    async with server._new_core().running() as core:
        connection = RawConnection(str(sock_dir / "function.sock"))
        try:
            for _ in range(4):
                for _ in range(500):
                    stream_id = connection.open("/function.v1.UserDefinedFunction/MapFn")
                    connection.conn.send_data(stream_id, body)
                    connection.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                connection.flush()  # 500 streams opened and reset in one write
                await asyncio.to_thread(connection.pump, 0.05)
            good = await asyncio.to_thread(
                connection.call, "/function.v1.UserDefinedFunction/MapFn", body
            )
            await asyncio.sleep(0.2)
            left = _live_streams(core)
        finally:
            connection.close()
    assert good.status == 0
    assert left == 0, f"{left} reset streams are still held"


@pytest.mark.anyio
async def test_connections_stalled_in_the_preface_or_a_frame_are_closed(
    every_rpc: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing sent, half a preface, half a frame, a frame dribbled: closed; an idle one is not."""
    monkeypatch.setattr(core_module, "FRAME_TIMEOUT", 0.5)
    path = str(every_rpc / "function.sock")
    settings = PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # preface + empty SETTINGS
    half_frame = settings + b"\x00\x00\x64\x01\x04\x00\x00\x00\x01" + b"\x00" * 20
    stalls = {"nothing": b"", "half preface": PREFACE[:10], "half frame": half_frame}
    sockets = {}
    for name, sent in stalls.items():
        sockets[name] = sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(sent)
    idle = RawConnection(path)
    idle.pump(0.2)
    dribble = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dribble.connect(path)
    dribble.sendall(settings + b"\x00")
    started = time.monotonic()
    dribbled_closed = False
    while time.monotonic() - started < 5 and not dribbled_closed:
        try:
            dribble.sendall(b"\x00")  # a byte every 0.1 s never completes the frame
        except OSError:
            dribbled_closed = True
        dribbled_closed = dribbled_closed or await asyncio.to_thread(closed_by_server, dribble, 0.1)
    closed = {
        name: await asyncio.to_thread(closed_by_server, sock, 5.0) for name, sock in sockets.items()
    }
    took = time.monotonic() - started
    await asyncio.sleep(0.3)  # the idle connection outlives the timeout several times over
    still = await asyncio.to_thread(
        idle.call, "/function.v1.UserDefinedFunction/IsReady", frame(b"")
    )
    for sock in [*sockets.values(), dribble]:
        sock.close()
    idle.close()
    assert closed == dict.fromkeys(stalls, True)
    assert dribbled_closed
    assert took < 10
    assert still.status == 0
    lines = [r.getMessage() for r in caplog.records if "unfinished for" in r.getMessage()]
    assert len(lines) == 4


IDLE_SERVER = """
import asyncio
from pynumaflow.function import AsyncServer, Messages

async def nothing(keys, datum):
    return Messages()

if __name__ == "__main__":
    asyncio.run(AsyncServer(map_handler=nothing, protocols=["legacy"]).start())
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_per_idle_connection_is_small(tmp_path: Path) -> None:
    """300 idle connections (preface and SETTINGS done) cost under 40 KiB each."""
    proc = start_script(IDLE_SERVER, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    path = str(tmp_path / "function.sock")
    warm = [RawConnection(path) for _ in range(20)]  # allocator and code paths warmed up
    for connection in warm:
        connection.pump(0.05)
    time.sleep(0.3)
    before = _rss_kib(proc.pid)
    idle = [RawConnection(path) for _ in range(300)]
    for connection in idle:
        connection.pump(0.05)
    time.sleep(0.5)
    after = _rss_kib(proc.pid)
    for connection in warm + idle:
        connection.close()
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    per_connection = (after - before) / 300
    assert per_connection < 40, f"{per_connection:.1f} KiB per idle connection"


SLOW_READERS = """
import itertools
from pynumaflow.function import Server, Message, Messages

def forever(keys, datum):
    for i in itertools.count():
        yield Message(b"x" * 100)

def echo(keys, datum):
    return Messages(Message(datum.value))

Server(map_handler=echo, map_stream_handler=forever, max_threads=4, protocols=["legacy"]).start()
"""


def test_map_stream_generators_whose_readers_never_read_hold_no_thread(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """Ten sync generator streams nobody reads, 4 threads: every MapFn call is served."""
    proc = start_script(SLOW_READERS, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    path = str(tmp_path / "function.sock")
    pb2 = stubs["fn_pb2"]
    body = frame(datum_request(pb2, b"s").SerializeToString())
    readers = RawConnection(path, window=0)  # the server may send it no DATA at all
    for _ in range(10):
        stream_id = readers.open("/function.v1.UserDefinedFunction/MapStreamFn")
        readers.send(stream_id, body, end_stream=True)
    readers.pump(0.5)
    with grpc.insecure_channel(f"unix://{path}") as channel:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        replies = [stub.MapFn(datum_request(pb2, b"ok"), timeout=10) for _ in range(5)]
        ready = stub.IsReady(pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=5)
    readers.close()
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    assert [r.elements[0].value for r in replies] == [b"ok"] * 5
    assert ready.ready


@pytest.mark.anyio
async def test_hang_up_on_a_tcp_client_that_already_reset_its_connection() -> None:
    """write_eof raises ENOTCONN once a TCP peer has gone: the hang-up aborts instead.

    The client closes and the server hangs up before its loop has read the close, as
    when a server stops while a client of the 0.4 API's TCP multi-process server
    leaves: the GOAWAY still goes out, the peer answers it with a reset, and the
    shutdown that follows finds the connection gone.
    """
    import multiprocessing

    from pynumaflow._core.balance import BalancedListener, LoadBoard
    from pynumaflow._core.transport import GrpclibServer

    listening = socket.create_server(("127.0.0.1", 0))
    board = LoadBoard(multiprocessing.get_context("spawn"), 1)
    server = GrpclibServer([], max_message_size=1 << 20)
    await server.start_on(BalancedListener(listening, board, 0, label="tcp"))
    client = socket.create_connection(listening.getsockname())
    try:
        for _ in range(500):
            if server._live:
                break
            await asyncio.sleep(0.01)
        (protocol,) = server._live
        await asyncio.sleep(0.1)  # the server's SETTINGS are sent
        client.settimeout(5)
        assert client.recv(65536)  # read, so that the close is a FIN, not a reset
        client.close()
        time.sleep(0.05)  # noqa: ASYNC251 (the server's loop must not run before the hang-up)
        protocol.hang_up()
        await asyncio.wait_for(protocol.closed, 5)
    finally:
        client.close()
        server.close()
        await server.wait_closed()
