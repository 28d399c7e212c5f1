"""The batch map kit: serve_batch_map, serve_batch_map_sync and their clients (map.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Callable, Dict, Mapping, Optional

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.base import CallError
from pynumaflow._client.streams import BatchMapStream
from pynumaflow._client.v1 import UserMetadata, V1Connection
from pynumaflow._faces.kinds import BATCH_MAP
from pynumaflow._types.function import Messages
from pynumaflow.batchmapper._servers import BatchMapAsyncServer
from pynumaflow.testing._backends import _input
from pynumaflow.testing._data import DatumLike
from pynumaflow.testing._results import _message
from pynumaflow.testing._serving import _CALL_TIMEOUT, _datums, _serve_v1, _SyncClient

BatchResults = Dict[str, Messages]
"""Each datum's id and its messages, in the order the datums were sent."""


class BatchMapClient:
    """Calls a batch map server as the platform does; see :func:`serve_batch_map`.

    Batches go one at a time on one MapFn stream; a failed batch ends the stream, and
    the next batch opens a new one, as the platform reconnects.
    """

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection
        self._stream: Optional[BatchMapStream] = None

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready(BATCH_MAP.name)

    async def batch_map(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> BatchResults:
        """Send one batch (its requests, then an EOT) and wait for the server's EOT.

        Args:
            datums: values (their ids ``"1"``, ``"2"``... in order) or whole Datums
                (``datum.metadata.id`` is the id; ids must be unique in a batch).
            keys: the keys of the datums given as values.
            headers: the headers of the datums given as values.
            user_metadata: the user metadata of every datum.

        Returns:
            Each id's messages (:class:`ResultMessage`), in the order sent.

        Raises:
            CallError: the handler raised (``INTERNAL``), or the server's EOT came
                before every id was answered (``INTERNAL``, ``UDF_PARTIAL_RESPONSE``).
            ValueError: two datums have the same id.

        """
        inputs = [_input(d, user_metadata) for d in _datums(datums, keys, headers)]
        if self._stream is None:
            self._stream = BatchMapStream(self._connection)
        try:
            answers = await self._stream.batch(inputs)
        except CallError:
            await self._reset()
            raise
        return {key: Messages(*map(_message, results)) for key, results in answers.items()}

    async def _reset(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()


@contextlib.asynccontextmanager
async def serve_batch_map(
    handler: Callable[..., Any], *, call_timeout: Optional[float] = _CALL_TIMEOUT
) -> AsyncIterator[BatchMapClient]:
    """Serve a batch map handler (``pynumaflow.batchmapper``) on a temporary socket.

    Args:
        handler: an ``async def h(datums)`` returning ``BatchResponses``, or a
            ``BatchMapper`` instance, as for ``BatchMapAsyncServer``.
        call_timeout: seconds each answer may take (``None``: no limit).

    Yields:
        A client that sends batches as the platform does.

    """

    def build(sock: str, info: str) -> BatchMapAsyncServer:
        return BatchMapAsyncServer(handler, sock_path=sock, server_info_file=info)

    async with _serve_v1(BATCH_MAP, build, call_timeout) as connection:
        client = BatchMapClient(connection)
        try:
            yield client
        finally:
            await client._close()


class SyncBatchMapClient(_SyncClient):
    """:class:`BatchMapClient` for plain (sync) tests; see :func:`serve_batch_map_sync`."""

    _client: BatchMapClient

    def batch_map(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> BatchResults:
        """Like :meth:`BatchMapClient.batch_map`."""
        call = self._client.batch_map
        return self._portal.call(
            lambda: call(datums, keys, headers=headers, user_metadata=user_metadata)
        )


@contextlib.contextmanager
def serve_batch_map_sync(
    handler: Callable[..., Any], *, call_timeout: Optional[float] = _CALL_TIMEOUT
) -> Iterator[SyncBatchMapClient]:
    """Like :func:`serve_batch_map`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_batch_map(handler, call_timeout=call_timeout)
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncBatchMapClient(client, portal)
