"""Servers run as the platform runs UD containers: sibling processes sharing one folder.

Each process gets its role in $NUMAFLOW_UD_CONTAINER_TYPE (unset: Numaflow 0.8-0.9 or a
local run), as the containers of one pod share /var/run/numaflow. The v1 endpoints are
driven by the pynumaflow 0.14.0 wheel's stubs (tests/reference_client.py), the legacy
ones by grpcio stubs generated from our protos.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow import __version__

from conftest import ROOT
from helpers import datum_request
from procs import END, finish, start_script, wait_for_server_info
from reference_client import ReferenceClient, b64

ROLE = "NUMAFLOW_UD_CONTAINER_TYPE"
HANDSHAKE = {"handshake": {"sot": True}}
EOT = {"status": {"eot": True}}
SINK_SOURCE = textwrap.dedent(
    """
    from pynumaflow.sink import Response, Responses, Sink

    def handler(datums):
        return Responses(*(Response.as_success(d.id) for d in datums))

    if __name__ == "__main__":
        Sink(handler{args}).start()
    """
)
MAP_SOURCE = textwrap.dedent(
    """
    from pynumaflow.function import Message, Messages, Server

    def echo(keys, datum):
        return Messages(Message(datum.value, keys=keys))

    async def split(keys, datum):
        for part in datum.value.split(b","):
            yield Message(part, keys=keys)

    if __name__ == "__main__":
        Server({handlers}).start()
    """
)


def files(folder: Path) -> set[str]:
    """What a server left in the folder: sockets and server-info files (not the scripts)."""
    return {p.name for p in folder.iterdir() if p.suffix != ".py" and not p.name.startswith(".")}


def read_info(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith(END)
    return json.loads(text[: -len(END)])  # type: ignore[no-any-return]


def stop_all(procs: list[subprocess.Popen[str]]) -> list[str]:
    """SIGTERM every process, as Kubernetes does; each must exit 0. Returns their outputs."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    outputs = []
    for proc in procs:
        code, output = finish(proc)
        assert code == 0, output
        outputs.append(output)
    return outputs


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """The processes a test starts; any still running at the end are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def sink_datum(msg_id: str, value: bytes) -> dict[str, Any]:
    return {"request": {"id": msg_id, "value": b64(value)}}


def map_datum(msg_id: str, value: bytes) -> dict[str, Any]:
    return {"id": msg_id, "request": {"keys": ["k"], "value": b64(value)}}


@pytest.mark.reference
def test_sink_pod_primary_fallback_and_on_success_share_the_folder(
    tmp_path: Path, pod: list[subprocess.Popen[str]], reference_client: ReferenceClient
) -> None:
    """Item 1: one image as udsink, fb-udsink and ons-udsink; each binds only its socket."""
    source = (ROOT / "examples" / "sink" / "fallback" / "example.py").read_text("utf-8")
    roles = {"udsink": "sink", "fb-udsink": "fb-sink", "ons-udsink": "ons-sink"}
    for role in roles:
        pod.append(start_script(source, tmp_path, f"{role}.py", container_type=role))
    for proc, name in zip(pod, roles.values(), strict=True):
        info = wait_for_server_info(proc, tmp_path / f"{name}er-server-info")
        assert info["minimum_numaflow_version"] == "1.4.0-z"
    assert files(tmp_path) == {
        f"{name}{suffix}" for name in roles.values() for suffix in (".sock", "er-server-info")
    }
    primary = reference_client.converse_blocking(
        "sink",
        tmp_path / "sink.sock",
        [HANDSHAKE, sink_datum("a", b'{"n": 1}'), sink_datum("b", b"oops"), EOT],
    )
    fallback = reference_client.converse_blocking(
        "sink", tmp_path / "fb-sink.sock", [HANDSHAKE, sink_datum("b", b"oops"), EOT]
    )
    on_success = reference_client.converse_blocking("sink", tmp_path / "ons-sink.sock", [HANDSHAKE])
    outputs = stop_all(pod)
    assert primary["responses"][1] == {"results": [{"id": "a"}, {"id": "b", "status": "FALLBACK"}]}
    assert fallback["responses"][1] == {"results": [{"id": "b"}]}
    assert (primary["code"], fallback["code"], on_success["ready"]) == ("OK", "OK", True)
    assert "dead letter b'oops'" in outputs[1]
    assert files(tmp_path) == set()


def test_legacy_paths_named_like_v1_files_win(
    tmp_path: Path, pod: list[subprocess.Popen[str]], stubs: dict[str, ModuleType]
) -> None:
    """Item 2: a 0.4 sock_path or server_info_file named like a v1 file is honoured."""
    sink_dir, map_dir = tmp_path / "sink", tmp_path / "map"
    sink_dir.mkdir()
    map_dir.mkdir()
    args = f", sock_path={str(sink_dir / 'sink.sock')!r}"
    pod.append(start_script(SINK_SOURCE.format(args=args), sink_dir))
    handlers = f"map_handler=echo, server_info_file={str(map_dir / 'mapper-server-info')!r}"
    pod.append(start_script(MAP_SOURCE.format(handlers=handlers), map_dir))
    sink_info = wait_for_server_info(pod[0], sink_dir / "server-info")
    map_info = wait_for_server_info(pod[1], map_dir / "mapper-server-info")
    # The legacy handshake, not a v1 one: the v1 endpoint that would collide is skipped.
    assert "minimum_numaflow_version" not in sink_info
    assert map_info["metadata"] == {}
    assert "minimum_numaflow_version" not in map_info
    assert files(sink_dir) == {"sink.sock", "server-info"}
    assert files(map_dir) == {"function.sock", "mapper-server-info"}
    with grpc.insecure_channel(f"unix://{sink_dir / 'sink.sock'}") as channel:
        sink_stub = stubs["sink_grpc"].UserDefinedSinkStub(channel)
        request = stubs["sink_pb2"].DatumRequest(id="x", value=b"v")
        sink_reply = sink_stub.SinkFn(iter([request]))
    with grpc.insecure_channel(f"unix://{map_dir / 'function.sock'}") as channel:
        fn_stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        map_reply = fn_stub.MapFn(datum_request(stubs["fn_pb2"], b"hi", keys=["k"]))
    sink_out, map_out = stop_all(pod)
    assert [(r.id, r.success) for r in sink_reply.responses] == [("x", True)]
    assert [e.value for e in map_reply.elements] == [b"hi"]
    assert "not serving the v1 sink (Numaflow >= 1.4)" in sink_out
    assert f"{sink_dir / 'sink.sock'} is where the legacy protocol" in sink_out
    assert "not serving the v1 map (Numaflow >= 1.4)" in map_out


@pytest.mark.reference
def test_map_and_map_stream_together(
    tmp_path: Path,
    pod: list[subprocess.Popen[str]],
    stubs: dict[str, ModuleType],
    reference_client: ReferenceClient,
) -> None:
    """Item 3: both on function.sock; v1 announces one MAP_MODE, chosen by the variable."""
    local, stream_pod = tmp_path / "local", tmp_path / "pod"
    local.mkdir()
    stream_pod.mkdir()
    source = MAP_SOURCE.format(handlers="map_handler=echo, map_stream_handler=split")
    pod.append(start_script(source, local))
    pod.append(
        start_script(
            source, stream_pod, container_type="udf", env={"PYNUMAFLOW_MAP_MODE": "stream-map"}
        )
    )
    wait_for_server_info(pod[0], local / "server-info")
    unary_info = wait_for_server_info(pod[0], local / "mapper-server-info")
    stream_info = wait_for_server_info(pod[1], stream_pod / "mapper-server-info")
    assert unary_info["metadata"] == {"MAP_MODE": "unary-map"}
    assert stream_info["metadata"] == {"MAP_MODE": "stream-map"}
    assert files(stream_pod) == {"mapstream.sock", "mapper-server-info"}
    assert "mapstream.sock" not in files(local)
    pb2 = stubs["fn_pb2"]
    with grpc.insecure_channel(f"unix://{local / 'function.sock'}") as channel:
        fn_stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        unary = fn_stub.MapFn(datum_request(pb2, b"a,b", keys=["k"]))
        streamed = list(fn_stub.MapStreamFn(datum_request(pb2, b"a,b", keys=["k"])))
    v1_unary = reference_client.converse_blocking(
        "map", local / "map.sock", [HANDSHAKE, map_datum("1", b"a,b")]
    )
    v1_stream = reference_client.converse_blocking(
        "map", stream_pod / "mapstream.sock", [HANDSHAKE, map_datum("1", b"a,b")]
    )
    local_out, pod_out = stop_all(pod)
    assert [e.value for e in unary.elements] == [b"a,b"]
    assert [reply.value for reply in streamed] == [b"a", b"b"]
    assert [r["results"][0]["value"] for r in v1_unary["responses"][1:]] == [b64(b"a,b")]
    values = [r["results"][0]["value"] for r in v1_stream["responses"][1:] if r.get("results")]
    assert values == [b64(b"a"), b64(b"b")]
    assert "gets map_handler only, as MAP_MODE=unary-map" in local_out
    assert "map_mode='stream-map' or set PYNUMAFLOW_MAP_MODE=stream-map" in local_out
    assert "gets map_stream_handler only, as MAP_MODE=stream-map" in pod_out


@pytest.mark.reference
def test_start_and_stop_lines_and_debug(
    tmp_path: Path, pod: list[subprocess.Popen[str]], reference_client: ReferenceClient
) -> None:
    """Item 4: one line per endpoint at start and one at stop, by default; PYTHONDEBUG works.

    A logging set-up of the application's own is kept: its format, once, and its level.
    """
    plain, configured, quiet = (tmp_path / name for name in ("plain", "configured", "quiet"))
    debug = tmp_path / "debug"
    for folder in (plain, configured, quiet, debug):
        folder.mkdir()
    source = SINK_SOURCE.format(args="")
    own_format = "import logging\nlogging.basicConfig(format='APP %(message)s', level={})\n"
    env = {"MAX_THREADS": "3", "PYTHONDEBUG": ""}
    pod.append(start_script(source, plain, env=env))
    pod.append(start_script(own_format.format("logging.INFO") + source, configured, env=env))
    pod.append(start_script(own_format.format("logging.WARNING") + source, quiet, env=env))
    pod.append(start_script(source, debug, container_type="udsink", env={"PYTHONDEBUG": "1"}))
    for proc, folder in zip(pod[:3], (plain, configured, quiet), strict=True):
        wait_for_server_info(proc, folder / "server-info")
    wait_for_server_info(pod[3], debug / "sinker-server-info")
    reference_client.converse_blocking("sink", debug / "sink.sock", [HANDSHAKE, EOT])
    plain_out, configured_out, quiet_out, debug_out = stop_all(pod)
    starting = f"pynumaflow {__version__} starting Sink: NUMAFLOW_UD_CONTAINER_TYPE unset"
    legacy = (
        f"serving legacy (Numaflow 0.8-0.9): sink.v1.UserDefinedSink on {plain / 'udsink.sock'}"
        f", server-info {plain / 'server-info'}"
    )
    v1 = f"serving v1 (Numaflow >= 1.4) sink: sink.v1.Sink on {plain / 'sink.sock'}"
    stopped = "stopped: 0 call(s) in flight at the stop"
    for line in (starting, "sync handlers on up to 3 threads", legacy, v1, stopped):
        assert line in plain_out
    assert plain_out.count(stopped) == 1
    assert configured_out.count(f"APP pynumaflow {__version__} starting Sink") == 1
    assert configured_out.count(stopped) == 1
    assert "INFO pynumaflow" not in configured_out  # the application's format only
    assert "starting" not in quiet_out  # the application asked for warnings only
    assert "sink.v1 Sink (udsink): stream opened" in debug_out
    assert "sink.v1 Sink (udsink): stream opened" not in plain_out


def test_two_servers_in_one_folder_keep_their_server_info(
    tmp_path: Path, pod: list[subprocess.Popen[str]], stubs: dict[str, ModuleType]
) -> None:
    """Item 5: a second server cannot take over the first's server-info; it says why."""
    pod.append(start_script(MAP_SOURCE.format(handlers="map_handler=echo"), tmp_path, "a.py"))
    first = wait_for_server_info(pod[0], tmp_path / "server-info")
    before = (tmp_path / "server-info").read_text(encoding="utf-8")
    second = start_script(SINK_SOURCE.format(args=""), tmp_path, "b.py")
    code, output = finish(second)
    assert code != 0
    assert f"another server running in {tmp_path} announces itself in" in output
    assert "give each server its own server_info_file" in output
    assert (tmp_path / "server-info").read_text(encoding="utf-8") == before
    assert first["protocol"] == "uds"
    assert not {"udsink.sock", "sink.sock", "sinker-server-info"} & files(tmp_path)
    with grpc.insecure_channel(f"unix://{tmp_path / 'function.sock'}") as channel:
        stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
        reply = stub.MapFn(datum_request(stubs["fn_pb2"], b"still here"))
    stop_all(pod)
    assert [e.value for e in reply.elements] == [b"still here"]


def test_permission_denied_names_the_fix(tmp_path: Path) -> None:
    """Item 5: a folder the process may not write: the error says what fixes it.

    The tests run as root, whom file modes do not stop; /sys refuses even root (EPERM),
    as /var/run/numaflow refuses a container's non-root user (EACCES).
    """
    forbidden = Path("/sys/pynumaflow-test")
    try:
        forbidden.mkdir()
    except PermissionError:
        pass
    else:  # pragma: no cover - a machine without a read-only /sys
        forbidden.rmdir()
        pytest.skip("/sys is writable here")
    script = tmp_path / "udf.py"
    script.write_text(SINK_SOURCE.format(args=""), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != ROLE}
    env["PYNUMAFLOW_RUN_DIR"] = str(forbidden)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"cannot create the socket directory {forbidden}: Operation not permitted" in (
        done.stderr
    )
    assert "set $PYNUMAFLOW_RUN_DIR to a folder you can write" in done.stderr
