"""Feed: a bounded channel from the event loop to one handler call's iterator argument."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Deque, Generic, Optional, TypeVar, Union

from pynumaflow._invoke import note_progress, settle
from pynumaflow._types.errors import FeedAborted

__all__ = ["Feed", "FeedAborted"]

_T = TypeVar("_T")
_END = object()
_ABORT = object()


class Feed(Generic[_T]):
    """A bounded channel from the event loop to one handler call's iterator argument.

    The loop side ``await put(item)`` (one producer) waits while ``maxsize`` items are
    unread, so a slow handler slows the reader of the request stream (and so HTTP/2 flow
    control) instead of growing memory. Async handlers get an async iterator (a plain
    object, not an async generator, so it is safe under any interleaving); sync handlers
    get a blocking iterator to consume in their pool thread.

    A reduce window has one feed per key, so the async side is a list and two optional
    futures rather than an ``asyncio.Queue`` and ``Semaphore`` (a few KiB each).

    For a sync handler, crossing threads is what costs, so the feed crosses rarely: the
    items put in one loop pass go to the thread as one list, and the thread wakes a
    waiting ``put()`` only once it has read half of a full feed, not per item.
    """

    def __init__(self, maxsize: int, *, sync_consumer: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._maxsize = maxsize
        # Items put (counted on the loop) and taken by the consumer (counted where it
        # runs): each count has one writer, so offer() reads them without a lock.
        self._put_count = 0
        self._taken_count = 0
        self._room: Optional[asyncio.Future[None]] = None  # put() waiting for room
        self._arrived: Optional[asyncio.Future[None]] = None  # async consumer waiting
        self._items: list[Any] = []  # at most maxsize + 2 long; a deque's block is 0.5 KiB
        self._finished = False
        self._aborted = False
        # A sync consumer's side: lists of items for the thread, and the items put in
        # this loop pass, not yet sent. The lock guards _room (and the counts read with it).
        self._thread_queue: Optional[queue.SimpleQueue[list[Any]]] = None
        self._lock: Optional[threading.Lock] = None
        if sync_consumer:
            self._thread_queue = queue.SimpleQueue()
            self._lock = threading.Lock()
        self._flush_scheduled = False

    def offer(self, item: _T) -> bool:
        """Hand one item to the handler if the feed has room, without waiting.

        False: the feed is full, ``await put(item)`` instead. After :meth:`abort` the
        item is dropped at once (True): nobody will read it.
        """
        if self._aborted:
            return True
        # A stale _taken_count only makes the feed look fuller: put() then re-checks.
        if self._put_count - self._taken_count >= self._maxsize:
            return False
        self._put_count += 1
        self._push(item)
        return True

    async def put(self, item: _T) -> None:
        """Hand one item to the handler, waiting while the feed is full.

        After :meth:`abort` the item is dropped at once: nobody will read it.
        """
        while not self.offer(item):
            room = self._wait_for_room()
            if room is not None:
                await room

    def close(self) -> None:
        """Mark the end of input: the handler's iterator stops after the items sent."""
        if not self._finished:
            self._finished = True
            self._push(_END)
            self._flush()

    def abort(self) -> None:
        """Abandon the call: a handler still reading gets FeedAborted; put() stops waiting."""
        self._finished = True
        self._aborted = True
        self._push(_ABORT)
        self._flush()
        self._wake_put()  # its item is dropped

    def _wait_for_room(self) -> Optional[asyncio.Future[None]]:
        """The future to wait on for room; None if there is room after all."""
        if self._lock is None:
            self._room = self._loop.create_future()
            return self._room
        with self._lock:  # against _taken_in_thread: either it sees the future or we its count
            if self._put_count - self._taken_count < self._maxsize:
                return None
            self._room = self._loop.create_future()
            return self._room

    def _push(self, item: Any) -> None:
        self._items.append(item)
        if self._thread_queue is not None:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        elif self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def _flush(self) -> None:
        """Send the thread what was put since the last flush, as one list."""
        self._flush_scheduled = False
        if self._thread_queue is not None and self._items:
            items, self._items = self._items, []
            self._thread_queue.put(items)

    def _taken(self) -> None:
        """On the loop: the async consumer took an item, so there is room for one more."""
        self._taken_count += 1
        room = self._room
        if room is not None:
            self._room = None
            settle(room)

    def _taken_in_thread(self, count: int) -> None:
        """In the pool thread: the handler took ``count`` items; wake put() if half is free."""
        assert self._lock is not None
        with self._lock:
            self._taken_count += count
            room = self._room
            if room is None or self._put_count - self._taken_count > self._maxsize // 2:
                return
            self._room = None
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits for room
            self._loop.call_soon_threadsafe(settle, room)

    def _wake_put(self) -> None:
        if self._lock is None:
            room, self._room = self._room, None
        else:
            with self._lock:
                room, self._room = self._room, None
        if room is not None:
            settle(room)

    @property
    def iterator(self) -> Union[AsyncIterator[_T], Iterator[_T]]:
        """What the handler iterates over (async or blocking, by handler kind)."""
        if self._thread_queue is not None:
            return _ThreadFeedIterator(self, self._thread_queue, collections.deque())
        return _AsyncFeedIterator(self)

    def iterator_after(self, first: Deque[_T]) -> Iterator[_T]:
        """A sync consumer's iterator that reads ``first`` before the feed.

        ``first`` holds items never put (not counted against ``maxsize``); each is
        dropped as it is read, and once the feed is aborted the next read raises
        FeedAborted.
        """
        assert self._thread_queue is not None
        return _ThreadFeedIterator(self, self._thread_queue, first)


class _AsyncFeedIterator(AsyncIterator[_T]):
    def __init__(self, feed: Feed[_T]) -> None:
        self._feed = feed
        self._done = False

    async def __anext__(self) -> _T:
        # One coroutine between the handler and the future it waits on: a window of
        # 10,000 keys has 10,000 of these suspended at once.
        if self._done:
            raise StopAsyncIteration
        feed = self._feed
        while not feed._items:
            feed._arrived = feed._loop.create_future()
            await feed._arrived
        item = feed._items.pop(0)
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if item is _ABORT:
            self._done = True
            raise FeedAborted("the call was abandoned")
        feed._taken()
        return item  # type: ignore[no-any-return]


class _ThreadFeedIterator(Iterator[_T]):
    def __init__(
        self, feed: Feed[_T], items: queue.SimpleQueue[list[Any]], first: Deque[Any]
    ) -> None:
        self._feed = feed
        self._queue = items
        self._batch = first
        self._uncounted = len(first)  # the first items of the batch were never put
        self._done = False
        # Items taken and not yet counted back to the feed: the count crosses under the
        # feed's lock once per half feed, or before waiting for more, not per item.
        self._owed = 0
        self._half = max(1, feed._maxsize // 2)

    def __next__(self) -> _T:
        if self._done:
            raise StopIteration
        batch = self._batch
        if not batch:
            if self._owed:
                self._settle()
            batch.extend(self._queue.get())
        item = batch.popleft()
        if item is _END:
            self._done = True
            raise StopIteration
        if item is _ABORT:
            self._done = True
            raise FeedAborted("the call was abandoned")
        note_progress()
        if self._uncounted:
            self._uncounted -= 1
            if self._feed._aborted:
                self._done = True
                raise FeedAborted("the call was abandoned")
            return item  # type: ignore[no-any-return]
        self._owed += 1
        if self._owed >= self._half:
            self._settle()
        return item  # type: ignore[no-any-return]

    def _settle(self) -> None:
        owed, self._owed = self._owed, 0
        self._feed._taken_in_thread(owed)
