"""The function server facades: Server (blocking start) and AsyncServer (awaitable start)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

from pynumaflow._core.endpoint import Endpoint, Service
from pynumaflow._core.options import LEGACY, V1, ServerOptions, ud_container_type
from pynumaflow._faces.facade import Facade
from pynumaflow._invoke import Handler, Invoker, inspect_handler
from pynumaflow._services.legacy.function import FunctionHandlers, FunctionService
from pynumaflow._services.v1.map import MapV1Service
from pynumaflow._services.v1.reduce import ReduceV1Service
from pynumaflow._services.v1.transform import SourceTransformV1Service

__all__ = ["AsyncServer", "Server", "function_handlers"]

AnyHandler = Optional[Callable[..., Any]]

_KEYWORDS = "map_handler, mapt_handler, map_stream_handler or reduce_handler"


def _maybe(name: str, func: AnyHandler, params: str, *, stream: bool = False) -> Optional[Handler]:
    return None if func is None else inspect_handler(name, func, params, stream=stream)


def function_handlers(
    owner: str,
    *,
    map_handler: AnyHandler,
    mapt_handler: AnyHandler,
    map_stream_handler: AnyHandler,
    reduce_handler: AnyHandler,
) -> FunctionHandlers:
    """Inspect the handlers a function server was given (``owner`` names it in errors)."""
    if all(h is None for h in (map_handler, mapt_handler, map_stream_handler, reduce_handler)):
        raise ValueError(f"{owner} needs at least one handler: {_KEYWORDS}")
    return FunctionHandlers(
        map=_maybe("map_handler", map_handler, "keys, datum"),
        mapt=_maybe("mapt_handler", mapt_handler, "keys, datum"),
        map_stream=_maybe("map_stream_handler", map_stream_handler, "keys, datum", stream=True),
        reduce=_maybe("reduce_handler", reduce_handler, "keys, datums, md"),
    )


class _FunctionServer(Facade):
    def _configure(
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
    ) -> None:
        self._handlers = function_handlers(
            type(self).__name__,
            map_handler=map_handler,
            mapt_handler=mapt_handler,
            map_stream_handler=map_stream_handler,
            reduce_handler=reduce_handler,
        )
        self._options = ServerOptions.resolve(
            sock_name="function.sock",
            sock_path=sock_path,
            server_info_file=server_info_file,
            max_message_size=max_message_size,
            max_threads=max_threads,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
        )
        if (
            V1 in self._options.protocols
            and self._handlers.map is not None
            and self._handlers.map_stream is not None
        ):
            raise ValueError(
                "map_handler and map_stream_handler cannot be served together on Numaflow "
                ">= 1.4: both announce themselves in mapper-server-info, which names one "
                "MAP_MODE. Give one of them, or serve only the 0.8-0.9 protocol with "
                f"protocols=[{LEGACY!r}]"
            )

    def _legacy_services(self, invoker: Invoker) -> Sequence[Service]:
        return [FunctionService(self._handlers, invoker)]

    def _v1_endpoints(self, invoker: Invoker) -> Sequence[Endpoint]:
        handlers = self._handlers
        udf = ud_container_type("udf")
        endpoints = []
        if handlers.map is not None:
            service = MapV1Service(handlers.map, invoker, stream=False, container_type=udf)
            endpoints.append(
                self._v1_endpoint(
                    "map.sock", "mapper-server-info", service, {"MAP_MODE": "unary-map"}
                )
            )
        if handlers.map_stream is not None:
            service = MapV1Service(handlers.map_stream, invoker, stream=True, container_type=udf)
            endpoints.append(
                self._v1_endpoint(
                    "mapstream.sock", "mapper-server-info", service, {"MAP_MODE": "stream-map"}
                )
            )
        if handlers.mapt is not None:
            transformer = SourceTransformV1Service(
                handlers.mapt, invoker, container_type=ud_container_type("transformer")
            )
            endpoints.append(
                self._v1_endpoint(
                    "sourcetransform.sock", "sourcetransformer-server-info", transformer
                )
            )
        if handlers.reduce is not None:
            reducer = ReduceV1Service(handlers.reduce, invoker, container_type=udf)
            endpoints.append(self._v1_endpoint("reduce.sock", "reducer-server-info", reducer))
        return endpoints


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
    ) -> None:
        self._configure(
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
    ) -> None:
        self._configure(
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
        )

    async def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        await self._serve_async()
