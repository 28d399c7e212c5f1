"""The function server facades: Server (blocking start) and AsyncServer (awaitable start)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Set

from pynumaflow._faces.facade import Facade
from pynumaflow._faces.kinds import (
    FUNCTION,
    MAP,
    MAP_MODE_ENV,
    MAP_MODES,
    MAP_STREAM,
    STREAM_MAP,
    UNARY_MAP,
    Kind,
    resolve_map_mode,
)

__all__ = ["AnyHandler", "AsyncServer", "Server"]

AnyHandler = Optional[Callable[..., Any]]


class _FunctionServer(Facade):
    family = FUNCTION

    def _configure_function(
        self,
        *,
        map_handler: AnyHandler,
        mapt_handler: AnyHandler,
        map_stream_handler: AnyHandler,
        reduce_handler: AnyHandler,
        sock_path: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        server_info_file: Optional[str],
        shutdown_grace_period: Optional[float],
        protocols: Optional[Iterable[str]],
        map_mode: Optional[str],
    ) -> None:
        self._map_mode = resolve_map_mode(map_mode)
        self._configure(
            {
                "map_handler": map_handler,
                "mapt_handler": mapt_handler,
                "map_stream_handler": map_stream_handler,
                "reduce_handler": reduce_handler,
            },
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
        )

    def _both_maps(self) -> bool:
        return MAP.name in self._handlers and MAP_STREAM.name in self._handlers

    def _v1_excluded(self) -> Set[Kind]:
        # mapper-server-info names one MAP_MODE: with both map handlers, v1 serves one.
        if not self._both_maps():
            return set()
        return {MAP_STREAM if MAP_MODES[self._map_mode] is MAP else MAP}

    def _notes(self) -> Sequence[str]:
        if not self._both_maps() or not any(
            kind in (MAP, MAP_STREAM) for kind, _, _ in self._v1_sockets()
        ):
            return []
        served, other = (
            ("map_handler", STREAM_MAP)
            if self._map_mode == UNARY_MAP
            else ("map_stream_handler", UNARY_MAP)
        )
        return [
            f"map_handler and map_stream_handler were both given: the legacy function.sock "
            f"serves both, Numaflow >= 1.4 (mapper-server-info names one MAP_MODE) gets "
            f"{served} only, as MAP_MODE={self._map_mode}. To serve the other there, pass "
            f"map_mode={other!r} or set {MAP_MODE_ENV}={other}"
        ]


class Server(_FunctionServer):
    """Serves user-defined functions; :meth:`start` blocks until shutdown.

    Sync handlers run in a bounded thread pool (``max_threads``, default
    ``$MAX_THREADS`` or 4 x CPUs); async handlers run on the event loop. Either kind
    works for every handler keyword.

    Args:
        map_handler: ``h(keys, datum) -> Messages``.
        map_stream_handler: a generator ``h(keys, datum)`` yielding ``Message``.
        mapt_handler: ``h(keys, datum) -> MessageTs``.
        reduce_handler: ``h(keys, datums, md) -> Messages``.
        sock_path: the Unix socket (default ``/var/run/numaflow/function.sock``, or
            ``function.sock`` in ``$PYNUMAFLOW_RUN_DIR``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the sync handler pool.
        server_info_file: where the server-info handshake is written.
        shutdown_grace_period: seconds calls in flight get to finish on SIGTERM (default 5).
        protocols: the protocol generations to serve, ``"legacy"`` (function.v1 on
            function.sock, Numaflow 0.8-0.9) and/or ``"v1"`` (map.v1 on map.sock,
            mapstream.sock, sourcetransformer.v1 on sourcetransform.sock, reduce.v1 on
            reduce.sock: Numaflow >= 1.4); default ``$PYNUMAFLOW_PROTOCOLS`` or both.
            With ``$NUMAFLOW_UD_CONTAINER_TYPE`` set (Numaflow >= 1.2 sets it), only the
            v1 endpoints of that container's role are served.
        map_mode: when both map handlers are given, which one Numaflow >= 1.4 gets
            (mapper-server-info names one): ``"unary-map"`` (map_handler) or
            ``"stream-map"`` (map_stream_handler); default ``$PYNUMAFLOW_MAP_MODE`` or
            ``"unary-map"``. The legacy socket serves both.

    Raises:
        ValueError: no handler was given, or an option is out of range.
        TypeError: a handler is not callable or has the wrong number of parameters.

    """

    def __init__(
        self,
        map_handler: AnyHandler = None,
        map_stream_handler: AnyHandler = None,
        mapt_handler: AnyHandler = None,
        reduce_handler: AnyHandler = None,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        *,
        server_info_file: Optional[str] = None,
        shutdown_grace_period: Optional[float] = None,
        protocols: Optional[Iterable[str]] = None,
        map_mode: Optional[str] = None,
    ) -> None:
        self._configure_function(
            map_handler=map_handler,
            mapt_handler=mapt_handler,
            map_stream_handler=map_stream_handler,
            reduce_handler=reduce_handler,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
            map_mode=map_mode,
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        self._serve_blocking()


class AsyncServer(_FunctionServer):
    """Serves user-defined functions from a running event loop: ``await server.start()``.

    Takes the same arguments as :class:`Server` (positional order as in pynumaflow 0.4:
    map, mapt, reduce, map stream). Run it with ``aiorun.run(server.start())`` or
    ``asyncio.run(server.start())``.
    """

    def __init__(
        self,
        map_handler: AnyHandler = None,
        mapt_handler: AnyHandler = None,
        reduce_handler: AnyHandler = None,
        map_stream_handler: AnyHandler = None,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        *,
        server_info_file: Optional[str] = None,
        shutdown_grace_period: Optional[float] = None,
        protocols: Optional[Iterable[str]] = None,
        map_mode: Optional[str] = None,
    ) -> None:
        self._configure_function(
            map_handler=map_handler,
            mapt_handler=mapt_handler,
            map_stream_handler=map_stream_handler,
            reduce_handler=reduce_handler,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
            map_mode=map_mode,
        )

    async def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        await self._serve_async()
