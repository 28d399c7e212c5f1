"""The modern API's server base: handlers as pynumaflow 0.9-0.14 takes them, served on v1.

A modern server is a :class:`~pynumaflow._faces.facade.Facade` of a family without a
legacy endpoint: it serves the v1 protocols (Numaflow >= 1.4) through the same kind
table, services, codecs and invoker as the 0.4 API. What differs is only at the edges,
here: the handler (a function, or an instance of ``Mapper`` & co. whose ``handler`` is
called; for reduce also the class itself, instantiated per key and window) is called
through an adapter that gives it a modern view of each datum (one small object per
request), and sink responses are translated into the internal ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Iterable, Mapping
from typing import Any, Callable, List, Optional, Tuple

from pynumaflow._codec.fields import decode_metadata
from pynumaflow._core.options import V1
from pynumaflow._faces.facade import Facade
from pynumaflow._faces.kinds import (
    ACCUMULATE,
    BATCH_MAP,
    REDUCE,
    REDUCE_STREAM,
    SESSION_REDUCE,
    SINK,
    Kind,
)
from pynumaflow._invoke import Handler, inspect_handler
from pynumaflow._types import function, sink
from pynumaflow._types.asynciter import STREAM_EOF, NonBlockingIterator
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow._types.modern import (
    Datum,
    MetadataResponse,
    Reducer,
    SinkDatum,
    SinkResponse,
    SystemMetadata,
    UserMetadata,
    _HandlerClass,
)
from pynumaflow._types.windowed import (
    Accumulator,
    AccumulatorDatum,
    ReduceStreamer,
    SessionReducer,
)

__all__ = ["ModernServer"]

_LOGGER = logging.getLogger("pynumaflow")


def _metadata(raw: bytes) -> Tuple[UserMetadata, SystemMetadata]:
    """The request's common.Metadata (kept whole by the modern codecs), decoded."""
    if not raw:
        return UserMetadata(), SystemMetadata()
    user, system = decode_metadata(raw)
    return UserMetadata(user), SystemMetadata(system)


def view(inner: function.Datum) -> Datum:
    """The modern view of a request's datum."""
    return Datum._view(inner, *_metadata(inner._user_metadata))


def sink_view(inner: sink.Datum) -> SinkDatum:
    """The modern view of a sink datum."""
    return SinkDatum._view(inner, *_metadata(inner._user_metadata))


# --- adapters: what the server calls instead of the user's handler ------------------------


# The map, batch map, transformer and sink adapters are partials of top-level functions,
# not closures: a multi-process face is pickled to its workers with them, by reference.


def _call_unary(user: Callable[..., Any], keys: List[str], datum: function.Datum) -> Any:
    return user(keys, view(datum))


def _unary(user: Callable[..., Any]) -> Callable[..., Any]:
    return functools.partial(_call_unary, user)


async def _async_views(datums: AsyncIterable[function.Datum]) -> Any:
    async for datum in datums:
        yield view(datum)


def _views(datums: Any) -> Any:
    if hasattr(datums, "__aiter__"):
        return _async_views(datums)
    return (view(datum) for datum in datums)


def _call_batch_map(user: Callable[..., Any], datums: Any) -> Any:
    return user(_views(datums))


def _batch_map(user: Callable[..., Any]) -> Callable[..., Any]:
    return functools.partial(_call_batch_map, user)


def _reduce(make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def call(keys: List[str], datums: Any, md: function.Metadata) -> Any:
        return make()(keys, _views(datums), md)

    return call


# How many messages a streaming handler may put ahead of the stream that sends them.
OUTPUT_SIZE = 64


async def streamed(run: Callable[[NonBlockingIterator[Any]], Awaitable[Any]]) -> Any:
    """Run a handler that writes to an ``output`` as an async generator of what it puts.

    ``run(output)`` calls the handler. Its error is raised after the messages it put
    before failing; if the stream stops reading (it failed), the handler is cancelled.
    """
    output: NonBlockingIterator[Any] = NonBlockingIterator(OUTPUT_SIZE)

    async def produce() -> None:
        try:
            await run(output)
        finally:
            await output.put(STREAM_EOF)

    task = asyncio.ensure_future(produce())
    try:
        async for item in output.read_iterator():
            yield item
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _reduce_stream(make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def call(keys: List[str], datums: Any, md: function.Metadata) -> Any:
        user = make()
        return streamed(lambda output: user(keys, _views(datums), output, md))

    return call


async def _accumulator_views(datums: AsyncIterable[function.Datum]) -> Any:
    async for inner in datums:
        yield AccumulatorDatum._view(inner, *_metadata(inner._user_metadata))


def _accumulate(make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def call(keys: List[str], datums: Any, md: function.Metadata) -> Any:
        user = make()
        return streamed(lambda output: user(_accumulator_views(datums), output))

    return call


async def _settled(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _session_reduce(make: Callable[[], SessionReducer]) -> Callable[..., Any]:
    """Adapt a SessionReducer class: ``call(keys, datums, session)`` (see the service)."""

    def call(keys: List[str], datums: Any, session: Any) -> Any:
        reducer = make()

        async def accumulator() -> bytes:
            state = await _settled(reducer.accumulator())
            if not isinstance(state, bytes):
                raise ReturnTypeError(
                    f"accumulator() must return bytes, returned {type(state).__name__}"
                )
            return state

        async def run(output: NonBlockingIterator[Any]) -> None:
            for state in session.merged_states:
                await _settled(reducer.merge_accumulator(state))
            await reducer.session_reduce(keys, _views(datums), output)

        session.accumulator = accumulator
        return streamed(run)

    return call


def _session_handler(
    kind: Kind, name: str, handler: object, init_args: Tuple[Any, ...], kwargs: Any
) -> Handler:
    if not (isinstance(handler, type) and issubclass(handler, SessionReducer)):
        raise TypeError(f"{name} must be a SessionReducer subclass (the class itself)")
    cls = handler
    target = functools.partial(cls.session_reduce, None)  # type: ignore[arg-type]
    return _checked(
        kind,
        name,
        inspect_handler(
            name,
            target,
            kind.params,
            call=_session_reduce(lambda: cls(*init_args, **kwargs)),
            own_metadata=True,
        ),
    )


def internal_responses(result: object) -> object:
    """Translate the sink responses of the modern API into the internal ones.

    Anything else passes through, for the codec to accept or refuse.
    """
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        return result
    return [_internal(item) for item in result]


def _internal(item: object) -> object:
    if not isinstance(item, SinkResponse):
        return item
    if item.nack_options is not None:
        return sink.Response.as_nack(item.id, item.nack_options)
    if item.serve:
        return sink.Response(item.id, True, None, "serve", item.serve_response)
    if item.success:
        return sink.Response.as_success(item.id)
    if item.fallback:
        return sink.Response.as_fallback(item.id)
    if item.on_success:
        message = item.on_success_msg
        if message is None:
            return sink.Response(item.id, True, None, "on_success")
        return MetadataResponse(
            item.id,
            True,
            None,
            "on_success",
            message.value,
            message.keys,
            message.user_metadata,
        )
    return sink.Response.as_failure(item.id, item.err or "")


async def _translated(result: Awaitable[object]) -> object:
    return internal_responses(await result)


def _call_sink(user: Callable[..., Any], datums: Any) -> Any:
    if hasattr(datums, "__aiter__"):
        result = user(_async_sink_views(datums))
    else:
        result = user(sink_view(datum) for datum in datums)
    if inspect.isawaitable(result):
        return _translated(result)
    return internal_responses(result)


def _sink(user: Callable[..., Any]) -> Callable[..., Any]:
    return functools.partial(_call_sink, user)


async def _async_sink_views(datums: AsyncIterable[sink.Datum]) -> Any:
    async for datum in datums:
        yield sink_view(datum)


def _target(handler: object) -> object:
    """What to inspect and call: a handler class instance's ``handler``, else the handler."""
    return handler.handler if isinstance(handler, _HandlerClass) else handler


def modern_handler(
    kind: Kind,
    name: str,
    handler: object,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Mapping[str, Any]] = None,
) -> Handler:
    """Inspect a modern API handler of ``kind`` (given as ``name``) and adapt it.

    Raises:
        TypeError: the handler has the wrong shape, or ``init_args``/``init_kwargs`` come
            without a handler class.

    """
    kwargs = dict(init_kwargs or {})
    if kind is SESSION_REDUCE:
        return _session_handler(kind, name, handler, init_args, kwargs)
    per_call = _PER_CALL.get(kind)
    if per_call is not None and isinstance(handler, type):
        base, adapter = per_call
        if not issubclass(handler, base):
            raise TypeError(f"{handler.__name__} is not a subclass of {base.__name__}")
        cls: type[_HandlerClass] = handler
        # Its shape and asyncness, without an instance (one is made per key and window).
        target: object = functools.partial(cls.handler, None)  # type: ignore[arg-type]
        make: Callable[[], Callable[..., Any]] = lambda: cls(*init_args, **kwargs).handler  # noqa: E731
        return _checked(
            kind,
            name,
            inspect_handler(name, target, kind.params, call=adapter(make), own_metadata=True),
        )
    if init_args or kwargs:
        raise TypeError("init_args and init_kwargs need a handler class as the handler")
    target = _target(handler)
    if not callable(target):
        raise TypeError(f"{name} must be callable ({kind.params})")
    func: Callable[..., Any] = target
    if per_call is not None:
        call = per_call[1](lambda: func)
    elif kind is SINK:
        call = _sink(func)
    elif kind is BATCH_MAP:
        call = _batch_map(func)
    else:
        call = _unary(func)
    return _checked(
        kind,
        name,
        inspect_handler(name, func, kind.params, stream=kind.stream, call=call, own_metadata=True),
    )


def _checked(kind: Kind, name: str, handler: Handler) -> Handler:
    if kind in _WRITES_OUTPUT and not handler.is_async:
        raise TypeError(f"{name} must be an async function (async def)")
    return handler


# The kinds whose handler may be a class, instantiated per call: its base and adapter.
_PER_CALL: Mapping[
    Kind,
    Tuple[type[_HandlerClass], Callable[[Callable[[], Callable[..., Any]]], Callable[..., Any]]],
] = {
    REDUCE: (Reducer, _reduce),
    REDUCE_STREAM: (ReduceStreamer, _reduce_stream),
    ACCUMULATE: (Accumulator, _accumulate),
}
_WRITES_OUTPUT = frozenset({REDUCE_STREAM, ACCUMULATE, SESSION_REDUCE})


class ModernServer(Facade):
    """Base of the modern API's servers: one handler, served on v1 only.

    ``sock_path`` and ``server_info_file``, when given, are the exact socket and
    server-info file (whatever the role); by default each role the platform names by
    ``$NUMAFLOW_UD_CONTAINER_TYPE`` (e.g. a fallback or on-success sink) gets its own.
    """

    _shutdown_callback: Optional[Callable[..., Any]] = None

    def _setup(
        self,
        kind: Kind,
        handler: object,
        *,
        sock_path: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        server_info_file: Optional[str],
        shutdown_callback: Optional[Callable[..., Any]] = None,
        shutdown_grace_period: Optional[float] = None,
        init_args: Tuple[Any, ...] = (),
        init_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._shutdown_callback = shutdown_callback
        # The handler's parameter name as the server class spells it (mapper_instance, ...).
        name = list(inspect.signature(type(self).__init__).parameters)[1]
        self._configure_inspected(
            {kind.name: modern_handler(kind, name, handler, init_args, init_kwargs)},
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=[V1],
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        asyncio.run(self.aexec())

    async def aexec(self) -> None:
        """Serve from a running event loop until SIGTERM or SIGINT, then drain."""
        try:
            await self._serve_async()
        finally:
            callback = self._shutdown_callback
            if callback is not None:
                result = callback(asyncio.get_running_loop())
                if inspect.isawaitable(result):
                    await result
