"""The reduce stream server of the modern API: ReduceStreamAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from pynumaflow._faces.kinds import REDUCE_STREAM, REDUCE_STREAMER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["ReduceStreamAsyncServer"]


class ReduceStreamAsyncServer(ModernServer):
    """Serves a reduce stream handler on reduce.v1 (``reducestream.sock``).

    Each message the handler puts on its ``output`` goes to the platform at once; the
    window's EOF follows once every key's handler has returned after the window closed.
    ``start()`` blocks until shutdown; ``await aexec()`` serves from a running loop.

    Args:
        reduce_stream_instance: an ``async def h(keys, datums, output, md)``, a
            ``ReduceStreamer`` subclass (instantiated with ``init_args`` and
            ``init_kwargs`` for each key and window) or a ``ReduceStreamer`` instance.
        init_args: positional arguments of the ``ReduceStreamer`` class.
        init_kwargs: keyword arguments of the ``ReduceStreamer`` class.
        sock_path: the socket (default ``reducestream.sock`` in ``$PYNUMAFLOW_RUN_DIR``
            or ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: accepted for compatibility (the handler is async).
        server_info_file: the server-info file (default ``reducestreamer-server-info``).
        shutdown_callback: called with the loop once the server has stopped.
        shutdown_grace_period: seconds calls in flight get on SIGTERM.

    Raises:
        TypeError: ``init_args``/``init_kwargs`` with a function, a class that is not a
            ``ReduceStreamer``, a handler that is not async, or of the wrong shape.

    """

    family: ClassVar[Family] = REDUCE_STREAMER

    def __init__(
        self,
        reduce_stream_instance: Callable[..., Any],
        init_args: Tuple[Any, ...] = (),
        init_kwargs: Optional[Dict[str, Any]] = None,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            REDUCE_STREAM,
            reduce_stream_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
            init_args=init_args,
            init_kwargs=init_kwargs,
        )
