"""The kind table: the one place a kind of user-defined function or sink is spelled out.

A :class:`Kind` is one row: its public keyword, handler shape, whether the handler
streams, its RPC on the legacy endpoint, and where and how it is served on v1 (the
``$NUMAFLOW_UD_CONTAINER_TYPE`` roles serving it, each with its socket and server-info
file; server-info metadata; service factory). A :class:`Family` is the kinds one
public server class serves, with its legacy endpoint, if it has one (kinds that are new
in v1 have none).

The server base (:mod:`pynumaflow._faces.facade`), the faces, ``pynumaflow run``
(:mod:`pynumaflow._cli`), the test kit and ``tools/generate_api_docs.py`` read it.
Service factories import their service on first use: a function server never imports
the sink's services, nor the command line any service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # the command line reads the table without loading the server's parts
    from pynumaflow._core.endpoint import Service
    from pynumaflow._core.options import ServerOptions
    from pynumaflow._invoke import Handler, Invoker
    from pynumaflow._services.legacy.function import FunctionHandlers

__all__ = [
    "ACCUMULATE",
    "ACCUMULATOR",
    "BATCH_MAP",
    "BATCH_MAPPER",
    "BATCH_MAP_MODE",
    "EVERY_KIND",
    "FAMILIES",
    "FUNCTION",
    "KINDS",
    "MAP",
    "MAPPER",
    "MAPT",
    "MAP_MODES",
    "MAP_MODE_ENV",
    "MAP_STREAM",
    "MAP_STREAMER",
    "MODERN_FAMILIES",
    "REDUCE",
    "REDUCER",
    "REDUCE_STREAM",
    "REDUCE_STREAMER",
    "SESSION_REDUCE",
    "SESSION_REDUCER",
    "SIDE_INPUT",
    "SIDE_INPUT_SERVER",
    "SINK",
    "SINKER",
    "SINK_SERVER",
    "SOURCE",
    "SOURCE_SERVER",
    "SOURCE_TRANSFORMER",
    "STREAM_MAP",
    "UNARY_MAP",
    "Family",
    "Kind",
    "LegacyEndpoint",
    "V1Endpoint",
    "V1Socket",
    "inspect_handlers",
    "resolve_map_mode",
    "v1_sockets",
]

V1Factory = Callable[["Handler", "Invoker", str, "ServerOptions"], "Service"]
"""Builds a kind's v1 service: ``(handler, invoker, role, options)``."""
LegacyFactory = Callable[["Mapping[str, Handler]", "Invoker"], "Service"]
"""Builds a family's legacy service from its handlers by kind name."""


@dataclass(frozen=True, eq=False)
class V1Socket:
    """A container role serving a kind on v1, and the socket and file it binds and writes.

    Numaflow >= 1.2 tells each UD container its role by ``$NUMAFLOW_UD_CONTAINER_TYPE``;
    a container binds only the sockets and writes only the server-info files of its
    role, so that siblings sharing the folder never collide.

    Attributes:
        label: what it is, in the log and in errors (e.g. ``fallback sink``).
        role: the ``$NUMAFLOW_UD_CONTAINER_TYPE`` of the containers serving it.
        sock: the socket's file name.
        info: the server-info file's name.

    """

    label: str
    role: str
    sock: str
    info: str


@dataclass(frozen=True, eq=False)
class V1Endpoint:
    """Where and how a kind is served on Numaflow >= 1.4.

    Attributes:
        sockets: the roles serving it; the first is served when the container has none
            (Numaflow 0.8-0.9 set no role: there, or in a local run, it is the default).
        service: builds the service.
        metadata: what the server-info file's ``metadata`` holds.
        minimum_numaflow_version: what the server-info file asks of the platform, when
            more than the v1 protocols' 1.4.

    """

    sockets: Tuple[V1Socket, ...]
    service: V1Factory
    metadata: Mapping[str, str] = field(default_factory=dict)
    minimum_numaflow_version: Optional[str] = None

    def for_role(self, role: Optional[str]) -> Optional[V1Socket]:
        """The socket a container of ``role`` serves (None: the role serves none)."""
        if role is None:
            return self.sockets[0]
        return next((socket for socket in self.sockets if socket.role == role), None)


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
        inspect: checks a handler that is not one callable (a Sourcer's methods); None
            for one callable.

    """

    name: str
    keyword: str
    params: str
    stream: bool
    legacy_method: Optional[str]
    v1: Optional[V1Endpoint]
    inspect: Optional[Callable[[str, object], Handler]] = None


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

    return SourceTransformV1Service(handler, invoker, container_type=role, nack=options.nack)


def _reduce_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.reduce import ReduceV1Service

    return ReduceV1Service(handler, invoker, container_type=role)


def _reduce_stream_v1(
    handler: Handler, invoker: Invoker, role: str, options: ServerOptions
) -> Service:
    from pynumaflow._services.v1.reduce import ReduceV1Service

    return ReduceV1Service(handler, invoker, container_type=role, stream=True)


def _accumulator_v1(
    handler: Handler, invoker: Invoker, role: str, options: ServerOptions
) -> Service:
    from pynumaflow._services.v1.accumulator import AccumulatorV1Service

    return AccumulatorV1Service(handler, invoker, container_type=role)


def _session_reduce_v1(
    handler: Handler, invoker: Invoker, role: str, options: ServerOptions
) -> Service:
    from pynumaflow._services.v1.session import SessionReduceV1Service

    return SessionReduceV1Service(handler, invoker, container_type=role)


def _sink_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.sink import SinkV1Service

    return SinkV1Service(
        handler,
        invoker,
        container_type=role,
        max_message_size=options.max_message_size,
        nack=options.nack,
    )


def _source_v1(handler: Handler, invoker: Invoker, role: str, options: ServerOptions) -> Service:
    from pynumaflow._services.v1.source import SourceV1Service

    return SourceV1Service(handler, invoker, container_type=role)


def _side_input_v1(
    handler: Handler, invoker: Invoker, role: str, options: ServerOptions
) -> Service:
    from pynumaflow._services.v1.sideinput import SideInputV1Service

    return SideInputV1Service(handler, invoker, container_type=role)


def _inspect_sourcer(keyword: str, sourcer: object) -> Handler:
    from pynumaflow._invoke import Handler, inspect_methods
    from pynumaflow._services.v1.source import SOURCER_METHODS

    inspect_methods(keyword, sourcer, SOURCER_METHODS, need_async=("read_handler",))
    return Handler(keyword, sourcer, is_async=True)  # type: ignore[arg-type]  # its methods are


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

UNARY_MAP = "unary-map"
STREAM_MAP = "stream-map"
BATCH_MAP_MODE = "batch-map"  # served by pynumaflow.batchmapper alone (its own family)
MAP_MODE_ENV = "PYNUMAFLOW_MAP_MODE"

MAP = Kind(
    "map",
    "map_handler",
    "keys, datum",
    stream=False,
    legacy_method="MapFn",
    v1=V1Endpoint(
        (V1Socket("map", "udf", "map.sock", "mapper-server-info"),),
        _map_v1,
        {"MAP_MODE": UNARY_MAP},
    ),
)
MAPT = Kind(
    "mapt",
    "mapt_handler",
    "keys, datum",
    stream=False,
    legacy_method="MapTFn",
    v1=V1Endpoint(
        (
            V1Socket(
                "transformer",
                "transformer",
                "sourcetransform.sock",
                "sourcetransformer-server-info",
            ),
        ),
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
        (V1Socket("map stream", "udf", "mapstream.sock", "mapper-server-info"),),
        _map_stream_v1,
        {"MAP_MODE": STREAM_MAP},
    ),
)
# The map modes share mapper-server-info, whose MAP_MODE tells the platform which socket
# to dial: a container serves one mode.
BATCH_MAP = Kind(
    "batch-map",
    "batch_mapper_instance",
    "datums",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        (V1Socket("batch map", "udf", "batchmap.sock", "mapper-server-info"),),
        _batch_map_v1,
        {"MAP_MODE": BATCH_MAP_MODE},
    ),
)
REDUCE = Kind(
    "reduce",
    "reduce_handler",
    "keys, datums, md",
    stream=False,
    legacy_method="ReduceFn",
    v1=V1Endpoint((V1Socket("reduce", "udf", "reduce.sock", "reducer-server-info"),), _reduce_v1),
)
# The modern API's streaming window kinds (no 0.4 keyword, no legacy RPC): the handler
# does not yield but writes to an ``output`` it is given; the face turns that into a
# stream the service relays.
REDUCE_STREAM = Kind(
    "reduce-stream",
    "reduce_stream_handler",
    "keys, datums, output, md",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        (V1Socket("reduce stream", "udf", "reducestream.sock", "reducestreamer-server-info"),),
        _reduce_stream_v1,
    ),
)
SESSION_REDUCE = Kind(
    "session-reduce",
    "session_reducer",
    "keys, datums, output",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        (V1Socket("session reduce", "udf", "sessionreduce.sock", "sessionreducer-server-info"),),
        _session_reduce_v1,
    ),
)
ACCUMULATE = Kind(
    "accumulator",
    "accumulator_handler",
    "datums, output",
    stream=False,
    legacy_method=None,
    # Its wire shape (EOF at field 4) is Numaflow 1.6's (spec section 15.3).
    v1=V1Endpoint(
        (V1Socket("accumulator", "udf", "accumulator.sock", "accumulator-server-info"),),
        _accumulator_v1,
        minimum_numaflow_version="1.6.0-z",
    ),
)
# One sink image serves as the primary, fallback or on-success sink: the container's
# role says which (none: the primary).
SINK = Kind(
    "sink",
    "sink_handler",
    "datums",
    stream=False,
    legacy_method="SinkFn",
    v1=V1Endpoint(
        (
            V1Socket("sink", "udsink", "sink.sock", "sinker-server-info"),
            V1Socket("fallback sink", "fb-udsink", "fb-sink.sock", "fb-sinker-server-info"),
            V1Socket("on-success sink", "ons-udsink", "ons-sink.sock", "ons-sinker-server-info"),
        ),
        _sink_v1,
    ),
)

# Kinds new in v1 (no legacy endpoint), each served by a server class of its own.
SOURCE = Kind(
    "source",
    "sourcer_instance",
    "a `Sourcer` (read, ack, nack, pending, partitions handlers)",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        (V1Socket("source", "udsource", "source.sock", "sourcer-server-info"),), _source_v1
    ),
    inspect=_inspect_sourcer,
)
SIDE_INPUT = Kind(
    "side-input",
    "side_input_instance",
    "",
    stream=False,
    legacy_method=None,
    v1=V1Endpoint(
        (V1Socket("side input", "udsi", "sideinput.sock", "sideinput-server-info"),),
        _side_input_v1,
    ),
)

FUNCTION = Family(
    "function",
    (MAP, MAPT, MAP_STREAM, REDUCE),
    LegacyEndpoint("function.sock", "function", _function_legacy),
)
SINK_SERVER = Family("sink", (SINK,), LegacyEndpoint("udsink.sock", "sink", _sink_legacy))

SOURCE_SERVER = Family("source", (SOURCE,), legacy=None)
SIDE_INPUT_SERVER = Family("side input", (SIDE_INPUT,), legacy=None)

FAMILIES: Tuple[Family, ...] = (FUNCTION, SINK_SERVER, SOURCE_SERVER, SIDE_INPUT_SERVER)
"""The families of the kinds' first servers; together they hold every kind once but those
only the modern API serves (batch map, reduce stream, accumulator, session reduce)."""
KINDS: Tuple[Kind, ...] = tuple(kind for family in FAMILIES for kind in family.kinds)

# The modern API (pynumaflow 0.9-0.14): a server class per kind, served on v1 only.
MAPPER = Family("mapper", (MAP,), None)
MAP_STREAMER = Family("mapstreamer", (MAP_STREAM,), None)
SOURCE_TRANSFORMER = Family("sourcetransformer", (MAPT,), None)
REDUCER = Family("reducer", (REDUCE,), None)
REDUCE_STREAMER = Family("reducestreamer", (REDUCE_STREAM,), None)
ACCUMULATOR = Family("accumulator", (ACCUMULATE,), None)
SESSION_REDUCER = Family("sessionreducer", (SESSION_REDUCE,), None)
SINKER = Family("sinker", (SINK,), None)
BATCH_MAPPER = Family("batchmapper", (BATCH_MAP,), None)
MODERN_FAMILIES: Tuple[Family, ...] = (
    MAPPER,
    MAP_STREAMER,
    SOURCE_TRANSFORMER,
    REDUCER,
    REDUCE_STREAMER,
    ACCUMULATOR,
    SESSION_REDUCER,
    SINKER,
    BATCH_MAPPER,
)
"""The modern API's families, each named as its module (``pynumaflow.<name>``)."""
EVERY_KIND: Tuple[Kind, ...] = KINDS + tuple(
    kind for family in MODERN_FAMILIES for kind in family.kinds if kind not in KINDS
)
"""Every kind, those of :data:`FAMILIES` first: what ``pynumaflow run``/``call`` drive."""


MAP_MODES = {UNARY_MAP: MAP, STREAM_MAP: MAP_STREAM}
"""The MAP_MODE words of mapper-server-info, and the kind each announces."""


def resolve_map_mode(map_mode: Optional[str]) -> str:
    """The MAP_MODE to announce on v1 when both map handlers are given (default unary)."""
    source = "map_mode"
    if map_mode is None:
        map_mode = os.environ.get(MAP_MODE_ENV, "").strip() or UNARY_MAP
        source = MAP_MODE_ENV
    if map_mode not in MAP_MODES:
        raise ValueError(
            f"{source} must be {UNARY_MAP!r} (map_handler) or {STREAM_MAP!r} "
            f"(map_stream_handler), got {map_mode!r}"
        )
    return map_mode


def v1_sockets(role: Optional[str]) -> List[V1Socket]:
    """Every v1 socket a container of ``role`` may serve, over all kinds."""
    return [
        socket
        for kind in KINDS
        if kind.v1 is not None
        for socket in kind.v1.sockets
        if socket.role == role
    ]


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
        if kind.inspect is not None and (func is not None or len(kinds) == 1):
            handlers[kind.name] = kind.inspect(kind.keyword, func)
        elif func is not None or len(kinds) == 1:
            handlers[kind.name] = inspect_handler(
                kind.keyword, func, kind.params, stream=kind.stream
            )
    return handlers
