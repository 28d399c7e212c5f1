"""A server of a family without a legacy endpoint: served on v1 only, as the newer kinds are."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import grpc
import pytest
from test_map_v1 import echo, handshake, is_handshake, request, results

from pynumaflow._faces.facade import Facade
from pynumaflow._faces.kinds import MAP, Family

from conftest import CHANNEL_OPTIONS
from helpers import converse

pytestmark = pytest.mark.anyio

V1_ONLY = Family("v1-only map", (MAP,), legacy=None)


@pytest.fixture
def map_pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["map_pb2"]


@pytest.fixture
async def map_stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    target = f"unix://{sock_dir / 'map.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["map_grpc"].MapStub(channel)


class V1OnlyMap(Facade):
    """What a face of a v1-only kind is: the server base configured with its family."""

    family = V1_ONLY

    def __init__(
        self, map_handler: Optional[Callable[..., Any]], *, protocols: Optional[list[str]] = None
    ) -> None:
        self._configure(
            {"map_handler": map_handler},
            sock_path=None,
            max_message_size=None,
            max_threads=None,
            server_info_file=None,
            shutdown_grace_period=None,
            protocols=protocols,
        )


async def test_a_family_without_legacy_endpoint_serves_v1_only(
    sock_dir: Path, map_stub: Any, map_pb2: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It binds map.sock and writes mapper-server-info, and nothing of the legacy protocol."""
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(sock_dir))
    server = V1OnlyMap(echo)
    async with server.running():
        files = sorted(p.name for p in sock_dir.iterdir() if not p.name.startswith("."))
        assert files == ["map.sock", "mapper-server-info"]
        info = (sock_dir / "mapper-server-info").read_text(encoding="utf-8")
        assert json.loads(info.split("U+005C__END__")[0])["metadata"] == {"MAP_MODE": "unary-map"}
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "1", b"v")])
    assert talk.code == grpc.StatusCode.OK
    first, answer = talk.responses
    assert is_handshake(first)
    assert results(answer) == [([], b"v", ["echoed"])]
    assert list(sock_dir.iterdir()) == []


def test_a_family_without_legacy_endpoint_refuses_legacy_only(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for the legacy protocol only, it has nothing to serve: said at construction."""
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(sock_dir))
    with pytest.raises(ValueError, match="nothing to serve"):
        V1OnlyMap(echo, protocols=["legacy"])
