"""The server base every face configures: handlers by the kind table, options, a core per start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Set, Tuple

from pynumaflow import __version__
from pynumaflow._core.endpoint import Endpoint
from pynumaflow._core.options import CONTAINER_TYPE_ENV, LEGACY, V1, ServerOptions
from pynumaflow._core.server import ServerCore
from pynumaflow._faces.kinds import (
    Family,
    Kind,
    V1Endpoint,
    V1Socket,
    inspect_handlers,
    v1_sockets,
)
from pynumaflow._invoke import Handler, Invoker

__all__ = ["MINIMUM_NUMAFLOW_VERSION", "NACK_NUMAFLOW_VERSION", "Facade"]

_LOGGER = logging.getLogger("pynumaflow")

MINIMUM_NUMAFLOW_VERSION = "1.4.0-z"
"""What the v1 server-info files announce: Numaflow 1.4.0 or later."""
NACK_NUMAFLOW_VERSION = "1.8.2-z"
"""What they require with ``$PYNUMAFLOW_NACK``: NACK's first release."""


class Facade:
    """Base of the public server classes: serves the handlers of one family of kinds.

    A server serves each protocol generation its options enable: the family's legacy
    socket (function.sock, udsink.sock), if it has one, and a v1 socket per kind given
    a handler, limited to what the container's role (``$NUMAFLOW_UD_CONTAINER_TYPE``)
    calls for. A subclass sets :attr:`family` and calls :meth:`_configure`.
    """

    family: ClassVar[Family]
    _options: ServerOptions
    _handlers: Dict[str, Handler]

    def _configure(
        self,
        handlers: Mapping[str, Optional[Callable[..., Any]]],
        *,
        sock_path: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        server_info_file: Optional[str],
        shutdown_grace_period: Optional[float],
        protocols: Optional[Iterable[str]],
    ) -> None:
        """Inspect ``handlers`` (by keyword) and resolve the options."""
        self._configure_inspected(
            inspect_handlers(self.family, type(self).__name__, handlers),
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
        )

    def _configure_inspected(
        self,
        handlers: Dict[str, Handler],
        *,
        sock_path: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        server_info_file: Optional[str],
        shutdown_grace_period: Optional[float],
        protocols: Optional[Iterable[str]],
    ) -> None:
        """Take handlers already inspected (by kind name) and resolve the options."""
        family = self.family
        self._handlers = handlers
        self._options = ServerOptions.resolve(
            sock_name=family.legacy.sock_name if family.legacy is not None else None,
            sock_path=sock_path,
            server_info_file=server_info_file,
            max_message_size=max_message_size,
            max_threads=max_threads,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
        )
        self._check_serves_something()

    def _served(self) -> List[Kind]:
        """The kinds given a handler."""
        return [kind for kind in self.family.kinds if kind.name in self._handlers]

    def _v1_excluded(self) -> Set[Kind]:
        """Kinds given a handler that v1 does not serve (a face's choice; none by default)."""
        return set()

    def _notes(self) -> Sequence[str]:
        """Warnings to log at start, about choices the server made for the user."""
        return []

    def _v1_sockets(self) -> List[Tuple[Kind, V1Endpoint, V1Socket]]:
        """The v1 endpoints to serve: per kind given a handler, the socket of this role."""
        options = self._options
        if not options.serves_v1:
            return []
        excluded = self._v1_excluded()
        served = []
        for kind in self._served():
            if kind.v1 is None or kind in excluded:
                continue
            socket = kind.v1.for_role(options.container_type)
            if socket is not None:
                served.append((kind, kind.v1, socket))
        return served

    def _serves_legacy(self) -> bool:
        return self._options.serves_legacy and self.family.legacy is not None

    def _check_serves_something(self) -> None:
        """Raise if the role and protocols leave no endpoint (say what would fix it)."""
        if self._serves_legacy() or self._v1_sockets():
            return
        owner = type(self).__name__
        role = self._options.container_type
        if role is None:
            raise ValueError(
                f"{owner} has nothing to serve with protocols="
                f"{sorted(self._options.protocols)!r}: its handlers have no endpoint there"
            )
        wanted = sorted(socket.label for socket in v1_sockets(role))
        excluded = self._v1_excluded()
        offered = sorted(
            {
                kind.v1.sockets[0].role
                for kind in self._served()
                if kind.v1 is not None and kind not in excluded
            }
        )
        raise ValueError(
            f"{CONTAINER_TYPE_ENV}={role}: this container must serve "
            f"{' or '.join(wanted) or 'a kind pynumaflow does not serve'}, which {owner}'s "
            f"handlers are not; they serve containers of type {', '.join(offered)}. Run "
            "the server with the handler for this container, or unset the variable for a "
            "local run"
        )

    def _endpoints(self, invoker: Invoker) -> List[Endpoint]:
        options = self._options
        legacy = self.family.legacy
        endpoints = []
        legacy_paths: Set[Optional[Path]] = set()
        if self._serves_legacy() and legacy is not None:
            assert options.sock_path is not None  # resolved from the family's sock_name
            endpoints.append(
                Endpoint(
                    options.sock_path,
                    options.server_info_file,
                    [legacy.service(self._handlers, invoker)],
                    label="legacy (Numaflow 0.8-0.9)",
                )
            )
            legacy_paths = {options.sock_path, options.server_info_file}
        # A v1-only server of one kind takes sock_path and server_info_file as its exact
        # files, as pynumaflow 0.14.0's servers do.
        exact = legacy is None and len(self.family.kinds) == 1
        for kind, v1, socket in self._v1_sockets():
            sock_path = options.v1_sock_dir / socket.sock
            info_path = options.v1_info_dir / socket.info
            if exact:
                sock_path = options.sock_path or sock_path
                info_path = options.server_info_file or info_path
            clash = sorted(str(p) for p in legacy_paths & {sock_path, info_path})
            if clash:
                _LOGGER.warning(
                    "not serving the v1 %s (Numaflow >= 1.4): %s is where the legacy protocol "
                    "was asked to be (sock_path / server_info_file). To serve both, give "
                    "those another name (0.4's defaults: function.sock or udsink.sock, "
                    "server-info)",
                    socket.label,
                    " and ".join(clash),
                )
                continue
            role = options.container_type or socket.role
            service = v1.service(self._handlers[kind.name], invoker, role, options)
            endpoints.append(
                Endpoint(
                    sock_path,
                    info_path,
                    [service],
                    info_metadata=dict(v1.metadata),
                    minimum_numaflow_version=(
                        NACK_NUMAFLOW_VERSION
                        if options.nack
                        else v1.minimum_numaflow_version or MINIMUM_NUMAFLOW_VERSION
                    ),
                    label=f"v1 (Numaflow >= 1.4) {socket.label}",
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
            + " and ".join(
                p
                for p in (LEGACY, V1)
                if p in options.protocols and (p == V1 or self.family.legacy is not None)
            ),
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
        """The Unix socket the server listens on (its legacy one; else the v1 folder)."""
        return str(self._options.sock_path or self._options.v1_sock_dir)

    @property
    def server_info_file(self) -> str:
        """The server-info file written once the server is listening (legacy protocol)."""
        return str(self._options.server_info_file or self._options.v1_info_dir)

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
