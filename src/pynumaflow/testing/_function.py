"""The function kit: serve_function, serve_function_sync and their clients."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Mapping, Optional

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.v1 import UserMetadata
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import FUNCTION
from pynumaflow._types.function import (
    Datum,
    IntervalWindow,
    Messages,
    MessageTs,
)
from pynumaflow.function._servers import AsyncServer
from pynumaflow.testing._backends import (
    _Backend,
)
from pynumaflow.testing._data import (
    DatumLike,
    _as_datum,
    _window_around,
)
from pynumaflow.testing._serving import (
    _CALL_TIMEOUT,
    _DEFAULT_PROTOCOL,
    AnyHandler,
    ProtocolName,
    _fields,
    _serve,
    _sock_path,
    _SyncClient,
)


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


class SyncFunctionClient(_SyncClient):
    """:class:`FunctionClient` for plain (sync) tests; see :func:`serve_function_sync`."""

    _client: FunctionClient

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
