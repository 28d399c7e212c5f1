"""The map servers of the modern API: MapServer, MapAsyncServer, MapMultiprocServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import MAP, MAPPER, Family
from pynumaflow._faces.modern import ModernServer
from pynumaflow._faces.multiproc import InWorkers

__all__ = ["MapAsyncServer", "MapMultiprocServer", "MapServer"]


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


class MapMultiprocServer(InWorkers, MapServer):
    """:class:`MapServer` whose requests are answered by ``server_count`` worker processes.

    For CPU-bound sync handlers, which threads cannot run in parallel. The server
    process keeps the one ``map.sock`` the platform dials (with the same
    ``mapper-server-info``) and deals the requests of each map.v1 stream to the worker
    with the fewest in progress; answers are sent as they come. Unlike pynumaflow
    0.14.0 it announces no ``multiproc<i>.sock`` files, which Numaflow >= 1.4 refuses.
    With one process it serves exactly as :class:`MapServer`.

    Workers are started with the "spawn" method: each imports the handler afresh. Define
    it (function or ``Mapper`` subclass) at the top level of a module or the script, and
    construct and start the server inside ``if __name__ == "__main__":``.

    SIGTERM or SIGINT drains every worker and :meth:`start` returns; if a worker dies,
    its streams fail ``UNAVAILABLE`` and :meth:`start` raises ``WorkerExitedError``.

    Args:
        mapper_instance: ``h(keys, datum) -> Messages`` or a :class:`~pynumaflow.mapper.Mapper`.
        server_count: the number of processes (default ``$NUM_CPU_MULTIPROC``, else
            ``$NUMAFLOW_CPU_LIMIT``, else 1; not capped, unlike 0.14.0's CPU count).
        sock_path, max_message_size, server_info_file, shutdown_grace_period: as for
            :class:`MapServer`.
        max_threads: size of each worker's sync handler pool (default ``$MAX_THREADS``,
            else 1; with one process as for :class:`MapServer`).

    Raises:
        TypeError: the handler cannot be imported by name in a worker process.
        ValueError: ``server_count`` or the process count variable is not positive.

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
        self._use_workers(server_count, max_threads)
