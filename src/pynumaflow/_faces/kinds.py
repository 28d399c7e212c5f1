"""The kind table: the one place a kind of user-defined function or sink is spelled out.

A :class:`Kind` is one row: its public keyword, handler shape, whether the handler
streams, its RPC on the legacy endpoint, and where and how it is served on v1 (socket
and server-info file per ``$NUMAFLOW_UD_CONTAINER_TYPE`` role, server-info metadata,
service factory). A :class:`Family` is the kinds one public server class serves, with
its legacy endpoint, if it has one (kinds that are new in v1 have none).

The server base (:mod:`pynumaflow._faces.facade`), the faces, ``pynumaflow run``
(:mod:`pynumaflow._cli`), the test kit and ``tools/generate_api_docs.py`` read it.
Service factories import their service on first use: a function server never imports
the sink's services, nor the command line any service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

if TYPE_CHECKING:  # the command line reads the table without loading the server's parts
    from pynumaflow._core.endpoint import Service
    from pynumaflow._core.options import ServerOptions
    from pynumaflow._invoke import Handler, Invoker
    from pynumaflow._services.legacy.function import FunctionHandlers

__all__ = [
    "BATCH_MAP",
    "BATCH_MAPPER",
    "FAMILIES",
    "FUNCTION",
    "KINDS",
    "MAP",
    "MAPPER",
    "MAPT",
    "MAP_STREAM",
    "MAP_STREAMER",
    "MODERN_FAMILIES",
    "REDUCE",
    "REDUCER",
    "SINK",
    "SINKER",
    "SINK_SERVER",
    "SOURCE_TRANSFORMER",
    "Family",
    "Kind",
    "LegacyEndpoint",
    "V1Endpoint",
    "inspect_handlers",
]

V1Factory = Callable[["Handler", "Invoker", str, "ServerOptions"], "Service"]
"""Builds a kind's v1 service: ``(handler, invoker, role, options)``."""
LegacyFactory = Callable[["Mapping[str, Handler]", "Invoker"], "Service"]
"""Builds a family's legacy service from its handlers by kind name."""


@dataclass(frozen=True, eq=False)
class V1Endpoint:
    """Where and how a kind is served on Numaflow >= 1.4.

    Attributes:
        sockets: by ``$NUMAFLOW_UD_CONTAINER_TYPE`` role, the socket and server-info file
            names; the first role is the default (also for a role not listed).
        service: builds the service.
        metadata: what the server-info file's ``metadata`` holds.

    """

    sockets: Mapping[str, Tuple[str, str]]
    service: V1Factory
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_role(self) -> str:
        """The role assumed when the platform names none."""
        return next(iter(self.sockets))

    def files(self, role: str) -> Tuple[str, str]:
        """The socket and server-info file names for ``role``."""
        return self.sockets.get(role, self.sockets[self.default_role])


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per kind
class Kind:
    """One kind of user-defined function or sink.

    Attributes:
        name: its ``--kind`` name on the command line.
        keyword: the server keyword taking its handler.
        params: the handler's parameters, for error messages and the docs.
        stream: the handler yields its output (a generator) instead of returning it.
        legacy_method: its RPC on the family's legacy endpoint, or None.
        v1: where it is served on Numaflow >= 1.4, or None.

    """

    name: str
    keyword: str
    params: str
    stream: bool
    legacy_method: Optional[str]
    v1: Optional[V1Endpoint]


@dataclass(frozen=True, eq=False)
class LegacyEndpoint:
    """A family's legacy socket (Numaflow 0.8-0.9): one service for all its kinds.

    Attributes:
        sock_name: the socket's file name in the run folder (``sock_path`` overrides it).
        service_name: the proto service (``function``/``sink`` for the client's probe).
        service: builds the service.

    """

    sock_name: str
    service_name: str
    service: LegacyFactory


@dataclass(frozen=True, eq=False)
class Family:
    """The kinds one public server class serves.

    A family of one kind takes its handler as a required argument; a family of several
    needs at least one of them.
    """

    name: str
    kinds: Tuple[Kind, ...]
    legacy: Optional[LegacyEndpoint]

    @property
    def keywords(self) -> str:
        """The handler keywords, for messages: "a, b or c"."""
        names = [kind.keyword for kind in self.kinds]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# --- service factories (imported on first use) ---------------------------------------------


def _map_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.map import MapV1Service

    return MapV1Service(handler, invoker, stream=False, container_type=role, nack=options.nack)


def _map_stream_v1(
    handler: Handler, invoker: Invoker, role: str, options: ServerOptions
) -> Service:
    from pynumaflow._services.v1.map import MapV1Service

    return MapV1Service(handler, invoker, stream=True, container_type=role, nack=options.nack)


def _batch_map_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.batchmap import BatchMapV1Service

    return BatchMapV1Service(handler, invoker, container_type=role, nack=options.nack)


def _transform_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.transform import SourceTransformV1Service

    return SourceTransformV1Service(handler, invoker, container_type=role)


def _reduce_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.reduce import ReduceV1Service

    return ReduceV1Service(handler, invoker, container_type=role)


def _sink_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.sink import SinkV1Service

    return SinkV1Service(
        handler,
        invoker,
        container_type=role,
        max_message_size=options.max_message_size,
        nack=options.nack,
    )


def function_handlers(handlers: Mapping[str, Handler]) -> FunctionHandlers:
    """The function.v1 service's handlers from the function family's, by kind name."""
    from pynumaflow._services.legacy.function import FunctionHandlers

    return FunctionHandlers(
        map=handlers.get(MAP.name),
        mapt=handlers.get(MAPT.name),
        map_stream=handlers.get(MAP_STREAM.name),
        reduce=handlers.get(REDUCE.name),
    )


def _function_legacy(handlers: Mapping[str, Handler], invoker: Invoker) -> Service:
    from pynumaflow._services.legacy.function import FunctionService

    return FunctionService(function_handlers(handlers), invoker)


def _sink_legacy(handlers: Mapping[str, Handler], invoker: Invoker) -> Service:
    from pynumaflow._services.legacy.sink import SinkService

    return SinkService(handlers[SINK.name], invoker)


# --- the table -------------------------------------------------------------------------------

MAP = Kind(
    "map",
    "map_handler",
    "keys, datum",
    stream=False,
    legacy_method="MapFn",
    v1=V1Endpoint({"udf": ("map.sock", "mapper-server-info")}, _map_v1, {"MAP_MODE": "unary-map"}),
)
MAPT = Kind(
    "mapt",
    "mapt_handler",
    "keys, datum",
    stream=False,
    legacy_method="MapTFn",
    v1=V1Endpoint(
        {"transformer": ("sourcetransform.sock", "sourcetransformer-server-info")},
        _transform_v1,
    ),
)
MAP_STREAM = Kind(
    "map-stream",
    "map_stream_handler",
    "keys, datum",
    stream=True,
    legacy_method="MapStreamFn",
    v1=V1Endpoint(
        {"udf": ("mapstream.sock", "mapper-server-info")},
        _map_stream_v1,
        {"MAP_MODE": "stream-map"},
    ),
)
# The map modes share mapper-server-info, whose MAP_MODE tells the platform which socket
# to dial: a container serves one mode.
BATCH_MAP = Kind(
    "batch-map",
    "batch_map_handler",
    "datums",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        {"udf": ("batchmap.sock", "mapper-server-info")},
        _batch_map_v1,
        {"MAP_MODE": "batch-map"},
    ),
)
REDUCE = Kind(
    "reduce",
    "reduce_handler",
    "keys, datums, md",
    stream=False,
    legacy_method="ReduceFn",
    v1=V1Endpoint({"udf": ("reduce.sock", "reducer-server-info")}, _reduce_v1),
)
# The platform runs one sink image as the primary, fallback or on-success sink and tells
# the container which by $NUMAFLOW_UD_CONTAINER_TYPE; each role has its socket and file.
SINK = Kind(
    "sink",
    "sink_handler",
    "datums",
    stream=False,
    legacy_method="SinkFn",
    v1=V1Endpoint(
        {
            "udsink": ("sink.sock", "sinker-server-info"),
            "fb-udsink": ("fb-sink.sock", "fb-sinker-server-info"),
            "ons-udsink": ("ons-sink.sock", "ons-sinker-server-info"),
        },
        _sink_v1,
    ),
)

FUNCTION = Family(
    "function",
    (MAP, MAPT, MAP_STREAM, REDUCE),
    LegacyEndpoint("function.sock", "function", _function_legacy),
)
SINK_SERVER = Family("sink", (SINK,), LegacyEndpoint("udsink.sock", "sink", _sink_legacy))

FAMILIES: Tuple[Family, ...] = (FUNCTION, SINK_SERVER)
"""The 0.4 API's families; together they hold every kind once."""
KINDS: Tuple[Kind, ...] = tuple(kind for family in FAMILIES for kind in family.kinds)

# The modern API (pynumaflow 0.9-0.14): a server class per kind, served on v1 only.
MAPPER = Family("mapper", (MAP,), None)
MAP_STREAMER = Family("mapstreamer", (MAP_STREAM,), None)
SOURCE_TRANSFORMER = Family("sourcetransformer", (MAPT,), None)
REDUCER = Family("reducer", (REDUCE,), None)
SINKER = Family("sinker", (SINK,), None)
BATCH_MAPPER = Family("batchmapper", (BATCH_MAP,), None)
MODERN_FAMILIES: Tuple[Family, ...] = (
    MAPPER,
    MAP_STREAMER,
    SOURCE_TRANSFORMER,
    REDUCER,
    SINKER,
    BATCH_MAPPER,
)
"""The modern API's families, each named as its module (``pynumaflow.<name>``)."""


def inspect_handlers(
    family: Family, owner: str, given: Mapping[str, Optional[Callable[..., Any]]]
) -> Dict[str, Handler]:
    """Inspect the handlers a server of ``family`` was given, by keyword; key them by kind.

    ``owner`` names the server in errors.

    Raises:
        ValueError: a family of several kinds got no handler at all.
        TypeError: a handler is not callable or takes the wrong number of parameters.

    """
    from pynumaflow._invoke import inspect_handler

    kinds: Sequence[Kind] = family.kinds
    if len(kinds) > 1 and all(given.get(kind.keyword) is None for kind in kinds):
        raise ValueError(f"{owner} needs at least one handler: {family.keywords}")
    handlers = {}
    for kind in kinds:
        func = given.get(kind.keyword)
        if func is not None or len(kinds) == 1:
            handlers[kind.name] = inspect_handler(
                kind.keyword, func, kind.params, stream=kind.stream
            )
    return handlers
