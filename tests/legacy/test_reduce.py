"""ReduceFn over a real socket, driven by a grpcio aio client (bidirectional stream)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Callable

import grpc
import pytest

from pynumaflow._engines.reduce import FEED_SIZE
from pynumaflow.function import Datum, Message, Messages, Metadata

from conftest import seed_examples
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

pytestmark = pytest.mark.anyio
UTC = timezone.utc
START, END = "x-numaflow-win-start-time", "x-numaflow-win-end-time"
WINDOW = ((START, "60000"), (END, "120000"))


def requests(pb2: ModuleType, pairs: Iterable[tuple[list[str], bytes]]) -> list[Any]:
    return [datum_request(pb2, value, keys=keys) for keys, value in pairs]


async def reduce_call(
    stub: Any, reqs: Iterable[Any] | AsyncIterator[Any], metadata: Any = WINDOW
) -> dict[tuple[str, ...], list[bytes]]:
    """Run one ReduceFn stream to the end; map each answer's keys to its values."""
    answers: dict[tuple[str, ...], list[bytes]] = {}
    async for reply in stub.ReduceFn(reqs, metadata=metadata):
        for element in reply.elements:
            answers.setdefault(tuple(element.keys), []).append(element.value)
    return answers


COUNTERS = pytest.mark.parametrize("handler", [count_sync, count_async], ids=["sync", "async"])


@COUNTERS
async def test_reduce_counts_per_key_with_window(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Each key gets one answer with its datum count and the window as aware UTC datetimes."""
    reqs = requests(fn_pb2, [(["k1"], b"a"), (["k2"], b"b"), (["k1"], b"c")])
    async with serving(sock_path, info_path, reduce_handler=handler):
        answers = await reduce_call(fn_stub, reqs)
    facts = {keys: json.loads(values[0]) for keys, values in answers.items()}
    assert {keys: len(values) for keys, values in answers.items()} == {("k1",): 1, ("k2",): 1}
    assert facts[("k1",)]["count"] == 2
    assert facts[("k2",)]["count"] == 1
    assert facts[("k1",)]["start"] == datetime(1970, 1, 1, 0, 1, tzinfo=UTC).isoformat()
    assert facts[("k1",)]["end"] == datetime(1970, 1, 1, 0, 2, tzinfo=UTC).isoformat()


@COUNTERS
async def test_reduce_interleaved_keys_are_grouped_by_key_list(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Interleaved datums reach their group in order; ["a:b"] and ["a","b"] are two groups."""
    key_lists = [["a:b"], ["a", "b"], [], ["a"], ["b", "a"]]
    pairs = [(key_lists[i % 5], str(i).encode()) for i in range(50)]
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=2):
        answers = await reduce_call(fn_stub, requests(fn_pb2, pairs))
    assert len(answers) == 5
    for n, keys in enumerate(key_lists):
        (value,) = answers[tuple(keys)]
        facts = json.loads(value)
        assert facts["keys"] == keys
        assert facts["values"] == "".join(str(i) for i in range(n, 50, 5))


@COUNTERS
async def test_reduce_ten_thousand_keys(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """10,000 keys in one window (far more than the 4 pool threads) each get their answer."""
    keys = [[f"key-{i}"] for i in range(10_000)]
    hot = keys[:3] + keys[-3:]  # these get more datums after later keys have started
    pairs = [(k, b"x") for k in keys] + [(k, b"y") for k in hot]
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=4):
        answers = await reduce_call(fn_stub, requests(fn_pb2, pairs))
    assert len(answers) == 10_000
    values = {k: json.loads(v[0])["values"] for k, v in answers.items()}
    assert values == {tuple(k): "xy" if k in hot else "x" for k in keys}


async def test_reduce_concurrent_windows(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Two windows streamed at once on one connection each get their own answers."""
    first = requests(fn_pb2, [(["k"], b"1")] * 300)
    second = requests(fn_pb2, [(["k"], b"2")] * 200)
    other = ((START, "120000"), (END, "180000"))
    async with serving(sock_path, info_path, reduce_handler=count_sync, max_threads=1):
        one, two = await asyncio.gather(
            reduce_call(fn_stub, first), reduce_call(fn_stub, second, other)
        )
    assert json.loads(one[("k",)][0])["count"] == 300
    facts = json.loads(two[("k",)][0])
    assert (facts["count"], facts["start"]) == (200, "1970-01-01T00:02:00+00:00")


async def test_reduce_async_iterator_under_load_with_slow_io(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Handlers awaiting slow I/O between items, or stopping early, see exactly their datums."""

    async def slow(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
        seen = []
        async for datum in datums:
            seen.append(int(datum.value))
            await asyncio.sleep(random.random() / 1000)
            if keys == ["quitter"] and len(seen) == 3:
                break
        return Messages(Message(json.dumps(seen).encode(), keys=keys))

    names = [f"k{i}" for i in range(20)] + ["quitter"]
    pairs = [([names[i % 21]], str(i).encode()) for i in range(21 * 3 * FEED_SIZE)]
    async with serving(sock_path, info_path, reduce_handler=slow):
        answers = await reduce_call(fn_stub, requests(fn_pb2, pairs))
    for n, name in enumerate(names):
        expected = list(range(n, len(pairs), 21))
        if name == "quitter":
            expected = expected[:3]
        assert json.loads(answers[(name,)][0]) == expected


@pytest.mark.parametrize(
    ("metadata", "header"),
    [
        ((), START),
        (((END, "120000"),), START),
        (((START, "60000"),), END),
        (((START, "1.5"), (END, "120000")), START),
        (((START, "60000"), (END, "")), END),
        (((START, " 60000"), (END, "120000")), START),
        (((START, "60000"), (END, "1e5")), END),
        (((START, "9" * 19), (END, "120000")), START),
        (((START, "9" * 25), (END, "120000")), START),
    ],
    ids=[
        "none",
        "no-start",
        "no-end",
        "fraction",
        "empty",
        "space",
        "exponent",
        "out-of-range",
        "too-long",
    ],
)
async def test_reduce_bad_window_headers_are_invalid_argument(
    metadata: Any,
    header: str,
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
) -> None:
    """A missing or malformed window header fails with INVALID_ARGUMENT naming it, nothing sent."""
    running = Running()

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            return Messages()

    received: list[Any] = []
    stop = asyncio.Event()
    async with serving(sock_path, info_path, reduce_handler=handler):
        call = fn_stub.ReduceFn(held_open([], stop), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(call, received)
        stop.set()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert header in failure.value.details()
    assert received == []
    assert running.started == 0


async def test_reduce_malformed_datum_is_invalid_argument(
    sock_path: str, info_path: str, channel: grpc.aio.Channel
) -> None:
    """Bytes that are not a DatumRequest fail the stream with INVALID_ARGUMENT."""
    raw_reduce = channel.stream_stream(
        "/function.v1.UserDefinedFunction/ReduceFn",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    stop = asyncio.Event()
    async with serving(sock_path, info_path, reduce_handler=count_async):
        call = raw_reduce(held_open([b"\x0a\xff\x01abc"], stop), metadata=WINDOW)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(call)
        stop.set()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in failure.value.details()


def one_per_key(pb2: ModuleType, keys: list[str]) -> list[Any]:
    return requests(pb2, [([key], b"v") for key in keys])


def blocking_handler(running: Running, fail_on: str, sent: threading.Event) -> Callable[..., Any]:
    """Make a sync handler reading until its input ends; fail_on's raises once all is sent."""

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            for _ in datums:
                if keys == [fail_on]:
                    sent.wait(5)
                    raise RuntimeError("handler exploded")
            return Messages(Message(b"done", keys=keys))

    return handler


def async_blocking_handler(
    running: Running, fail_on: str, sent: threading.Event
) -> Callable[..., Any]:
    """Make the async twin of blocking_handler."""

    async def handler(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
        with running:
            async for _ in datums:
                if keys == [fail_on]:
                    await asyncio.to_thread(sent.wait, 5)
                    raise RuntimeError("handler exploded")
            return Messages(Message(b"done", keys=keys))

    return handler


# With 4 pool threads and 6 keys, sync calls beyond the fourth wait for a thread.
BLOCKING = pytest.mark.parametrize(
    ("make_handler", "concurrent"),
    [(blocking_handler, 4), (async_blocking_handler, 6)],
    ids=["sync", "async"],
)


@BLOCKING
async def test_reduce_handler_error_fails_stream_and_cleans_up(
    make_handler: Any,
    concurrent: int,
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
    caplog: Any,
) -> None:
    """A raising handler ends the stream UNKNOWN with text and keys; no call is left running."""
    running = Running()
    stop, sent = asyncio.Event(), threading.Event()
    # 4 threads: k1, k2, bad, k3 take them; k4 and k5 wait for one (sync case).
    keys = ["k1", "k2", "bad", "k3", "k4", "k5"]
    handler = make_handler(running, "bad", sent)
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=4):
        baseline = len(asyncio.all_tasks())
        call = fn_stub.ReduceFn(held_open(one_per_key(fn_pb2, keys), stop, sent), metadata=WINDOW)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await drain(call)
        stop.set()  # lets the client's own request task end
        await eventually(lambda: running.now == 0 and len(asyncio.all_tasks()) == baseline)
        # The pool is free again: a new window with as many keys as threads is served.
        answers = await reduce_call(fn_stub, one_per_key(fn_pb2, ["n1", "n2", "n3", "n4"]))
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "RuntimeError: handler exploded" in failure.value.details()
    assert "['bad']" in failure.value.details()
    assert len(answers) == 4
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.exc_info]
    assert len(logged) == 1


@BLOCKING
async def test_reduce_client_cancel_cleans_up(
    make_handler: Any,
    concurrent: int,
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
) -> None:
    """A client cancelling mid-stream leaves no server task and no handler call running."""
    running = Running()
    stop = asyncio.Event()
    keys = ["k1", "k2", "k3", "k4", "k5", "k6"]
    handler = make_handler(running, "", threading.Event())
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=4):
        baseline = len(asyncio.all_tasks())
        call = fn_stub.ReduceFn(held_open(one_per_key(fn_pb2, keys), stop), metadata=WINDOW)
        await eventually(lambda: running.now == concurrent)
        assert len(asyncio.all_tasks()) > baseline
        call.cancel()
        stop.set()
        await eventually(lambda: running.now == 0 and len(asyncio.all_tasks()) == baseline)
        assert running.started == concurrent  # calls still waiting for a thread never ran
        answers = await reduce_call(fn_stub, one_per_key(fn_pb2, keys))
    assert len(answers) == 6  # the pool is free again
    assert call.cancelled()


async def test_reduce_cancel_stops_sync_call_reading_its_backlog(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A sync call that got its thread late stops at its next read when the client cancels."""
    running = Running()
    read = threading.Event()

    def handler(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
        with running:
            if keys == ["first"]:
                time.sleep(0.2)  # holds the only thread while "late" piles up a backlog
                return Messages()
            for _ in datums:
                read.set()
                time.sleep(0.05)  # 500 datums would take 25 s to get through
            return Messages()

    stop = asyncio.Event()
    reqs = requests(fn_pb2, [(["first"], b"v")] + [(["late"], b"v")] * 500)
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=1):
        call = fn_stub.ReduceFn(held_open(reqs, stop), metadata=WINDOW)
        await asyncio.to_thread(read.wait, 5)
        call.cancel()
        stop.set()
        await eventually(lambda: running.now == 0, timeout=1.0)
    assert running.started == 2


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_reduce_handler_ignoring_its_iterator(
    is_async: bool, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A handler returning without reading gets answered; its later datums are dropped."""

    def ignore(keys: list[str], datums: Any, md: Metadata) -> Messages:
        return Messages(Message(b"ignored", keys=keys))

    async def async_ignore(keys: list[str], datums: Any, md: Metadata) -> Messages:
        return ignore(keys, datums, md)

    pairs = [(["k"], b"v")] * (10 * FEED_SIZE) + [(["other"], b"v")]
    handler = async_ignore if is_async else ignore
    async with serving(sock_path, info_path, reduce_handler=handler, max_threads=1):
        answers = await reduce_call(fn_stub, requests(fn_pb2, pairs))
    assert answers == {("k",): [b"ignored"], ("other",): [b"ignored"]}


async def test_reduce_wrong_return_type(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A handler returning something other than Messages fails with a status saying so."""

    async def bad(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Any:
        return None

    stop = asyncio.Event()
    async with serving(sock_path, info_path, reduce_handler=bad):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await reduce_call(fn_stub, held_open(one_per_key(fn_pb2, ["k"]), stop))
        stop.set()
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "returned NoneType; expected Messages" in failure.value.details()
    assert "['k']" in failure.value.details()


async def test_reduce_seed_readme_example(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """The pynumaflow 0.4 README's reduce example runs unchanged on AsyncServer."""
    (source,) = [block for block in seed_examples() if "reduce_handler" in block]
    namespace: dict[str, Any] = {"__name__": "seed_reduce"}
    exec(compile(source, "seed-reduce", "exec"), namespace)
    reqs = requests(fn_pb2, [(["a"], b"1"), (["b"], b"2"), (["a"], b"3")])
    async with serving(sock_path, info_path, reduce_handler=namespace["my_handler"]):
        answers = await reduce_call(fn_stub, reqs)
    window = (
        "interval_window_start:1970-01-01 00:01:00+00:00 "
        "interval_window_end:1970-01-01 00:02:00+00:00"
    )
    assert answers == {
        ("a",): [f"counter:2 {window}".encode()],
        ("b",): [f"counter:1 {window}".encode()],
    }
