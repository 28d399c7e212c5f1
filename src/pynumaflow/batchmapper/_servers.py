"""The batch map server of the modern API: BatchMapAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import BATCH_MAP, BATCH_MAPPER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["BatchMapAsyncServer"]


class BatchMapAsyncServer(ModernServer):
    """Serves a batch map handler on map.v1 in batch mode (``batchmap.sock``).

    Each id of a batch gets exactly one response, and the batch's EOT follows the last
    one at once; a handler that raises, or does not answer every id exactly once, fails
    the stream (the platform resends or restarts). ``start()`` blocks until shutdown,
    ``await aexec()`` serves in a running loop; on SIGTERM the batch in progress is
    answered first.

    Args:
        batch_mapper_instance: ``async h(datums) -> BatchResponses`` or a
            :class:`~pynumaflow.batchmapper.BatchMapper`.
        sock_path: the socket (default ``batchmap.sock`` in ``$PYNUMAFLOW_RUN_DIR`` or
            ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the pool a sync handler runs in (default ``$MAX_THREADS`` or
            4 x CPUs).
        server_info_file: the server-info file (default ``mapper-server-info`` beside
            the socket).
        shutdown_callback: ``callback(loop)``, called once the server has stopped.
        shutdown_grace_period: seconds calls in flight get on SIGTERM (default
            ``$NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS``, else 5).

    """

    family: ClassVar[Family] = BATCH_MAPPER

    def __init__(
        self,
        batch_mapper_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            BATCH_MAP,
            batch_mapper_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
        )
