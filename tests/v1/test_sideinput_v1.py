"""sideinput.v1 (Numaflow >= 1.4) over sideinput.sock: the retriever, broadcast or not."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import grpc
import pytest
from sources import Counter

from pynumaflow.sideinput import Response, SideInputServer

from conftest import CHANNEL_OPTIONS
from helpers import eventually
from procs import finish, start_script, wait_for_server_info

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    target = f"unix://{sock_dir / 'sideinput.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["sideinput_grpc"].SideInputStub(channel)


@pytest.fixture
def empty(stubs: dict[str, ModuleType]) -> Any:
    return stubs["sideinput_pb2"].google_dot_protobuf_dot_empty__pb2.Empty()


def serve(handler: Any, sock_dir: Path) -> SideInputServer:
    return SideInputServer(
        handler,
        sock_path=str(sock_dir / "sideinput.sock"),
        server_info_file=str(sock_dir / "sideinput-server-info"),
    )


async def async_retriever() -> Response:
    await asyncio.sleep(0)
    return Response.broadcast_message(b"")


async def test_broadcast_and_no_broadcast(sock_dir: Path, stub: Any, empty: Any) -> None:
    """A SideInput instance (sync, in the pool): value, then no_broadcast, then a value."""
    retriever = Counter()
    async with serve(retriever, sock_dir).running():
        answers = [await stub.RetrieveSideInput(empty) for _ in range(3)]
        info = json.loads((sock_dir / "sideinput-server-info").read_text().split("U+005C")[0])
    assert [(a.value, a.no_broadcast) for a in answers] == [
        (b"v1", False),
        (b"", True),
        (b"v3", False),
    ]
    assert info["metadata"] == {}
    assert info["minimum_numaflow_version"] == "1.4.0-z"


async def test_an_async_function_retriever_broadcasts_an_empty_value(
    sock_dir: Path, stub: Any, empty: Any
) -> None:
    """An empty value is a value (the platform stores it); only no_broadcast stores nothing."""
    async with serve(async_retriever, sock_dir).running():
        answer = await stub.RetrieveSideInput(empty)
    assert (answer.value, answer.no_broadcast) == (b"", False)


def raising() -> Response:
    raise RuntimeError("config store down")


def wrong() -> Response:
    return b"not a response"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("retriever", "text"),
    [(raising, "RuntimeError('config store down')"), (wrong, "returned a wrong type")],
)
async def test_a_failing_retriever_fails_the_call_and_the_server_serves_on(
    retriever: Callable[[], Response],
    text: str,
    sock_dir: Path,
    stub: Any,
    empty: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INTERNAL UDF_EXECUTION_ERROR(udsi), logged once; the next tick is answered again."""
    caplog.set_level(logging.ERROR, logger="pynumaflow")
    async with serve(retriever, sock_dir).running():
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RetrieveSideInput(empty)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert info.value.details().startswith("UDF_EXECUTION_ERROR(udsi): ")
            assert text in info.value.details()
        assert (await stub.IsReady(empty)).ready
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


def test_a_retriever_taking_parameters_is_refused() -> None:
    with pytest.raises(TypeError, match="must accept 0 positional arguments"):
        SideInputServer(lambda x: x)


SLOW_RETRIEVER = """
import time
from pathlib import Path
from pynumaflow.sideinput import Response, SideInputServer

def retrieve():
    Path(__file__).with_name("started").touch()
    time.sleep(1)
    return Response.broadcast_message(b"late")

SideInputServer(retrieve, shutdown_grace_period=60).start()
"""


async def test_sigterm_answers_the_retrieval_in_flight_then_exits(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM during a retrieval: it is answered, then the server exits 0 and cleans up."""
    proc = start_script(SLOW_RETRIEVER, tmp_path)
    try:
        info = await asyncio.to_thread(
            wait_for_server_info, proc, tmp_path / "sideinput-server-info"
        )
        target = f"unix://{tmp_path / 'sideinput.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = stubs["sideinput_grpc"].SideInputStub(channel)
            empty = stubs["sideinput_pb2"].google_dot_protobuf_dot_empty__pb2.Empty()
            call = asyncio.ensure_future(stub.RetrieveSideInput(empty))
            await eventually((tmp_path / "started").exists, 10)
            proc.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(call, 10)
        code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    assert (info["metadata"], info["minimum_numaflow_version"]) == ({}, "1.4.0-z")
    assert answer.value == b"late"
    assert not (tmp_path / "sideinput.sock").exists()
