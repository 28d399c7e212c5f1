"""The session reduce server: SessionReduceAsyncServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from pynumaflow._faces.kinds import SESSION_REDUCE, SESSION_REDUCER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["SessionReduceAsyncServer"]


class SessionReduceAsyncServer(ModernServer):
    """Serves a session reducer on sessionreduce.v1 (``sessionreduce.sock``).

    Sessions are opened, appended to, expanded, merged and closed as the platform says;
    results go out as the reducer puts them, and a closed session's EOF after its last
    result. A session merged into another sends nothing more: its reducer's
    ``accumulator()`` is handed to the merged session's new reducer. ``start()``
    blocks until shutdown; ``await aexec()`` serves from a running loop.

    Args:
        session_reducer_instance: a ``SessionReducer`` subclass (the class itself:
            instantiated with ``init_args`` and ``init_kwargs`` for each session).
        init_args: positional arguments of the class.
        init_kwargs: keyword arguments of the class.
        sock_path: the socket (default ``sessionreduce.sock`` in ``$PYNUMAFLOW_RUN_DIR``
            or ``/var/run/numaflow``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: accepted for symmetry (the reducer is async).
        server_info_file: the server-info file (default ``sessionreducer-server-info``).
        shutdown_callback: called with the loop once the server has stopped.
        shutdown_grace_period: seconds the stream gets on SIGTERM to be half-closed by
            the platform and answered to its end.

    Raises:
        TypeError: not a ``SessionReducer`` subclass, or ``session_reduce`` is not async.

    """

    family: ClassVar[Family] = SESSION_REDUCER

    def __init__(
        self,
        session_reducer_instance: type,
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
            SESSION_REDUCE,
            session_reducer_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
            init_args=init_args,
            init_kwargs=init_kwargs,
        )
