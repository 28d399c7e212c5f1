"""sessionreduce.v1 over a real socket, driven by grpcio stubs from our protos.

pynumaflow 0.14.0 has no session reduce, so there is no reference client here; the
operations are those of spec section 14 as the Rust platform sends them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pynumaflow.sessionreducer import (
    Datum,
    Message,
    NonBlockingIterator,
    SessionReduceAsyncServer,
    SessionReducer,
)

from conftest import CHANNEL_OPTIONS
from helpers import converse, eventually
from procs import finish, start_script, wait_for_server_info

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


class Sum(SessionReducer):
    """Sums the session's integer values; answers "ping" at once; emits the sum at its end."""

    def __init__(self, label: str = "sum") -> None:
        self.label = label
        self.total = 0

    async def session_reduce(
        self, keys: list[str], datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]
    ) -> None:
        async for d in datums:
            if d.value == b"ping":
                await output.put(Message(b"pong", keys=keys))
            else:
                self.total += int(d.value)
        await output.put(Message(f"{self.label}={self.total}".encode(), keys=keys, tags=["t"]))

    def accumulator(self) -> bytes:
        return str(self.total).encode()

    async def merge_accumulator(self, accumulator: bytes) -> None:
        self.total += int(accumulator)


def window(pb2: ModuleType, start: int, end: int, keys: tuple[str, ...] = ("k",)) -> Any:
    return pb2.KeyedWindow(
        start=Timestamp(seconds=start), end=Timestamp(seconds=end), slot="0", keys=list(keys)
    )


def op(pb2: ModuleType, event: str, *windows: Any, value: bytes | None = None) -> Any:
    operation = pb2.SessionReduceRequest.WindowOperation
    request = pb2.SessionReduceRequest(
        operation=operation(event=getattr(operation, event), keyedWindows=list(windows))
    )
    if value is not None:
        keys = list(windows[0].keys)
        request.payload.CopyFrom(
            pb2.SessionReduceRequest.Payload(
                keys=keys, value=value, event_time=windows[-1].start, watermark=Timestamp()
            )
        )
    return request


@asynccontextmanager
async def session_stub(
    stubs: dict[str, ModuleType], sock_dir: Path, reducer: Any = Sum, **kwargs: Any
) -> AsyncIterator[Any]:
    server = SessionReduceAsyncServer(
        reducer,
        sock_path=str(sock_dir / "sessionreduce.sock"),
        server_info_file=str(sock_dir / "sessionreducer-server-info"),
        **kwargs,
    )
    async with server.running():
        target = f"unix://{sock_dir / 'sessionreduce.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            yield stubs["session_grpc"].SessionReduceStub(channel)


def described(response: Any) -> tuple[Any, ...]:
    """(value or "EOF", start, end, keys) of a response."""
    w = response.keyedWindow
    what = "EOF" if response.EOF else response.result.value.decode()
    return (what, w.start.seconds, w.end.seconds, tuple(w.keys))


async def test_open_append_close_streams_results_then_eof(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    """A result put while the session is open is sent at once; CLOSE brings the rest, then EOF."""
    pb2 = stubs["session_pb2"]
    w = window(pb2, 100, 110)
    async with session_stub(stubs, sock_dir) as stub:
        call = stub.SessionReduceFn()
        await call.write(op(pb2, "OPEN", w, value=b"1"))
        await call.write(op(pb2, "APPEND", w, value=b"ping"))
        pong = await call.read()  # before any CLOSE
        await call.write(op(pb2, "APPEND", w, value=b"2"))
        await call.write(op(pb2, "CLOSE", w))
        total, eof = await call.read(), await call.read()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        code = await call.code()
    assert described(pong) == ("pong", 100, 110, ("k",))
    assert described(total) == ("sum=3", 100, 110, ("k",))
    assert list(total.result.tags) == ["t"]
    assert described(eof) == ("EOF", 100, 110, ("k",))
    assert eof.keyedWindow == w  # echoed exactly, slot included
    assert not eof.HasField("result")
    assert code == grpc.StatusCode.OK


async def test_expand_renames_the_session(stubs: dict[str, ModuleType], sock_dir: Path) -> None:
    pb2 = stubs["session_pb2"]
    old, new = window(pb2, 100, 110), window(pb2, 100, 125)
    async with session_stub(stubs, sock_dir) as stub:
        talk = await converse(
            stub.SessionReduceFn(),
            [
                op(pb2, "OPEN", old, value=b"1"),
                op(pb2, "EXPAND", old, new, value=b"5"),
                op(pb2, "APPEND", new, value=b"10"),
                op(pb2, "CLOSE", new),
            ],
            await_first=False,
        )
    assert talk.code == grpc.StatusCode.OK, talk.details
    assert [described(r) for r in talk.responses] == [
        ("sum=16", 100, 125, ("k",)),
        ("EOF", 100, 125, ("k",)),
    ]


async def test_merge_hands_state_on_and_the_merged_away_sessions_stay_silent(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    """The close-time pattern: MERGE, MERGE again, CLOSE.

    MERGE of two closing sessions, then MERGE [merged, open session], then CLOSE of the
    result: one result and one EOF, for the final window.
    """
    pb2 = stubs["session_pb2"]
    a, b, c = window(pb2, 100, 110), window(pb2, 105, 120), window(pb2, 118, 130)
    merged_ab = window(pb2, 100, 120)
    final = window(pb2, 100, 130)
    async with session_stub(stubs, sock_dir) as stub:
        talk = await converse(
            stub.SessionReduceFn(),
            [
                op(pb2, "OPEN", a, value=b"1"),
                op(pb2, "OPEN", b, value=b"20"),
                op(pb2, "OPEN", c, value=b"300"),
                op(pb2, "OPEN", window(pb2, 100, 110, ("other",)), value=b"7"),
                op(pb2, "MERGE", a, b),
                op(pb2, "APPEND", merged_ab, value=b"4000"),
                op(pb2, "MERGE", merged_ab, c),
                op(pb2, "CLOSE", final),
            ],
            await_first=False,
        )
    assert talk.code == grpc.StatusCode.OK, talk.details
    mine = [described(r) for r in talk.responses if list(r.keyedWindow.keys) == ["k"]]
    assert mine == [("sum=4321", 100, 130, ("k",)), ("EOF", 100, 130, ("k",))]
    (eof,) = [r for r in talk.responses if r.EOF and list(r.keyedWindow.keys) == ["k"]]
    assert eof.keyedWindow == final
    # The other key's session, still open at the half-close, is closed by it.
    other = [described(r) for r in talk.responses if list(r.keyedWindow.keys) == ["other"]]
    assert other == [("sum=7", 100, 110, ("other",)), ("EOF", 100, 110, ("other",))]


async def test_append_to_an_unknown_session_opens_it(
    stubs: dict[str, ModuleType], sock_dir: Path
) -> None:
    pb2 = stubs["session_pb2"]
    w = window(pb2, 1, 2)
    async with session_stub(stubs, sock_dir, Sum, init_args=("n",)) as stub:
        talk = await converse(
            stub.SessionReduceFn(),
            [op(pb2, "APPEND", w, value=b"3"), op(pb2, "CLOSE", w)],
            await_first=False,
        )
    assert talk.code == grpc.StatusCode.OK, talk.details
    assert [described(r) for r in talk.responses] == [("n=3", 1, 2, ("k",)), ("EOF", 1, 2, ("k",))]


@pytest.mark.parametrize(
    ("requests", "detail"),
    [
        (
            lambda pb2: [op(pb2, "OPEN", window(pb2, 1, 2), window(pb2, 3, 4), value=b"1")],
            "OPEN needs 1",
        ),
        (lambda pb2: [op(pb2, "EXPAND", window(pb2, 1, 2), value=b"1")], "EXPAND needs 2"),
        (
            lambda pb2: [op(pb2, "EXPAND", window(pb2, 1, 2), window(pb2, 1, 3), value=b"1")],
            "EXPAND of an unknown session [1000, 2000) ms, keys ['k']",
        ),
        (
            lambda pb2: [
                op(pb2, "OPEN", window(pb2, 1, 2), value=b"1"),
                op(pb2, "MERGE", window(pb2, 1, 2), window(pb2, 2, 3)),
            ],
            "MERGE of an unknown session [2000, 3000) ms",
        ),
    ],
    ids=["open-two-windows", "expand-one-window", "expand-unknown", "merge-unknown"],
)
async def test_protocol_errors_fail_the_stream_internal(
    stubs: dict[str, ModuleType], sock_dir: Path, requests: Any, detail: str
) -> None:
    pb2 = stubs["session_pb2"]
    async with session_stub(stubs, sock_dir) as stub:
        talk = await converse(stub.SessionReduceFn(), requests(pb2), await_first=False)
    assert talk.code == grpc.StatusCode.INTERNAL
    assert detail in talk.details
    assert not any(r.EOF for r in talk.responses)


class Failing(Sum):
    async def session_reduce(
        self, keys: list[str], datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]
    ) -> None:
        async for _ in datums:
            raise KeyError("lost")


async def test_a_failing_reducer_ends_the_stream_logged_once(
    stubs: dict[str, ModuleType], sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pb2 = stubs["session_pb2"]
    with caplog.at_level(logging.ERROR, logger="pynumaflow"):
        async with session_stub(stubs, sock_dir, Failing) as stub:
            talk = await converse(
                stub.SessionReduceFn(),
                [op(pb2, "OPEN", window(pb2, 1, 2), value=b"1")],
                await_first=False,
            )
    assert talk.code == grpc.StatusCode.INTERNAL
    assert talk.details.startswith("UDF_EXECUTION_ERROR(udf): KeyError('lost')")
    assert len([r for r in caplog.records if r.exc_info and "lost" in str(r.exc_info[1])]) == 1


async def test_the_reducer_must_be_a_session_reducer_class() -> None:
    with pytest.raises(TypeError, match="SessionReducer subclass"):
        SessionReduceAsyncServer(Sum())  # type: ignore[arg-type]

    class Sync(Sum):
        def session_reduce(self, keys: Any, datums: Any, output: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match="must be an async function"):
        SessionReduceAsyncServer(Sync)


SCRIPT = """
from pathlib import Path
from pynumaflow.sessionreducer import Message, SessionReduceAsyncServer, SessionReducer

class Count(SessionReducer):
    def __init__(self):
        self.n = 0
    async def session_reduce(self, keys, datums, output):
        async for _ in datums:
            Path(__file__).with_name("started").touch()
            self.n += 1
        await output.put(Message(str(self.n).encode(), keys=keys))
    def accumulator(self):
        return str(self.n).encode()
    def merge_accumulator(self, accumulator):
        self.n += int(accumulator)

SessionReduceAsyncServer(Count, shutdown_grace_period=30).start()
"""


async def test_sigterm_serves_the_stream_until_the_platform_half_closes(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    pb2 = stubs["session_pb2"]
    w = window(pb2, 10, 20)
    proc = start_script(SCRIPT, tmp_path)
    try:
        info = await asyncio.to_thread(
            wait_for_server_info, proc, tmp_path / "sessionreducer-server-info"
        )
        target = f"unix://{tmp_path / 'sessionreduce.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = stubs["session_grpc"].SessionReduceStub(channel).SessionReduceFn()
            await call.write(op(pb2, "OPEN", w, value=b"x"))
            await eventually((tmp_path / "started").exists, 10)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the server drains; the stream stays up
            await call.write(op(pb2, "APPEND", w, value=b"y"))
            await call.done_writing()
            replies = []
            while (reply := await call.read()) is not grpc.aio.EOF:
                replies.append(reply)
            code = await call.code()
        exit_code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert info["minimum_numaflow_version"] == "1.4.0-z"
    assert [described(r) for r in replies] == [("2", 10, 20, ("k",)), ("EOF", 10, 20, ("k",))]
    assert code == grpc.StatusCode.OK
    assert exit_code == 0, output
