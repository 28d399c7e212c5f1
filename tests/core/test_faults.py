"""Faults: bad bytes, deadlines, a busy pool, a blocked loop, kills and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow._codec.legacy import function as legacy_function
from pynumaflow._codec.legacy import sink as legacy_sink
from pynumaflow._codec.v1 import map as map_codec
from pynumaflow._codec.v1 import reduce as reduce_codec
from pynumaflow._codec.v1 import sink as sink_codec
from pynumaflow._codec.wire import check_message
from pynumaflow._types.errors import CodecError
from pynumaflow.function import Datum, Message, Messages
from pynumaflow.sink import Response as SinkResponse
from pynumaflow.sink import Responses, Sink

from conftest import CHANNEL_OPTIONS
from helpers import converse, datum_request, serving, v1_request_fields
from procs import END, finish, start_script, wait_for_server_info

FN = "/function.v1.UserDefinedFunction/"
# Not protobuf at all: malformed for every message, Empty included.
BROKEN = [
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    b"\x80\x80\x80",  # a truncated varint tag
    b"\x0f",  # wire type 7
    b"\x00\x01",  # field number 0, which protobuf parsers reject
]
# Well-formed protobuf that is not a valid DatumRequest.
NOT_A_DATUM_REQUEST = [
    b"\x08\x96\x01",  # a varint where the keys string belongs
    b"\x1a\x03\x0a\x01\x08",  # a timestamp cut inside
    b"\x2a\x02\x10\xff",  # metadata whose varint runs off its end
]


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


def _raw(channel: grpc.aio.Channel, method: str, streaming: bool) -> Any:
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    if streaming:
        return channel.unary_stream(FN + method, **identity)
    return channel.unary_unary(FN + method, **identity)


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["MapFn", "MapTFn", "MapStreamFn", "IsReady"])
async def test_malformed_bytes_on_every_rpc(
    method: str,
    sock_path: str,
    info_path: str,
    channel: grpc.aio.Channel,
    fn_stub: Any,
    fn_pb2: ModuleType,
) -> None:
    """Garbage requests get a non-OK status, never a crash; the next call is served."""

    async def stream(keys: list[str], datum: Datum) -> Any:
        yield Message(datum.value)

    call = _raw(channel, method, streaming=method == "MapStreamFn")
    garbage_list = BROKEN if method == "IsReady" else BROKEN + NOT_A_DATUM_REQUEST
    codes = []
    async with serving(
        sock_path,
        info_path,
        map_handler=echo,
        mapt_handler=echo,
        map_stream_handler=stream,
        protocols=["legacy"],  # map and map stream together exist only there
    ):
        for garbage in garbage_list:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                result = call(garbage)
                if method == "MapStreamFn":
                    _ = [item async for item in result]
                else:
                    await result
            codes.append(failure.value.code())
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"still here"))
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert reply.elements[0].value == b"still here"


@pytest.mark.anyio
async def test_hanging_sync_handler_hits_its_deadline_and_the_pool_still_serves(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A stuck sync call ends DEADLINE_EXCEEDED; its thread runs on; other threads serve."""
    stuck = threading.Event()
    release = threading.Event()

    def handler(keys: list[str], datum: Datum) -> Messages:
        if datum.value == b"hang":
            stuck.set()
            release.wait(30)
        return Messages(Message(datum.value))

    async with serving(sock_path, info_path, map_handler=handler, max_threads=2):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2, b"hang"), timeout=0.3)
        assert stuck.is_set()
        replies = await asyncio.gather(
            *(fn_stub.MapFn(datum_request(fn_pb2, b"ok"), timeout=10) for _ in range(5))
        )
        release.set()
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [r.elements[0].value for r in replies] == [b"ok"] * 5


@pytest.mark.anyio
async def test_is_ready_answers_while_every_pool_thread_is_busy(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """IsReady is served on the event loop, not in the handler pool."""
    release = threading.Event()

    def blocking(keys: list[str], datum: Datum) -> Messages:
        release.wait(30)
        return Messages()

    async with serving(sock_path, info_path, map_handler=blocking, max_threads=2):
        busy = [asyncio.ensure_future(fn_stub.MapFn(datum_request(fn_pb2))) for _ in range(4)]
        await asyncio.sleep(0.2)
        ready = await fn_stub.IsReady(fn_pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=2)
        release.set()
        await asyncio.gather(*busy)
    assert ready.ready


def test_an_async_handler_blocking_the_loop_makes_is_ready_time_out(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """A CPU-bound async handler stalls the loop, so IsReady times out instead of lying."""
    source = """
import time
from pynumaflow.function import AsyncServer, Messages, Message

async def hog(keys, datum):
    time.sleep(float(datum.value))  # blocks the event loop, as CPU-bound work would
    return Messages(Message(b"done"))

if __name__ == "__main__":
    import asyncio
    asyncio.run(AsyncServer(map_handler=hog).start())
"""
    proc = start_script(source, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    pb2 = stubs["fn_pb2"]
    with grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}") as ch:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(ch)
        assert stub.IsReady(pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=5).ready
        hog = stub.MapFn.future(datum_request(pb2, b"2.0"))
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as stalled:
            stub.IsReady(pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=0.5)
        assert hog.result(timeout=10).elements[0].value == b"done"
        assert stub.IsReady(pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=5).ready
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 0
    assert stalled.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


SLOW_ASYNC = """
import asyncio
from pynumaflow.function import AsyncServer, Messages, Message

async def slow(keys, datum):
    await asyncio.sleep(float(datum.value))
    return Messages(Message(datum.value))

if __name__ == "__main__":
    asyncio.run(AsyncServer(map_handler=slow, shutdown_grace_period=10).start())
"""


def test_sigterm_with_500_calls_in_flight_loses_none(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """Under SIGTERM each of 500 calls completes OK or ends with a status the platform retries."""
    proc = start_script(SLOW_ASYNC, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    pb2 = stubs["fn_pb2"]
    channel = grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}", options=CHANNEL_OPTIONS)
    stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
    # Each call takes 2 s; SIGTERM 1 s after sending, when every call has reached the
    # server (also on a loaded machine) and none has finished: all 500 are in flight.
    calls = [stub.MapFn.future(datum_request(pb2, b"2")) for _ in range(500)]
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    late = [stub.MapFn.future(datum_request(pb2, b"0.1")) for _ in range(20)]
    outcomes = []
    for call in calls + late:
        error = call.exception(timeout=30)
        outcomes.append("OK" if error is None else error.code().name)
    code, output = finish(proc)
    channel.close()
    assert code == 0, output
    assert set(outcomes) <= {"OK", "UNAVAILABLE", "UNKNOWN"}
    assert outcomes[:500].count("OK") == 500  # everything in flight drained
    assert not (tmp_path / "function.sock").exists()
    assert not (tmp_path / "server-info").exists()


def test_sigkill_then_restart_on_the_same_socket(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """After SIGKILL leaves socket and server-info behind, a restart serves on the same path."""
    proc = start_script(SLOW_ASYNC, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    proc.kill()
    finish(proc)
    assert (tmp_path / "function.sock").exists()
    (tmp_path / "server-info").unlink()  # the platform's init clears it between runs
    proc = start_script(SLOW_ASYNC, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    pb2 = stubs["fn_pb2"]
    with grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}") as ch:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(ch)
        reply = stub.MapFn(datum_request(pb2, b"0"), timeout=5)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 0
    assert reply.elements[0].value == b"0"


def test_server_info_is_never_seen_half_written(tmp_path: Path) -> None:
    """A reader polling during start-up sees no file, or the whole JSON with its end marker."""
    seen: list[str] = []
    stop = threading.Event()
    info = tmp_path / "server-info"

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.append(info.read_text(encoding="utf-8"))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(3):
            proc = start_script(SLOW_ASYNC, tmp_path)
            wait_for_server_info(proc, info)
            proc.send_signal(signal.SIGTERM)
            assert finish(proc)[0] == 0
    finally:
        stop.set()
        reader.join()
    assert seen, "the reader never saw the file"
    assert all(text.endswith(END) and text.startswith("{") for text in seen)


DECODERS = {
    "function.v1 DatumRequest": legacy_function.decode_datum_request,
    "sink.v1 DatumRequest (legacy)": legacy_sink.decode_sink_datum_request,
    "map.v1 MapRequest": map_codec.decode_map_request,
    "sourcetransformer.v1 request": map_codec.decode_transform_request,
    "reduce.v1 ReduceRequest": reduce_codec.decode_reduce_request,
    "sink.v1 SinkRequest": sink_codec.decode_sink_request,
    "Empty": check_message,
}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("field0", [b"\x00\x01", b"\x02\x00", b"\x05\x00\x00\x00\x00"])
def test_field_number_zero_is_refused_by_every_request_decoder(decoder: str, field0: bytes) -> None:
    """Field 0 (any wire type) is invalid protobuf: CodecError, so INVALID_ARGUMENT."""
    with pytest.raises(CodecError, match="field number 0"):
        DECODERS[decoder](field0)


# Error texts from os.fsdecode or surrogateescape decoding hold lone surrogates.
SURROGATE = "bad \udcff name"
WINDOW = (("x-numaflow-win-start-time", "0"), ("x-numaflow-win-end-time", "60000"))


def _raise_surrogate(*args: Any) -> Any:
    raise ValueError(SURROGATE)


async def _raise_surrogate_async(*args: Any) -> Any:
    raise ValueError(SURROGATE)


def _stream_then_raise(keys: list[str], datum: Datum) -> Any:
    yield Message(b"first")
    raise ValueError(SURROGATE)


async def _reduce_raise(keys: list[str], datums: Any, md: Any) -> Any:
    async for _ in datums:
        pass
    raise ValueError(SURROGATE)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "rpc", ["MapFn sync", "MapTFn async", "MapStreamFn sync", "ReduceFn async"]
)
async def test_a_lone_surrogate_in_an_error_text_still_ends_the_legacy_call(
    rpc: str, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """The status goes out with the surrogate backslash-escaped, instead of never."""
    request = datum_request(fn_pb2, b"x")
    async with serving(
        sock_path,
        info_path,
        map_handler=_raise_surrogate,
        mapt_handler=_raise_surrogate_async,
        map_stream_handler=_stream_then_raise,
        reduce_handler=_reduce_raise,
        protocols=["legacy"],
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            if rpc == "MapFn sync":
                await fn_stub.MapFn(request, timeout=10)
            elif rpc == "MapTFn async":
                await fn_stub.MapTFn(request, timeout=10)
            elif rpc == "MapStreamFn sync":
                _ = [r async for r in fn_stub.MapStreamFn(request, timeout=10)]
            else:
                call = fn_stub.ReduceFn(iter([request]), metadata=WINDOW, timeout=10)
                _ = [r async for r in call]
        reply = await fn_stub.IsReady(fn_pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "bad \\udcff name" in (failure.value.details() or "")
    assert reply.ready


@pytest.mark.anyio
async def test_a_lone_surrogate_in_a_v1_traceback_still_ends_the_stream(
    sock_dir: Path,
    sock_path: str,
    info_path: str,
    stubs: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v1: INTERNAL, with the traceback (surrogate escaped) as google.rpc.DebugInfo."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    pb2 = stubs["map_pb2"]
    requests = [
        pb2.MapRequest(handshake=pb2.Handshake(sot=True)),
        pb2.MapRequest(id="1", request=pb2.MapRequest.Request(**v1_request_fields(b"x"))),
    ]
    target = f"unix://{sock_dir / 'map.sock'}"
    async with (
        serving(sock_path, info_path, map_handler=_raise_surrogate, protocols=["v1"]),
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = stubs["map_grpc"].MapStub(channel)
        ended = await asyncio.wait_for(converse(stub.MapFn(), requests), 10)
    assert ended.code == grpc.StatusCode.INTERNAL
    debug_info = ended.status_details().details[0].value
    assert b"bad \\udcff name" in debug_info
    assert b"Traceback" in debug_info


STUCK = """
import os, pathlib, threading
from pynumaflow.function import Server, Message, Messages

def handler(keys, datum):
    if datum.value == b"hang":
        (pathlib.Path(os.environ["PYNUMAFLOW_RUN_DIR"]) / "hanging").touch()
        threading.Event().wait()  # stuck for good
    if datum.value == b"exit":
        raise SystemExit(3)
    return Messages(Message(datum.value))

Server(map_handler=handler, max_threads=2, shutdown_grace_period=1).start()
"""


@contextlib.contextmanager
def _stuck_script(tmp_path: Path, stubs: dict[str, ModuleType]) -> Iterator[tuple[Any, Any]]:
    """Run STUCK in a subprocess; yield it and a MapFn stub on its socket."""
    proc = start_script(STUCK, tmp_path)
    wait_for_server_info(proc, tmp_path / "server-info")
    with grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}") as ch:
        yield proc, stubs["fn_grpc"].UserDefinedFunctionStub(ch)


def test_sigterm_exits_past_the_grace_period_although_a_sync_handler_is_stuck(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """The stuck thread is abandoned, named in the log; the process exits 0."""
    with _stuck_script(tmp_path, stubs) as (proc, stub):
        hung = stub.MapFn.future(datum_request(stubs["fn_pb2"], b"hang"))
        deadline = time.monotonic() + 10
        while not (tmp_path / "hanging").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, output = finish(proc, timeout=20)
        took = time.monotonic() - started
        hung_error = hung.exception(timeout=10)
    assert code == 0, output
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    assert "cancelling 1 call(s) still running after 1.0 s" in output
    assert "abandoning 1 handler thread(s) still running: pynumaflow-handler_" in output
    assert hung_error is not None
    assert not (tmp_path / "function.sock").exists()


def test_system_exit_in_a_handler_fails_only_its_call(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SystemExit from a handler is that call's failure, like any error; the server serves on."""
    pb2 = stubs["fn_pb2"]
    with _stuck_script(tmp_path, stubs) as (proc, stub):
        with pytest.raises(grpc.RpcError) as exited:
            stub.MapFn(datum_request(pb2, b"exit"), timeout=10)
        after = stub.MapFn(datum_request(pb2, b"ok"), timeout=10)
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc, timeout=20)
    assert exited.value.code() == grpc.StatusCode.UNKNOWN
    assert "SystemExit: 3" in (exited.value.details() or "")
    assert after.elements[0].value == b"ok"
    assert code == 0, output
    assert output.count("map_handler raised SystemExit") == 1


async def _interrupted(keys: list[str], datum: Datum) -> Messages:
    if datum.value == b"x":
        raise KeyboardInterrupt
    return Messages(Message(datum.value))


@pytest.mark.anyio
async def test_keyboard_interrupt_in_an_async_handler_fails_only_its_call(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """On the event loop too: KeyboardInterrupt is the call's failure, not the server's."""
    async with serving(sock_path, info_path, map_handler=_interrupted):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2, b"x"), timeout=10)
        after = await fn_stub.MapFn(datum_request(fn_pb2, b"ok"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "KeyboardInterrupt" in (failure.value.details() or "")
    assert after.elements[0].value == b"ok"


@pytest.mark.anyio
async def test_is_ready_reports_not_ready_while_the_pool_makes_no_progress(
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every thread hung with calls queued behind them: not ready after the stall time."""
    monkeypatch.setenv("PYNUMAFLOW_POOL_STALL_AFTER", "1.5")
    release = threading.Event()
    empty = fn_pb2.google_dot_protobuf_dot_empty__pb2.Empty()

    def handler(keys: list[str], datum: Datum) -> Messages:
        if datum.value == b"hang":
            release.wait(30)
        return Messages(Message(datum.value))

    async with serving(sock_path, info_path, map_handler=handler, max_threads=2):
        ready_before = (await fn_stub.IsReady(empty, timeout=5)).ready
        hung = [
            asyncio.ensure_future(fn_stub.MapFn(datum_request(fn_pb2, b"hang"))) for _ in range(2)
        ]
        await asyncio.sleep(0.2)
        queued = asyncio.ensure_future(fn_stub.MapFn(datum_request(fn_pb2, b"queued")))
        await asyncio.sleep(0.2)
        ready_soon = (await fn_stub.IsReady(empty, timeout=5)).ready  # not stalled long enough
        await asyncio.sleep(1.6)
        ready_stalled = (await fn_stub.IsReady(empty, timeout=5)).ready
        release.set()
        answers = await asyncio.gather(*hung, queued)
        ready_after = (await fn_stub.IsReady(empty, timeout=5)).ready
    assert (ready_before, ready_soon, ready_stalled, ready_after) == (True, True, False, True)
    assert [a.elements[0].value for a in answers] == [b"hang", b"hang", b"queued"]
    warnings = [r.getMessage() for r in caplog.records if "reporting not ready" in r.getMessage()]
    assert len(warnings) == 1
    assert "1 call(s) wait for a handler thread" in warnings[0]


@pytest.mark.anyio
async def test_is_ready_reports_not_ready_while_sync_sink_handlers_are_all_stuck(
    sock_dir: Path, stubs: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for sync sink handlers: two stuck batches, a third waiting for a thread."""
    monkeypatch.setenv("PYNUMAFLOW_POOL_STALL_AFTER", "0.5")
    release = threading.Event()
    pb2 = stubs["sink_pb2"]

    def stuck(datums: Any) -> Responses:
        ids = [d.id for d in datums]
        release.wait(30)
        return Responses(*(SinkResponse.as_success(i) for i in ids))

    path = str(sock_dir / "udsink.sock")
    server = Sink(stuck, sock_path=path, server_info_file=str(sock_dir / "info"), max_threads=2)
    async with server.running(), grpc.aio.insecure_channel(f"unix://{path}") as channel:
        stub = stubs["sink_grpc"].UserDefinedSinkStub(channel)
        empty = pb2.google_dot_protobuf_dot_empty__pb2.Empty()
        batches = [
            asyncio.ensure_future(stub.SinkFn(iter([pb2.DatumRequest(id=f"id-{i}")])))
            for i in range(3)
        ]
        await asyncio.sleep(2.0)
        stalled = (await stub.IsReady(empty, timeout=5)).ready
        release.set()
        replies = await asyncio.gather(*batches)
        after = (await stub.IsReady(empty, timeout=5)).ready
    assert (stalled, after) == (False, True)
    assert sorted(r.responses[0].id for r in replies) == ["id-0", "id-1", "id-2"]
