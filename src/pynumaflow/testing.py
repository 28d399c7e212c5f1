"""Test your handlers over the real gRPC path, without a cluster.

Each helper starts a real server for your handlers on a temporary Unix socket in the
running process and hands you a client that calls it the way the Numaflow platform
does (same RPCs, same bytes), returning the public datatypes::

    from pynumaflow import testing
    from pynumaflow.function import Message, Messages

    def double(keys, datum):
        return Messages(Message(datum.value * 2, keys=keys))

    async def test_double():  # e.g. with pytest-asyncio or anyio's pytest plugin
        async with testing.serve_function(map_handler=double) as udf:
            assert await udf.map(b"ab", keys=["k"]) == Messages(Message(b"abab", keys=["k"]))

    def test_double_sync():  # plain pytest, no async plugin needed
        with testing.serve_function_sync(map_handler=double) as udf:
            assert udf.map(b"ab")[0].value == b"abab"

The client speaks the protocols of Numaflow >= 1.4 (``protocol="v1"``, the default:
map.v1, sourcetransformer.v1, reduce.v1, sink.v1, what every current cluster runs),
or those of 0.8-0.9 (``protocol="legacy"``: function.v1 and the UserDefinedSink). Only
v1 carries headers and user metadata (``headers=``, ``user_metadata=``; the messages
returned carry the ``user_metadata`` the platform would get) and the sink's fallback,
serve and on-success answers.

A handler that raises makes the call fail with :class:`CallError` as the platform
would see it: on v1 ``status`` is ``"INTERNAL"``, ``details``
``"UDF_EXECUTION_ERROR(udf): ValueError('...')"`` and ``traceback`` the handler's
traceback; on legacy ``"UNKNOWN"`` and the error text.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union

from anyio.from_thread import BlockingPortal, start_blocking_portal

from pynumaflow._client.legacy import CallError, Connection, epoch_millis
from pynumaflow._client.source import SideInputConnection, SourceConnection
from pynumaflow._client.v1 import Input, Result, UserMetadata, V1Connection
from pynumaflow._core.options import CONTAINER_TYPE_ENV, LEGACY, V1
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import FUNCTION, SIDE_INPUT, SINK_SERVER, SOURCE, Family, Kind
from pynumaflow._faces.kit import running
from pynumaflow._types.function import (
    Datum,
    DatumMetadata,
    IntervalWindow,
    Message,
    Messages,
    MessageT,
    MessageTs,
)
from pynumaflow._types.modern import _HandlerClass
from pynumaflow._types.sideinput import Response as SideInputResponse
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Responses
from pynumaflow._types.source import Message as SourceMessage
from pynumaflow._types.source import Offset, Sourcer
from pynumaflow.function._servers import AsyncServer
from pynumaflow.mapper._servers import MapAsyncServer
from pynumaflow.mapstreamer._servers import MapStreamAsyncServer
from pynumaflow.reducer._servers import ReduceAsyncServer
from pynumaflow.sideinput._servers import SideInputServer
from pynumaflow.sink._servers import AsyncSink
from pynumaflow.sinker._servers import SinkAsyncServer
from pynumaflow.sourcer._servers import SourceAsyncServer
from pynumaflow.sourcetransformer._servers import SourceTransformAsyncServer

__all__ = [
    "CallError",
    "FunctionClient",
    "ResultMessage",
    "ResultMessageT",
    "SideInputClient",
    "SinkClient",
    "SourceClient",
    "SyncFunctionClient",
    "SyncSideInputClient",
    "SyncSinkClient",
    "SyncSourceClient",
    "make_datum",
    "make_sink_datum",
    "serve_function",
    "serve_function_sync",
    "serve_side_input",
    "serve_side_input_sync",
    "serve_sink",
    "serve_sink_sync",
    "serve_source",
    "serve_source_sync",
]

AnyHandler = Optional[Callable[..., Any]]
DatumLike = Union[bytes, str, Datum]
"""What a function call takes: a value (``str`` is encoded as UTF-8) or a whole Datum."""
SinkDatumLike = Union[bytes, str, SinkDatum]
"""What a sink call takes: a value (``str`` is encoded as UTF-8) or a whole sink Datum."""

_UTC = timezone.utc
_DEFAULT_WINDOW = timedelta(seconds=60)
_CALL_TIMEOUT = 60.0
ProtocolName = Literal["v1", "legacy"]
"""The protocol generation the client speaks (see the module docstring)."""
_DEFAULT_PROTOCOL: ProtocolName = "v1"


def _naive_utc(moment: Optional[datetime]) -> datetime:
    if moment is None:
        return datetime.now(_UTC).replace(tzinfo=None)
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(_UTC).replace(tzinfo=None)


def _bytes(value: Union[bytes, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def make_datum(
    value: Union[bytes, str],
    keys: Optional[Sequence[str]] = None,
    *,
    event_time: Optional[datetime] = None,
    watermark: Optional[datetime] = None,
    msg_id: str = "",
    num_delivered: int = 1,
    headers: Optional[Mapping[str, str]] = None,
) -> Datum:
    """Build a function :class:`~pynumaflow.function.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).
        msg_id: ``datum.metadata.id`` (v1 sends it as the request id; empty: the
            client numbers the requests).
        num_delivered: ``datum.metadata.num_delivered`` (legacy only: v1 has no count,
            the handler sees 0).
        headers: the message headers (v1 only).

    Returns:
        The datum, with times as the handler receives them (naive UTC).

    """
    event = _naive_utc(event_time)
    return Datum(
        list(keys or ()),
        _bytes(value),
        event,
        _naive_utc(watermark) if watermark is not None else event,
        DatumMetadata(msg_id, num_delivered),
        headers=headers,
    )


def make_sink_datum(
    value: Union[bytes, str],
    msg_id: str,
    keys: Optional[Sequence[str]] = None,
    *,
    event_time: Optional[datetime] = None,
    watermark: Optional[datetime] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> SinkDatum:
    """Build a :class:`pynumaflow.sink.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        msg_id: the id the handler answers with ``Response.as_success(id)``.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).
        headers: the message headers (v1 only).

    Returns:
        The sink datum.

    """
    event = _naive_utc(event_time)
    return SinkDatum(
        list(keys or ()),
        msg_id,
        _bytes(value),
        event,
        _naive_utc(watermark) if watermark is not None else event,
        headers=headers,
    )


def _as_datum(item: DatumLike, keys: Optional[Sequence[str]], **fields: Any) -> Datum:
    if isinstance(item, Datum):
        if keys is not None or any(v is not None for v in fields.values()):
            raise TypeError("pass either a Datum or a value with keys/event_time/watermark")
        return item
    return make_datum(item, keys, **{k: v for k, v in fields.items() if v is not None})


def _window_around(datums: Sequence[Datum]) -> IntervalWindow:
    moment = datums[0].event_time if datums else _naive_utc(None)
    size = _DEFAULT_WINDOW // timedelta(milliseconds=1)
    start = datetime(1970, 1, 1, tzinfo=_UTC) + timedelta(
        milliseconds=epoch_millis(moment) // size * size
    )
    return IntervalWindow(start, start + _DEFAULT_WINDOW)


class _UserMetadata:
    """What a message as the platform received it over v1 adds: its user metadata.

    Equal to a plain message of its base class with the same fields; two such messages
    also compare their user metadata.
    """

    __slots__ = ()
    _user_metadata: Dict[str, Dict[str, bytes]]
    _plain: type = Message
    _fields: Tuple[str, ...] = ("value", "keys", "tags")

    @property
    def user_metadata(self) -> Dict[str, Dict[str, bytes]]:
        """The result's user metadata: group name -> key -> bytes."""
        return self._user_metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, self._plain):
            return NotImplemented
        same = all(getattr(self, f) == getattr(other, f) for f in self._fields)
        if isinstance(other, _UserMetadata):
            same = same and self._user_metadata == other._user_metadata
        return same

    __hash__ = None  # type: ignore[assignment]


def _copy(user_metadata: Optional[UserMetadata]) -> Dict[str, Dict[str, bytes]]:
    return {group: dict(kv) for group, kv in (user_metadata or {}).items()}


class ResultMessage(_UserMetadata, Message):
    """A map, map stream or reduce output as the platform received it over v1.

    A :class:`~pynumaflow.function.Message` that also carries the ``user_metadata`` of
    the result (the server echoes the request's); it compares equal to a plain
    ``Message`` with the same value, keys and tags.
    """

    __slots__ = ("_user_metadata",)

    def __init__(
        self,
        value: Optional[bytes],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        *,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, keys, tags)
        self._user_metadata = _copy(user_metadata)


class ResultMessageT(_UserMetadata, MessageT):
    """A mapt output as the platform received it over v1, with its ``user_metadata``.

    Compares equal to a plain :class:`~pynumaflow.function.MessageT` with the same
    value, event time, keys and tags.
    """

    __slots__ = ("_user_metadata",)
    _plain = MessageT
    _fields = ("value", "event_time", "keys", "tags")

    def __init__(
        self,
        value: Optional[bytes],
        event_time: datetime,
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        *,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, event_time, keys, tags)
        self._user_metadata = _copy(user_metadata)


def _message(result: Result) -> ResultMessage:
    return ResultMessage(result.value, result.keys, result.tags, user_metadata=result.user_metadata)


def _message_t(result: Result) -> ResultMessageT:
    moment = result.event_time or datetime(1970, 1, 1, tzinfo=_UTC)
    return ResultMessageT(
        result.value, moment, result.keys, result.tags, user_metadata=result.user_metadata
    )


def _input(datum: Datum, user_metadata: Optional[UserMetadata]) -> Input:
    return Input(
        datum.value,
        list(datum.keys),
        datum.event_time,
        datum.watermark,
        datum.metadata.id,
        datum.headers,
        user_metadata or {},
    )


class _Legacy:
    """Calls over function.v1 and the UserDefinedSink (Numaflow 0.8-0.9)."""

    def __init__(self, connection: Connection, service: str) -> None:
        self._connection = connection
        self._service = service

    @staticmethod
    def _plain(headers: Mapping[str, str], user_metadata: Optional[UserMetadata]) -> None:
        if headers or user_metadata:
            raise ValueError(
                "headers and user metadata exist on Numaflow >= 1.4 only: serve with "
                "protocol='v1' (the default) to send them"
            )

    async def is_ready(self) -> bool:
        return await self._connection.is_ready(self._service)  # type: ignore[arg-type]

    async def one(self, kind: Kind, datum: Datum, user_metadata: Optional[UserMetadata]) -> Any:
        self._plain(datum.headers, user_metadata)
        if kind is kinds.MAP:
            return await self._connection.map(datum)
        if kind is kinds.MAPT:
            return await self._connection.mapt(datum)
        return Messages(*[m async for m in self._connection.map_stream(datum)])

    async def reduce(
        self, datums: List[Datum], window: IntervalWindow, user_metadata: Optional[UserMetadata]
    ) -> Messages:
        for datum in datums:
            self._plain(datum.headers, user_metadata)
        answers = await self._connection.reduce(datums, window)
        return Messages(*(m for answer in answers for m in answer))

    async def sink(
        self, datums: List[SinkDatum], user_metadata: Optional[UserMetadata]
    ) -> Responses:
        for datum in datums:
            self._plain(datum.headers, user_metadata)
        return await self._connection.sink(datums)


class _V1:
    """Calls over map.v1, sourcetransformer.v1, reduce.v1, sink.v1 (Numaflow >= 1.4)."""

    def __init__(self, connections: Mapping[str, V1Connection]) -> None:
        self._connections = connections

    def _to(self, kind: Kind) -> V1Connection:
        connection = self._connections.get(kind.name)
        if connection is None:
            raise CallError("UNIMPLEMENTED", f"no {kind.keyword} is served")
        return connection

    async def is_ready(self) -> bool:
        for name, connection in self._connections.items():
            if not await connection.is_ready(name):
                return False
        return True

    async def one(self, kind: Kind, datum: Datum, user_metadata: Optional[UserMetadata]) -> Any:
        results = await self._to(kind).call(kind.name, _input(datum, user_metadata))
        if kind is kinds.MAPT:
            return MessageTs(*map(_message_t, results))
        return Messages(*map(_message, results))

    async def reduce(
        self, datums: List[Datum], window: IntervalWindow, user_metadata: Optional[UserMetadata]
    ) -> Messages:
        inputs = [_input(d, user_metadata) for d in datums]
        return Messages(*map(_message, await self._to(kinds.REDUCE).reduce(inputs, window)))

    async def sink(
        self, datums: List[SinkDatum], user_metadata: Optional[UserMetadata]
    ) -> Responses:
        inputs = [
            Input(d.value, d.keys, d.event_time, d.watermark, d.id, d.headers, user_metadata or {})
            for d in datums
        ]
        responses, _ = await self._to(kinds.SINK).sink(inputs)
        return Responses(*responses)


_Backend = Union[_Legacy, _V1]


class FunctionClient:
    """Calls a function server over gRPC, as the platform does; see :func:`serve_function`.

    Every method raises :class:`CallError` when the call fails (see the module
    docstring; ``"UNIMPLEMENTED"`` when the server has no such handler). ``headers``
    and ``user_metadata`` (group name -> key -> bytes) go with the request on v1; on
    legacy, which has neither, giving them raises ``ValueError``.
    """

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._backend.is_ready()

    async def map(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Call the map handler (MapFn) with one datum.

        Args:
            value: the payload, or a whole :class:`~pynumaflow.function.Datum` (then
                give no other argument but ``user_metadata``).
            keys: the datum's keys.
            event_time: its event time (default now).
            watermark: its watermark (default: the event time).
            headers: its message headers (v1).
            user_metadata: its user metadata (v1).

        Returns:
            The messages the handler returned, as the platform received them (on v1,
            :class:`ResultMessage` objects with their ``user_metadata``).

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark, headers=headers)
        result: Messages = await self._backend.one(kinds.MAP, datum, user_metadata)
        return result

    async def mapt(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> MessageTs:
        """Call the mapt handler (MapTFn) with one datum; arguments as for :meth:`map`.

        Returns:
            The messages, each with the event time the handler assigned as a
            timezone-aware UTC datetime (on v1, :class:`ResultMessageT` objects).

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark, headers=headers)
        result: MessageTs = await self._backend.one(kinds.MAPT, datum, user_metadata)
        return result

    async def map_stream(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Call the map stream handler (MapStreamFn); arguments as for :meth:`map`.

        Returns:
            Every message the handler yielded, in order.

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark, headers=headers)
        result: Messages = await self._backend.one(kinds.MAP_STREAM, datum, user_metadata)
        return result

    async def reduce(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Send datums as one window on one ReduceFn stream, as the platform does.

        The server groups them by keys and calls the reduce handler once per group.

        Args:
            datums: the window's datums: values (given ``keys``) or whole Datums, which
                may have different keys (and, on v1, headers).
            keys: the keys of the datums given as values.
            window: the window (default: the minute holding the first datum's
                event time).
            user_metadata: the user metadata of every datum (v1).

        Returns:
            The messages of every key group, group after group in the order they
            were answered.

        """
        batch = [_as_datum(d, keys) if not isinstance(d, Datum) else d for d in datums]
        return await self._backend.reduce(batch, window or _window_around(batch), user_metadata)


class SinkClient:
    """Calls a sink server over gRPC, as the platform does; see :func:`serve_sink`."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._backend.is_ready()

    async def sink(
        self,
        datums: Iterable[SinkDatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Responses:
        """Send one batch (one SinkFn stream on legacy, a batch and its EOT on v1).

        Args:
            datums: values (their ids are ``"1"``, ``"2"``... in order) or whole sink
                Datums.
            keys: the keys of the datums given as values.
            headers: the headers of the datums given as values (v1).
            user_metadata: the user metadata of every datum (v1).

        Returns:
            One response per datum, in the order answered; on v1 with the status
            asked for (``"fallback"``, ``"serve"``, ``"on_success"``) and its value
            and keys.

        Raises:
            CallError: the call failed (a handler that raises does not fail the call:
                every datum is answered as failed instead).

        """
        batch = [
            d if isinstance(d, SinkDatum) else make_sink_datum(d, str(n), keys, headers=headers)
            for n, d in enumerate(datums, 1)
        ]
        return await self._backend.sink(batch, user_metadata)


@contextlib.contextmanager
def _socket_dir() -> Iterator[Path]:
    # A short folder of its own: Unix socket paths are limited to about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pnf-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_ENVIRONMENT = threading.Lock()


@contextlib.contextmanager
def _local_run() -> Iterator[None]:
    """Build a v1 server as for a local run, whatever ``$NUMAFLOW_UD_CONTAINER_TYPE`` says.

    A container type limits a server to its role's sockets (a sink's pod would serve no
    map): the kit, which may run inside a pod, is no pod itself. The server reads the
    variable once, when it is built.
    """
    with _ENVIRONMENT:
        saved = os.environ.pop(CONTAINER_TYPE_ENV, None)
        try:
            yield
        finally:
            if saved is not None:
                os.environ[CONTAINER_TYPE_ENV] = saved


def _check_protocol(protocol: str) -> None:
    if protocol not in (V1, LEGACY):
        raise ValueError(f"protocol must be 'v1' or 'legacy', got {protocol!r}")


def _sock_path(folder: Path, family: Family) -> str:
    # The legacy socket's folder is where the v1 sockets go too.
    assert family.legacy is not None
    return str(folder / family.legacy.sock_name)


def _is_modern(handler: object) -> bool:
    """A handler of the modern API's classes (an instance, or a ``Reducer`` class)."""
    return isinstance(handler, _HandlerClass) or (
        isinstance(handler, type) and issubclass(handler, _HandlerClass)
    )


# The modern API's async server of each kind.
_MODERN_SERVERS: Dict[str, Callable[..., Any]] = {
    kinds.MAP.name: MapAsyncServer,
    kinds.MAP_STREAM.name: MapStreamAsyncServer,
    kinds.MAPT.name: SourceTransformAsyncServer,
    kinds.REDUCE.name: ReduceAsyncServer,
    kinds.SINK.name: SinkAsyncServer,
}


def _modern_server(
    family: Family, group: Mapping[str, AnyHandler], folder: Path, max_threads: Optional[int]
) -> Any:
    ((keyword, handler),) = group.items()
    kind = next(k for k in family.kinds if k.keyword == keyword)
    assert kind.v1 is not None
    socket = kind.v1.sockets[0]
    return _MODERN_SERVERS[kind.name](
        handler,
        sock_path=str(folder / socket.sock),
        max_threads=max_threads,
        server_info_file=str(folder / socket.info),
    )


@contextlib.asynccontextmanager
async def _serve(
    family: Family,
    handlers: Mapping[str, AnyHandler],
    protocol: str,
    call_timeout: Optional[float],
    start: Callable[[Mapping[str, AnyHandler], Path], Any],
    max_threads: Optional[int],
    processes: Optional[int] = None,
) -> AsyncIterator[_Backend]:
    """Serve ``handlers`` (by keyword) with ``start``; a backend calling them.

    A modern class handler (a ``Mapper`` & co. instance, or a ``Reducer`` class) is
    served by its modern server, which serves v1 only, as in a deployment.
    """
    _check_protocol(protocol)
    async with contextlib.AsyncExitStack() as stack:
        folder = stack.enter_context(_socket_dir())
        given = {k: h for k, h in handlers.items() if h is not None}
        modern = {k: h for k, h in given.items() if _is_modern(h)}
        if modern and protocol == LEGACY:
            raise ValueError(
                f"{', '.join(modern)}: the modern API's handlers are served on v1 only "
                "(Numaflow >= 1.4): use protocol='v1' (the default)"
            )
        if protocol == LEGACY:
            server = start(handlers, folder)
            await stack.enter_async_context(running(server, processes, max_threads))
            connection = stack.enter_context(Connection(server.sock_path, call_timeout))
            assert family.legacy is not None
            yield _Legacy(connection, family.legacy.service_name)
            return
        # v1 announces one MAP_MODE per server: map stream gets a server of its own.
        plain = {k: h for k, h in given.items() if k not in modern}
        groups = [plain] if plain or not modern else []
        stream_keyword = kinds.MAP_STREAM.keyword
        if kinds.MAP.keyword in plain and stream_keyword in plain:
            groups = [
                {k: h for k, h in plain.items() if k != stream_keyword},
                {stream_keyword: plain[stream_keyword]},
            ]
        groups += [{keyword: handler} for keyword, handler in modern.items()]
        connections: Dict[str, V1Connection] = {}
        for n, group in enumerate(groups):
            place = folder / str(n)
            place.mkdir()
            with _local_run():
                server = (
                    _modern_server(family, group, place, max_threads)
                    if set(group) <= set(modern)
                    else start(group, place)
                )
            await stack.enter_async_context(running(server, processes, max_threads))
            for kind in family.kinds:
                if kind.keyword in group and kind.v1 is not None:
                    sock = str(place / kind.v1.sockets[0].sock)
                    connections[kind.name] = await stack.enter_async_context(
                        V1Connection(sock, call_timeout)
                    )
        yield _V1(connections)


@contextlib.asynccontextmanager
async def serve_function(
    map_handler: AnyHandler = None,
    mapt_handler: AnyHandler = None,
    map_stream_handler: AnyHandler = None,
    reduce_handler: AnyHandler = None,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
    protocol: ProtocolName = _DEFAULT_PROTOCOL,
    processes: Optional[int] = None,
) -> AsyncIterator[FunctionClient]:
    """Serve these handlers on a temporary socket in the running event loop.

    The server is the real :class:`~pynumaflow.function.AsyncServer`, serving only the
    protocol the client speaks (a modern class handler, e.g. a ``Mapper`` instance or a
    ``Reducer`` class, gets its modern server, v1 only); leaving the block stops it and
    removes its files. On v1, map and map stream handlers given together are served by
    two servers (a v1 server announces one map mode).

    Args:
        map_handler: as for :class:`~pynumaflow.function.Server`.
        mapt_handler: as for :class:`~pynumaflow.function.Server`.
        map_stream_handler: as for :class:`~pynumaflow.function.Server`.
        reduce_handler: as for :class:`~pynumaflow.function.Server`.
        max_threads: size of the pool running sync handlers.
        call_timeout: seconds each call may take before it fails with
            ``DEADLINE_EXCEEDED`` (``None``: no limit).
        protocol: ``"v1"`` (Numaflow >= 1.4, the default) or ``"legacy"`` (0.8-0.9).
        processes: serve as the multi-process servers do (``MultiProcServer``,
            ``MapMultiprocServer``): the requests of each map, map stream or mapt
            stream dealt to this many worker processes, which import the handlers by
            name (reduce is answered by the test process); v1 only. ``max_threads``
            is then each worker's pool (default 1).

    Yields:
        A client for the server.

    Raises:
        ValueError: no handler was given, an unknown protocol, or ``processes`` with
            the legacy protocol.
        TypeError: a handler has the wrong shape, or with ``processes`` cannot be
            imported by name in a worker.
        WorkerExitedError: with ``processes``, at the exit: a worker had ended unasked.

    """
    handlers = {
        "map_handler": map_handler,
        "mapt_handler": mapt_handler,
        "map_stream_handler": map_stream_handler,
        "reduce_handler": reduce_handler,
    }

    def start(group: Mapping[str, AnyHandler], folder: Path) -> AsyncServer:
        return AsyncServer(
            map_handler=group.get("map_handler"),
            mapt_handler=group.get("mapt_handler"),
            map_stream_handler=group.get("map_stream_handler"),
            reduce_handler=group.get("reduce_handler"),
            sock_path=_sock_path(folder, FUNCTION),
            server_info_file=str(folder / "server-info"),
            max_threads=max_threads,
            protocols=[protocol],
        )

    serving = _serve(FUNCTION, handlers, protocol, call_timeout, start, max_threads, processes)
    async with serving as backend:
        yield FunctionClient(backend)


@contextlib.asynccontextmanager
async def serve_sink(
    sink_handler: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
    protocol: ProtocolName = _DEFAULT_PROTOCOL,
) -> AsyncIterator[SinkClient]:
    """Serve a sink handler on a temporary socket in the running event loop.

    Args:
        sink_handler: as for :class:`~pynumaflow.sink.Sink`, sync or async.
        max_threads: size of the pool running a sync handler.
        call_timeout: seconds each call may take (``None``: no limit).
        protocol: ``"v1"`` (Numaflow >= 1.4, the default) or ``"legacy"`` (0.8-0.9).

    Yields:
        A client for the server.

    """

    def start(group: Mapping[str, AnyHandler], folder: Path) -> AsyncSink:
        return AsyncSink(
            sink_handler,
            sock_path=_sock_path(folder, SINK_SERVER),
            server_info_file=str(folder / "server-info"),
            max_threads=max_threads,
            protocols=[protocol],
        )

    handlers = {kinds.SINK.keyword: sink_handler}
    async with _serve(SINK_SERVER, handlers, protocol, call_timeout, start, max_threads) as backend:
        yield SinkClient(backend)


def _fields(arguments: Dict[str, Any]) -> Dict[str, Any]:
    """A sync method's arguments, for the async method it wraps."""
    return {k: v for k, v in arguments.items() if k not in ("self", "fields")}


class SyncFunctionClient:
    """:class:`FunctionClient` for plain (sync) tests; see :func:`serve_function_sync`."""

    def __init__(self, client: FunctionClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return self._portal.call(self._client.is_ready)

    def map(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Like :meth:`FunctionClient.map`."""
        fields = locals()
        return self._portal.call(functools.partial(self._client.map, **_fields(fields)))

    def mapt(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> MessageTs:
        """Like :meth:`FunctionClient.mapt`."""
        fields = locals()
        return self._portal.call(functools.partial(self._client.mapt, **_fields(fields)))

    def map_stream(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Like :meth:`FunctionClient.map_stream`."""
        fields = locals()
        return self._portal.call(functools.partial(self._client.map_stream, **_fields(fields)))

    def reduce(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Like :meth:`FunctionClient.reduce`."""
        reduce = self._client.reduce
        return self._portal.call(
            lambda: reduce(datums, keys, window=window, user_metadata=user_metadata)
        )


class SyncSinkClient:
    """:class:`SinkClient` for plain (sync) tests; see :func:`serve_sink_sync`."""

    def __init__(self, client: SinkClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return self._portal.call(self._client.is_ready)

    def sink(
        self,
        datums: Iterable[SinkDatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Responses:
        """Like :meth:`SinkClient.sink`."""
        sink = self._client.sink
        return self._portal.call(
            lambda: sink(datums, keys, headers=headers, user_metadata=user_metadata)
        )


@contextlib.contextmanager
def serve_function_sync(
    map_handler: AnyHandler = None,
    mapt_handler: AnyHandler = None,
    map_stream_handler: AnyHandler = None,
    reduce_handler: AnyHandler = None,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
    protocol: ProtocolName = _DEFAULT_PROTOCOL,
    processes: Optional[int] = None,
) -> Iterator[SyncFunctionClient]:
    """Like :func:`serve_function`, for tests that are not async.

    The server runs on an event loop in a helper thread that this block starts and
    joins; the client's methods block until the answer arrives.
    """
    with start_blocking_portal() as portal:
        serving = serve_function(
            map_handler,
            mapt_handler,
            map_stream_handler,
            reduce_handler,
            max_threads=max_threads,
            call_timeout=call_timeout,
            protocol=protocol,
            processes=processes,
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncFunctionClient(client, portal)


@contextlib.contextmanager
def serve_sink_sync(
    sink_handler: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
    protocol: ProtocolName = _DEFAULT_PROTOCOL,
) -> Iterator[SyncSinkClient]:
    """Like :func:`serve_sink`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_sink(
            sink_handler, max_threads=max_threads, call_timeout=call_timeout, protocol=protocol
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncSinkClient(client, portal)


# --- Numaflow >= 1.4 kinds without a legacy protocol: source and side input --------------


class SourceClient:
    """Calls a source as the platform does: read, then ack or nack what was read."""

    def __init__(self, connection: SourceConnection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready()

    async def read(self, num_records: int = 500, timeout_ms: int = 1000) -> List[SourceMessage]:
        """One read request: the messages of the batch (times naive UTC), up to its EOT."""
        return await self._connection.read(num_records, timeout_ms)

    async def ack(self, offsets: Iterable[Union[Offset, SourceMessage]]) -> None:
        """Acknowledge offsets (or the messages read): one AckRequest, its one answer."""
        await self._connection.ack(_offsets_of(offsets))

    async def nack(self, offsets: Iterable[Union[Offset, SourceMessage]]) -> None:
        """Negatively acknowledge offsets (or messages), one request entry per offset."""
        await self._connection.nack(_offsets_of(offsets))

    async def pending(self) -> int:
        """The source's pending count (negative: not available)."""
        return await self._connection.pending()

    async def partitions(self) -> Tuple[List[int], Optional[int]]:
        """The active partitions, and the total partitions when the source reports one."""
        return await self._connection.partitions()


def _offsets_of(items: Iterable[Union[Offset, SourceMessage]]) -> List[Offset]:
    return [item.offset if isinstance(item, SourceMessage) else item for item in items]


class SideInputClient:
    """Calls a side-input retriever as the platform's side-input manager does."""

    def __init__(self, connection: SideInputConnection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready()

    async def retrieve(self) -> SideInputResponse:
        """One RetrieveSideInput: the value, or ``no_broadcast`` set."""
        return await self._connection.retrieve()


def _v1_files(folder: Path, kind: Kind) -> Tuple[str, str]:
    assert kind.v1 is not None
    socket = kind.v1.sockets[0]
    return str(folder / socket.sock), str(folder / socket.info)


@contextlib.asynccontextmanager
async def serve_source(
    sourcer: Sourcer,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[SourceClient]:
    """Serve a :class:`~pynumaflow.sourcer.Sourcer` on a temporary socket (source.v1).

    Yields:
        A client that reads, acks and nacks as the platform does.

    """
    with _socket_dir() as folder:
        sock, info = _v1_files(folder, SOURCE)
        server = SourceAsyncServer(
            sourcer, sock_path=sock, max_threads=max_threads, server_info_file=info
        )
        async with server.running():
            connection = SourceConnection(sock, call_timeout)
            try:
                yield SourceClient(connection)
            finally:
                connection.close()


@contextlib.asynccontextmanager
async def serve_side_input(
    retriever: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[SideInputClient]:
    """Serve a side-input retriever on a temporary socket (sideinput.v1).

    Yields:
        A client that retrieves as the side-input manager does.

    """
    with _socket_dir() as folder:
        sock, info = _v1_files(folder, SIDE_INPUT)
        server = SideInputServer(
            retriever, sock_path=sock, max_threads=max_threads, server_info_file=info
        )
        async with server.running():
            connection = SideInputConnection(sock, call_timeout)
            try:
                yield SideInputClient(connection)
            finally:
                connection.close()


class SyncSourceClient:
    """:class:`SourceClient` for plain (sync) tests; see :func:`serve_source_sync`."""

    def __init__(self, client: SourceClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Like :meth:`SourceClient.is_ready`."""
        return self._portal.call(self._client.is_ready)

    def read(self, num_records: int = 500, timeout_ms: int = 1000) -> List[SourceMessage]:
        """Like :meth:`SourceClient.read`."""
        return self._portal.call(self._client.read, num_records, timeout_ms)

    def ack(self, offsets: Iterable[Union[Offset, SourceMessage]]) -> None:
        """Like :meth:`SourceClient.ack`."""
        self._portal.call(self._client.ack, offsets)

    def nack(self, offsets: Iterable[Union[Offset, SourceMessage]]) -> None:
        """Like :meth:`SourceClient.nack`."""
        self._portal.call(self._client.nack, offsets)

    def pending(self) -> int:
        """Like :meth:`SourceClient.pending`."""
        return self._portal.call(self._client.pending)

    def partitions(self) -> Tuple[List[int], Optional[int]]:
        """Like :meth:`SourceClient.partitions`."""
        return self._portal.call(self._client.partitions)


class SyncSideInputClient:
    """:class:`SideInputClient` for plain (sync) tests; see :func:`serve_side_input_sync`."""

    def __init__(self, client: SideInputClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Like :meth:`SideInputClient.is_ready`."""
        return self._portal.call(self._client.is_ready)

    def retrieve(self) -> SideInputResponse:
        """Like :meth:`SideInputClient.retrieve`."""
        return self._portal.call(self._client.retrieve)


@contextlib.contextmanager
def serve_source_sync(
    sourcer: Sourcer,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncSourceClient]:
    """Like :func:`serve_source`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_source(sourcer, max_threads=max_threads, call_timeout=call_timeout)
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncSourceClient(client, portal)


@contextlib.contextmanager
def serve_side_input_sync(
    retriever: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncSideInputClient]:
    """Like :func:`serve_side_input`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_side_input(retriever, max_threads=max_threads, call_timeout=call_timeout)
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncSideInputClient(client, portal)
