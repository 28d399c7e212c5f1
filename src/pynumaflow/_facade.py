"""What every server facade shares: options, a fresh core per start, blocking or async start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from pynumaflow import __version__
from pynumaflow._config import CONTAINER_TYPE_ENV, LEGACY, V1, V1_KINDS, ServerOptions, V1Kind
from pynumaflow._invoke import Invoker
from pynumaflow._server import Endpoint, ServerCore, Service

__all__ = ["MINIMUM_NUMAFLOW_VERSION", "Facade"]

_LOGGER = logging.getLogger("pynumaflow")

MINIMUM_NUMAFLOW_VERSION = "1.4.0-z"
"""What the v1 server-info files announce: Numaflow 1.4.0 or later."""


class Facade:
    """Base of Server, AsyncServer, Sink and AsyncSink: builds the core they run on.

    A server serves each protocol generation its options enable: the legacy one on its
    socket (function.sock, udsink.sock) and the v1 ones on a socket per kind, limited to
    what the container's role (``$NUMAFLOW_UD_CONTAINER_TYPE``) calls for.
    """

    _options: ServerOptions

    def _legacy_services(self, invoker: Invoker) -> Sequence[Service]:
        """The services of the legacy socket (function.v1 or the 0.8-era sink.v1)."""
        raise NotImplementedError

    def _v1_candidates(self) -> Sequence[Sequence[str]]:
        """Per handler, the V1_KINDS names it can be served as, the default first."""
        return []

    def _v1_service(self, kind: V1Kind, container_type: str, invoker: Invoker) -> Service:
        """The service of the v1 ``kind`` (``container_type`` names it in error texts)."""
        raise NotImplementedError

    def _notes(self) -> Sequence[str]:
        """Warnings to log at start, about choices the server made for the user."""
        return []

    def _v1_kinds(self) -> list[V1Kind]:
        """The v1 kinds this server serves: per handler, the first its role calls for."""
        kinds = (self._options.v1_kind(*names) for names in self._v1_candidates())
        return [kind for kind in kinds if kind is not None]

    def _check_serves_something(self) -> None:
        """Raise if the role and protocols leave no endpoint (say what would fix it)."""
        options = self._options
        if options.serves_legacy or self._v1_kinds():
            return
        owner = type(self).__name__
        role = options.container_type
        wanted = sorted(k.name for k in V1_KINDS.values() if k.container_type == role)
        offered = sorted({V1_KINDS[names[0]].container_type for names in self._v1_candidates()})
        raise ValueError(
            f"{CONTAINER_TYPE_ENV}={role}: this container must serve "
            f"{' or '.join(wanted) or 'a kind pynumaflow does not serve'}, which {owner}'s "
            f"handlers are not; they serve containers of type {', '.join(offered)}. Run "
            "the server with the handler for this container, or unset the variable for a "
            "local run"
        )

    def _endpoints(self, invoker: Invoker) -> list[Endpoint]:
        options = self._options
        endpoints = []
        legacy_paths = set()
        if options.serves_legacy:
            endpoints.append(
                Endpoint(
                    options.sock_path,
                    options.server_info_file,
                    self._legacy_services(invoker),
                    label="legacy (Numaflow 0.8-0.9)",
                )
            )
            legacy_paths = {options.sock_path, options.server_info_file}
        for kind in self._v1_kinds():
            sock_path = options.v1_sock_dir / kind.sock_name
            info_path = options.v1_info_dir / kind.info_name
            clash = sorted(str(p) for p in legacy_paths & {sock_path, info_path})
            if clash:
                _LOGGER.warning(
                    "not serving the v1 %s (Numaflow >= 1.4): %s is where the legacy protocol "
                    "was asked to be (sock_path / server_info_file). To serve both, give "
                    "those another name (0.4's defaults: function.sock or udsink.sock, "
                    "server-info)",
                    kind.name,
                    " and ".join(clash),
                )
                continue
            container_type = options.container_type or kind.container_type
            endpoints.append(
                Endpoint(
                    sock_path,
                    info_path,
                    [self._v1_service(kind, container_type, invoker)],
                    info_metadata=dict(kind.metadata),
                    minimum_numaflow_version=MINIMUM_NUMAFLOW_VERSION,
                    label=f"v1 (Numaflow >= 1.4) {kind.name}",
                )
            )
        return endpoints

    def _new_core(self) -> ServerCore:
        options = self._options
        invoker = Invoker(options.max_threads)
        role = options.container_type
        _LOGGER.info(
            "pynumaflow %s starting %s: %s, sync handlers on up to %d threads",
            __version__,
            type(self).__name__,
            f"{CONTAINER_TYPE_ENV}={role}, serving its role only"
            if role
            else f"{CONTAINER_TYPE_ENV} unset (Numaflow 0.8-0.9 or a local run), serving "
            + " and ".join(p for p in (LEGACY, V1) if p in options.protocols),
            options.max_threads,
        )
        for note in self._notes():
            _LOGGER.warning("%s", note)
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
