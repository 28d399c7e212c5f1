"""The map servers of the modern API: MapServer, MapAsyncServer, MapMultiprocServer."""

from __future__ import annotations

import logging
from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import MAP, MAPPER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["MapAsyncServer", "MapMultiprocServer", "MapServer"]

_LOGGER = logging.getLogger("pynumaflow")


class MapServer(ModernServer):
    """Serves a map handler on map.v1 (``map.sock``); :meth:`start` blocks until shutdown.

    Sync handlers run in a bounded thread pool, async ones on the event loop; many
    requests are answered at once.

    Args:
        mapper_instance: ``h(keys, datum) -> Messages`` or a :class:`~pynumaflow.mapper.Mapper`.
        sock_path: the socket (default ``map.sock`` in ``$PYNUMAFLOW_RUN_DIR`` or
            ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the sync handler pool (default ``$MAX_THREADS`` or 4 x CPUs).
        server_info_file: the server-info file (default ``mapper-server-info`` beside
            the socket).
        shutdown_callback: called with the event loop once the server has stopped.
        shutdown_grace_period: seconds calls in flight get on SIGTERM (default
            ``$NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS``, else 5).

    """

    family: ClassVar[Family] = MAPPER

    def __init__(
        self,
        mapper_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            MAP,
            mapper_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
        )


class MapAsyncServer(MapServer):
    """:class:`MapServer` under 0.14.0's name for async handlers (either takes both)."""


class MapMultiprocServer(MapServer):
    """:class:`MapServer` with pynumaflow 0.14.0's ``server_count`` argument.

    For now it serves map.v1 with one process (sync handlers in its thread pool):
    ``server_count`` is accepted and logged, not yet used.
    """

    def __init__(
        self,
        mapper_instance: Callable[..., Any],
        server_count: Optional[int] = None,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        super().__init__(
            mapper_instance,
            sock_path,
            max_message_size,
            max_threads,
            server_info_file,
            shutdown_grace_period=shutdown_grace_period,
        )
        if server_count not in (None, 1):
            _LOGGER.info(
                "MapMultiprocServer serves map.v1 with one process for now (server_count=%s)",
                server_count,
            )
