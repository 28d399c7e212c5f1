"""The one place that knows how to call a user handler.

Whether a handler is async is decided once, when the server is constructed. Async
handlers are awaited on the event loop; sync handlers run in one bounded thread pool
(``max_threads``) with the caller's context variables. Handler failures become gRPC
statuses here, logged once with their traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import threading
import traceback
from collections.abc import AsyncGenerator, Awaitable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Deque, Dict, Optional

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._types.errors import ReturnTypeError

__all__ = [
    "Handler",
    "HandlerErrors",
    "Invoker",
    "inspect_handler",
    "inspect_methods",
    "settle",
]

_LOGGER = logging.getLogger("pynumaflow")

# How many items a sync generator may run ahead of the stream that sends them.
_STREAM_AHEAD = 64


@dataclass(frozen=True)
class Handler:
    """A user handler, inspected once: its keyword name, the callable, and its kind."""

    name: str
    func: Callable[..., Any]
    is_async: bool


def _is_async(func: Callable[..., Any], predicate: Callable[[Any], bool]) -> bool:
    return predicate(func) or predicate(getattr(func, "__call__", None))  # noqa: B004


def inspect_handler(name: str, func: object, params: str, *, stream: bool = False) -> Handler:
    """Check a handler's shape and decide whether it is async.

    Args:
        name: the constructor keyword it came in by, used in error messages.
        func: the handler (anything: what is not callable is refused).
        params: its expected parameters, e.g. ``"keys, datum"``.
        stream: whether it produces a stream (map stream): then it must be an async
            generator function, or a sync callable returning an iterable.

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
    if stream:
        if _is_async(func, inspect.isasyncgenfunction):
            return Handler(name, func, is_async=True)
        if _is_async(func, inspect.iscoroutinefunction):
            raise TypeError(
                f"{name} must be an async generator function (async def with yield) "
                "or a sync generator; got a coroutine function"
            )
        return Handler(name, func, is_async=False)
    return Handler(name, func, is_async=_is_async(func, inspect.iscoroutinefunction))


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
        if err is None or not isinstance(err, Exception) or isinstance(err, GRPCError):
            return  # success, cancellation, or already a status: let it through
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
        self._done: list[tuple[asyncio.Future[Any], Optional[BaseException], Any]] = []
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
            self._put(future, error, result)

        return run

    def _put(
        self, future: asyncio.Future[Any], error: Optional[BaseException], result: Any
    ) -> None:
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
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


_ITEM, _END_OF_ITEMS, _ERROR = "item", "end", "error"


class _FromThread:
    """A bounded channel from one pool thread to the event loop (a sync stream handler).

    The thread wakes the loop only when the loop waits for an item, so while the loop
    is busy, items pile up without a self-pipe write each; the loop wakes a thread
    waiting for room only once half of ``limit`` is free.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._items: Deque[tuple[str, Any]] = collections.deque()
        self._unread = 0
        self._waiter: Optional[asyncio.Future[None]] = None  # the loop, waiting for items
        self._producer_waits = False
        self.stopped = False
        """Set by :meth:`stop`: the loop side will read nothing more."""

    def push(self, kind: str, item: Any) -> bool:
        """In the thread: hand over one entry, waiting while ``limit`` items are unread.

        Returns False, dropping the entry, once the loop side has stopped.
        """
        with self._lock:
            while kind is _ITEM and self._unread >= self._limit and not self.stopped:
                self._producer_waits = True
                self._room.wait()
            if self.stopped:
                return False
            self._items.append((kind, item))
            self._unread += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                self._loop.call_soon_threadsafe(settle, waiter)
        return True

    async def get(self) -> tuple[str, Any]:
        """On the loop: the next entry, waiting for the thread if there is none yet."""
        while True:
            with self._lock:
                if self._items:
                    entry = self._items.popleft()
                    self._unread -= 1
                    if self._producer_waits and self._unread <= self._limit // 2:
                        self._producer_waits = False
                        self._room.notify()
                    return entry
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def stop(self) -> None:
        """On the loop: read nothing more; a producer waiting for room returns."""
        with self._lock:
            self.stopped = True
            self._room.notify_all()


class Invoker:
    """Calls handlers: awaits async ones, runs sync ones in a bounded thread pool."""

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="pynumaflow-handler")
        self._completions: Optional[_Completions] = None

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
        loop = asyncio.get_running_loop()
        completions = self._completions
        if completions is None or completions.loop is not loop:
            completions = self._completions = _Completions(loop)
        future = loop.create_future()
        self._pool.submit(completions.runner(future, contextvars.copy_context(), func), *args)
        return future

    def iterate(self, handler: Handler, *args: Any) -> AsyncGenerator[Any, None]:
        """Iterate a stream handler: an async generator, or a sync iterable in the pool."""
        if handler.is_async:
            return handler.func(*args)  # type: ignore[no-any-return]
        return self._iterate_in_thread(handler.func, args)

    async def _iterate_in_thread(
        self, func: Callable[..., Any], args: tuple[Any, ...]
    ) -> AsyncGenerator[Any, None]:
        """Drive a sync iterable from one pool thread, at most _STREAM_AHEAD items ahead."""
        channel = _FromThread(asyncio.get_running_loop(), _STREAM_AHEAD)

        def produce() -> None:
            iterable = None
            try:
                iterable = func(*args)
                for item in iterable:
                    if not channel.push(_ITEM, item):
                        return
                channel.push(_END_OF_ITEMS, None)
            except BaseException as err:
                channel.push(_ERROR, err)
            finally:
                close: Optional[Callable[[], None]] = getattr(iterable, "close", None)
                if channel.stopped and close is not None:
                    close()

        done = self.run_in_pool(produce)
        try:
            while True:
                kind, item = await channel.get()
                if kind is _ITEM:
                    yield item
                elif kind is _END_OF_ITEMS:
                    return
                else:
                    raise item
        finally:
            channel.stop()  # wakes the producer if it waits for room
            if done.done():
                done.result()

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

        Its errors, and what ``encode`` rejects, become statuses as
        :class:`HandlerErrors` says; items already sent stay sent.
        """
        errors = HandlerErrors(handler, v1_container=v1_container)
        with errors:
            items = self.iterate(handler, *args)
        async with contextlib.aclosing(items):
            while True:
                with errors:
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                    payload = encode(item)
                await send(payload)

    def shutdown(self) -> None:
        """Stop the pool without waiting for handlers still running (they cannot be interrupted)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def settle(future: asyncio.Future[None]) -> None:
    """Wake whoever awaits ``future``, unless it is already done."""
    if not future.done():
        future.set_result(None)
