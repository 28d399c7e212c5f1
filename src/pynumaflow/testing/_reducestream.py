"""The reduce stream kit: serve_reduce_stream(_sync), its clients and open windows (reduce.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Callable, Dict, Optional, Tuple

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.streams import ReduceWindow
from pynumaflow._client.v1 import Result, UserMetadata, V1Connection
from pynumaflow._faces.kinds import REDUCE_STREAM
from pynumaflow._types.function import IntervalWindow, Messages
from pynumaflow.reducestreamer._servers import ReduceStreamAsyncServer
from pynumaflow.testing._backends import _input
from pynumaflow.testing._data import DatumLike, _as_datum, _window_around
from pynumaflow.testing._results import ResultMessage, _message
from pynumaflow.testing._serving import _CALL_TIMEOUT, _datums, _serve_v1, _SyncClient


class ReduceStreamWindow:
    """One window open on a reduce stream server: datums in, results as they come.

    Get one from :meth:`ReduceStreamClient.open_window`.
    """

    def __init__(self, stream: ReduceWindow) -> None:
        self._stream = stream
        self._results: AsyncIterator[Result] = stream.results()

    @property
    def window(self) -> IntervalWindow:
        """The window."""
        return self._stream.window

    async def send(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        """Send one datum of the window (the first opens it): a value or a whole Datum."""
        datum = _as_datum(value, keys, event_time=event_time)
        await self._stream.send(_input(datum, user_metadata))

    async def close(self) -> None:
        """Close the window, as the platform does once the watermark passes its end."""
        await self._stream.end()

    async def next(self) -> Optional[ResultMessage]:
        """The next result as it arrives; None once the window's EOF has come.

        Raises:
            CallError: the handler raised (``INTERNAL``), or no result came in the
                call timeout after the window was closed.

        """
        try:
            return _message(await self._results.__anext__())
        except StopAsyncIteration:
            return None


class ReduceStreamClient:
    """Calls a reduce stream server as the platform does; see :func:`serve_reduce_stream`."""

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready(REDUCE_STREAM.name)

    @contextlib.asynccontextmanager
    async def open_window(
        self, window: Optional[IntervalWindow] = None
    ) -> AsyncIterator[ReduceStreamWindow]:
        """A window of its own ReduceFn stream, to feed and read step by step.

        Args:
            window: the window (default: the minute holding now).

        """
        window = window or _window_around([])
        async with ReduceWindow(self._connection, window) as stream:
            yield ReduceStreamWindow(stream)

    async def reduce_stream(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Send datums as one window, close it, and read every result up to its EOF.

        Args:
            datums: values (given ``keys``) or whole Datums, which may have other keys.
            keys: the keys of the datums given as values.
            window: the window (default: the minute holding the first datum's event
                time).
            user_metadata: the user metadata of every datum.

        Returns:
            Every result in the order it arrived.

        """
        batch = _datums(datums, keys, None)
        async with self.open_window(window or _window_around(batch)) as opened:
            for datum in batch:
                await opened.send(datum, user_metadata=user_metadata)
            await opened.close()
            results = []
            while (message := await opened.next()) is not None:
                results.append(message)
        return Messages(*results)


@contextlib.asynccontextmanager
async def serve_reduce_stream(
    handler: Callable[..., Any],
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[ReduceStreamClient]:
    """Serve a reduce stream handler (``pynumaflow.reducestreamer``) on a temporary socket.

    Args:
        handler: as for ``ReduceStreamAsyncServer``: an ``async def h(keys, datums,
            output, md)``, a ``ReduceStreamer`` class (with ``init_args`` and
            ``init_kwargs``) or instance.
        init_args: positional arguments of the ``ReduceStreamer`` class.
        init_kwargs: keyword arguments of the ``ReduceStreamer`` class.
        call_timeout: seconds each answer may take once a window is closed.

    Yields:
        A client that sends windows as the platform does.

    """

    def build(sock: str, info: str) -> ReduceStreamAsyncServer:
        return ReduceStreamAsyncServer(
            handler, init_args, init_kwargs, sock_path=sock, server_info_file=info
        )

    async with _serve_v1(REDUCE_STREAM, build, call_timeout) as connection:
        yield ReduceStreamClient(connection)


class SyncReduceStreamClient(_SyncClient):
    """:class:`ReduceStreamClient` for plain tests (no open windows: use the async kit)."""

    _client: ReduceStreamClient

    def reduce_stream(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: Optional[IntervalWindow] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> Messages:
        """Like :meth:`ReduceStreamClient.reduce_stream`."""
        call = self._client.reduce_stream
        return self._portal.call(
            lambda: call(datums, keys, window=window, user_metadata=user_metadata)
        )


@contextlib.contextmanager
def serve_reduce_stream_sync(
    handler: Callable[..., Any],
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncReduceStreamClient]:
    """Like :func:`serve_reduce_stream`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_reduce_stream(
            handler, init_args=init_args, init_kwargs=init_kwargs, call_timeout=call_timeout
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncReduceStreamClient(client, portal)
