"""The user-defined source server: SourceAsyncServer (pynumaflow 0.14.0 API)."""

from __future__ import annotations

from typing import Any, Callable, Optional, cast

from pynumaflow._faces.kinds import SOURCE_SERVER
from pynumaflow._faces.modern import ModernServer
from pynumaflow._types.source import Sourcer

__all__ = ["SourceAsyncServer"]


class SourceAsyncServer(ModernServer):
    """Serves a :class:`~pynumaflow.sourcer.Sourcer` on source.sock (Numaflow >= 1.4).

    ``read_handler`` must be ``async def``; the other handlers may be sync (they run in
    the handler pool) or async. Per read request the server calls ``read_handler`` once
    and sends each message as it is put, then the end of the batch (EOT) when the handler
    returns, or when the request's ``timeout_in_ms`` has passed: the handler is then
    cancelled, and what it put until then is the batch. A handler error fails the
    stream ``INTERNAL`` (``UDF_EXECUTION_ERROR(udsource)``), logged once. The server never
    acks: offsets are acked only when the platform's ack reaches ``ack_handler``.

    Args:
        sourcer_instance: the source.
        sock_path: its Unix socket (default ``/var/run/numaflow/source.sock``, or
            ``source.sock`` in ``$PYNUMAFLOW_RUN_DIR``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the pool for sync handlers.
        server_info_file: where the server-info file is written (default
            ``sourcer-server-info`` beside the socket's default folder).
        shutdown_callback: called with the event loop once the server has stopped
            (as aiorun calls it in 0.14.0).
        shutdown_grace_period: seconds calls in flight get to finish on SIGTERM (default 5).

    Raises:
        TypeError: a handler is missing, has the wrong parameters, or ``read_handler``
            is not async.
        ValueError: an option is out of range.

    """

    family = SOURCE_SERVER

    def __init__(
        self,
        sourcer_instance: Sourcer,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., object]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._shutdown_callback = shutdown_callback
        self._configure(
            {"sourcer_instance": cast(Any, sourcer_instance)},  # an object: the kind checks it
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=None,
        )
