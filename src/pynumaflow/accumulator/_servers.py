"""The accumulator server of the modern API: AccumulatorAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from pynumaflow._faces.kinds import ACCUMULATE, ACCUMULATOR, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["AccumulatorAsyncServer"]


class AccumulatorAsyncServer(ModernServer):
    """Serves an accumulator on accumulator.v1 (``accumulator.sock``, Numaflow >= 1.6).

    Each message the handler puts on its ``output`` goes to the platform at once. When
    the platform closes a key, the key's input ends; once its handler has returned,
    one EOF echoes the closed window. ``start()`` blocks until shutdown; ``await
    aexec()`` serves from a running loop.

    Args:
        accumulator_instance: an ``async def h(datums, output)``, an ``Accumulator``
            subclass (instantiated with ``init_args`` and ``init_kwargs`` for each key)
            or an ``Accumulator`` instance.
        init_args: positional arguments of the ``Accumulator`` class.
        init_kwargs: keyword arguments of the ``Accumulator`` class.
        sock_path: the socket (default ``accumulator.sock`` in ``$PYNUMAFLOW_RUN_DIR``
            or ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: accepted for compatibility (the handler is async).
        server_info_file: the server-info file (default ``accumulator-server-info``).
        shutdown_callback: called with the loop once the server has stopped.
        shutdown_grace_period: seconds the stream gets on SIGTERM to be half-closed by
            the platform and answered to its end.

    Raises:
        TypeError: ``init_args``/``init_kwargs`` with a function, a class that is not an
            ``Accumulator``, a handler that is not async, or of the wrong shape.

    """

    family: ClassVar[Family] = ACCUMULATOR

    def __init__(
        self,
        accumulator_instance: Callable[..., Any],
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
            ACCUMULATE,
            accumulator_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
            init_args=init_args,
            init_kwargs=init_kwargs,
        )
