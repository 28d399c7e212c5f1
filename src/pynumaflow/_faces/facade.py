"""The server base every face configures: handlers by the kind table, options, a core per start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

from pynumaflow._core.endpoint import Endpoint
from pynumaflow._core.options import LEGACY, V1, ServerOptions, ud_container_type
from pynumaflow._core.server import ServerCore
from pynumaflow._faces.kinds import Family, Kind, V1Endpoint, inspect_handlers
from pynumaflow._invoke import Handler, Invoker

__all__ = ["MINIMUM_NUMAFLOW_VERSION", "NACK_NUMAFLOW_VERSION", "Facade"]

MINIMUM_NUMAFLOW_VERSION = "1.4.0-z"
NACK_NUMAFLOW_VERSION = "1.8.2-z"
"""What the v1 server-info files require with ``$PYNUMAFLOW_NACK``: NACK's first release."""
"""What the v1 server-info files announce: Numaflow 1.4.0 or later."""


class Facade:
    """Base of the public server classes: serves the handlers of one family of kinds.

    A server serves each protocol generation its options enable: the family's legacy
    socket (function.sock, udsink.sock), if it has one, and a v1 socket per kind given
    a handler. A subclass sets :attr:`family` and calls :meth:`_configure`.
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
        self._check_something_to_serve()
        if V1 in self._options.protocols:
            self._check_v1_files()

    def _served(self) -> List[Kind]:
        return [kind for kind in self.family.kinds if kind.name in self._handlers]

    def _check_v1_files(self) -> None:
        """Refuse two kinds that would announce themselves in the same v1 server-info file."""
        seen: Dict[str, Tuple[Kind, V1Endpoint]] = {}
        for kind in self._served():
            if kind.v1 is None:
                continue
            info = kind.v1.files(ud_container_type(kind.v1.default_role))[1]
            other, other_v1 = seen.setdefault(info, (kind, kind.v1))
            if other is not kind:
                keys = " and ".join(sorted({*other_v1.metadata, *kind.v1.metadata}))
                raise ValueError(
                    f"{other.keyword} and {kind.keyword} cannot be served together on "
                    f"Numaflow >= 1.4: both announce themselves in {info}, which names one "
                    f"{keys or 'kind'}. Give one of them, or serve only the 0.8-0.9 protocol "
                    f"with protocols=[{LEGACY!r}]"
                )

    def _check_something_to_serve(self) -> None:
        options = self._options
        legacy = LEGACY in options.protocols and self.family.legacy is not None
        v1 = V1 in options.protocols and any(kind.v1 for kind in self._served())
        if not (legacy or v1):
            raise ValueError(
                f"{type(self).__name__} has nothing to serve with protocols="
                f"{sorted(options.protocols)!r}: its handlers have no endpoint there"
            )

    def _endpoints(self, invoker: Invoker) -> List[Endpoint]:
        options = self._options
        legacy = self.family.legacy
        endpoints = []
        if LEGACY in options.protocols and legacy is not None:
            assert options.sock_path is not None  # resolved from the family's sock_name
            endpoints.append(
                Endpoint(
                    options.sock_path,
                    options.server_info_file,
                    [legacy.service(self._handlers, invoker)],
                )
            )
        if V1 in options.protocols:
            for kind in self._served():
                if kind.v1 is None:
                    continue
                role = ud_container_type(kind.v1.default_role)
                sock, info = self._v1_files(kind.v1, role)
                service = kind.v1.service(self._handlers[kind.name], invoker, role, options)
                endpoints.append(
                    Endpoint(
                        sock,
                        info,
                        [service],
                        info_metadata=dict(kind.v1.metadata),
                        minimum_numaflow_version=(
                            NACK_NUMAFLOW_VERSION if options.nack else MINIMUM_NUMAFLOW_VERSION
                        ),
                    )
                )
        return endpoints

    def _v1_files(self, v1: V1Endpoint, role: str) -> Tuple[Path, Path]:
        """The socket and server-info file of a v1 endpoint in ``role``."""
        sock_name, info_name = v1.files(role)
        return self._options.v1_sock_dir / sock_name, self._options.v1_info_dir / info_name

    def _new_core(self) -> ServerCore:
        options = self._options
        invoker = Invoker(options.max_threads)
        return ServerCore(
            self._endpoints(invoker),
            max_message_size=options.max_message_size,
            shutdown_grace_period=options.shutdown_grace_period,
            on_close=invoker.shutdown,
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
