"""What the core serves: endpoints (a socket, its services, its server-info file)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol

import grpclib.const
import grpclib.server

__all__ = ["Endpoint", "Listener", "RpcMethod", "Service"]


class Service(Protocol):
    """A gRPC service for grpclib: a mapping from method path to handler."""

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]: ...


RpcMethod = Callable[["grpclib.server.Stream[Any, Any]"], Awaitable[None]]


class Listener(Protocol):
    """Accepts connections for an endpoint, in place of a Unix socket the core binds.

    The core calls :meth:`start` once with a factory making one protocol per accepted
    connection, and :meth:`close` then :meth:`wait_closed` to stop accepting; the
    connections already accepted stay open until the core ends them. ``str()`` of a
    listener names where it listens (for the log).
    """

    async def start(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Begin accepting; each connection gets a protocol from ``protocol_factory``."""
        ...

    def close(self) -> None:
        """Stop accepting (idempotent)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until accepting has stopped."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """One listening socket: its services and the server-info file announcing it.

    The socket is either the Unix socket ``sock_path``, bound by the core, or whatever
    ``listener`` accepts (then ``sock_path`` is None). Without a ``server_info_file``
    the endpoint is not announced (someone else writes the handshake).
    """

    sock_path: Optional[Path]
    server_info_file: Optional[Path]
    services: Sequence[Service]
    info_metadata: Mapping[str, str] = field(default_factory=dict)
    protocol: str = "uds"
    listener: Optional[Listener] = None
    minimum_numaflow_version: Optional[str] = None
    label: str = ""
    """What the endpoint is, for the start-up log (e.g. the protocol generation and kind)."""

    def __post_init__(self) -> None:
        if (self.sock_path is None) == (self.listener is None):
            raise ValueError("an Endpoint needs exactly one of sock_path and listener")

    @property
    def address(self) -> str:
        """Where the endpoint listens, for the log."""
        return str(self.sock_path if self.listener is None else self.listener)
