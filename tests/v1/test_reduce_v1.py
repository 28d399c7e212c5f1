"""reduce.v1 ReduceFn (Numaflow >= 1.4) over a real socket, driven by grpcio stubs."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pynumaflow._proto.google import rpc
from pynumaflow.function import AsyncServer, Datum, Message, Messages, Metadata

from conftest import CHANNEL_OPTIONS, seed_examples
from helpers import (
    Running,
    count_async,
    count_sync,
    datum_request,
    drain,
    eventually,
    held_open,
    serving,
)
from procs import finish, start_script, wait_for_server_info

pytestmark = pytest.mark.anyio
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COUNTERS = pytest.mark.parametrize("handler", [count_sync, count_async], ids=["sync", "async"])


@pytest.fixture
def pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["reduce_pb2"]


@pytest.fixture
async def reduce_channel(sock_dir: Path) -> AsyncIterator[grpc.aio.Channel]:
    target = f"unix://{sock_dir / 'reduce.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield channel


@pytest.fixture
def stub(stubs: dict[str, ModuleType], reduce_channel: grpc.aio.Channel) -> Any:
    return stubs["reduce_grpc"].ReduceStub(reduce_channel)


def raw_reduce(channel: grpc.aio.Channel) -> Any:
    """ReduceFn exchanging bytes, to send and see exact wire bytes."""
    return channel.stream_stream(
        "/reduce.v1.Reduce/ReduceFn",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def v1_serving(sock_path: str, info_path: str, handler: Any, **options: Any) -> Any:
    """Serve reduce.v1 only (reduce.sock beside sock_path) with this handler."""
    return serving(sock_path, info_path, reduce_handler=handler, protocols=["v1"], **options)


def at(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(EPOCH + timedelta(seconds=seconds))
    return ts


def window(pb2: ModuleType, start: float, end: float, slot: str = "0") -> Any:
    return pb2.Window(start=at(start), end=at(end), slot=slot)


def request(
    pb2: ModuleType, win: Any, keys: list[str], value: bytes = b"v", event: str = "APPEND"
) -> Any:
    operation = pb2.ReduceRequest.WindowOperation
    return pb2.ReduceRequest(
        payload=pb2.ReduceRequest.Payload(
            keys=keys, value=value, event_time=win.start, watermark=win.start
        ),
        operation=operation(event=getattr(operation, event), windows=[win]),
    )


def window_requests(
    pb2: ModuleType, win: Any, pairs: Iterable[tuple[list[str], bytes]]
) -> list[Any]:
    """A window's requests as the platform sends them: OPEN first, then APPEND."""
    reqs = [request(pb2, win, keys, value) for keys, value in pairs]
    if reqs:
        reqs[0].operation.event = pb2.ReduceRequest.WindowOperation.OPEN
    return reqs


def one_per_key(pb2: ModuleType, win: Any, keys: list[str]) -> list[Any]:
    return window_requests(pb2, win, [([key], b"v") for key in keys])


def split(responses: list[Any]) -> tuple[dict[tuple[str, ...], list[Any]], list[Any]]:
    """Results by keys, and the EOF windows; checks that every EOF comes after every result."""
    results: dict[tuple[str, ...], list[Any]] = {}
    eofs = []
    for response in responses:
        assert response.HasField("window")
        if response.EOF:
            assert not response.HasField("result")
            eofs.append(response.window)
        else:
            assert not eofs, "a result came after an EOF"
            results.setdefault(tuple(response.result.keys), []).append(response)
    return results, eofs


async def reduce_v1(stub: Any, reqs: Any, metadata: Any = None) -> list[Any]:
    """Run one ReduceFn stream to its end; return every response in order."""
    return [response async for response in stub.ReduceFn(reqs, metadata=metadata)]


def facts_of(response: Any) -> dict[str, Any]:
    return json.loads(response.result.value)  # type: ignore[no-any-return]


def status_details(failure: grpc.aio.AioRpcError) -> rpc.Status:
    """The google.rpc.Status the server put in grpc-status-details-bin."""
    trailers = dict(failure.trailing_metadata() or ())
    return rpc.Status().parse(trailers["grpc-status-details-bin"])


@COUNTERS
async def test_fixed_window_counts_per_key(
    handler: Any, sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """Each key gets its count and the operation's window (not the legacy headers), then EOF."""
    win = window(pb2, 60, 120)
    reqs = window_requests(pb2, win, [(["k1"], b"a"), (["k2"], b"b"), (["k1"], b"c")])
    misleading = (("x-numaflow-win-start-time", "0"), ("x-numaflow-win-end-time", "1000"))
    async with v1_serving(sock_path, info_path, handler):
        responses = await reduce_v1(stub, reqs, misleading)
    results, eofs = split(responses)
    assert len(responses) == 3
    assert eofs == [win]
    assert {keys: len(found) for keys, found in results.items()} == {("k1",): 1, ("k2",): 1}
    k1, k2 = facts_of(results[("k1",)][0]), facts_of(results[("k2",)][0])
    assert (k1["count"], k1["values"], k2["count"]) == (2, "ac", 1)
    assert k1["start"] == "1970-01-01T00:01:00+00:00"
    assert k1["end"] == "1970-01-01T00:02:00+00:00"
    assert all(found[0].window == win for found in results.values())


@COUNTERS
async def test_interleaved_keys_are_grouped_by_key_list(
    handler: Any, sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """Interleaved datums reach their group in order; ["a:b"] and ["a","b"] are two groups."""
    key_lists = [["a:b"], ["a", "b"], [], ["a"], ["b", "a"]]
    pairs = [(key_lists[i % 5], str(i).encode()) for i in range(50)]
    async with v1_serving(sock_path, info_path, handler, max_threads=2):
        results, eofs = split(
            await reduce_v1(stub, window_requests(pb2, window(pb2, 0, 60), pairs))
        )
    assert len(results) == 5
    assert len(eofs) == 1
    for n, keys in enumerate(key_lists):
        (response,) = results[tuple(keys)]
        assert list(response.result.keys) == keys
        assert facts_of(response)["values"] == "".join(str(i) for i in range(n, 50, 5))


@COUNTERS
async def test_sliding_windows_concurrent_streams(
    handler: Any, sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """Overlapping windows, one stream each on one connection, each count only their datums."""
    length, slide = 60, 20
    starts = range(0, 100, slide)  # [0, 60), [20, 80), ... [80, 140)
    moments = range(5, 140, 10)  # one datum per key every 10 s

    def window_stream(start: int) -> list[Any]:
        win = window(pb2, start, start + length)
        inside = [t for t in moments if start <= t < start + length]
        return window_requests(pb2, win, [([k], str(t).encode()) for t in inside for k in "xy"])

    async with v1_serving(sock_path, info_path, handler, max_threads=2):
        answers = await asyncio.gather(*(reduce_v1(stub, window_stream(s)) for s in starts))
    for start, responses in zip(starts, answers, strict=True):
        results, eofs = split(responses)
        assert eofs == [window(pb2, start, start + length)]
        expected = [t for t in moments if start <= t < start + length]
        for key in "xy":
            (response,) = results[(key,)]
            facts = facts_of(response)
            assert facts["values"] == "".join(str(t) for t in expected)
            assert facts["start"] == (EPOCH + timedelta(seconds=start)).isoformat()
            assert response.window == window(pb2, start, start + length)


@pytest.mark.parametrize("slot", ["0", "slot-0"], ids=["rust", "go"])
async def test_window_is_echoed_byte_for_byte(
    slot: str, sock_path: str, info_path: str, reduce_channel: grpc.aio.Channel, pb2: ModuleType
) -> None:
    """Every response carries the request's Window bytes exactly, a present-but-epoch start too."""
    win = pb2.Window(start=Timestamp(), end=at(60), slot=slot)
    encoded = win.SerializeToString()
    assert encoded.startswith(b"\x0a\x00")  # start is present though it is the epoch
    window_field = b"\x12" + bytes([len(encoded)]) + encoded
    raw = raw_reduce(reduce_channel)
    reqs = [r.SerializeToString() for r in one_per_key(pb2, win, ["a", "b"])]
    async with v1_serving(sock_path, info_path, count_async):
        responses = [data async for data in raw(reqs)]
    assert len(responses) == 3
    assert all(data.endswith(window_field) for data in responses[:2])
    assert responses[2] == window_field + b"\x18\x01"  # the EOF: the window, EOF true
    assert pb2.ReduceResponse.FromString(responses[0]).window.slot == slot


async def test_one_eof_per_window_after_all_results(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A stream naming two windows gets both windows' results, then one EOF each, in order."""
    first, second = window(pb2, 0, 60), window(pb2, 60, 120, slot="slot-0")
    reqs = [
        request(pb2, first, ["a"], event="OPEN"),
        request(pb2, second, ["a"], event="OPEN"),
        request(pb2, first, ["b"]),
        request(pb2, first, ["a"]),
    ]
    async with v1_serving(sock_path, info_path, count_async):
        responses = await reduce_v1(stub, reqs)
    results, eofs = split(responses)
    assert eofs == [first, second]
    assert responses[-2:] == [pb2.ReduceResponse(window=w, EOF=True) for w in eofs]
    counts = sorted(
        (r.window.start.seconds, k, facts_of(r)["count"]) for k, rs in results.items() for r in rs
    )
    assert counts == [(0, ("a",), 2), (0, ("b",), 1), (60, ("a",), 1)]


async def test_results_wait_for_the_half_close(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A call that returns early is answered only once the client has half-closed."""
    returned = threading.Event()

    def early(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        returned.set()
        return Messages(Message(b"early", keys=keys))

    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def from_queue() -> AsyncIterator[Any]:
        while (item := await queue.get()) is not None:
            yield item

    win = window(pb2, 0, 60)
    received: list[Any] = []
    async with v1_serving(sock_path, info_path, early):
        call = stub.ReduceFn(from_queue())
        reader = asyncio.ensure_future(drain(call, received))
        queue.put_nowait(request(pb2, win, ["k"], event="OPEN"))
        await asyncio.to_thread(returned.wait, 5)
        queue.put_nowait(request(pb2, win, ["k"]))  # dropped: the call is over
        await asyncio.sleep(0.3)
        assert received == []
        queue.put_nowait(None)
        await reader
    assert [(r.result.value, r.EOF) for r in received] == [(b"early", False), (b"", True)]


BLOCKING = pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])


def blocking(running: Running, fail_on: str, sent: threading.Event, is_async: bool) -> Any:
    """A handler reading until its input ends; fail_on's raises once everything was sent."""

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            for _ in datums:
                if keys == [fail_on]:
                    sent.wait(5)
                    raise RuntimeError("handler exploded")
            return Messages(Message(b"done", keys=keys))

    async def async_handler(
        keys: list[str], datums: AsyncIterator[Datum], md: Metadata
    ) -> Messages:
        with running:
            async for _ in datums:
                if keys == [fail_on]:
                    await asyncio.to_thread(sent.wait, 5)
                    raise RuntimeError("handler exploded")
            return Messages(Message(b"done", keys=keys))

    return async_handler if is_async else handler


@BLOCKING
async def test_handler_error_is_the_v1_form_and_cleans_up(
    is_async: bool, sock_path: str, info_path: str, stub: Any, pb2: ModuleType, caplog: Any
) -> None:
    """A raising handler: INTERNAL UDF_EXECUTION_ERROR with a traceback; nothing left running."""
    running = Running()
    stop, sent = asyncio.Event(), threading.Event()
    keys = ["k1", "k2", "bad", "k3", "k4", "k5"]  # sync: k4 and k5 wait for a pool thread
    handler = blocking(running, "bad", sent, is_async)
    win = window(pb2, 0, 60)
    received: list[Any] = []
    async with v1_serving(sock_path, info_path, handler, max_threads=4):
        baseline = len(asyncio.all_tasks())
        call = stub.ReduceFn(held_open(one_per_key(pb2, win, keys), stop, sent))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(call, received)
        stop.set()
        await eventually(lambda: running.now == 0 and len(asyncio.all_tasks()) == baseline)
        # The pool is free again: a new window with as many keys as threads is served.
        results, _ = split(await reduce_v1(stub, one_per_key(pb2, win, ["n1", "n2", "n3", "n4"])))
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    message = failure.value.details()
    assert message.startswith("UDF_EXECUTION_ERROR(udf): RuntimeError('handler exploded')")
    assert "['bad']" in message
    status = status_details(failure.value)
    assert (status.code, status.message) == (13, message)
    (detail,) = status.details
    assert detail.type_url == "type.googleapis.com/google.rpc.DebugInfo"
    traceback = rpc.DebugInfo().parse(detail.value).detail
    assert "Traceback" in traceback
    assert "handler exploded" in traceback
    assert received == []
    assert len(results) == 4
    assert len([r for r in caplog.records if r.name == "pynumaflow" and r.exc_info]) == 1


async def test_wrong_return_type_names_container_and_keys(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler returning other than Messages fails INTERNAL, with the platform's container."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")

    async def bad(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Any:
        return None

    stop = asyncio.Event()
    async with v1_serving(sock_path, info_path, bad):
        call = stub.ReduceFn(held_open(one_per_key(pb2, window(pb2, 0, 60), ["k"]), stop))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(call)
        stop.set()
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    message = failure.value.details()
    assert message.startswith(
        "UDF_EXECUTION_ERROR(udf): reduce_handler returned a wrong type: "
        "handler returned NoneType; expected Messages"
    )
    assert "['k']" in message
    assert (
        "returned NoneType"
        in rpc.DebugInfo().parse(status_details(failure.value).details[0].value).detail
    )


@BLOCKING
async def test_client_cancel_cleans_up(
    is_async: bool, sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A client cancelling mid-window leaves no server task and no handler call running."""
    running = Running()
    stop = asyncio.Event()
    keys = ["k1", "k2", "k3", "k4", "k5", "k6"]
    handler = blocking(running, "", threading.Event(), is_async)
    concurrent = 6 if is_async else 4  # sync calls beyond the 4 threads wait for one
    win = window(pb2, 0, 60)
    async with v1_serving(sock_path, info_path, handler, max_threads=4):
        baseline = len(asyncio.all_tasks())
        threads = set(threading.enumerate())
        call = stub.ReduceFn(held_open(one_per_key(pb2, win, keys), stop))
        await eventually(lambda: running.now == concurrent)
        assert len(asyncio.all_tasks()) > baseline
        call.cancel()
        stop.set()
        await eventually(lambda: running.now == 0 and len(asyncio.all_tasks()) == baseline)
        assert running.started == concurrent  # calls still waiting for a thread never ran
        # The pool's threads, no more (the session's loop may keep executor threads).
        added = [t.name for t in set(threading.enumerate()) - threads]
        assert len(added) <= 4, added
        assert all(name.startswith("pynumaflow-handler") for name in added), added
        results, eofs = split(await reduce_v1(stub, one_per_key(pb2, win, keys)))
    assert len(results) == 6  # the pool is free again
    assert len(eofs) == 1
    assert call.cancelled()


async def test_non_keyed_stream(sock_path: str, info_path: str, stub: Any, pb2: ModuleType) -> None:
    """Non-keyed reduce arrives as keys ["NON_KEYED_STREAM"] and is one group."""
    pairs = [(["NON_KEYED_STREAM"], str(i).encode()) for i in range(10)]
    async with v1_serving(sock_path, info_path, count_sync):
        results, eofs = split(
            await reduce_v1(stub, window_requests(pb2, window(pb2, 0, 60), pairs))
        )
    (response,) = results[("NON_KEYED_STREAM",)]
    assert facts_of(response)["keys"] == ["NON_KEYED_STREAM"]
    assert facts_of(response)["count"] == 10
    assert len(eofs) == 1


def _bad_requests(pb2: ModuleType) -> dict[str, tuple[bytes, str]]:
    win = window(pb2, 0, 60)
    no_window = request(pb2, win, ["k"], event="OPEN")
    del no_window.operation.windows[:]
    two_windows = request(pb2, win, ["k"], event="OPEN")
    two_windows.operation.windows.append(window(pb2, 60, 120))
    expand = request(pb2, win, ["k"])
    expand.operation.event = 2  # EXPAND: session windows only
    return {
        "no-window": (no_window.SerializeToString(), "exactly one window, got 0"),
        "two-windows": (two_windows.SerializeToString(), "exactly one window, got 2"),
        "expand": (expand.SerializeToString(), "unsupported window operation 2"),
        "malformed": (b"\x0a\xff\x01abc", "malformed ReduceRequest"),
    }


@pytest.mark.parametrize("case", ["no-window", "two-windows", "expand", "malformed"])
async def test_bad_requests_are_invalid_argument(
    case: str, sock_path: str, info_path: str, reduce_channel: grpc.aio.Channel, pb2: ModuleType
) -> None:
    """A request naming other than one window, an unknown operation or garbage: INVALID_ARGUMENT."""
    data, text = _bad_requests(pb2)[case]
    running = Running()

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            return Messages()

    raw = raw_reduce(reduce_channel)
    received: list[Any] = []
    stop = asyncio.Event()
    async with v1_serving(sock_path, info_path, handler):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(raw(held_open([data], stop)), received)
        stop.set()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in failure.value.details()
    assert received == []
    assert running.started == 0


async def test_close_ends_the_window_groups(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A CLOSE ends that window's calls' input; their answers still wait for the half-close."""
    running = Running()
    seen: list[tuple[str, int]] = []

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            seen.append((keys[0], sum(1 for _ in datums)))
            return Messages(Message(b"closed", keys=keys))

    win = window(pb2, 0, 60)
    stop = asyncio.Event()
    reqs = [*one_per_key(pb2, win, ["k1", "k2", "k1"]), request(pb2, win, [], event="CLOSE")]
    async with v1_serving(sock_path, info_path, handler):
        call = stub.ReduceFn(held_open(reqs, stop))
        received: list[Any] = []
        reader = asyncio.ensure_future(drain(call, received))
        await eventually(lambda: running.started == 2 and running.now == 0)
        assert received == []
        stop.set()
        await reader
    assert sorted(seen) == [("k1", 2), ("k2", 1)]
    results, eofs = split(received)
    assert set(results) == {("k1",), ("k2",)}
    assert eofs == [win]


async def test_request_after_close_is_invalid_argument(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A datum for a window after its CLOSE fails the stream with INVALID_ARGUMENT."""
    win = window(pb2, 0, 60)
    reqs = [
        request(pb2, win, ["k"], event="OPEN"),
        request(pb2, win, [], event="CLOSE"),
        request(pb2, win, ["k"]),
    ]
    stop = asyncio.Event()
    async with v1_serving(sock_path, info_path, count_async):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(stub.ReduceFn(held_open(reqs, stop)))
        stop.set()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after its CLOSE" in failure.value.details()


def seed_reduce_source() -> str:
    source = seed_examples()[2]
    assert "reduce_handler=my_handler" in source
    return source


SEED_WINDOW = (
    "interval_window_start:1970-01-01 00:01:00+00:00 interval_window_end:1970-01-01 00:02:00+00:00"
)


async def test_seed_readme_example_over_reduce_v1(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """The pynumaflow 0.4 README's reduce example, unchanged, answers reduce.v1."""
    namespace: dict[str, Any] = {"__name__": "seed_reduce"}
    exec(compile(seed_reduce_source(), "seed-reduce", "exec"), namespace)
    reqs = window_requests(pb2, window(pb2, 60, 120), [(["a"], b"1"), (["b"], b"2"), (["a"], b"3")])
    async with v1_serving(sock_path, info_path, namespace["my_handler"]):
        results, eofs = split(await reduce_v1(stub, reqs))
    assert {k: [r.result.value for r in rs] for k, rs in results.items()} == {
        ("a",): [f"counter:2 {SEED_WINDOW}".encode()],
        ("b",): [f"counter:1 {SEED_WINDOW}".encode()],
    }
    assert len(eofs) == 1


async def test_drain_ends_open_windows_and_finishes_closed_ones(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """On shutdown an open window ends UNAVAILABLE at once; a half-closed one still finishes."""
    release = asyncio.Event()
    reading = Running()

    async def handler(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
        with reading:
            count = len([d async for d in datums])
            await release.wait()
            return Messages(Message(str(count).encode(), keys=keys))

    server = AsyncServer(
        reduce_handler=handler,
        sock_path=sock_path,
        server_info_file=info_path,
        protocols=["v1"],
        shutdown_grace_period=60,
    )
    stop = asyncio.Event()
    context = server.running()
    await context.__aenter__()
    try:
        open_window = stub.ReduceFn(held_open(one_per_key(pb2, window(pb2, 0, 60), ["o"]), stop))
        closed_window = stub.ReduceFn(one_per_key(pb2, window(pb2, 60, 120), ["c", "c"]))
        await eventually(lambda: reading.started == 2)
        started = time.monotonic()
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(open_window)
        release.set()
        finished: list[Any] = []
        await drain(closed_window, finished)
        await stopping
    finally:
        stop.set()
    assert time.monotonic() - started < 30  # not the 60 s grace period
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    results, eofs = split(finished)
    assert results[("c",)][0].result.value == b"2"
    assert len(eofs) == 1


def _legacy_reduce(stubs: dict[str, ModuleType], sock: Path) -> Callable[[], Any]:
    async def call() -> list[Any]:
        pb2 = stubs["fn_pb2"]
        reqs = [datum_request(pb2, v, keys=k) for k, v in [(["a"], b"1"), (["a"], b"2")]]
        headers = (("x-numaflow-win-start-time", "60000"), ("x-numaflow-win-end-time", "120000"))
        async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
            legacy = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
            return [r async for r in legacy.ReduceFn(reqs, metadata=headers)]

    return call


async def test_seed_script_serves_both_generations_then_drains(
    tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """The unchanged 0.4 reduce script answers function.v1 and reduce.v1 clients at once.

    SIGTERM then ends a window still open with UNAVAILABLE and the process exits 0.
    """
    pb2 = stubs["reduce_pb2"]
    proc = start_script(seed_reduce_source(), tmp_path)
    try:
        await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "server-info")
        info = await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "reducer-server-info")
        assert info["minimum_numaflow_version"] == "1.4.0-z"
        target = f"unix://{tmp_path / 'reduce.sock'}"
        async with grpc.aio.insecure_channel(target) as channel:
            v1 = stubs["reduce_grpc"].ReduceStub(channel)
            reqs = window_requests(pb2, window(pb2, 60, 120), [(["a"], b"1"), (["a"], b"2")])
            legacy, current = await asyncio.gather(
                _legacy_reduce(stubs, tmp_path / "function.sock")(), reduce_v1(v1, reqs)
            )
            stop = asyncio.Event()
            sent = threading.Event()
            idle = v1.ReduceFn(held_open(one_per_key(pb2, window(pb2, 0, 60), ["i"]), stop, sent))
            await asyncio.to_thread(sent.wait, 5)
            await asyncio.sleep(0.2)  # the server has read the datum
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await drain(idle)
            stop.set()
        code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    expected = f"counter:2 {SEED_WINDOW}".encode()
    assert [e.value for r in legacy for e in r.elements] == [expected]
    results, eofs = split(current)
    assert [r.result.value for r in results[("a",)]] == [expected]
    assert len(eofs) == 1
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not (tmp_path / "reduce.sock").exists()
