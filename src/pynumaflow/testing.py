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

A handler that raises makes the call fail with :class:`CallError` (``status`` is
``"UNKNOWN"`` and ``details`` the error text, as the platform would see it).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

from anyio.from_thread import BlockingPortal, start_blocking_portal

from pynumaflow._client.legacy import CallError, Connection, epoch_millis
from pynumaflow._client.v1 import SideInputConnection, SourceConnection
from pynumaflow._core.options import LEGACY
from pynumaflow._faces.kinds import FUNCTION, SIDE_INPUT, SINK_SERVER, SOURCE, Family, Kind
from pynumaflow._types.function import (
    Datum,
    DatumMetadata,
    IntervalWindow,
    Messages,
    MessageTs,
)
from pynumaflow._types.sideinput import Response as SideInputResponse
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Responses
from pynumaflow._types.source import Message as SourceMessage
from pynumaflow._types.source import Offset, Sourcer
from pynumaflow.function._servers import AsyncServer
from pynumaflow.sideinput._servers import SideInputServer
from pynumaflow.sink._servers import AsyncSink
from pynumaflow.sourcer._servers import SourceAsyncServer

__all__ = [
    "CallError",
    "FunctionClient",
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
# The client speaks function.v1 / sink.v1 (Numaflow 0.8-0.9); the handlers behave the
# same under every protocol generation.
_PROTOCOL = LEGACY


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
) -> Datum:
    """Build a function :class:`~pynumaflow.function.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).
        msg_id: ``datum.metadata.id``.
        num_delivered: ``datum.metadata.num_delivered``.

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
    )


def make_sink_datum(
    value: Union[bytes, str],
    msg_id: str,
    keys: Optional[Sequence[str]] = None,
    *,
    event_time: Optional[datetime] = None,
    watermark: Optional[datetime] = None,
) -> SinkDatum:
    """Build a :class:`pynumaflow.sink.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        msg_id: the id the handler answers with ``Response.as_success(id)``.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).

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


class FunctionClient:
    """Calls a function server over gRPC, as the platform does; see :func:`serve_function`.

    Every method raises :class:`CallError` when the call fails (``status`` ``"UNKNOWN"``
    when the handler raised, ``"UNIMPLEMENTED"`` when the server has no such handler).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready("function")

    async def map(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
    ) -> Messages:
        """Call the map handler (MapFn) with one datum.

        Args:
            value: the payload, or a whole :class:`~pynumaflow.function.Datum` (then
                give no other argument).
            keys: the datum's keys.
            event_time: its event time (default now).
            watermark: its watermark (default: the event time).

        Returns:
            The messages the handler returned, as the platform received them.

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark)
        return await self._connection.map(datum)

    async def mapt(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
    ) -> MessageTs:
        """Call the mapt handler (MapTFn) with one datum; arguments as for :meth:`map`.

        Returns:
            The messages, each with the event time the handler assigned as a
            timezone-aware UTC datetime.

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark)
        return await self._connection.mapt(datum)

    async def map_stream(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
    ) -> Messages:
        """Call the map stream handler (MapStreamFn); arguments as for :meth:`map`.

        Returns:
            Every message the handler yielded, in order.

        """
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark)
        return Messages(*[m async for m in self._connection.map_stream(datum)])

    async def reduce(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
    ) -> Messages:
        """Send datums as one window on one ReduceFn stream, as the platform does.

        The server groups them by keys and calls the reduce handler once per group.

        Args:
            datums: the window's datums: values (given ``keys``) or whole Datums, which
                may have different keys.
            keys: the keys of the datums given as values.
            window: the window (default: the minute holding the first datum's
                event time).

        Returns:
            The messages of every key group, group after group in the order they
            were answered.

        """
        batch = [_as_datum(d, keys) if not isinstance(d, Datum) else d for d in datums]
        answers = await self._connection.reduce(batch, window or _window_around(batch))
        return Messages(*(m for answer in answers for m in answer))


class SinkClient:
    """Calls a sink server over gRPC, as the platform does; see :func:`serve_sink`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready("sink")

    async def sink(
        self, datums: Iterable[SinkDatumLike], keys: Optional[Sequence[str]] = None
    ) -> Responses:
        """Send one batch on one SinkFn stream.

        Args:
            datums: values (their ids are ``"1"``, ``"2"``... in order) or whole sink
                Datums.
            keys: the keys of the datums given as values.

        Returns:
            One response per datum, in the order sent.

        Raises:
            CallError: the call failed (a handler that raises does not fail the call:
                every datum is answered as failed instead).

        """
        batch = [
            d if isinstance(d, SinkDatum) else make_sink_datum(d, str(n), keys)
            for n, d in enumerate(datums, 1)
        ]
        return await self._connection.sink(batch)


def _legacy_socket(family: Family) -> str:
    assert family.legacy is not None  # the kit's client speaks the legacy protocols
    return family.legacy.sock_name


@contextlib.contextmanager
def _socket_dir() -> Iterator[Path]:
    # A short folder of its own: Unix socket paths are limited to about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pnf-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_function(
    map_handler: AnyHandler = None,
    mapt_handler: AnyHandler = None,
    map_stream_handler: AnyHandler = None,
    reduce_handler: AnyHandler = None,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[FunctionClient]:
    """Serve these handlers on a temporary socket in the running event loop.

    The server is the real :class:`~pynumaflow.function.AsyncServer`, serving the
    Numaflow 0.8-0.9 protocol (function.v1) that the client speaks, so map and map
    stream handlers can be tested together; leaving the block stops it and removes its
    files.

    Args:
        map_handler: as for :class:`~pynumaflow.function.Server`.
        mapt_handler: as for :class:`~pynumaflow.function.Server`.
        map_stream_handler: as for :class:`~pynumaflow.function.Server`.
        reduce_handler: as for :class:`~pynumaflow.function.Server`.
        max_threads: size of the pool running sync handlers.
        call_timeout: seconds each call may take before it fails with
            ``DEADLINE_EXCEEDED`` (``None``: no limit).

    Yields:
        A client for the server.

    Raises:
        ValueError: no handler was given.
        TypeError: a handler has the wrong shape.

    """
    with _socket_dir() as folder:
        server = AsyncServer(
            map_handler=map_handler,
            mapt_handler=mapt_handler,
            map_stream_handler=map_stream_handler,
            reduce_handler=reduce_handler,
            sock_path=str(folder / _legacy_socket(FUNCTION)),
            max_threads=max_threads,
            server_info_file=str(folder / "server-info"),
            protocols=[_PROTOCOL],
        )
        async with server.running():
            with Connection(server.sock_path, call_timeout) as connection:
                yield FunctionClient(connection)


@contextlib.asynccontextmanager
async def serve_sink(
    sink_handler: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[SinkClient]:
    """Serve a sink handler on a temporary socket in the running event loop.

    Args:
        sink_handler: as for :class:`~pynumaflow.sink.Sink`, sync or async.
        max_threads: size of the pool running a sync handler.
        call_timeout: seconds each call may take (``None``: no limit).

    Yields:
        A client for the server.

    """
    with _socket_dir() as folder:
        server = AsyncSink(
            sink_handler,
            sock_path=str(folder / _legacy_socket(SINK_SERVER)),
            max_threads=max_threads,
            server_info_file=str(folder / "server-info"),
            protocols=[_PROTOCOL],
        )
        async with server.running():
            with Connection(server.sock_path, call_timeout) as connection:
                yield SinkClient(connection)


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
    ) -> Messages:
        """Like :meth:`FunctionClient.map`."""
        call = self._client.map
        return self._portal.call(
            lambda: call(value, keys, event_time=event_time, watermark=watermark)
        )

    def mapt(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
    ) -> MessageTs:
        """Like :meth:`FunctionClient.mapt`."""
        call = self._client.mapt
        return self._portal.call(
            lambda: call(value, keys, event_time=event_time, watermark=watermark)
        )

    def map_stream(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
    ) -> Messages:
        """Like :meth:`FunctionClient.map_stream`."""
        call = self._client.map_stream
        return self._portal.call(
            lambda: call(value, keys, event_time=event_time, watermark=watermark)
        )

    def reduce(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
    ) -> Messages:
        """Like :meth:`FunctionClient.reduce`."""
        return self._portal.call(lambda: self._client.reduce(datums, keys, window=window))


class SyncSinkClient:
    """:class:`SinkClient` for plain (sync) tests; see :func:`serve_sink_sync`."""

    def __init__(self, client: SinkClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return self._portal.call(self._client.is_ready)

    def sink(
        self, datums: Iterable[SinkDatumLike], keys: Optional[Sequence[str]] = None
    ) -> Responses:
        """Like :meth:`SinkClient.sink`."""
        return self._portal.call(lambda: self._client.sink(datums, keys))


@contextlib.contextmanager
def serve_function_sync(
    map_handler: AnyHandler = None,
    mapt_handler: AnyHandler = None,
    map_stream_handler: AnyHandler = None,
    reduce_handler: AnyHandler = None,
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
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
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncFunctionClient(client, portal)


@contextlib.contextmanager
def serve_sink_sync(
    sink_handler: Callable[..., Any],
    *,
    max_threads: Optional[int] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncSinkClient]:
    """Like :func:`serve_sink`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_sink(sink_handler, max_threads=max_threads, call_timeout=call_timeout)
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
