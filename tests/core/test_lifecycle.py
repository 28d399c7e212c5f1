"""Server lifecycle: sockets, server-info, construction errors, signals and drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow import __version__
from pynumaflow.errors import SocketPathError
from pynumaflow.function import AsyncServer, Datum, Message, Messages, Server

from conftest import CHANNEL_OPTIONS, seed_examples
from helpers import datum_request, serving
from procs import END, finish, start_script, wait_for_server_info

MAP_SCRIPT = """
import asyncio
from pynumaflow.function import Messages, Message, {server}

{handler_def}

if __name__ == "__main__":
    {run}
"""
ASYNC_SLOW = """
async def handler(keys, datum):
    await asyncio.sleep(float(datum.value or b"0"))
    return Messages(Message(datum.value))
"""
SYNC_SLOW = """
import time
def handler(keys, datum):
    time.sleep(float(datum.value or b"0"))
    return Messages(Message(datum.value))
"""


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


@pytest.mark.anyio
async def test_server_info_and_socket_mode(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Server-info is the exact handshake JSON plus marker; the socket is owner+group only."""
    async with serving(sock_path, info_path, map_handler=echo):
        text = Path(info_path).read_text(encoding="utf-8")
        mode = stat.S_IMODE(os.stat(sock_path).st_mode)
        assert (await fn_stub.MapFn(datum_request(fn_pb2, b"x"))).elements[0].value == b"x"
    assert text.endswith(END)
    assert json.loads(text[: -len(END)]) == {
        "protocol": "uds",
        "language": "python",
        "version": __version__,
        "metadata": {},
    }
    assert mode == 0o660
    assert not Path(sock_path).exists()
    assert not Path(info_path).exists()


@pytest.mark.anyio
async def test_stale_socket_is_replaced(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A socket file left by a dead process does not stop the server from starting."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    assert Path(sock_path).exists()
    async with serving(sock_path, info_path, map_handler=echo):
        assert (await fn_stub.MapFn(datum_request(fn_pb2, b"y"))).elements[0].value == b"y"


@pytest.mark.anyio
async def test_live_socket_is_not_stolen(sock_path: str, info_path: str) -> None:
    """A second server on a socket another server listens on fails with a clear error."""
    async with serving(sock_path, info_path, map_handler=echo):
        with pytest.raises(SocketPathError, match="another server is listening"):
            async with serving(sock_path, info_path + "2", map_handler=echo):
                pass
        assert Path(info_path).exists()


@pytest.mark.anyio
async def test_unusable_socket_paths(tmp_path: Path) -> None:
    """A path that is a regular file, or under one, gets an error naming the path."""
    regular = tmp_path / "file"
    regular.write_text("not a socket")
    with pytest.raises(SocketPathError, match="exists and is not a socket"):
        async with serving(str(regular), str(tmp_path / "info"), map_handler=echo):
            pass
    with pytest.raises(SocketPathError, match="cannot create the socket directory"):
        async with serving(str(regular / "sub" / "f.sock"), str(tmp_path / "i"), map_handler=echo):
            pass


def test_construction_errors() -> None:
    """Missing handlers, wrong shapes and bad options fail at construction, naming the fix."""
    with pytest.raises(ValueError, match="map_handler, mapt_handler, map_stream_handler"):
        Server()
    with pytest.raises(TypeError, match="map_handler must be callable"):
        Server(map_handler="not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"map_handler must accept 2 positional arguments"):
        Server(map_handler=lambda datum: Messages())
    with pytest.raises(TypeError, match=r"reduce_handler must accept 3 positional arguments"):
        AsyncServer(reduce_handler=lambda keys, datum: Messages())

    async def not_a_generator(keys: list[str], datum: Datum) -> Messages:
        return Messages()

    with pytest.raises(TypeError, match="map_stream_handler must be an async generator"):
        AsyncServer(map_stream_handler=not_a_generator)
    with pytest.raises(ValueError, match="max_threads must be a positive int"):
        Server(map_handler=echo, max_threads=0)
    with pytest.raises(ValueError, match="max_message_size must be a positive int"):
        Server(map_handler=echo, max_message_size=-1)


def test_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defaults are the platform's paths; $PYNUMAFLOW_RUN_DIR moves them; keywords win."""
    monkeypatch.delenv("PYNUMAFLOW_RUN_DIR", raising=False)
    server = Server(map_handler=echo)
    assert server.sock_path == "/var/run/numaflow/function.sock"
    assert server.server_info_file == "/var/run/numaflow/server-info"
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(tmp_path))
    server = Server(map_handler=echo)
    assert server.sock_path == str(tmp_path / "function.sock")
    assert server.server_info_file == str(tmp_path / "server-info")
    assert AsyncServer(echo, sock_path="/x.sock").sock_path == "/x.sock"


def _slow_calls(
    sock: Path, stubs: dict[str, ModuleType], count: int, seconds: float
) -> tuple[grpc.Channel, list[Any]]:
    channel = grpc.insecure_channel(f"unix://{sock}", options=CHANNEL_OPTIONS)
    stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
    request = datum_request(stubs["fn_pb2"], str(seconds).encode())
    return channel, [stub.MapFn.future(request) for _ in range(count)]


@pytest.mark.parametrize(
    ("server", "handler_def", "run"),
    [
        ("Server", SYNC_SLOW, "Server(map_handler=handler, max_threads=50).start()"),
        ("AsyncServer", ASYNC_SLOW, "asyncio.run(AsyncServer(map_handler=handler).start())"),
        (
            "AsyncServer",
            ASYNC_SLOW,
            "import aiorun; aiorun.run(AsyncServer(map_handler=handler).start())",
        ),
    ],
    ids=["Server.start", "asyncio.run", "aiorun.run"],
)
def test_sigterm_drains_calls_in_flight(
    server: str, handler_def: str, run: str, tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM lets calls in flight finish OK, then removes socket and server-info, exit 0."""
    source = MAP_SCRIPT.format(server=server, handler_def=handler_def, run=run)
    proc = start_script(source, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    channel, calls = _slow_calls(tmp_path / "function.sock", stubs, 50, 1.0)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    results = [call.result(timeout=30) for call in calls]
    code, output = finish(proc)
    channel.close()
    assert code == 0, output
    assert [r.elements[0].value for r in results] == [b"1.0"] * 50
    assert not (tmp_path / "function.sock").exists()
    assert not (tmp_path / "server-info").exists()


def test_second_signal_stops_at_once(tmp_path: Path, stubs: dict[str, ModuleType]) -> None:
    """A second SIGTERM cuts the drain short: calls end with a status, the process exits 0."""
    source = MAP_SCRIPT.format(
        server="AsyncServer",
        handler_def=ASYNC_SLOW,
        run="asyncio.run(AsyncServer(map_handler=handler, shutdown_grace_period=60).start())",
    )
    proc = start_script(source, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    channel, calls = _slow_calls(tmp_path / "function.sock", stubs, 5, 30.0)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc, timeout=10)
    assert code == 0, output
    assert time.monotonic() - started < 5
    for call in calls:
        assert call.exception(timeout=10) is not None
    channel.close()


@pytest.mark.anyio
async def test_calls_during_drain_are_unavailable(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Once shutdown began, new calls get UNAVAILABLE (which the platform retries)."""
    import asyncio

    release = asyncio.Event()

    async def waits(keys: list[str], datum: Datum) -> Messages:
        await release.wait()
        return Messages(Message(b"done"))

    server = AsyncServer(waits, sock_path=sock_path, server_info_file=info_path)
    context = server.running()
    await context.__aenter__()
    in_flight = asyncio.ensure_future(fn_stub.MapFn(datum_request(fn_pb2)))
    await asyncio.sleep(0.2)
    stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
    await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fn_stub.MapFn(datum_request(fn_pb2))
    release.set()
    assert (await in_flight).elements[0].value == b"done"
    await stopping
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("index", [0, 1], ids=["map", "mapt"])
def test_seed_examples_run_unchanged(
    index: int, tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """The 0.4 README's map and mapt examples serve the platform end to end, unchanged."""
    source = seed_examples()[index]
    assert "grpc_server.start()" in source
    proc = start_script(source, tmp_path)
    info = wait_for_server_info(proc, tmp_path / "server-info")
    assert info["protocol"] == "uds"
    pb2 = stubs["fn_pb2"]
    with grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}") as channel:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        request = datum_request(pb2, b"hello", keys=["k"])
        reply = stub.MapFn(request) if index == 0 else stub.MapTFn(request)
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    (element,) = reply.elements
    assert (list(element.keys), element.value) == (["k"], b"hello")
    if index == 1:
        # datetime.time() is midnight, on the UTC date of the request's event time.
        assert element.event_time.event_time.ToDatetime().isoformat() == "2023-05-06T00:00:00"
        assert element.watermark == request.watermark


def test_seed_readme_is_the_contract() -> None:
    """Guard: the seed README still holds the four examples these tests rely on."""
    blocks = seed_examples()
    assert len(blocks) >= 4
    assert "mapt_handler=mapt_handler" in textwrap.dedent(blocks[1])
