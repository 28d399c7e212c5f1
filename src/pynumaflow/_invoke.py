"""The one place that knows how to call a user handler.

Whether a handler is async is decided once, when the server is constructed. Async
handlers are awaited on the event loop; sync handlers run in one bounded pool of daemon
threads (``max_threads``) with the caller's context variables. Handler failures become
gRPC statuses here, logged once with their traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import queue
import threading
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Deque, Dict, Optional, Union

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._core.options import pool_stall_after
from pynumaflow._types.errors import ReturnTypeError

__all__ = [
    "END_OF_ITEMS",
    "Handler",
    "HandlerErrors",
    "Invoker",
    "SyncStreams",
    "inspect_handler",
    "inspect_methods",
    "note_progress",
    "settle",
]

_LOGGER = logging.getLogger("pynumaflow")

# How many items a sync generator may run ahead of the stream that sends them.
_STREAM_AHEAD = 64
# Errors a handler raises that Python does not derive from Exception but that are the
# handler's failure all the same (see docs/reliability.md): they fail the call.
_HANDLER_EXITS = (SystemExit, KeyboardInterrupt)


@dataclass(frozen=True)
class Handler:
    """A user handler, inspected once: its keyword name, the callable, and its kind.

    ``own_metadata``: its results carry their own user metadata (the modern API)
    instead of the request's (the 0.4 API).
    """

    name: str
    func: Callable[..., Any]
    is_async: bool
    own_metadata: bool = False


def _is_async(func: Callable[..., Any], predicate: Callable[[Any], bool]) -> bool:
    return predicate(func) or predicate(getattr(func, "__call__", None))  # noqa: B004


def inspect_handler(
    name: str,
    func: object,
    params: str,
    *,
    stream: bool = False,
    call: Optional[Callable[..., Any]] = None,
    own_metadata: bool = False,
) -> Handler:
    """Check a handler's shape and decide whether it is async.

    Args:
        name: the constructor keyword it came in by, used in error messages.
        func: the handler (anything: what is not callable is refused).
        params: its expected parameters, e.g. ``"keys, datum"``.
        stream: whether it produces a stream (map stream): then it must be an async
            generator function, or a sync callable returning an iterable.
        call: what the server calls instead of ``func`` (a face's adapter around it,
            returning what ``func`` returns: a value, a coroutine or a generator).
        own_metadata: see :class:`Handler`.

    Raises:
        TypeError: the handler is not callable or cannot take the arguments.

    """
    if not callable(func):
        raise TypeError(f"{name} must be callable ({params}), got {type(func).__name__}")
    arity = len([param for param in params.split(",") if param.strip()])
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        signature = None
    if signature is not None:
        try:
            signature.bind(*range(arity))
        except TypeError:
            label = getattr(func, "__qualname__", type(func).__name__)
            raise TypeError(
                f"{name} must accept {arity} positional arguments ({params}); "
                f"{label}{signature} does not"
            ) from None
    target = func if call is None else call
    if stream:
        if _is_async(func, inspect.isasyncgenfunction):
            return Handler(name, target, True, own_metadata)
        if _is_async(func, inspect.iscoroutinefunction):
            raise TypeError(
                f"{name} must be an async generator function (async def with yield) "
                "or a sync generator; got a coroutine function"
            )
        return Handler(name, target, False, own_metadata)
    return Handler(name, target, _is_async(func, inspect.iscoroutinefunction), own_metadata)


def inspect_methods(
    name: str, obj: object, methods: Mapping[str, str], *, need_async: Iterable[str] = ()
) -> Dict[str, Handler]:
    """Inspect the handler methods of an object (a Sourcer), each as :func:`inspect_handler`.

    Args:
        name: the constructor keyword the object came in by, for error messages.
        obj: the object.
        methods: its methods' names and their parameters, e.g. ``{"ack_handler": "request"}``.
        need_async: the methods that must be ``async def``.

    Raises:
        TypeError: a method is missing, not callable, takes the wrong number of
            parameters, or is not async where it must be.

    """
    handlers = {}
    for method, params in methods.items():
        label = f"{name}.{method}"
        handler = inspect_handler(label, getattr(obj, method, None), params)
        if method in need_async and not handler.is_async:
            raise TypeError(f"{label} must be a coroutine function (async def)")
        handlers[method] = handler
    return handlers


class HandlerErrors:
    """Turns what a handler raises (or returns wrongly) into a gRPC status, logged once.

    Use as ``with HandlerErrors(handler):`` around the call and the encoding of its
    result. For function.v1 and the 0.8-era sink.v1 the status is ``UNKNOWN`` with the
    error text. For the v1 protocols (Numaflow >= 1.4, ``v1_container`` set to the
    container type, e.g. ``"udf"``) it is what that platform parses: ``INTERNAL`` with
    ``UDF_EXECUTION_ERROR(<container>): <repr(error)>`` and the traceback as
    ``google.rpc.DebugInfo`` in the status details.

    It keeps no state between uses, so one instance can guard many calls at once.
    """

    __slots__ = ("_handler", "_v1_container")

    def __init__(self, handler: Handler, *, v1_container: Optional[str] = None) -> None:
        self._handler = handler
        self._v1_container = v1_container

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        err: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        if err is None or isinstance(err, GRPCError):
            return  # success, or already a status: let it through
        if not isinstance(err, (Exception, *_HANDLER_EXITS)):
            return  # cancellation, GeneratorExit: not the handler's failure
        name = self._handler.name
        container = self._v1_container
        if isinstance(err, ReturnTypeError):
            _LOGGER.error("%s returned a value that cannot be sent: %s", name, err)
            text = f"{name} returned a wrong type: {err}"
            if container is None:
                raise GRPCError(Status.UNKNOWN, text) from None
            raise GRPCError(
                Status.INTERNAL, f"UDF_EXECUTION_ERROR({container}): {text}", text
            ) from None
        _LOGGER.error("%s raised %s", name, type(err).__name__, exc_info=err)
        if container is None:
            raise GRPCError(Status.UNKNOWN, f"{type(err).__name__}: {err}") from None
        raise GRPCError(
            Status.INTERNAL,
            f"UDF_EXECUTION_ERROR({container}): {err!r}",
            "".join(traceback.format_exception(kind, err, trace)),
        ) from None


class _Completions:
    """Results of pool calls, handed back to one event loop in batches.

    ``run_in_executor`` chains a concurrent future to an asyncio one and wakes the loop
    once per finished call. Here a finished call appends its result to a list and wakes
    the loop only when no wake-up is already on its way; the loop then settles every
    result collected so far in one callback, so under load many completions cost one
    self-pipe write and one loop pass.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._done: list[
            tuple[
                Union[asyncio.Future[Any], Callable[[Optional[BaseException], Any], None]],
                Optional[BaseException],
                Any,
            ]
        ] = []
        self._wake_pending = False

    def runner(
        self, future: asyncio.Future[Any], context: contextvars.Context, func: Callable[..., Any]
    ) -> Callable[..., None]:
        """What the pool thread runs: ``func`` in ``context``, its outcome to ``future``."""

        def run(*args: Any) -> None:
            if future.cancelled():  # the caller gave up while this waited for a thread
                return
            error: Optional[BaseException] = None
            result = None
            try:
                result = context.run(func, *args)
            except StopIteration:  # an asyncio future refuses StopIteration as its error
                error = RuntimeError("the handler raised StopIteration")
            except BaseException as err:
                error = err
            self.put(future, error, result)

        return run

    def each_runner(
        self,
        context: contextvars.Context,
        func: Callable[..., Any],
        done: Callable[[int, Optional[BaseException], Any], None],
        wanted: Callable[[], bool],
    ) -> Callable[[int, tuple[Any, ...]], None]:
        """What the pool runs for call ``index`` of :meth:`Invoker.call_each`."""

        def run(index: int, args: tuple[Any, ...]) -> None:
            if not wanted():  # the caller gave up while this waited for a thread
                return
            error: Optional[BaseException] = None
            result = None
            try:
                result = context.copy().run(func, *args)
            except BaseException as err:
                error = err
            self.put(functools.partial(done, index), error, result)

        return run

    def put(
        self,
        future: Union[asyncio.Future[Any], Callable[[Optional[BaseException], Any], None]],
        error: Optional[BaseException],
        result: Any,
    ) -> None:
        """From any thread: settle ``future`` (or call it) on the loop, in the next batch."""
        with self._lock:
            self._done.append((future, error, result))
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._wake_pending = False
        for future, error, result in done:
            if not isinstance(future, asyncio.Future):
                future(error, result)
                continue
            if future.done():  # cancelled meanwhile
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


END_OF_ITEMS = object()
"""A sync stream call's outcome (:meth:`SyncStreams.take`) when its handler ended normally."""


class SyncStreams:
    """Sync stream handler calls (map stream generators) run in the pool, for the loop.

    Made by :meth:`Invoker.stream_each` for the requests of one read (or one call): each
    call's items are handed over as it yields them, and the loop takes every call's
    news at once (:meth:`take`); the threads wake it only when it waits, through the
    pool's :class:`_Completions`, so while the loop is busy the items of every call
    pile up, and many calls' wake-ups cost one self-pipe write. No call waits for room:
    once ``limit`` of its items are unsent it pauses, giving its pool thread back, and
    the loop resumes it in the pool once half of them are sent (:meth:`sent`). So a
    stream whose client reads slowly holds no thread.
    """

    def __init__(self, completions: _Completions, count: int, limit: int) -> None:
        self._completions = completions
        self._limit = limit
        self._lock = threading.Lock()
        self._items: list[list[Any]] = [[] for _ in range(count)]
        self._outcomes: list[object] = [None] * count  # END_OF_ITEMS or the error, once over
        self._unsent = [0] * count  # handed over and not yet sent (taken or not)
        self._paused = [False] * count
        self._news: list[int] = []  # calls with items or an outcome not yet taken
        self._flagged = [False] * count  # in _news
        self._waiter: Optional[asyncio.Future[Any]] = None  # the loop, waiting for news
        self.resume: Callable[[int], object] = lambda index: None
        """On the loop: runs paused call ``index`` on in the pool (set by the invoker)."""
        self.close: Callable[[int], object] = lambda index: None
        """On the loop: closes paused call ``index`` in the pool (set by the invoker)."""
        self.stopped = False
        """Set by :meth:`stop`: the loop side will take nothing more."""

    def _flag(self, index: int) -> Optional[asyncio.Future[Any]]:
        # Under the lock: note news of call `index`; the waiter to wake, if any.
        if not self._flagged[index]:
            self._flagged[index] = True
            self._news.append(index)
        waiter, self._waiter = self._waiter, None
        return waiter

    def push(self, index: int, item: Any) -> Optional[bool]:
        """In the thread: hand over one item; return whether ``limit`` items are unsent.

        Returns None, dropping the item, once the loop side has stopped.
        """
        with self._lock:
            if self.stopped:
                return None
            self._items[index].append(item)
            unsent = self._unsent[index] = self._unsent[index] + 1
            waiter = self._flag(index)
        note_progress()
        if waiter is not None:
            self._completions.put(waiter, None, None)
        return unsent >= self._limit

    def end(self, index: int, outcome: object) -> None:
        """In the thread: call ``index`` is over (:data:`END_OF_ITEMS` or its error)."""
        with self._lock:
            self._outcomes[index] = outcome
            waiter = self._flag(index)
        if waiter is not None:
            self._completions.put(waiter, None, None)

    def pause(self, index: int) -> bool:
        """In the thread: True if call ``index`` should return now and wait to be resumed.

        That is while ``limit`` of its items are unsent, unless the loop side has stopped
        (the call then sees it on its next push and closes the handler itself).
        """
        with self._lock:
            paused = self._paused[index] = self._unsent[index] >= self._limit and not self.stopped
            return paused

    async def take(self) -> list[tuple[int, list[Any], object]]:
        """On the loop: ``(index, items, outcome)`` of every call with news (waiting for one).

        The outcome is None while the call runs on. Call :meth:`sent` once the items are
        sent.
        """
        while True:
            with self._lock:
                if self._news:
                    items, outcomes, flagged = self._items, self._outcomes, self._flagged
                    news = []
                    for index in self._news:
                        news.append((index, items[index], outcomes[index]))
                        items[index] = []
                        flagged[index] = False
                    self._news = []
                    return news
                waiter = self._waiter = self._completions.loop.create_future()
            await waiter

    def sent(self, index: int, count: int) -> None:
        """On the loop: ``count`` items of call ``index`` are sent; resume it at half."""
        with self._lock:
            unsent = self._unsent[index] = self._unsent[index] - count
            resume = self._paused[index] and unsent <= self._limit // 2
            if resume:
                self._paused[index] = False
        if resume:
            self.resume(index)

    def stop(self) -> None:
        """On the loop: take nothing more, and close the calls paused (nobody runs them).

        The calls running see it at their next item and close themselves; those not
        started never start.
        """
        with self._lock:
            self.stopped = True
            paused = [index for index, flag in enumerate(self._paused) if flag]
            self._paused = [False] * len(self._paused)
        for index in paused:
            self.close(index)


_WORKER = threading.local()  # .pool: the _Pool whose thread this is


def note_progress() -> None:
    """In a pool thread: the handler it runs moved (took an input or gave an output)."""
    pool: Optional[_Pool] = getattr(_WORKER, "pool", None)
    if pool is not None:
        pool.progress = time.monotonic()


class _Pool:
    """Up to ``max_threads`` daemon threads, started on demand, running queued jobs.

    Daemon threads, so that a handler stuck for good cannot keep the process alive once
    the server has stopped: Python joins a ``ThreadPoolExecutor``'s threads at exit, and
    a pod would sit running but not serving until the kubelet killed it. The pool also
    records when it last made progress, for :meth:`Invoker.stalled`.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[Optional[Callable[[], None]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[threading.Thread, float] = {}  # busy thread -> job start
        self.waiting = 0
        """Jobs queued and not yet started."""
        self.progress = time.monotonic()
        """When a job last started or ended, or a handler last took or gave an item."""
        self._closed = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self.waiting += 1
        self._jobs.put(job)
        if self._idle.acquire(blocking=False):
            return
        with self._lock:
            if len(self._threads) < self._max and not self._closed:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def submit_many(self, jobs: list[Callable[[], None]]) -> None:
        """Queue ``jobs`` as at most ``max_threads`` jobs that take them in turn.

        One job (a thread hop, a wake-up of the loop) per handler call was the largest
        cost of a sync handler's map.v1 request; threads that take the calls of a batch
        one after the other still run up to ``max_threads`` of them at once.
        """
        batch = collections.deque(jobs)
        with self._lock:
            self.waiting += len(jobs)

        def take_in_turn() -> None:
            while not self._closed:
                try:
                    job = batch.popleft()
                except IndexError:
                    return
                with self._lock:
                    self.waiting -= 1
                    self.progress = time.monotonic()
                job()

        for _ in range(min(len(jobs), self._max)):
            self.submit(take_in_turn)

    def hand_on(self, job: Callable[[], None]) -> None:
        """In a pool thread: run ``job`` in this thread once its current job returns.

        No queue, no thread woken: a sync map stream's generator that ends hands its
        slot to the next one this way (:class:`_StreamSlots`), so a read of short
        generators costs a few thread hops rather than one each.
        """
        _WORKER.next = job

    def _work(self) -> None:
        _WORKER.pool = self
        _WORKER.next = None
        me = threading.current_thread()
        while True:
            job: Optional[Callable[[], None]] = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self.waiting -= 1
            while job is not None:
                with self._lock:
                    self._running[me] = self.progress = time.monotonic()
                try:
                    job()
                finally:
                    with self._lock:
                        del self._running[me]
                        self.progress = time.monotonic()
                job, _WORKER.next = _WORKER.next, None
                if self._closed:
                    job = None
            self._idle.release()

    def close(self) -> list[tuple[str, float]]:
        """Drop the queued jobs and let idle threads end; return (name, seconds) of busy ones."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
            now = time.monotonic()
            busy = [(t.name, now - started) for t, started in self._running.items()]
        while True:
            try:
                if self._jobs.get_nowait() is not None:
                    with self._lock:
                        self.waiting -= 1
            except queue.Empty:
                break
        for _ in range(threads):
            self._jobs.put(None)
        return busy


class _StreamSlots:
    """At most ``limit`` sync stream handlers under way; the others parked, in order.

    A handler's first run goes through :meth:`start` instead of straight to the pool;
    its thread calls :meth:`release` once the handler is over, which hands the slot to
    the next parked handler, run next by that same thread (:meth:`_Pool.hand_on`):
    without a round trip through the event loop, and without waking another thread.
    """

    def __init__(self, pool: _Pool, limit: int) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._free = limit
        self._parked: Deque[Callable[[], None]] = collections.deque()

    def start(self, job: Callable[[], None]) -> None:
        with self._lock:
            if not self._free:
                self._parked.append(job)
                return
            self._free -= 1
        self._pool.submit(job)

    def release(self) -> None:
        """In the pool thread that ran the handler: free its slot, or hand it on."""
        with self._lock:
            if not self._parked:
                self._free += 1
                return
            job = self._parked.popleft()
        self._pool.hand_on(job)


class Invoker:
    """Calls handlers: awaits async ones, runs sync ones in a bounded thread pool.

    A sync stream handler (a map stream generator) holds a pool thread only while it
    produces, not while its client is slow to read (see :meth:`iterate`), so streams
    whose clients never read cannot take the pool from the other calls. At most
    ``max_threads`` of them are under way at once (as many as could run), which bounds
    what they hold ahead of their streams to ``max_threads`` x 64 items.
    """

    def __init__(self, max_threads: int, *, stall_after: Optional[float] = None) -> None:
        self.max_threads = max_threads
        self.stall_after = pool_stall_after() if stall_after is None else stall_after
        """Seconds without progress after which a pool with calls waiting is stalled."""
        self._pool = _Pool(max_threads, "pynumaflow-handler")
        self._completions: Optional[_Completions] = None
        self._stream_slots = _StreamSlots(self._pool, max_threads)

    def call(self, handler: Handler, *args: Any) -> Awaitable[Any]:
        """Call a unary handler: the awaitable gives its result.

        A plain function rather than a coroutine, so that a call waiting on its handler
        is one coroutine (the handler's) rather than two.
        """
        if handler.is_async:
            return handler.func(*args)  # type: ignore[no-any-return]
        return self.run_in_pool(handler.func, *args)

    def run_in_pool(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run a plain function in the handler pool (with the current context)."""
        completions = self._completions_here()
        future = completions.loop.create_future()
        run = completions.runner(future, contextvars.copy_context(), func)
        self._pool.submit(functools.partial(run, *args))
        return future

    def _completions_here(self) -> _Completions:
        """The running loop's :class:`_Completions` (a server runs one loop at a time)."""
        loop = asyncio.get_running_loop()
        completions = self._completions
        if completions is None or completions.loop is not loop:
            completions = self._completions = _Completions(loop)
        return completions

    def call_each(
        self,
        handler: Handler,
        calls: list[tuple[Any, ...]],
        done: Callable[[int, Optional[BaseException], Any], None],
        wanted: Callable[[], bool],
    ) -> None:
        """Call a sync unary handler with each argument tuple of ``calls``, in the pool.

        ``done(index, error, result)`` runs on the loop as each call ends (their ends
        handed over in batches, as for :meth:`call`); a call not yet started is skipped
        once ``wanted()`` is false. The calls make a few pool jobs rather than one each
        (``_Pool.submit_many``).
        """
        assert not handler.is_async
        run = self._completions_here().each_runner(
            contextvars.copy_context(), handler.func, done, wanted
        )
        self._pool.submit_many([functools.partial(run, i, args) for i, args in enumerate(calls)])

    def stalled(self) -> Optional[str]:
        """Why the pool is stalled, or None: calls wait for a thread and none moved lately.

        Every thread is then busy with a call that neither ended, nor took an input or
        gave an output for :attr:`stall_after` seconds, while other calls queue behind
        them. IsReady reports not ready meanwhile (docs/reliability.md).
        """
        pool = self._pool
        idle_for = time.monotonic() - pool.progress
        if pool.waiting > 0 and idle_for > self.stall_after:
            return (
                f"{pool.waiting} call(s) wait for a handler thread and none of the "
                f"{self.max_threads} made progress for {idle_for:.0f} s"
            )
        return None

    def stream_each(self, handler: Handler, calls: list[tuple[Any, ...]]) -> SyncStreams:
        """Run a sync stream handler with each argument tuple of ``calls``, in the pool.

        Each call runs in a pool thread only while it produces: once _STREAM_AHEAD of its
        items are unsent, it gives the thread back, and continues in the pool once half
        of them are sent. A generator may be resumed in any thread, never in two at
        once. Each run gets a copy of the caller's context (one context cannot be
        entered by a thread still leaving it and by the next at once). A call starts
        once one of ``max_threads`` stream slots is free (:class:`_StreamSlots`), and
        frees it once it has ended or been closed; a call that ends hands its slot, and
        its thread, to the next call waiting. The loop takes the items with
        :meth:`SyncStreams.take`, and must :meth:`SyncStreams.stop` them (then the calls
        still under way are closed).
        """
        assert not handler.is_async
        func = handler.func
        slots = self._stream_slots
        pool = self._pool
        context = contextvars.copy_context()
        iterators: list[Optional[Iterator[Any]]] = [None] * len(calls)
        arguments: list[Optional[tuple[Any, ...]]] = list(calls)  # dropped once started

        def produce(index: int) -> None:
            iterator = iterators[index]
            try:
                if iterator is None:
                    if streams.stopped:  # the loop gave up before this call started
                        slots.release()
                        return
                    args, arguments[index] = arguments[index], None
                    assert args is not None
                    iterator = iterators[index] = iter(func(*args))
                if streams.pause(index):
                    return  # resumed in the pool once half is sent
                for item in iterator:
                    full = streams.push(index, item)
                    if full is None:  # the stream stopped reading
                        close(index)
                        return
                    if full and streams.pause(index):
                        return
                streams.end(index, END_OF_ITEMS)
            except BaseException as err:
                streams.end(index, err)
            iterators[index] = None
            slots.release()

        def close(index: int) -> None:
            closer: Optional[Callable[[], None]] = getattr(iterators[index], "close", None)
            iterators[index] = None
            try:
                if closer is not None:
                    closer()
            except Exception as err:
                _LOGGER.error("the stream handler failed while closing: %r", err, exc_info=err)
            slots.release()

        def in_pool(work: Callable[[int], None], index: int) -> Callable[[], None]:
            return functools.partial(context.copy().run, work, index)

        streams = SyncStreams(self._completions_here(), len(calls), _STREAM_AHEAD)
        streams.resume = lambda index: pool.submit(in_pool(produce, index))
        streams.close = lambda index: pool.submit(in_pool(close, index))
        for index in range(len(calls)):
            slots.start(in_pool(produce, index))
        return streams

    async def _batches_in_thread(
        self, handler: Handler, args: tuple[Any, ...]
    ) -> AsyncGenerator[list[Any], None]:
        """One sync stream call (:meth:`stream_each`): its items a batch at a time.

        Each batch counts as sent when the next is asked for.
        """
        streams = self.stream_each(handler, [args])
        try:
            while True:
                for _, items, outcome in await streams.take():
                    if items:
                        yield items
                        streams.sent(0, len(items))
                    if outcome is END_OF_ITEMS:
                        return
                    if isinstance(outcome, BaseException):
                        raise outcome
        finally:
            streams.stop()

    async def relay(
        self,
        handler: Handler,
        args: tuple[Any, ...],
        encode: Callable[[Any], bytes],
        send: Callable[[bytes], Awaitable[None]],
        *,
        v1_container: Optional[str] = None,
    ) -> None:
        """Run a stream handler, sending each item it yields, encoded, as soon as it comes.

        An async generator is iterated on the loop; a sync iterable in the pool
        (:meth:`_batches_in_thread`), its items taken a batch at a time. Its errors, and
        what ``encode`` rejects, become statuses as :class:`HandlerErrors` says; items
        already sent stay sent.
        """
        errors = HandlerErrors(handler, v1_container=v1_container)
        if not handler.is_async:
            await self._relay_batches(handler, args, encode, send, errors)
            return
        with errors:
            items: AsyncGenerator[Any, None] = handler.func(*args)
        async with contextlib.aclosing(items):
            while True:
                with errors:
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                    payload = encode(item)
                await send(payload)

    async def _relay_batches(
        self,
        handler: Handler,
        args: tuple[Any, ...],
        encode: Callable[[Any], bytes],
        send: Callable[[bytes], Awaitable[None]],
        errors: HandlerErrors,
    ) -> None:
        batches = self._batches_in_thread(handler, args)
        async with contextlib.aclosing(batches):
            while True:
                with errors:
                    try:
                        items = await anext(batches)
                    except StopAsyncIteration:
                        return
                for item in items:
                    with errors:
                        payload = encode(item)
                    await send(payload)

    def shutdown(self) -> None:
        """Stop the pool without waiting for handlers still running (they cannot be interrupted).

        Their threads are abandoned, named in the log: being daemon threads, they do not
        keep the process from exiting.
        """
        busy = self._pool.close()
        if busy:
            _LOGGER.warning(
                "abandoning %d handler thread(s) still running: %s",
                len(busy),
                ", ".join(f"{name} (for {seconds:.1f} s)" for name, seconds in busy),
            )


def settle(future: asyncio.Future[None]) -> None:
    """Wake whoever awaits ``future``, unless it is already done."""
    if not future.done():
        future.set_result(None)
