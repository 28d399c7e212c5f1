"""Reduce: one stream per window, one handler call per key group, answers per call.

:class:`ReduceStream` is the engine both reduce protocols share: it groups a stream's
datums, starts a handler call when a group is first seen, with an iterator over that
group's datums, and answers for each call once it returns. The protocols differ only in
how requests are read and answers written:

- function.v1 (:mod:`pynumaflow._services.legacy.reduce`, Numaflow 0.8-0.9): the window
  is in two request headers, a group is a key list, and each call's messages go out as one
  ``DatumResponseList`` as soon as it returns; the stream ends OK once every call has
  answered after the input ended.
- reduce.v1 (:mod:`pynumaflow._services.v1.reduce`, Numaflow >= 1.4): the window is in
  each request, a group is a window and a key list, and answers go out after the
  half-close, then one EOF per window.

Memory stays bounded by feeding each call through a :class:`~pynumaflow._engines.feed.Feed`
of :data:`FEED_SIZE` datums: while a call's feed is full, the request stream is not
read, so HTTP/2 flow control slows the platform down.

Sync handlers need one pool thread each for as long as they iterate, and a group's
input only ends with the window. With more key groups than free pool threads, the
calls beyond the pool queue for a thread; so that the reader never waits on a call
that has no thread yet (which would deadlock), such a call keeps its datums in memory
until a thread takes it, then reads that backlog followed by its bounded feed. So for
sync handlers memory is bounded by :data:`FEED_SIZE` per running call plus the datums
of calls still queued: give the server at least as many ``max_threads`` as a window
has keys, or use an async handler, to keep it bounded by :data:`FEED_SIZE` per key.

A failing call (or a malformed request) ends the whole stream with its status; every
other call is cancelled, or for a sync call already in its thread, its feed is aborted
so the handler gets ``FeedAborted`` at its next read. A client that cancels gets the
same clean-up.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Hashable, Iterable
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Generic,
    List,
    Optional,
    Protocol,
    TypeVar,
)

import grpclib.server
from grpclib.exceptions import GRPCError

from pynumaflow._core.messages import MessageReader, MessageWriter
from pynumaflow._engines.feed import Feed
from pynumaflow._engines.tasks import StreamTasks
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._types.function import Datum, Metadata

__all__ = ["FEED_SIZE", "Inbox", "RawStream", "ReduceStream"]

FEED_SIZE = 64
"""How many datums a key group's call may have unread before reading the stream waits."""

RawStream = grpclib.server.Stream[bytes, bytes]
Group = TypeVar("Group", bound=Hashable)
"""What a protocol groups datums by (a key list, or a window and a key list)."""


class Inbox(Protocol):
    """Where one key group's datums go, and how its handler call reads them."""

    def offer(self, datum: Datum) -> bool:
        """Take the datum if there is room, without waiting; False: ``await put()`` it."""

    async def put(self, datum: Datum) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def call(
        self, invoker: Invoker, handler: Handler, keys: List[str], md: Metadata
    ) -> Awaitable[Any]:
        """Run the handler over this group's datums; the awaitable gives what it returns."""


class _AsyncInbox:
    """An async handler's datums: a bounded feed its async iterator reads."""

    def __init__(self) -> None:
        self._feed: Feed[Datum] = Feed(FEED_SIZE, sync_consumer=False)

    def offer(self, datum: Datum) -> bool:
        return self._feed.offer(datum)

    async def put(self, datum: Datum) -> None:
        await self._feed.put(datum)

    def close(self) -> None:
        self._feed.close()

    def abort(self) -> None:
        self._feed.abort()

    @property
    def datums(self) -> Any:
        """The async iterator the handler reads."""
        return self._feed.iterator

    def call(
        self, invoker: Invoker, handler: Handler, keys: List[str], md: Metadata
    ) -> Awaitable[Any]:
        return invoker.call(handler, keys, self._feed.iterator, md)


class _ThreadInbox:
    """A sync handler's datums: held in a backlog until a pool thread takes the call.

    From then on they go through a bounded feed, read after the backlog.
    """

    def __init__(self) -> None:
        self._feed: Feed[Datum] = Feed(FEED_SIZE, sync_consumer=True)
        self._lock = threading.Lock()
        self._backlog: Deque[Datum] = deque()
        self._started = False
        self._aborted = False

    def offer(self, datum: Datum) -> bool:
        if not self._started:
            with self._lock:
                if self._aborted:
                    return True
                if not self._started:
                    self._backlog.append(datum)
                    return True
        return self._feed.offer(datum)

    async def put(self, datum: Datum) -> None:
        if not self.offer(datum):
            await self._feed.put(datum)

    def close(self) -> None:
        self._feed.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._backlog.clear()
        self._feed.abort()

    def call(
        self, invoker: Invoker, handler: Handler, keys: List[str], md: Metadata
    ) -> Awaitable[Any]:
        return invoker.run_in_pool(self._run, handler.func, keys, md)

    def _run(self, func: Callable[..., Any], keys: List[str], md: Metadata) -> Any:
        """Run in the pool thread: take the backlog, then read the live feed."""
        with self._lock:
            self._started = True
            backlog, self._backlog = self._backlog, deque()
        # The backlog is popped as it is read, so that a long one is freed as it goes.
        return func(keys, self._feed.iterator_after(backlog), md)


class ReduceStream(Generic[Group]):
    """The engine of one reduce stream, whatever its protocol.

    It runs a handler call per key group, feeds each its datums, answers for each as it
    returns, and on a failure (or a client gone) cancels every other call and aborts
    their feeds. A protocol subclasses it for how requests are read and answers written:
    :meth:`_read` reads the stream and hands each datum to :meth:`_feed`; :meth:`_encode`
    turns a call's result into what :meth:`_answer` sends (with :meth:`_send`); and
    :meth:`_finish` sends whatever ends the stream once every call has answered.
    """

    def __init__(
        self,
        stream: RawStream,
        handler: Handler,
        invoker: Invoker,
        *,
        v1_container: Optional[str] = None,
    ) -> None:
        self._stream = stream
        self._requests = MessageReader(stream)
        """The request messages, for :meth:`_read`."""
        self._handler = handler
        self._invoker = invoker
        self._new_inbox: Callable[[], Inbox] = _AsyncInbox if handler.is_async else _ThreadInbox
        self._groups: Dict[Group, Inbox] = {}
        self._tasks: Optional[StreamTasks] = None
        self._errors = HandlerErrors(handler, v1_container=v1_container)
        self._v1_container = v1_container
        self.input_ended = asyncio.Event()
        """Set once the client has half-closed and every group's input was closed."""
        # Answers are queued whole on the writer, which sends those of a loop pass as one
        # DATA write; the lock guards only sending the headers before the first answer
        # (a failure takes it too, so that cancelling never cuts that send in half).
        self._writer = MessageWriter(stream)
        self._headers_sent = False
        self._send_lock = asyncio.Lock()

    streaming = False
    """The handler is a streaming one (async only): what it yields is sent at once."""

    async def run(self) -> None:
        """Serve the stream to its end; raise the first failure (a GRPCError)."""
        tasks = self._tasks = StreamTasks(self._send_lock)
        # Not one of the tasks: what was answered before a failure is still sent.
        writing = asyncio.ensure_future(self._write())
        try:
            try:
                tasks.start_guarded(self._read_all)
                await tasks.wait()
            finally:
                # Cancelled calls end first: a pool thread freed by one must not pick up
                # a call that is being abandoned (see _call).
                await tasks.close()
                for inbox in self._groups.values():
                    inbox.abort()
                self._groups.clear()
            if tasks.failure is None:
                await self._finish()
            self._writer.close()
            await writing
        finally:
            writing.cancel()
        if tasks.failure is not None:
            raise tasks.failure

    # --- what a protocol implements ----------------------------------------------------

    async def _read(self) -> None:
        """Read the request stream to its end, handing each datum to :meth:`_feed`."""
        raise NotImplementedError

    def _encode(self, group: Group, result: Any) -> Any:
        """Encode a call's result (a ReturnTypeError here fails the call)."""
        raise NotImplementedError

    def _encode_item(self, group: Group, item: Any) -> bytes:
        """Encode one item a streaming handler yielded (streaming protocols only).

        Empty bytes: the item is dropped (a session merged away sends nothing more).
        """
        raise NotImplementedError

    async def _ended(self, group: Group) -> None:
        """A streaming group's call has returned and every item of it was sent."""

    def _call_args(self, group: Group, keys: List[str], datums: Any, md: Metadata) -> Any:
        """What a streaming group's handler is called with (default: keys, datums, md)."""
        return (keys, datums, md)

    async def _answer(self, group: Group, answer: Any) -> None:
        """Send what :meth:`_encode` made of a group's result."""
        raise NotImplementedError

    async def _finish(self) -> None:
        """Send what ends the stream, once every call has answered (default: nothing)."""

    # --- what a protocol uses -----------------------------------------------------------

    async def _feed(self, group: Group, keys: List[str], md: Metadata, datum: Datum) -> None:
        """Hand a datum to its group's call, starting the call if the group is new."""
        waiting = self._offer(group, keys, md, datum)
        if waiting is not None:
            await waiting.put(datum)

    def _offer(self, group: Group, keys: List[str], md: Metadata, datum: Datum) -> Optional[Inbox]:
        """:meth:`_feed` without waiting: the inbox to ``await put(datum)`` on if it is full.

        Most datums find room, and then no coroutine is made for them.
        """
        inbox = self._groups.get(group)
        if inbox is None:
            inbox = self._open_group(group, keys, md)
        return None if inbox.offer(datum) else inbox

    def _open_group(self, group: Group, keys: List[str], md: Metadata) -> Inbox:
        """Start a group's call before its first datum (or with none, if it ends first)."""
        inbox = self._groups[group] = self._new_inbox()
        self._started().start(self._call(group, keys, md, inbox))
        return inbox

    def _end_groups(self, groups: Iterable[Group]) -> None:
        """End these groups' input: their calls' iterators stop after what they were fed."""
        for group in groups:
            self._groups[group].close()

    def _forget_group(self, group: Group) -> bool:
        """End a group's input and forget it: its next datum starts a new call.

        Returns whether the group was known.
        """
        inbox = self._groups.pop(group, None)
        if inbox is None:
            return False
        inbox.close()
        return True

    def _spawn(self, work: Callable[..., Awaitable[None]], *args: Any) -> asyncio.Task[None]:
        """Run ``work(*args)`` beside the calls; its failure fails the stream like theirs."""
        return self._started().start_guarded(work, *args)

    def _started(self) -> StreamTasks:
        assert self._tasks is not None  # only while run() runs
        return self._tasks

    async def _send_item(self, message: bytes) -> None:
        """Send what :meth:`_encode_item` made of an item; nothing if it made nothing."""
        if message:
            await self._send(message)

    async def _send(self, *messages: bytes) -> None:
        """Send messages together: no other answer goes between them.

        They are queued in order and leave with the others of this loop pass; the
        sender waits while the writer holds :data:`~pynumaflow._core.messages.HIGH_WATER`
        bytes or more (a client that stops reading slows the handlers down).
        """
        if not self._headers_sent:
            async with self._send_lock:
                if not self._headers_sent:
                    await self._stream.send_initial_metadata()
                    self._headers_sent = True
        writer = self._writer
        for message in messages:
            writer.send(message)
        if writer.full:
            await writer.drained()

    async def _write(self) -> None:
        try:
            await self._writer.run()
        except Exception as err:
            self._started().fail_nowait(err)

    # --- the engine ---------------------------------------------------------------------

    async def _read_all(self) -> None:
        await self._read()
        for inbox in self._groups.values():
            inbox.close()
        self.input_ended.set()

    async def _call(self, group: Group, keys: List[str], md: Metadata, inbox: Inbox) -> None:
        # One task per key group, alive for the whole window: kept to one coroutine
        # (not start_guarded, which adds one) and one reusable error handler.
        try:
            try:
                if self.streaming:
                    await self._relay(group, keys, md, inbox)
                    return
                with self._errors:
                    result = await inbox.call(self._invoker, self._handler, keys, md)
                    # The call is over: datums still arriving for it are dropped. (When it
                    # is cancelled, run() aborts every feed only once all calls are
                    # cancelled, so a freed pool thread cannot start a call that is being
                    # abandoned.)
                    inbox.abort()
                    answer = self._encode(group, result)
            except GRPCError as err:
                message = f"{err.message} (keys {list(keys)!r})"
                raise GRPCError(err.status, message, err.details) from None
            await self._answer(group, answer)
        except Exception as err:
            await self._started().fail(err)

    async def _relay(self, group: Group, keys: List[str], md: Metadata, inbox: Inbox) -> None:
        """Run a streaming handler over the group's datums, sending each item it yields."""
        assert isinstance(inbox, _AsyncInbox)  # the streaming faces take async handlers only
        await self._invoker.relay(
            self._handler,
            self._call_args(group, keys, inbox.datums, md),
            functools.partial(self._encode_item, group),
            self._send_item,
            v1_container=self._v1_container,
        )
        inbox.abort()  # the call is over: datums still arriving for it are dropped
        await self._ended(group)
