"""The sink servers of the modern API: SinkServer and SinkAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import SINK, SINKER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["SinkAsyncServer", "SinkServer"]


class SinkServer(ModernServer):
    """Serves a sink handler on sink.v1; :meth:`start` blocks until shutdown.

    The socket is ``sink.sock``, or ``fb-sink.sock``/``ons-sink.sock`` when
    ``$NUMAFLOW_UD_CONTAINER_TYPE`` is ``fb-udsink``/``ons-udsink`` (in the folder of
    ``sock_path``). Every datum gets exactly one response: one the handler did not
    answer, or a whole batch whose handler raised, is reported as failed, and the
    platform retries it.

    Args:
        sinker_instance: ``h(datums) -> Responses`` or a :class:`~pynumaflow.sinker.Sinker`.
        sock_path: the socket (default ``sink.sock`` in ``$PYNUMAFLOW_RUN_DIR`` or
            ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the sync handler pool.
        server_info_file: the server-info file (default ``sinker-server-info``).
        shutdown_callback: called with the event loop once the server has stopped.
        shutdown_grace_period: seconds calls in flight get on SIGTERM.

    """

    family: ClassVar[Family] = SINKER

    def __init__(
        self,
        sinker_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            SINK,
            sinker_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
        )


class SinkAsyncServer(SinkServer):
    """:class:`SinkServer` for ``async def`` handlers (either kind works in either)."""
