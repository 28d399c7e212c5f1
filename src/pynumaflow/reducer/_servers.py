"""The reduce server of the modern API: ReduceAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from pynumaflow._faces.kinds import REDUCE, REDUCER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["ReduceAsyncServer"]


class ReduceAsyncServer(ModernServer):
    """Serves a reduce handler on reduce.v1 (``reduce.sock``).

    ``start()`` blocks until shutdown; ``await aexec()`` serves from a running loop.

    Args:
        reducer_instance: an ``async def h(keys, datums, md)``, a ``Reducer`` subclass
            (instantiated with ``init_args`` and ``init_kwargs`` for each key and window)
            or a ``Reducer`` instance.
        init_args: positional arguments of the ``Reducer`` class.
        init_kwargs: keyword arguments of the ``Reducer`` class.
        sock_path: the socket (default ``reduce.sock`` in ``$PYNUMAFLOW_RUN_DIR`` or
            ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the pool for sync handlers.
        server_info_file: the server-info file (default ``reducer-server-info``).
        shutdown_callback: called with the loop once the server has stopped.
        shutdown_grace_period: seconds calls in flight get on SIGTERM.

    Raises:
        TypeError: ``init_args``/``init_kwargs`` with a function, a class that is not a
            ``Reducer``, or a handler of the wrong shape.

    """

    family: ClassVar[Family] = REDUCER

    def __init__(
        self,
        reducer_instance: Callable[..., Any],
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
            REDUCE,
            reducer_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
            init_args=init_args,
            init_kwargs=init_kwargs,
        )
