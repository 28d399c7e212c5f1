"""The modern API's surface and the behaviour where ours differs from 0.14.0 on purpose.

Names and constructor signatures are compared with the pynumaflow 0.14.0 wheel itself
(in the reference virtualenv); servers run on real sockets, driven by its stubs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import pynumaflow
from pynumaflow import mapper, mapstreamer, reducer, sinker, sourcetransformer
from pynumaflow._core.options import ServerOptions
from pynumaflow.shared import NonBlockingIterator, SyncIterator
from pynumaflow.shared.asynciter import STREAM_EOF

from reference_client import ReferenceClient, b64, unb64

pytestmark = pytest.mark.timeout(300)
MODULES = [
    "mapper",
    "mapstreamer",
    "sourcetransformer",
    "reducer",
    "reducestreamer",
    "accumulator",
    "sinker",
]
SERVERS = {
    "mapper": ["MapServer", "MapAsyncServer", "MapMultiprocServer"],
    "mapstreamer": ["MapStreamAsyncServer"],
    "sourcetransformer": [
        "SourceTransformServer",
        "SourceTransformAsyncServer",
        "SourceTransformMultiProcServer",
    ],
    "reducer": ["ReduceAsyncServer"],
    "reducestreamer": ["ReduceStreamAsyncServer"],
    "accumulator": ["AccumulatorAsyncServer"],
    "sinker": ["SinkServer", "SinkAsyncServer"],
}
HANDSHAKE = {"handshake": {"sot": True}}


@pytest.fixture(scope="module")
def reference_surface(reference_client: ReferenceClient) -> dict[str, Any]:
    """0.14.0's ``__all__`` per module and each server's ``__init__`` parameter names."""
    script = (
        "import importlib, inspect, json\n"
        f"servers = {SERVERS!r}\n"
        "out = {}\n"
        "for name, classes in servers.items():\n"
        "    module = importlib.import_module('pynumaflow.' + name)\n"
        "    out[name] = {'all': sorted(module.__all__), 'init': {\n"
        "        c: list(inspect.signature(getattr(module, c).__init__).parameters)[1:]\n"
        "        for c in classes}}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(reference_client.python), "-c", script], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.reference
@pytest.mark.parametrize("name", MODULES)
def test_every_name_of_0_14_is_there(name: str, reference_surface: dict[str, Any]) -> None:
    """Each module exports at least what 0.14.0's exports."""
    module = importlib.import_module(f"pynumaflow.{name}")
    assert set(reference_surface[name]["all"]) <= set(module.__all__)


@pytest.mark.reference
@pytest.mark.parametrize(
    ("name", "server"), [(name, server) for name, servers in SERVERS.items() for server in servers]
)
def test_server_parameters_match_0_14(
    name: str, server: str, reference_surface: dict[str, Any]
) -> None:
    """Each server takes 0.14.0's parameters, by position and keyword; ours only add after."""
    import inspect

    theirs = reference_surface[name]["init"][server]
    module = importlib.import_module(f"pynumaflow.{name}")
    ours = list(inspect.signature(getattr(module, server).__init__).parameters)
    assert ours[1 : 1 + len(theirs)] == theirs


def test_datum_fields() -> None:
    """Keys as a property, value, times, headers (a copy), metadata, as 0.14.0 builds them."""
    user = mapper.UserMetadata()
    user.add_key("g", "k", b"v")
    moment = datetime(2024, 1, 1)
    datum = mapper.Datum(["a"], b"x", moment, moment, {"h": "1"}, user)
    assert (datum.keys, datum.value, datum.event_time, datum.watermark) == (
        ["a"],
        b"x",
        moment,
        moment,
    )
    datum.headers["h"] = "changed"
    assert datum.headers == {"h": "1"}
    assert datum.user_metadata.value("g", "k") == b"v"
    assert datum.system_metadata.groups() == []
    sink_datum = sinker.Datum(["a"], "id-1", b"x", moment, moment)
    assert (sink_datum.id, sink_datum.keys, sink_datum.value) == ("id-1", ["a"], b"x")
    with pytest.raises(TypeError):
        mapper.Datum(["a"], b"x", "not a time", moment)  # type: ignore[arg-type]


def test_user_metadata_api() -> None:
    """UserMetadata reads and writes groups and keys with 0.14.0's methods."""
    md = mapper.UserMetadata()
    md.add_key("g", "a", b"1")
    md["h"] = {"b": b"2"}
    assert ("g" in md, len(md), md.groups(), md.keys("g")) == (True, 2, ["g", "h"], ["a"])
    assert md.value("h", "b") == b"2"
    assert md.value("nope", "b") is None
    assert md.remove_key("g", "a") == b"1"
    assert "g" not in md  # its last key removed: the group goes too
    assert md.remove_group("h") == {"b": b"2"}
    md.add_key("x", "y", b"z")
    md.clear()
    assert len(md) == 0


def test_messages_and_responses() -> None:
    """Drops, the transformer's event time and 0.14.0's sink response flags."""
    assert mapper.Message.to_drop().tags == [mapper.DROP]
    moment = datetime(2021, 1, 1)
    drop = sourcetransformer.Message.to_drop(moment)
    assert (drop.event_time, drop.tags) == (moment, [sourcetransformer.DROP])
    fallback = sinker.Response.as_fallback("1")
    assert (fallback.success, fallback.fallback) == (False, True)
    on_success = sinker.Response.as_on_success("2", sinker.Message(b"v").with_keys(["k"]))
    assert on_success.on_success
    assert on_success.on_success_msg is not None
    assert on_success.on_success_msg.keys == ["k"]
    with pytest.raises(TypeError):
        mapper.Message("text")  # type: ignore[arg-type]


def test_reducer_class_form_is_checked() -> None:
    """init_args need a Reducer class; a class that is not one is refused."""

    async def handler(keys: list[str], datums: AsyncIterable[Any], md: Any) -> Any:
        return reducer.Messages()

    with pytest.raises(TypeError, match="init_args"):
        reducer.ReduceAsyncServer(handler, init_args=(1,))
    with pytest.raises(TypeError, match="not a subclass of Reducer"):
        reducer.ReduceAsyncServer(int)
    with pytest.raises(TypeError, match="mapper_instance must accept 2 positional arguments"):
        mapper.MapServer(lambda datum: None)


def test_grace_period_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS sets the default; the keyword wins."""
    monkeypatch.setenv("NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS", "12")

    def resolve(grace: float | None) -> float:
        return ServerOptions.resolve(
            sock_name=None,
            sock_path=None,
            server_info_file=None,
            max_message_size=None,
            max_threads=None,
            shutdown_grace_period=grace,
        ).shutdown_grace_period

    assert resolve(None) == 12.0
    assert resolve(3) == 3.0
    monkeypatch.setenv("NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS", "soon")
    with pytest.raises(ValueError, match="NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS"):
        resolve(None)
    monkeypatch.delenv("NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS")
    assert resolve(None) == 5.0


def test_persist_critical_error(tmp_path: Path) -> None:
    """The file the platform's UI reads; a second call writes nothing and returns an error."""
    script = (
        "import pynumaflow.errors as e, sys\n"
        f"e.ERRORS_DIR = {str(tmp_path)!r}\n"
        "assert e.persist_critical_error('', 'it broke', 'trace') is None\n"
        "again = e.persist_critical_error('X', 'm', 'd')\n"
        "assert isinstance(again, RuntimeError), again\n"
    )
    env = dict(os.environ, NUMAFLOW_UD_CONTAINER_TYPE="udf")
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    (written,) = (tmp_path / "udf").iterdir()
    assert written.name.endswith("-udf.json")
    entry = json.loads(written.read_text())
    assert entry["container"] == "udf"
    assert (entry["code"], entry["message"], entry["details"]) == (
        "Internal error",
        "it broke",
        "trace",
    )
    assert written.name == f"{entry['timestamp']}-udf.json"


@pytest.mark.anyio
async def test_iterator_helpers() -> None:
    """NonBlockingIterator and SyncIterator yield what was put until STREAM_EOF."""
    it: NonBlockingIterator[int] = NonBlockingIterator()
    for item in (1, 2, STREAM_EOF):
        await it.put(item)
    assert [x async for x in it.read_iterator()] == [1, 2]
    sync = SyncIterator()
    sync.put("a")
    sync.close()
    assert list(sync.read_iterator()) == ["a"]


def test_setup_logging(capsys: pytest.CaptureFixture[str]) -> None:
    """INFO goes to stdout, ERROR to stderr, as 0.14.0's helper does."""
    logger = pynumaflow.setup_logging("modern-test")
    logger.setLevel("INFO")
    logger.info("to out")
    logger.error("to err")
    captured = capsys.readouterr()
    assert "to out" in captured.out
    assert "to err" not in captured.out
    assert "to err" in captured.err


# --- on real sockets -------------------------------------------------------------------------


def map_request(msg_id: str, value: bytes) -> dict[str, Any]:
    return {"id": msg_id, "request": {"keys": ["k"], "value": b64(value)}}


@pytest.mark.anyio
@pytest.mark.reference
async def test_handler_error_keeps_the_server_serving(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """A failing handler fails its stream as 0.14.0 does; the next stream is served."""

    def handler(keys: list[str], datum: mapper.Datum) -> mapper.Messages:
        if datum.value == b"boom":
            raise ValueError("boom")
        return mapper.Messages(mapper.Message(datum.value))

    sock = sock_dir / "map.sock"
    server = mapper.MapServer(handler, sock_path=str(sock), server_info_file=str(sock_dir / "info"))
    async with server.running():
        failed = await reference_client.converse(
            "map", sock, [HANDSHAKE, map_request("1", b"boom")]
        )
        served = await reference_client.converse(
            "map", sock, [HANDSHAKE, map_request("2", b"fine")]
        )
    assert failed["code"] == "INTERNAL"
    assert failed["details"].startswith("UDF_EXECUTION_ERROR(udf): ValueError('boom')")
    assert served["code"] == "OK"
    assert unb64(served["responses"][1]["results"][0]["value"]) == b"fine"


@pytest.mark.anyio
@pytest.mark.reference
async def test_sync_map_server_serves_two_streams(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Two MapFn streams at once are both answered (0.14.0's sync MapServer fails the second)."""

    class Upper(mapper.Mapper):
        def handler(self, keys: list[str], datum: mapper.Datum) -> mapper.Messages:
            return mapper.Messages(mapper.Message(datum.value.upper()))

    sock = sock_dir / "map.sock"
    server = mapper.MapServer(Upper(), sock_path=str(sock), server_info_file=str(sock_dir / "i"))
    async with server.running():
        talks = await asyncio.gather(
            *(
                reference_client.converse("map", sock, [HANDSHAKE, map_request(str(i), b"x")])
                for i in range(2)
            )
        )
    assert [t["code"] for t in talks] == ["OK", "OK"]
    assert [unb64(t["responses"][1]["results"][0]["value"]) for t in talks] == [b"X", b"X"]


@pytest.mark.anyio
@pytest.mark.reference
async def test_sync_map_stream_server(reference_client: ReferenceClient, sock_dir: Path) -> None:
    """MapStreamServer (not in 0.14.0) takes a sync generator; each message as it comes."""

    def split(keys: list[str], datum: mapstreamer.Datum) -> Iterator[mapstreamer.Message]:
        for part in datum.value.split(b","):
            yield mapstreamer.Message(part, keys=keys)

    sock = sock_dir / "mapstream.sock"
    server = mapstreamer.MapStreamServer(
        split, sock_path=str(sock), server_info_file=str(sock_dir / "i")
    )
    async with server.running():
        talk = await reference_client.converse("map", sock, [HANDSHAKE, map_request("1", b"a,b")])
    assert talk["code"] == "OK"
    values = [unb64(r["results"][0]["value"]) for r in talk["responses"][1:] if "results" in r]
    assert values == [b"a", b"b"]
    assert talk["responses"][-1] == {"id": "1", "status": {"eot": True}}


@pytest.mark.anyio
@pytest.mark.reference
@pytest.mark.parametrize(
    ("role", "sock_name"),
    [("fb-udsink", "fb-sink.sock"), ("ons-udsink", "ons-sink.sock"), ("udsink", "sink.sock")],
)
async def test_sink_roles_and_serve(
    reference_client: ReferenceClient,
    sock_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    role: str,
    sock_name: str,
) -> None:
    """Each sink role binds its own socket (by default); the serve response goes out."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", role)
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(sock_dir))

    async def handler(datums: AsyncIterable[sinker.Datum]) -> sinker.Responses:
        return sinker.Responses(*[sinker.Response.as_serve(d.id, b"stored") async for d in datums])

    server = sinker.SinkAsyncServer(handler)
    requests = [HANDSHAKE, {"request": {"id": "d", "value": b64(b"v")}}, {"status": {"eot": True}}]
    async with server.running():
        assert sorted(p.name for p in sock_dir.glob("*.sock")) == [sock_name]
        talk = await reference_client.converse("sink", sock_dir / sock_name, requests)
    assert talk["code"] == "OK"
    assert talk["responses"][1]["results"] == [
        {"id": "d", "status": "SERVE", "serve_response": b64(b"stored")}
    ]


SOURCE_SCRIPT = """\
from pynumaflow.sourcer import (
    PartitionsResponse, PendingResponse, SourceAsyncServer, Sourcer, get_default_partitions,
)


class Empty(Sourcer):
    async def read_handler(self, datum, output):
        return None

    async def ack_handler(self, ack_request):
        return None

    async def nack_handler(self, nack_request):
        return None

    async def pending_handler(self):
        return PendingResponse(count=0)

    async def active_partitions_handler(self):
        return PartitionsResponse(partitions=get_default_partitions())


def stopped(loop):
    print("callback got", type(loop).__name__, flush=True)


SourceAsyncServer(Empty(), shutdown_callback=stopped).start()
"""


def test_shutdown_callback_gets_the_loop(tmp_path: Path) -> None:
    """Every modern server calls shutdown_callback(loop) after draining, as aiorun does."""
    import signal

    from procs import finish, start_script, wait_for_server_info

    proc = start_script(SOURCE_SCRIPT, tmp_path)
    wait_for_server_info(proc, tmp_path / "sourcer-server-info")
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    assert "callback got _UnixSelectorEventLoop" in output
