"""What every server facade shares: options, a fresh core per start, blocking or async start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from pynumaflow._config import ServerOptions
from pynumaflow._invoke import Invoker
from pynumaflow._server import Endpoint, ServerCore, Service

__all__ = ["Facade"]


class Facade:
    """Base of Server, AsyncServer, Sink and AsyncSink: builds the core they run on."""

    _options: ServerOptions

    def _services(self, invoker: Invoker) -> Sequence[Service]:
        raise NotImplementedError

    def _new_core(self) -> ServerCore:
        options = self._options
        invoker = Invoker(options.max_threads)
        endpoint = Endpoint(options.sock_path, options.server_info_file, self._services(invoker))
        return ServerCore(
            [endpoint],
            max_message_size=options.max_message_size,
            shutdown_grace_period=options.shutdown_grace_period,
            on_close=invoker.shutdown,
        )

    @property
    def sock_path(self) -> str:
        """The Unix socket the server listens on."""
        return str(self._options.sock_path)

    @property
    def server_info_file(self) -> str:
        """The server-info file written once the server is listening."""
        return str(self._options.server_info_file)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve in the background of the running event loop until the block exits.

        No signal handlers are installed; leaving the block drains calls in flight
        (up to the grace period) and removes the socket and server-info files.
        """
        async with self._new_core().running():
            yield

    def _serve_blocking(self) -> None:
        asyncio.run(self._new_core().serve())

    async def _serve_async(self) -> None:
        await self._new_core().serve()
