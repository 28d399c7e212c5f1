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

from pynumaflow._core.current import SHUTTING_DOWN, serve_call
from pynumaflow._core.endpoint import Endpoint, RpcMethod
from pynumaflow._core.files import (
    SOCKET_MODE,
    InfoClaim,
    path_error,
    prepare_socket_path,
    write_server_info,
)
from pynumaflow._core.signals import signals_handled
from pynumaflow._core.transport import GrpclibServer, MappedService, wire_safe_status

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
        pool_stalled: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        self._endpoints = endpoints
        self._pool_stalled = pool_stalled
        self._stall_reported = False
        self._max_message_size = max_message_size
        self._grace = shutdown_grace_period
        self._on_close = on_close
        self._servers: list[GrpclibServer] = []
        self._owned_files: list[Path] = []  # removed on stop: what this core created
        self._claims: list[InfoClaim] = []
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
            serve_call(self)  # this call's task only: see pynumaflow._core.current
            try:
                await method(stream)
            except GRPCError as err:
                raise wire_safe_status(err) from None
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return tracked

    @property
    def drain_started(self) -> asyncio.Event:
        """Set once the server starts to drain (what a call's ``draining()`` returns)."""
        return self._drain_started

    def stalled(self) -> bool:
        """Whether the handler pool is stalled (IsReady then answers not ready).

        A stall is logged once, as a warning, and its end once, as information.
        """
        reason = None if self._pool_stalled is None else self._pool_stalled()
        if (reason is not None) != self._stall_reported:
            self._stall_reported = reason is not None
            if reason is not None:
                _LOGGER.warning("reporting not ready: %s", reason)
            else:
                _LOGGER.info("the handler pool is making progress again: reporting ready")
        return reason is not None

    async def start(self) -> None:
        """Bind every endpoint, then announce each in its server-info file."""
        try:
            for endpoint in self._endpoints:
                mapping: Dict[str, grpclib.const.Handler] = {}
                for service in endpoint.services:
                    for path, spec in service.__mapping__().items():
                        mapping[path] = spec._replace(func=self._tracked(spec.func))
                server = GrpclibServer(
                    [MappedService(mapping)], max_message_size=self._max_message_size
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
                    raise path_error(err, f"cannot listen on {endpoint.sock_path}") from None
                self._servers.append(server)
                self._owned_files.append(endpoint.sock_path)
                os.chmod(endpoint.sock_path, SOCKET_MODE)
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    self._claims.append(InfoClaim(endpoint.server_info_file))
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    try:
                        write_server_info(
                            endpoint.server_info_file,
                            endpoint.protocol,
                            endpoint.info_metadata,
                            endpoint.minimum_numaflow_version,
                        )
                    except OSError as err:
                        raise path_error(
                            err, f"cannot write the server-info file {endpoint.server_info_file}"
                        ) from None
                    self._owned_files.append(endpoint.server_info_file)
                _LOGGER.info(
                    "serving %s%s on %s, server-info %s",
                    f"{endpoint.label}: " if endpoint.label else "",
                    ", ".join(sorted(_service_names(endpoint))),
                    endpoint.address,
                    endpoint.server_info_file or "(none)",
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
        started = bool(self._servers)
        in_flight = self._active
        if self._active and grace > 0:
            _LOGGER.info("draining %d call(s) in flight (up to %.1f s)", self._active, grace)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            if self._active:
                _LOGGER.warning(
                    "cancelling %d call(s) still running after %.1f s", self._active, grace
                )
        cancelled = self._active
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path in reversed(self._owned_files):
            path.unlink(missing_ok=True)
        self._owned_files.clear()
        for claim in self._claims:
            claim.release()
        self._claims.clear()
        if self._on_close is not None:
            self._on_close()
        if started:
            _LOGGER.info(
                "stopped: %d call(s) in flight at the stop, %d finished in the drain, %d cancelled",
                in_flight,
                in_flight - cancelled,
                cancelled,
            )

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
