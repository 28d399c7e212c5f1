"""Reduce stream (reduce.v1 on reducestream.sock) through the pynumaflow 0.14.0 wheel's stubs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pynumaflow.reducestreamer import (
    Datum,
    Message,
    Metadata,
    NonBlockingIterator,
    ReduceStreamAsyncServer,
    ReduceStreamer,
    UserMetadata,
)

from conftest import CHANNEL_OPTIONS
from helpers import eventually
from procs import finish, start_script, wait_for_server_info
from reference_client import ReferenceClient, b64, rfc3339, unb64

pytestmark = [pytest.mark.anyio, pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
START = datetime(2024, 1, 2, 3, 4, 0, tzinfo=UTC)
END = START + timedelta(minutes=1)
WINDOW = {"start": rfc3339(START), "end": rfc3339(END), "slot": "slot-0"}
ECHOED = {"start": "2024-01-02T03:04:00Z", "end": "2024-01-02T03:05:00Z", "slot": "slot-0"}


def request(keys: list[str], value: bytes, event: str = "APPEND") -> dict[str, Any]:
    return {
        "operation": {"event": event, "windows": [WINDOW]},
        "payload": {
            "keys": keys,
            "value": b64(value),
            "event_time": rfc3339(START + timedelta(seconds=1)),
            "watermark": rfc3339(START),
        },
    }


def serve(sock_dir: Path, handler: Any, **kwargs: Any) -> ReduceStreamAsyncServer:
    return ReduceStreamAsyncServer(
        handler,
        sock_path=str(sock_dir / "reducestream.sock"),
        server_info_file=str(sock_dir / "reducestreamer-server-info"),
        **kwargs,
    )


async def echo(
    keys: list[str],
    datums: AsyncIterable[Datum],
    output: NonBlockingIterator[Message],
    md: Metadata,
) -> None:
    """Sends each datum on at once; a total after the window closed."""
    count = 0
    async for datum in datums:
        count += 1
        await output.put(Message(datum.value, keys=keys, tags=["each"]))
    await output.put(Message(str(count).encode(), keys=keys, tags=["total"]))


async def test_results_go_out_while_the_window_is_open(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Each message put is read by the client before it half-closes; EOF comes last."""
    requests = [request(["a"], b"1", "OPEN"), request(["b"], b"2"), request(["a"], b"3")]
    async with serve(sock_dir, echo).running():
        talk = await reference_client.converse(
            "reduce",
            sock_dir / "reducestream.sock",
            requests,
            await_first=False,
            read_before_close=3,  # the three echoes, with the window still open
            timeout=20,
        )
    assert (talk["ready"], talk["code"]) == (True, "OK"), talk
    early, late = talk["responses"][:3], talk["responses"][3:]
    # Keys run concurrently: one key's messages keep their order, the keys interleave.
    early_values = [(r["result"]["keys"], unb64(r["result"]["value"])) for r in early]
    assert [v for k, v in early_values if k == ["a"]] == [b"1", b"3"]
    assert [v for k, v in early_values if k == ["b"]] == [b"2"]
    assert all(r["result"]["tags"] == ["each"] for r in early)
    *totals, eof = late
    assert eof == {"window": ECHOED, "EOF": True}
    assert {(tuple(r["result"]["keys"]), unb64(r["result"]["value"])) for r in totals} == {
        (("a",), b"2"),
        (("b",), b"1"),
    }
    assert all(r["window"] == ECHOED for r in talk["responses"][:-1])


async def tag_with_metadata(
    keys: list[str],
    datums: AsyncIterable[Datum],
    output: NonBlockingIterator[Message],
    md: Metadata,
) -> None:
    """Reads each datum's user and system metadata; its result carries new user metadata."""
    async for datum in datums:
        seen = UserMetadata()
        seen.add_key("seen", "user", datum.user_metadata.value("u", "k") or b"-")
        seen.add_key("seen", "system", datum.system_metadata.value("s", "k") or b"-")
        await output.put(Message(datum.value, keys=keys, user_metadata=seen))


async def test_datums_read_metadata_and_results_write_it(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Numaflow 1.7+ payload metadata reaches the datums; a result's user metadata goes out."""
    with_metadata = request(["a"], b"1", "OPEN")
    with_metadata["payload"]["metadata"] = {
        "previous_vertex": "in",
        "user_metadata": {"u": {"key_value": {"k": b64(b"user")}}},
        "sys_metadata": {"s": {"key_value": {"k": b64(b"system")}}},
    }
    async with serve(sock_dir, tag_with_metadata).running():
        talk = await reference_client.converse(
            "reduce",
            sock_dir / "reducestream.sock",
            [with_metadata, request(["a"], b"2")],
            await_first=False,
            timeout=20,
        )
    assert talk["code"] == "OK", talk
    *results, eof = talk["responses"]
    assert eof["EOF"] is True
    metadata = {unb64(r["result"]["value"]): r["result"]["metadata"] for r in results}
    assert metadata == {
        b"1": {
            "user_metadata": {
                "seen": {"key_value": {"user": b64(b"user"), "system": b64(b"system")}}
            }
        },
        b"2": {"user_metadata": {"seen": {"key_value": {"user": b64(b"-"), "system": b64(b"-")}}}},
    }


class Counter(ReduceStreamer):
    """A class handler: a new instance per key and window, with the init arguments."""

    def __init__(self, start: int, *, step: int) -> None:
        self.count = start
        self.step = step

    async def handler(
        self,
        keys: list[str],
        datums: AsyncIterable[Datum],
        output: NonBlockingIterator[Message],
        md: Metadata,
    ) -> None:
        async for _ in datums:
            self.count += self.step
        window = f"{md.interval_window.start.isoformat()}/{md.interval_window.end.isoformat()}"
        await output.put(Message(f"{self.count}@{window}".encode(), keys=keys))


async def test_a_class_handler_gets_an_instance_per_key(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    requests = [request(["a"], b"", "OPEN"), request(["b"], b""), request(["a"], b"")]
    async with serve(sock_dir, Counter, init_args=(100,), init_kwargs={"step": 10}).running():
        talk = await reference_client.converse(
            "reduce", sock_dir / "reducestream.sock", requests, await_first=False
        )
    assert talk["code"] == "OK", talk
    *results, eof = talk["responses"]
    assert eof["EOF"] is True
    span = f"{START.isoformat()}/{END.isoformat()}"
    assert sorted(unb64(r["result"]["value"]) for r in results) == [
        f"110@{span}".encode(),
        f"120@{span}".encode(),
    ]


async def test_a_failing_handler_ends_the_stream_after_what_it_sent(
    reference_client: ReferenceClient, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """INTERNAL UDF_EXECUTION_ERROR(udf) with the traceback, logged once, no EOF."""

    async def fails(
        keys: list[str],
        datums: AsyncIterable[Datum],
        output: NonBlockingIterator[Message],
        md: Metadata,
    ) -> None:
        async for datum in datums:
            await output.put(Message(datum.value, keys=keys))
            raise ValueError("bad datum")

    with caplog.at_level(logging.ERROR, logger="pynumaflow"):
        async with serve(sock_dir, fails).running():
            talk = await reference_client.converse(
                "reduce",
                sock_dir / "reducestream.sock",
                [request(["a"], b"1", "OPEN")],
                await_first=False,
                read_before_close=1,
            )
    assert talk["code"] == "INTERNAL", talk
    assert talk["details"].startswith("UDF_EXECUTION_ERROR(udf): ValueError('bad datum')")
    assert "raise ValueError" in talk["status_details"]["details"][0]["detail"]
    assert [unb64(r["result"]["value"]) for r in talk["responses"]] == [b"1"]
    assert not any(r.get("EOF") for r in talk["responses"])
    logged = [r for r in caplog.records if "bad datum" in str(r.exc_info and r.exc_info[1])]
    assert len(logged) == 1


async def test_a_sync_handler_is_refused() -> None:
    def sync(keys: Any, datums: Any, output: Any, md: Any) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        ReduceStreamAsyncServer(sync)
    with pytest.raises(TypeError, match="not a subclass of ReduceStreamer"):
        ReduceStreamAsyncServer(int)


async def test_a_handler_that_puts_many_is_relayed_in_full(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Far more messages than the output holds: all of them, in order, then the EOF."""
    sent = 1000

    async def burst(
        keys: list[str],
        datums: AsyncIterable[Datum],
        output: NonBlockingIterator[Message],
        md: Metadata,
    ) -> None:
        async for _ in datums:
            pass
        for i in range(sent):
            await output.put(Message(str(i).encode(), keys=keys))

    async with serve(sock_dir, burst).running():
        talk = await reference_client.converse(
            "reduce",
            sock_dir / "reducestream.sock",
            [request(["a"], b"", "OPEN")],
            await_first=False,
        )
    assert talk["code"] == "OK", talk
    *results, eof = talk["responses"]
    assert [int(unb64(r["result"]["value"])) for r in results] == list(range(sent))
    assert eof["EOF"] is True


SCRIPT = """
from pathlib import Path
from pynumaflow.reducestreamer import Message, ReduceStreamAsyncServer

async def handler(keys, datums, output, md):
    async for d in datums:
        Path(__file__).with_name("started").touch()
        await output.put(Message(d.value, keys=keys))

ReduceStreamAsyncServer(handler, shutdown_grace_period=30).start()
"""


async def test_sigterm_ends_an_open_window_unavailable_and_exits(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """A window still open cannot complete: UNAVAILABLE at once (it is replayed), exit 0.

    What was put before the signal was sent; the files are the reduce stream's.
    """
    pb2 = stubs["reduce_pb2"]
    proc = start_script(SCRIPT, tmp_path)
    try:
        info = await asyncio.to_thread(
            wait_for_server_info, proc, tmp_path / "reducestreamer-server-info"
        )
        target = f"unix://{tmp_path / 'reducestream.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = stubs["reduce_grpc"].ReduceStub(channel).ReduceFn()
            op = pb2.ReduceRequest.WindowOperation
            window = pb2.Window(start=Timestamp(seconds=60), end=Timestamp(seconds=120))
            await call.write(
                pb2.ReduceRequest(
                    payload=pb2.ReduceRequest.Payload(keys=["k"], value=b"early"),
                    operation=op(event=op.OPEN, windows=[window]),
                )
            )
            early = await call.read()
            await eventually((tmp_path / "started").exists, 10)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = []
            with contextlib.suppress(grpc.aio.AioRpcError):  # read() raises the status
                while (reply := await call.read()) is not grpc.aio.EOF:
                    rest.append(reply)
            code = await call.code()
            details = await call.details()
            ended = time.monotonic()
        exit_code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert info["metadata"] == {}
    assert early.result.value == b"early"
    assert early.window == window
    assert rest == []
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "window is still open" in details
    assert ended - signalled < 10  # not the 30 s grace period
    assert exit_code == 0, output
