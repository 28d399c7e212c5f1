"""The side-input kit: serve_side_input(_sync) and their clients (sideinput.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable, Optional

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.source import SideInputConnection
from pynumaflow._faces.kinds import SIDE_INPUT
from pynumaflow._types.sideinput import Response as SideInputResponse
from pynumaflow.sideinput._servers import SideInputServer
from pynumaflow.testing._serving import (
    _CALL_TIMEOUT,
    _socket_dir,
    _SyncClient,
    _v1_files,
)


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


class SyncSideInputClient(_SyncClient):
    """:class:`SideInputClient` for plain (sync) tests; see :func:`serve_side_input_sync`."""

    _client: SideInputClient

    def retrieve(self) -> SideInputResponse:
        """Like :meth:`SideInputClient.retrieve`."""
        return self._portal.call(self._client.retrieve)


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
