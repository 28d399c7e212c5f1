"""How results and bytes are handed on.

Sync handler results go back to the loop in batches; an HTTP/2 connection's writes go to
its socket once per loop pass.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import socket
import threading
from typing import Any

import pytest

from pynumaflow._core.batched_writes import BatchedWrites
from pynumaflow._engines.feed import Feed, FeedAborted
from pynumaflow._invoke import Invoker

pytestmark = pytest.mark.anyio

_REQUEST_ID: contextvars.ContextVar[int] = contextvars.ContextVar("request_id")


async def test_pool_results_errors_and_context_reach_their_callers() -> None:
    invoker = Invoker(4)

    def work(n: int) -> tuple[int, int]:
        if n % 7 == 0:
            raise ValueError(f"bad {n}")
        return n * n, _REQUEST_ID.get()

    async def one(n: int) -> Any:
        _REQUEST_ID.set(n)
        try:
            return await invoker.run_in_pool(work, n)
        except ValueError as err:
            return str(err)

    try:
        results = await asyncio.gather(*(one(n) for n in range(1, 301)))
    finally:
        invoker.shutdown()
    expected = [f"bad {n}" if n % 7 == 0 else (n * n, n) for n in range(1, 301)]
    assert results == expected


async def test_a_handler_raising_stopiteration_fails_its_call_only() -> None:
    invoker = Invoker(1)

    def stop() -> None:
        raise StopIteration

    try:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await invoker.run_in_pool(stop)
        assert await invoker.run_in_pool(lambda: "next") == "next"
    finally:
        invoker.shutdown()


async def test_completions_wake_the_loop_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 calls finishing while the loop is busy are settled with a handful of wake-ups."""
    loop = asyncio.get_running_loop()
    wakeups = 0
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return call_soon_threadsafe(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    invoker = Invoker(8)
    release = threading.Event()
    try:
        futures = [invoker.run_in_pool(release.wait) for _ in range(8)]
        futures += [invoker.run_in_pool(lambda i=i: i) for i in range(192)]
        release.set()
        # Hold the loop while the threads finish, so their results pile up.
        while not all(f.done() for f in futures[8:]):
            threading.Event().wait(0.05)
            await asyncio.sleep(0)
        assert [f.result() for f in futures[8:]] == list(range(192))
    finally:
        invoker.shutdown()
    assert wakeups < 50


async def test_a_cancelled_call_waiting_for_a_thread_never_runs() -> None:
    invoker = Invoker(1)
    release, ran = threading.Event(), threading.Event()
    try:
        busy = invoker.run_in_pool(release.wait)
        waiting = invoker.run_in_pool(ran.set)
        waiting.cancel()
        release.set()
        await busy
        assert await invoker.run_in_pool(lambda: "pool free") == "pool free"
    finally:
        invoker.shutdown()
    assert not ran.is_set()


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def _connected_pair() -> tuple[asyncio.Transport, _Recorder, list[bytes]]:
    """A real socket transport (its writes recorded) and the protocol of its peer."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    peer = _Recorder()
    await loop.create_connection(lambda: peer, sock=theirs)
    writes: list[bytes] = []
    real_write = transport.write

    def write(data: Any) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    assert isinstance(transport, asyncio.Transport)
    return transport, peer, writes


async def test_writes_in_one_loop_pass_go_out_as_one_write_in_order() -> None:
    transport, peer, writes = await _connected_pair()
    batched = BatchedWrites(transport)
    batched.write(b"HEADERS;")
    batched.write(bytearray(b"DATA;"))
    batched.write(b"")
    batched.write(memoryview(b"TRAILERS;"))
    assert writes == []
    assert batched.get_write_buffer_size() == 22
    await asyncio.sleep(0)
    assert writes == [b"HEADERS;DATA;TRAILERS;"]
    batched.write(b"next pass")
    await asyncio.sleep(0)
    assert writes[1:] == [b"next pass"]
    batched.write(b"said before close")
    batched.close()
    await asyncio.wait_for(peer.closed, 5)
    assert bytes(peer.received) == b"HEADERS;DATA;TRAILERS;next passsaid before close"


async def test_a_sync_consumer_gets_one_list_per_loop_pass_and_wakes_put_rarely() -> None:
    """The items put in one loop pass cross to the thread together; put() is woken at half."""
    maxsize = 64
    feed: Feed[int] = Feed(maxsize, sync_consumer=True)
    loop = asyncio.get_running_loop()
    crossings = {"to_thread": 0, "to_loop": 0}
    real_call_soon_threadsafe = loop.call_soon_threadsafe

    class CountingQueue(queue.SimpleQueue):  # type: ignore[type-arg]
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            crossings["to_thread"] += 1
            super().put(item, block, timeout)

    feed._thread_queue = CountingQueue()

    def counting_call_soon_threadsafe(*args: Any, **kwargs: Any) -> Any:
        crossings["to_loop"] += 1
        return real_call_soon_threadsafe(*args, **kwargs)

    loop.call_soon_threadsafe = counting_call_soon_threadsafe  # type: ignore[method-assign,assignment]
    received: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def consume() -> None:
        iterator = feed.iterator
        started.set()
        release.wait(10)  # let the producer fill the feed first
        received.extend(iterator)  # type: ignore[arg-type]

    invoker = Invoker(1)
    try:
        consumer = invoker.run_in_pool(consume)
        await asyncio.sleep(0)
        for n in range(maxsize):  # fills the feed without waiting: one loop pass
            await feed.put(n)
        assert crossings["to_thread"] == 0  # not yet: sent once this pass ends
        release.set()
        for n in range(maxsize, 1000):
            await feed.put(n)
        feed.close()
        await consumer
    finally:
        release.set()
        feed.abort()  # a failed assertion must not leave the pool thread reading
        loop.call_soon_threadsafe = real_call_soon_threadsafe  # type: ignore[method-assign]
        invoker.shutdown()
    assert started.is_set()
    assert received == list(range(1000))
    # Per item this would be 1000 crossings each way; a put() woken at half a feed is at
    # most one wake per 32 items, plus the pool result.
    assert crossings["to_loop"] <= 1000 // (maxsize // 2) + 2
    assert crossings["to_thread"] <= crossings["to_loop"] + 3


async def test_offer_takes_items_while_there_is_room_and_drops_them_after_abort() -> None:
    """offer() never waits: False when the feed is full; after abort() it drops the item."""
    feed: Feed[int] = Feed(2, sync_consumer=False)
    iterator = feed.iterator
    assert feed.offer(1)
    assert feed.offer(2)
    assert not feed.offer(3)  # full: put() would wait
    assert await iterator.__anext__() == 1  # type: ignore[union-attr]
    assert feed.offer(3)
    putting = asyncio.ensure_future(feed.put(4))  # waits for room
    await asyncio.sleep(0)
    assert not putting.done()
    feed.abort()
    await asyncio.wait_for(putting, 5)  # woken, its item dropped
    assert feed.offer(5)
    assert await iterator.__anext__() == 2  # type: ignore[union-attr]
    assert await iterator.__anext__() == 3  # type: ignore[union-attr]
    with pytest.raises(FeedAborted):
        await iterator.__anext__()  # type: ignore[union-attr]


async def test_a_sync_consumer_reads_its_first_items_then_the_feed_until_aborted() -> None:
    """iterator_after(): the items given first, then the feed; an abort stops it among them."""
    invoker = Invoker(1)
    try:
        feed: Feed[int] = Feed(4, sync_consumer=True)
        feed.close()
        read = await invoker.run_in_pool(list, feed.iterator_after(collections.deque([1, 2])))
        assert read == [1, 2]

        feed = Feed(4, sync_consumer=True)
        reading = invoker.run_in_pool(list, feed.iterator_after(collections.deque([-2, -1])))
        for n in range(100):  # 25 times the feed: put() waits for the reader's room
            await asyncio.wait_for(feed.put(n), 5)
        feed.close()
        assert await reading == [-2, -1, *range(100)]

        feed = Feed(4, sync_consumer=True)
        iterator = feed.iterator_after(collections.deque([1, 2, 3]))
        assert await invoker.run_in_pool(next, iterator) == 1
        feed.abort()
        with pytest.raises(FeedAborted):  # not the rest of the items given first
            await invoker.run_in_pool(next, iterator)
    finally:
        invoker.shutdown()
