"""`pynumaflow run` and `call` for every kind on both protocol generations.

And what only v1 carries: headers, user metadata, the sink's other responses, the map mode.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pynumaflow._cli._served import role_for

from procs import finish, start_script, wait_for_server_info
from procs import run_cli as run
from procs import write_script as script

FUNCTIONS = """
import aiorun
from datetime import datetime, timezone
from pynumaflow.function import AsyncServer, Message, Messages, MessageT, MessageTs

def seen(datum):
    return ",".join(f"{k}={v}" for k, v in sorted(datum.headers.items())).encode()

def tag(keys, datum):
    return Messages(Message(datum.value + b"|" + seen(datum), keys=keys, tags=["map"]))

def stamp(keys, datum):
    moment = datetime(2020, 1, 2, tzinfo=timezone.utc)
    return MessageTs(MessageT(datum.value + b"|" + seen(datum), moment, keys, ["mapt"]))

async def split(keys, datum):
    for part in datum.value.split(b" "):
        yield Message(part, keys=keys, tags=["stream"])

async def join(keys, datums, md):
    values = [d.value async for d in datums]
    return Messages(Message(b"+".join(values), keys=keys, tags=["reduce"]))

aiorun.run(
    AsyncServer(
        map_handler=tag, mapt_handler=stamp, map_stream_handler=split, reduce_handler=join
    ).start()
)
"""

SINK = """
from pynumaflow.sink import Sink, Response, Responses

def answer(datum):
    value = datum.value
    if value == b"fb":
        return Response.as_fallback(datum.id)
    if value == b"sv":
        return Response.as_serve(datum.id, b"stored")
    if value == b"on":
        return Response.as_on_success(datum.id, datum.headers.get("h", "").encode(), ["k2"])
    if value == b"bad":
        return Response.as_failure(datum.id, "no")
    return Response.as_success(datum.id)

Sink(lambda datums: Responses(*map(answer, datums))).start()
"""

INPUT = "\n".join(
    json.dumps({"value": v, "keys": ["k"], "event_time": t, "id": i})
    for v, t, i in [("a b", "2024-05-06T07:00:01Z", "1"), ("c", "2024-05-06T07:00:02Z", "2")]
)
T1, T2 = "2024-05-06T07:00:01.000Z", "2024-05-06T07:00:02.000Z"
WINDOW = {"window_start": "2024-05-06T07:00:00.000Z", "window_end": "2024-05-06T07:01:00.000Z"}
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "map": [
        {"keys": ["k"], "value": "a b|", "tags": ["map"], "event_time": T1},
        {"keys": ["k"], "value": "c|", "tags": ["map"], "event_time": T2},
    ],
    "mapt": [
        {"keys": ["k"], "value": v, "tags": ["mapt"], "event_time": "2020-01-02T00:00:00.000Z"}
        for v in ("a b|", "c|")
    ],
    "map-stream": [
        {"keys": ["k"], "value": "a", "tags": ["stream"], "event_time": T1},
        {"keys": ["k"], "value": "b", "tags": ["stream"], "event_time": T1},
        {"keys": ["k"], "value": "c", "tags": ["stream"], "event_time": T2},
    ],
    "reduce": [{"keys": ["k"], "value": "a b+c", "tags": ["reduce"], **WINDOW}],
    "sink": [
        {"id": "1", "success": True, "err": None},
        {"id": "2", "success": True, "err": None},
    ],
}
_INFO = {
    "map": "mapper-server-info",
    "map-stream": "mapper-server-info",
    "mapt": "sourcetransformer-server-info",
    "reduce": "reducer-server-info",
    "sink": "sinker-server-info",
}
# Per kind: the script, its pod role, its v1 socket, its legacy socket.
SERVED = {
    "map": (FUNCTIONS, "udf", "map.sock", "function.sock"),
    "mapt": (FUNCTIONS, "transformer", "sourcetransform.sock", "function.sock"),
    "map-stream": (FUNCTIONS, "udf", "mapstream.sock", "function.sock"),
    "reduce": (FUNCTIONS, "udf", "reduce.sock", "function.sock"),
    "sink": (SINK, "udsink", "sink.sock", "udsink.sock"),
}


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
@pytest.mark.parametrize("kind", list(SERVED))
def test_run_sends_every_kind_on_both_protocols(tmp_path: Path, kind: str, protocol: str) -> None:
    source, _, v1_sock, legacy_sock = SERVED[kind]
    code, outputs, err = run(
        "run", script(tmp_path, source), "-k", kind, "--protocol", protocol, "-q", stdin=INPUT
    )
    assert code == 0, err
    assert outputs == EXPECTED[kind]
    sock = v1_sock if protocol == "v1" else legacy_sock
    assert f"udf.py ({sock}) is ready; sending the input as {kind} ({protocol} protocol" in err


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
@pytest.mark.parametrize("kind", list(SERVED))
def test_call_finds_the_protocol_from_the_socket(tmp_path: Path, kind: str, protocol: str) -> None:
    """`call --sock` on a v1 socket speaks v1 at once; on a legacy socket, legacy.

    It once waited 60 s on the legacy IsReady of map.sock. Sockets are named as the
    platform names them.
    """
    source, role, v1_sock, legacy_sock = SERVED[kind]
    mode = {"PYNUMAFLOW_MAP_MODE": "stream-map"} if kind == "map-stream" else {}
    v1 = protocol == "v1"
    proc = start_script(
        textwrap.dedent(source), tmp_path, container_type=role if v1 else None, env=mode
    )
    try:
        info = tmp_path / (_INFO[kind] if v1 else "server-info")
        wait_for_server_info(proc, info)
        started = time.monotonic()
        args = ["call", "--sock", str(tmp_path / (v1_sock if v1 else legacy_sock))]
        code, outputs, err = run(*args, *([] if v1 else ["-k", kind]), stdin=INPUT)
        assert code == 0, err
        assert outputs == EXPECTED[kind]
        assert f"sending the input as {kind} ({protocol} protocol" in err
        assert time.monotonic() - started < 10
    finally:
        proc.terminate()
        finish(proc)


def test_call_with_the_wrong_protocol_for_the_socket_name_says_so(tmp_path: Path) -> None:
    (tmp_path / "map.sock").touch()
    code, _, err = run("call", "--sock", str(tmp_path / "map.sock"), "--protocol", "legacy")
    assert code == 2
    assert "map.sock is a Numaflow >= 1.4 socket (map.v1.Map): --protocol legacy" in err
    code, _, err = run("call", "--sock", str(tmp_path / "map.sock"), "--kind", "reduce")
    assert code == 2
    assert "--kind reduce given, but map.sock is the socket of map" in err


HEADERS = json.dumps(
    {
        "value": "a b",
        "keys": ["k"],
        "event_time": "2024-05-06T07:00:01Z",
        "headers": {"h": "1", "trace": "t-9"},
        "user_metadata": {"grp": {"who": "me"}},
    }
)


@pytest.mark.parametrize("kind", ["map", "mapt"])
def test_v1_headers_and_user_metadata_go_in_and_come_out(tmp_path: Path, kind: str) -> None:
    """The handler sees the headers; outputs carry them and the user metadata.

    The headers are the parent's, as on the platform; the user metadata is echoed.
    """
    code, outputs, err = run("run", script(tmp_path, FUNCTIONS), "-k", kind, "-q", stdin=HEADERS)
    assert code == 0, err
    assert outputs[0]["value"] == "a b|h=1,trace=t-9"
    assert outputs[0]["headers"] == {"h": "1", "trace": "t-9"}
    assert outputs[0]["user_metadata"] == {"grp": {"who": "me"}}


def test_v1_map_stream_outputs_carry_headers_and_metadata(tmp_path: Path) -> None:
    code, outputs, err = run(
        "run", script(tmp_path, FUNCTIONS), "-k", "map-stream", "-q", stdin=HEADERS
    )
    assert code == 0, err
    assert [o["value"] for o in outputs] == ["a", "b"]
    assert all(o["user_metadata"] == {"grp": {"who": "me"}} for o in outputs)
    assert all(o["headers"] == {"h": "1", "trace": "t-9"} for o in outputs)


def test_legacy_says_it_drops_headers(tmp_path: Path) -> None:
    code, outputs, err = run(
        "run", script(tmp_path, FUNCTIONS), "-k", "map", "--protocol", "legacy", "-q", stdin=HEADERS
    )
    assert code == 0, err
    assert outputs[0]["value"] == "a b|"
    assert "headers" not in outputs[0]
    assert "the legacy protocol (Numaflow 0.8-0.9) has no headers nor user metadata" in err


def test_v1_sink_shows_fallback_serve_and_on_success(tmp_path: Path) -> None:
    lines = [
        {"value": "ok", "id": "1"},
        {"value": "fb", "id": "2"},
        {"value": "sv", "id": "3"},
        {"value": "on", "id": "4", "headers": {"h": "new"}, "user_metadata": {"g": {"a": "b"}}},
        {"value": "bad", "id": "5"},
    ]
    stdin = "\n".join(json.dumps(line) for line in lines)
    code, outputs, err = run("run", script(tmp_path, SINK), "-q", stdin=stdin)
    assert code == 0, err
    assert outputs == [
        {"id": "1", "success": True, "err": None},
        {"id": "2", "success": False, "err": None, "status": "fallback"},
        {"id": "3", "success": True, "err": None, "status": "serve", "serve_response": "stored"},
        {
            "id": "4",
            "success": True,
            "err": None,
            "status": "on_success",
            "on_success_msg": {"keys": ["k2"], "value": "new", "user_metadata": {"g": {"a": "b"}}},
        },
        {"id": "5", "success": False, "err": "no"},
    ]
    assert "the sink answered 1 of 5 datums as failed" in err
    assert "udf.py (sink.sock) is ready; sending the input as sink (v1 protocol" in err


def test_v1_run_picks_the_map_mode_of_the_kind_asked_for(tmp_path: Path) -> None:
    """A server given both map handlers announces one MAP_MODE: run asks for the kind's."""
    udf = script(tmp_path, FUNCTIONS)
    code, outputs, err = run("run", udf, "-k", "map-stream", stdin="x y")
    assert code == 0, err
    assert [o["value"] for o in outputs] == ["x", "y"]
    assert (
        "(mapstream.sock) is ready; sending the input as map-stream "
        "(v1 protocol, Numaflow >= 1.4, MAP_MODE=stream-map)"
    ) in err


@pytest.mark.parametrize(
    ("source", "role"),
    [
        ("from pynumaflow.mapper import MapServer\nMapServer(h).start()", "udf"),
        ("from pynumaflow.reducer import ReduceAsyncServer\nReduceAsyncServer(R).start()", "udf"),
        ("from pynumaflow.sinker import SinkServer\nSinkServer(h).start()", "udsink"),
        ("from pynumaflow.sink import Sink\nSink(h).start()", "udsink"),
        (
            "from pynumaflow.sourcetransformer import SourceTransformServer\n"
            "SourceTransformServer(h).start()",
            "transformer",
        ),
        ("from pynumaflow.function import Server\nServer(mapt_handler=h).start()", "transformer"),
        ("Server(map_handler=m, mapt_handler=t).start()", "udf"),
        ("from pynumaflow.sideinput import SideInputWatcher\nServer(map_handler=m)", "udf"),
        ("from pynumaflow.sideinput import SideInputServer\nSideInputServer(r).start()", "udsi"),
        (
            "from pynumaflow.sourcer import SourceAsyncServer\nSourceAsyncServer(s).start()",
            "udsource",
        ),
    ],
)
def test_run_reads_the_pod_role_from_the_script(source: str, role: str) -> None:
    """Without --kind, the container type comes from the server the script builds."""
    assert role_for(None, source) == role


def test_call_on_a_socket_of_another_name_reads_the_files_beside_it(tmp_path: Path) -> None:
    """A legacy socket named by sock_path= is told by the legacy server-info beside it."""
    source = (
        "from pynumaflow.function import Server, Message, Messages\n"
        f"Server(map_handler=lambda k, d: Messages(Message(d.value)), "
        f"sock_path={str(tmp_path / 'mine.sock')!r}).start()\n"
    )
    proc = start_script(source, tmp_path)
    try:
        wait_for_server_info(proc, tmp_path / "server-info")
        code, outputs, err = run("call", "--sock", str(tmp_path / "mine.sock"), stdin="x")
        assert code == 0, err
        assert outputs[0]["value"] == "x"
        assert "(mine.sock) is ready; sending the input as map (legacy protocol" in err
        code, outputs, err = run("call", "--sock", str(tmp_path / "map.sock"), stdin="y")
        assert code == 0, err
        assert "(map.sock) is ready; sending the input as map (v1 protocol" in err
    finally:
        proc.terminate()
        finish(proc)


MULTIPROC = """
import os
from pynumaflow.function import Message, Messages, MultiProcServer

def pid(keys, datum):
    return Messages(Message(str(os.getpid()).encode(), keys=keys))

if __name__ == "__main__":
    MultiProcServer(map_handler=pid).start()
"""


def test_run_drives_a_multiprocess_server_on_v1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pynumaflow run` drives a MultiProcServer on v1: one stream, both workers answer."""
    monkeypatch.setenv("NUM_CPU_MULTIPROC", "2")
    lines = "\n".join(json.dumps({"value": str(i), "keys": ["k"]}) for i in range(40))
    code, outputs, err = run("run", script(tmp_path, MULTIPROC), "-q", stdin=lines)
    assert code == 0, err
    assert len(outputs) == 40
    assert len({out["value"] for out in outputs}) == 2  # two worker pids
    assert "(v1 protocol" in err


MODERN_MULTIPROC = """
import os
from pynumaflow.mapper import MapMultiprocServer, Message, Messages
from pynumaflow.sourcetransformer import SourceTransformMultiProcServer
from pynumaflow import sourcetransformer

def pid(keys, datum):
    return Messages(Message(str(os.getpid()).encode(), keys=keys))

def pid_t(keys, datum):
    value = str(os.getpid()).encode()
    return sourcetransformer.Messages(sourcetransformer.Message(value, datum.event_time))

if __name__ == "__main__":
    if os.environ["NUMAFLOW_UD_CONTAINER_TYPE"] == "transformer":
        SourceTransformMultiProcServer(pid_t, server_count=2).start()
    else:
        MapMultiprocServer(pid, server_count=2).start()
"""


@pytest.mark.parametrize("kind", ["map", "mapt"])
def test_run_drives_the_modern_multiprocess_servers(tmp_path: Path, kind: str) -> None:
    """MapMultiprocServer and SourceTransformMultiProcServer: one stream, both workers."""
    lines = "\n".join(json.dumps({"value": str(i), "keys": ["k"]}) for i in range(40))
    path = script(tmp_path, MODERN_MULTIPROC)
    code, outputs, err = run("run", path, "--kind", kind, "-q", stdin=lines)
    assert code == 0, err
    assert len(outputs) == 40
    assert len({out["value"] for out in outputs}) == 2  # two worker pids
    assert f"sending the input as {kind} (v1 protocol" in err
    assert "exited with code 0" in err
