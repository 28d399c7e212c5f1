"""Which protocol generations a server serves, on which sockets, announced how."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pynumaflow import __version__, testing
from pynumaflow.function import AsyncServer, Datum, Message, Messages
from pynumaflow.sink import AsyncSink, Response, Responses

from procs import END

pytestmark = pytest.mark.anyio


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


def sink(datums: Any) -> Responses:
    return Responses(*(Response.as_success(d.id) for d in datums))


def _info(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith(END)
    return json.loads(text[: -len(END)])  # type: ignore[no-any-return]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


async def test_both_generations_by_default(tmp_path: Path) -> None:
    """One server: function.sock + server-info, and a v1 socket and info file per kind."""
    server = AsyncServer(
        map_handler=echo,
        mapt_handler=echo,
        reduce_handler=lambda keys, datums, md: Messages(),
        sock_path=str(tmp_path / "function.sock"),
        server_info_file=str(tmp_path / "server-info"),
    )
    async with server.running():
        files = _files(tmp_path)
        legacy = _info(tmp_path / "server-info")
        mapper = _info(tmp_path / "mapper-server-info")
        transformer = _info(tmp_path / "sourcetransformer-server-info")
    assert files == {
        "function.sock",
        "server-info",
        "map.sock",
        "mapper-server-info",
        "sourcetransform.sock",
        "sourcetransformer-server-info",
        "reduce.sock",
        "reducer-server-info",
    }
    assert legacy == {
        "protocol": "uds",
        "language": "python",
        "version": __version__,
        "metadata": {},
    }
    assert mapper == {
        "protocol": "uds",
        "language": "python",
        "minimum_numaflow_version": "1.4.0-z",
        "version": __version__,
        "metadata": {"MAP_MODE": "unary-map"},
    }
    assert transformer["metadata"] == {}
    assert not _files(tmp_path)


async def test_map_stream_mode_and_v1_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$PYNUMAFLOW_PROTOCOLS=v1 serves only the v1 socket; map stream says stream-map."""

    async def split(keys: list[str], datum: Datum) -> Any:
        yield Message(datum.value)

    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PYNUMAFLOW_PROTOCOLS", "v1")
    async with AsyncServer(map_stream_handler=split).running():
        files = _files(tmp_path)
        mapper = _info(tmp_path / "mapper-server-info")
    assert files == {"mapstream.sock", "mapper-server-info"}
    assert mapper["metadata"] == {"MAP_MODE": "stream-map"}


@pytest.mark.parametrize(
    ("container", "sock", "info"),
    [
        (None, "sink.sock", "sinker-server-info"),
        ("udsink", "sink.sock", "sinker-server-info"),
        ("fb-udsink", "fb-sink.sock", "fb-sinker-server-info"),
        ("ons-udsink", "ons-sink.sock", "ons-sinker-server-info"),
    ],
)
async def test_sink_role_from_container_type(
    container: str | None, sock: str, info: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v1 sink socket and info file follow $NUMAFLOW_UD_CONTAINER_TYPE, as the platform's.

    Only Numaflow >= 1.2 sets the variable, and it never dials udsink.sock: with a role,
    no legacy file is touched.
    """
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(tmp_path))
    if container is None:
        monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    else:
        monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", container)
    async with AsyncSink(sink).running():
        files = _files(tmp_path)
    legacy = {"udsink.sock", "server-info"} if container is None else set()
    assert files == {*legacy, sock, info}


def test_protocol_choice_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown generations and map modes fail at construction, naming the fix."""

    async def split(keys: list[str], datum: Datum) -> Any:
        yield Message(datum.value)

    with pytest.raises(ValueError, match="protocols must name one or both of 'legacy'"):
        AsyncServer(map_handler=echo, protocols=["v2"])
    monkeypatch.setenv("PYNUMAFLOW_PROTOCOLS", "legacy,bogus")
    with pytest.raises(ValueError, match="PYNUMAFLOW_PROTOCOLS must name"):
        AsyncServer(map_handler=echo)
    monkeypatch.delenv("PYNUMAFLOW_PROTOCOLS")
    with pytest.raises(ValueError, match="map_mode must be 'unary-map'"):
        AsyncServer(map_handler=echo, map_stream_handler=split, map_mode="stream")
    monkeypatch.setenv("PYNUMAFLOW_MAP_MODE", "unary")
    with pytest.raises(ValueError, match="PYNUMAFLOW_MAP_MODE must be 'unary-map'"):
        AsyncServer(map_handler=echo, map_stream_handler=split)


async def test_role_picks_the_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformer container serves only sourcetransform.sock, whatever else it has."""
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "transformer")
    async with AsyncServer(map_handler=echo, mapt_handler=echo).running():
        files = _files(tmp_path)
    assert files == {"sourcetransform.sock", "sourcetransformer-server-info"}


def test_role_without_a_handler_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A role the server has no handler for fails at construction, saying what it needs."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")
    with pytest.raises(
        ValueError,
        match="NUMAFLOW_UD_CONTAINER_TYPE=udf: this container must serve map or map stream "
        "or reduce, which AsyncSink's handlers are not; they serve containers of type udsink",
    ):
        AsyncSink(sink)
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udsource")
    with pytest.raises(ValueError, match="must serve source, which AsyncServer's handlers"):
        AsyncServer(map_handler=echo)
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udstore")  # the serving store
    with pytest.raises(ValueError, match="must serve a kind pynumaflow does not serve"):
        AsyncServer(map_handler=echo)


@pytest.mark.parametrize("protocol", ["legacy", "v1"])
async def test_the_test_kit_serves_whatever_the_role(
    monkeypatch: pytest.MonkeyPatch, protocol: testing.ProtocolName
) -> None:
    """The test kit works inside a pod too.

    protocols=["legacy"] is an explicit choice, served whatever the role; on v1 the kit
    builds its server as a local run.
    """
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udsink")
    async with testing.serve_function(map_handler=echo, protocol=protocol) as udf:
        assert await udf.map(b"x") == Messages(Message(b"x"))
    assert os.environ["NUMAFLOW_UD_CONTAINER_TYPE"] == "udsink"
