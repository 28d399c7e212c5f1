"""The source kit: serve_source, serve_source_sync and their clients (source.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import List, Optional, Tuple, Union

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.source import SourceConnection
from pynumaflow._faces.kinds import SOURCE
from pynumaflow._types.source import Message as SourceMessage
from pynumaflow._types.source import Offset, Sourcer
from pynumaflow.sourcer._servers import SourceAsyncServer
from pynumaflow.testing._serving import (
    _CALL_TIMEOUT,
    _socket_dir,
    _SyncClient,
    _v1_files,
)


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


class SyncSourceClient(_SyncClient):
    """:class:`SourceClient` for plain (sync) tests; see :func:`serve_source_sync`."""

    _client: SourceClient

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
