"""The sink kit: serve_sink, serve_sink_sync and their clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.v1 import UserMetadata
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import SINK_SERVER
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Responses
from pynumaflow.sink._servers import AsyncSink
from pynumaflow.testing._backends import (
    _Backend,
)
from pynumaflow.testing._data import (
    SinkDatumLike,
    make_sink_datum,
)
from pynumaflow.testing._serving import (
    _CALL_TIMEOUT,
    _DEFAULT_PROTOCOL,
    AnyHandler,
    ProtocolName,
    _serve,
    _sock_path,
    _SyncClient,
)


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


class SyncSinkClient(_SyncClient):
    """:class:`SinkClient` for plain (sync) tests; see :func:`serve_sink_sync`."""

    _client: SinkClient

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
