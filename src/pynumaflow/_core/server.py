"""The one asyncio server core every facade runs on.

It binds each endpoint's Unix socket (creating the directory, replacing a stale socket
file), or serves the connections an endpoint's own listener accepts; hosts the
endpoint's services on grpclib, writes the server-info file atomically once the socket
accepts connections, and on SIGTERM/SIGINT stops intake, lets calls in flight finish
within a grace period (long-lived v1 streams end as soon as they are idle, see
:class:`IdleDrain`), then hangs up on its clients, closes and removes its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow import __version__
from pynumaflow._core.drain import SHUTTING_DOWN, serve_draining
from pynumaflow._core.endpoint import Endpoint, RpcMethod
from pynumaflow._core.files import SOCKET_MODE, prepare_socket_path, write_server_info
from pynumaflow._core.signals import signals_handled
from pynumaflow._core.transport import GrpclibServer, MappedService, RawCodec, StatusDetailsCodec
from pynumaflow._types.errors import SocketPathError

__all__ = ["ServerCore"]

_LOGGER = logging.getLogger("pynumaflow")


class ServerCore:
    """Serves endpoints until told to stop; see the module docstring for the lifecycle."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        max_message_size: int,
        shutdown_grace_period: float,
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        self._endpoints = endpoints
        self._max_message_size = max_message_size
        self._grace = shutdown_grace_period
        self._on_close = on_close
        self._servers: list[GrpclibServer] = []
        self._owned_files: list[Path] = []  # removed on stop: what this core created
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._drain_started = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._signal_count = 0

    def _tracked(self, method: RpcMethod) -> RpcMethod:
        async def tracked(stream: grpclib.server.Stream[Any, Any]) -> None:
            if self._draining:
                raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)
            self._active += 1
            self._idle.clear()
            serve_draining(self._drain_started)  # this call's task only: see draining()
            try:
                await method(stream)
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return tracked

    async def start(self) -> None:
        """Bind every endpoint, then announce each in its server-info file."""
        codec = RawCodec(self._max_message_size)
        try:
            for endpoint in self._endpoints:
                mapping: Dict[str, grpclib.const.Handler] = {}
                for service in endpoint.services:
                    for path, spec in service.__mapping__().items():
                        mapping[path] = spec._replace(func=self._tracked(spec.func))
                server = GrpclibServer(
                    [MappedService(mapping)], codec=codec, status_details_codec=StatusDetailsCodec()
                )
                if endpoint.listener is not None:
                    await server.start_on(endpoint.listener)
                    self._servers.append(server)
                    continue
                assert endpoint.sock_path is not None  # one of the two, by construction
                prepare_socket_path(endpoint.sock_path)
                try:
                    await server.start(path=str(endpoint.sock_path))
                except OSError as err:
                    raise SocketPathError(
                        err.errno, f"cannot listen on {endpoint.sock_path}: {err.strerror}"
                    ) from None
                self._servers.append(server)
                self._owned_files.append(endpoint.sock_path)
                os.chmod(endpoint.sock_path, SOCKET_MODE)
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    write_server_info(
                        endpoint.server_info_file,
                        endpoint.protocol,
                        endpoint.info_metadata,
                        endpoint.minimum_numaflow_version,
                    )
                    self._owned_files.append(endpoint.server_info_file)
                _LOGGER.info(
                    "pynumaflow %s serving %s on %s",
                    __version__,
                    ", ".join(sorted(_service_names(endpoint))),
                    endpoint.address,
                )
        except BaseException:
            await self.stop(grace=0)
            raise

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stop intake, wait up to ``grace`` seconds for calls in flight, close, clean up."""
        grace = self._grace if grace is None else grace
        self._draining = True
        self._drain_started.set()
        for server in self._servers:
            server.stop_listening()
        if self._active and grace > 0:
            _LOGGER.info("draining %d call(s) in flight (up to %.1f s)", self._active, grace)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            if self._active:
                _LOGGER.warning(
                    "cancelling %d call(s) still running after %.1f s", self._active, grace
                )
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path in reversed(self._owned_files):
            path.unlink(missing_ok=True)
        self._owned_files.clear()
        if self._on_close is not None:
            self._on_close()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to drain and return (what SIGTERM and SIGINT do)."""
        self._stop_requested.set()

    def _on_signal(self, signum: int) -> None:
        self._signal_count += 1
        if self._signal_count == 1:
            _LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
            self.request_stop()
        else:
            _LOGGER.warning("received %s again, stopping now", signal.Signals(signum).name)
            self._grace = 0
            self._idle.set()

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop."""
        with signals_handled(self._on_signal):
            await self.start()
            try:
                await self._stop_requested.wait()
            finally:
                await self.stop(grace=None if self._stop_requested.is_set() else 0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ServerCore]:
        """Serve in the background of the caller's event loop until the block exits."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


def _service_names(endpoint: Endpoint) -> set[str]:
    return {path.split("/")[1] for s in endpoint.services for path in s.__mapping__()}
