"""The kind table is the one place a kind is spelled out; the faces and the command agree."""

from __future__ import annotations

import inspect

import pytest
from sources import MemorySource

from pynumaflow import testing
from pynumaflow._cli._args import build_parser
from pynumaflow._codec.rpc import SERVICES
from pynumaflow._core.options import ServerOptions
from pynumaflow._faces.kinds import (
    FAMILIES,
    FUNCTION,
    KINDS,
    MODERN_FAMILIES,
    SINK_SERVER,
    Kind,
    v1_sockets,
)
from pynumaflow._invoke import Handler, Invoker
from pynumaflow.function import AsyncServer, MultiProcServer, Server
from pynumaflow.sink import AsyncSink, Sink

ALL_KINDS = (
    *KINDS,
    *(kind for family in MODERN_FAMILIES for kind in family.kinds if kind not in KINDS),
)
LEGACY_SERVICES = {"function": "function.v1.UserDefinedFunction", "sink": "sink.v1.UserDefinedSink"}


def test_names_and_keywords_are_unique() -> None:
    assert len({kind.name for kind in ALL_KINDS}) == len(ALL_KINDS)
    assert len({kind.keyword for kind in ALL_KINDS}) == len(ALL_KINDS)


def test_map_modes_share_the_server_info_file_with_their_own_socket_and_mode() -> None:
    """One container serves one map mode: MAP_MODE in mapper-server-info names the socket."""
    modes = [k.v1 for k in ALL_KINDS if k.v1 is not None and "MAP_MODE" in k.v1.metadata]
    assert {v1.metadata["MAP_MODE"] for v1 in modes} == {"unary-map", "stream-map", "batch-map"}
    sockets = [v1.for_role("udf") for v1 in modes]
    assert {socket.info for socket in sockets if socket} == {"mapper-server-info"}
    assert len({socket.sock for socket in sockets if socket}) == len(modes)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=[kind.name for kind in ALL_KINDS])
def test_each_kind_names_rpcs_that_exist(kind: Kind, tmp_path: object) -> None:
    """Its legacy RPC is on its family's legacy service; its v1 service serves a proto service."""
    family = next(f for f in (*FAMILIES, *MODERN_FAMILIES) if kind in f.kinds)
    if kind.legacy_method is not None:
        assert family.legacy is not None
        assert kind.legacy_method in SERVICES[LEGACY_SERVICES[family.legacy.service_name]]
    assert kind.v1 is not None
    options = ServerOptions.resolve(
        sock_name=None,
        sock_path=None,
        server_info_file=None,
        max_message_size=None,
        max_threads=1,
        shutdown_grace_period=None,
    )
    invoker = Invoker(1)
    try:
        handler = (
            kind.inspect(kind.keyword, MemorySource())  # an object with handler methods
            if kind.inspect is not None
            else Handler(kind.keyword, lambda *args: None, is_async=False)
        )
        service = kind.v1.service(handler, invoker, kind.v1.sockets[0].role, options)
        paths = set(service.__mapping__())
    finally:
        invoker.shutdown()
    assert {path.split("/")[1] for path in paths} <= set(SERVICES)
    assert any(not path.endswith("/IsReady") for path in paths)


@pytest.mark.parametrize(
    ("face", "family"),
    [
        (Server, FUNCTION),
        (AsyncServer, FUNCTION),
        (MultiProcServer, FUNCTION),
        (testing.serve_function, FUNCTION),
        (Sink, SINK_SERVER),
        (AsyncSink, SINK_SERVER),
        (testing.serve_sink, SINK_SERVER),
    ],
)
def test_the_faces_take_the_keywords_of_the_table(face: object, family: object) -> None:
    """Every handler keyword of the family is a parameter of the face, in the table's words."""
    params = inspect.signature(face).parameters  # type: ignore[arg-type]
    assert {kind.keyword for kind in family.kinds} <= set(params)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_the_command_takes_every_kind_by_its_name(kind: Kind) -> None:
    args = build_parser().parse_args(["call", "--sock", "/tmp/x.sock", "--kind", kind.name])
    assert args.kind is kind


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_a_container_serves_the_socket_of_its_role_only(kind: Kind) -> None:
    """No role: the first socket; a listed role: its own; any other role: none."""
    assert kind.v1 is not None
    sockets = kind.v1.sockets
    assert len({socket.role for socket in sockets}) == len(sockets)
    assert kind.v1.for_role(None) is sockets[0]
    for socket in sockets:
        assert kind.v1.for_role(socket.role) is socket
        assert socket in v1_sockets(socket.role)
    others = {s.role for k in KINDS if k.v1 is not None for s in k.v1.sockets} - {
        s.role for s in sockets
    }
    for role in others:
        assert kind.v1.for_role(role) is None


def test_no_two_sockets_of_a_role_share_a_socket_file() -> None:
    """Siblings of one role never collide in the shared folder (map modes share one file)."""
    roles = {s.role for k in KINDS if k.v1 is not None for s in k.v1.sockets}
    for role in roles:
        names = [socket.sock for socket in v1_sockets(role)]
        assert len(set(names)) == len(names), role
