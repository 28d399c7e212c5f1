"""What every server facade shares: options, a fresh core per start, blocking or async start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Optional

from pynumaflow._config import LEGACY, V1, ServerOptions
from pynumaflow._invoke import Invoker
from pynumaflow._server import Endpoint, ServerCore, Service

__all__ = ["MINIMUM_NUMAFLOW_VERSION", "Facade"]

MINIMUM_NUMAFLOW_VERSION = "1.4.0-z"
"""What the v1 server-info files announce: Numaflow 1.4.0 or later."""


class Facade:
    """Base of Server, AsyncServer, Sink and AsyncSink: builds the core they run on.

    A server serves each protocol generation its options enable: the legacy one on its
    socket (function.sock, udsink.sock) and the v1 ones on a socket per kind.
    """

    _options: ServerOptions

    def _legacy_services(self, invoker: Invoker) -> Sequence[Service]:
        """The services of the legacy socket (function.v1 or the 0.8-era sink.v1)."""
        raise NotImplementedError

    def _v1_endpoints(self, invoker: Invoker) -> Sequence[Endpoint]:
        """One endpoint per v1 kind this server's handlers serve."""
        return []

    def _v1_endpoint(
        self,
        sock_name: str,
        info_name: str,
        service: Service,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> Endpoint:
        """A v1 endpoint: its socket and server-info file beside the legacy ones."""
        options = self._options
        return Endpoint(
            options.v1_sock_dir / sock_name,
            options.v1_info_dir / info_name,
            [service],
            info_metadata=dict(metadata or {}),
            minimum_numaflow_version=MINIMUM_NUMAFLOW_VERSION,
        )

    def _endpoints(self, invoker: Invoker) -> list[Endpoint]:
        options = self._options
        endpoints = []
        if LEGACY in options.protocols:
            endpoints.append(
                Endpoint(
                    options.sock_path, options.server_info_file, self._legacy_services(invoker)
                )
            )
        if V1 in options.protocols:
            endpoints.extend(self._v1_endpoints(invoker))
        return endpoints

    def _new_core(self) -> ServerCore:
        options = self._options
        invoker = Invoker(options.max_threads)
        return ServerCore(
            self._endpoints(invoker),
            max_message_size=options.max_message_size,
            shutdown_grace_period=options.shutdown_grace_period,
            on_close=invoker.shutdown,
            pool_stalled=invoker.stalled,
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
