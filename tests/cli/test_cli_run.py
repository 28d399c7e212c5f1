"""`pynumaflow run` and `pynumaflow call`: scripts started like the platform starts them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import ROOT
from procs import run_cli as run
from procs import start_script, wait_for_server_info
from procs import write_script as script

MAP_SCRIPT = """
import os, time
from pynumaflow.function import Server, Message, Messages, MessageT, MessageTs
from datetime import datetime, timezone

def echo(keys, datum):
    if datum.value == b"boom":
        raise RuntimeError("bad value")
    if datum.value == b"hang":
        time.sleep(30)
    if datum.value == b"die":
        os._exit(3)
    return Messages(Message(datum.value, keys=keys, tags=["seen"]))

def stamp(keys, datum):
    return MessageTs(MessageT(datum.value, datetime(2020, 1, 2, tzinfo=timezone.utc), keys))

Server(map_handler=echo, mapt_handler=stamp).start()
"""

SINK_SCRIPT = """
from pynumaflow.sink import Sink, Response, Responses

def batches(datums):
    datums = list(datums)
    return Responses(*(Response.as_failure(d.id, f"batch of {len(datums)}") for d in datums))

Sink(batches).start()
"""

REDUCE_SCRIPT = """
import aiorun
from pynumaflow.function import AsyncServer, Message, Messages

async def join(keys, datums, md):
    values = [d.value async for d in datums]
    return Messages(Message(b"+".join(values), keys))

aiorun.run(AsyncServer(reduce_handler=join).start())
"""


PROTOCOLS = ["v1", "legacy"]
MAP_SOCK = {"v1": "map.sock", "legacy": "function.sock"}
SINK_SOCK = {"v1": "sink.sock", "legacy": "udsink.sock"}
GENERATION = {"v1": "v1 protocol, Numaflow >= 1.4", "legacy": "legacy protocol, Numaflow 0.8-0.9"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_prints_each_message_and_stops_the_script(tmp_path: Path, protocol: str) -> None:
    """Envelopes and text lines go through MapFn; outputs are JSON lines; SIGTERM ends it."""
    udf = script(tmp_path, MAP_SCRIPT)
    lines = [
        '{"value": "a", "keys": ["k"], "event_time": "2024-05-06T07:08:09Z"}',
        '{"value_b64": "/w==", "event_time": 1714979289000}',
        "plain",
    ]
    code, outputs, err = run(
        "run", udf, "--kind", "map", "--protocol", protocol, stdin="\n".join(lines)
    )
    assert code == 0, err
    assert outputs[:2] == [
        {"keys": ["k"], "value": "a", "tags": ["seen"], "event_time": "2024-05-06T07:08:09.000Z"},
        {
            "keys": [],
            "value_b64": "/w==",
            "tags": ["seen"],
            "event_time": "2024-05-06T07:08:09.000Z",
        },
    ]
    assert outputs[2]["value"] == "plain"
    assert (
        f"udf.py ({MAP_SOCK[protocol]}) is ready; sending the input as map ({GENERATION[protocol]}"
    ) in err
    assert "stopped udf.py with SIGTERM; it exited with code 0" in err


def test_several_kinds_pick_map_and_say_so(tmp_path: Path) -> None:
    """Legacy: with map and mapt served and no --kind, map is used and stderr says why."""
    code, outputs, err = run("run", script(tmp_path, MAP_SCRIPT), "--protocol", "legacy", stdin="x")
    assert code == 0, err
    assert outputs[0]["tags"] == ["seen"]
    assert "serves map, mapt; using map (choose with --kind)" in err


def test_a_04_script_runs_on_v1_by_default_as_a_udf_pod(tmp_path: Path) -> None:
    """No --protocol, no --kind: v1, as a pod of container type udf (map.sock) runs it."""
    code, outputs, err = run("run", script(tmp_path, MAP_SCRIPT), stdin="x")
    assert code == 0, err
    assert outputs[0]["tags"] == ["seen"]
    assert "NUMAFLOW_UD_CONTAINER_TYPE=udf, serving its role only" in err
    assert "udf.py (map.sock) is ready; sending the input as map (v1 protocol" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kind_mapt_prints_the_assigned_event_time(tmp_path: Path, protocol: str) -> None:
    """--kind mapt calls MapTFn (v1: SourceTransformFn) and prints the handler's event time."""
    code, outputs, err = run(
        "run", script(tmp_path, MAP_SCRIPT), "--kind", "mapt", "--protocol", protocol, stdin="x"
    )
    assert code == 0, err
    assert outputs == [
        {"keys": [], "value": "x", "tags": [], "event_time": "2020-01-02T00:00:00.000Z"}
    ]


@pytest.mark.parametrize(("protocol", "served"), [("v1", "map"), ("legacy", "map, mapt")])
def test_a_kind_the_script_does_not_serve_is_a_usage_error(
    tmp_path: Path, protocol: str, served: str
) -> None:
    """--kind reduce against a map script names what it does serve; exit code 2."""
    code, outputs, err = run(
        "run", script(tmp_path, MAP_SCRIPT), "-k", "reduce", "--protocol", protocol, stdin="x"
    )
    assert (code, outputs) == (2, [])
    assert f"--kind reduce given, but the server serves: {served}" in err
    assert "stopped udf.py with SIGTERM" in err


def test_a_failing_v1_call_shows_the_udf_error_and_its_traceback(tmp_path: Path) -> None:
    """v1: INTERNAL UDF_EXECUTION_ERROR(udf) and the handler's traceback (DebugInfo)."""
    udf = script(tmp_path, MAP_SCRIPT)
    code, outputs, err = run("run", udf, "-q", "--concurrency", "1", stdin="a\nboom\nb\n")
    assert code == 1
    assert [o["value"] for o in outputs] == ["a", "b"]
    assert "line 2 failed: INTERNAL: UDF_EXECUTION_ERROR(udf): RuntimeError('bad value')" in err
    assert "the handler's traceback, from the server:\n  Traceback (most recent call last):" in err
    assert 'udf.py", line 8, in echo\n      raise RuntimeError("bad value")' in err
    assert "1 call(s) failed" in err


def test_a_failing_call_is_reported_and_the_rest_go_on(tmp_path: Path) -> None:
    """A handler error is shown with its line and status; other lines print; exit 1."""
    udf = script(tmp_path, MAP_SCRIPT)
    code, outputs, err = run(
        "run", udf, "-k", "map", "-q", "--protocol", "legacy", stdin="a\nboom\nb\n"
    )
    assert code == 1
    assert [o["value"] for o in outputs] == ["a", "b"]
    assert "line 2 failed: UNKNOWN: RuntimeError: bad value" in err
    assert "1 call(s) failed" in err


def test_a_script_that_crashes_at_start_fails_fast(tmp_path: Path) -> None:
    """A script that exits before it is ready ends the command at once, with its output."""
    udf = script(tmp_path, "raise SystemExit('missing config')\n")
    started = time.monotonic()
    code, _, err = run("run", udf, "-q", "--start-timeout", "20", stdin="x")
    assert code == 1
    assert time.monotonic() - started < 10
    assert "udf.py exited with code 1 before it was ready; its last output:\nmissing config" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_run_ignores_a_container_type_in_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """A NUMAFLOW_UD_CONTAINER_TYPE left in the shell is replaced.

    It does not turn off the legacy socket, nor on v1 give the wrong role.
    """
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udsink")
    code, outputs, err = run(
        "run", script(tmp_path, MAP_SCRIPT), "-k", "map", "-q", "--protocol", protocol, stdin="a\n"
    )
    assert code == 0, err
    assert [o["value"] for o in outputs] == ["a"]


def test_a_script_that_forgets_start_is_told_so(tmp_path: Path) -> None:
    """A script that builds its server but never starts it: the message says start()."""
    udf = script(
        tmp_path,
        "from pynumaflow.sink import Responses, Sink\nserver = Sink(lambda datums: Responses())\n",
    )
    code, _, err = run("run", udf, "-q", stdin="x")
    assert code == 1
    assert "udf.py exited with code 0 before it was ready without starting a server" in err
    assert "does it call start()?" in err


def test_a_script_that_never_serves_times_out(tmp_path: Path) -> None:
    """No server-info within --start-timeout: a clear message, exit 1, the script is stopped."""
    udf = script(tmp_path, "import time\ntime.sleep(60)\n")
    started = time.monotonic()
    code, _, err = run("run", udf, "--start-timeout", "1", stdin="x")
    assert code == 1
    assert time.monotonic() - started < 10  # generous: CI machines may be busy
    assert "udf.py wrote no server-info in time" in err
    assert "Does it start a server?" in err


def test_a_script_with_its_own_socket_path_is_explained(tmp_path: Path) -> None:
    """A sock_path= outside the run folder is named as the reason."""
    sock = tmp_path / "elsewhere.sock"
    udf = script(
        tmp_path,
        "from pynumaflow.function import Server, Messages\n"
        f"Server(map_handler=lambda k, d: Messages(), sock_path={str(sock)!r}).start()\n",
    )
    for protocol, missing in (("v1", "created no map.sock"), ("legacy", "function.sock nor")):
        started = time.monotonic()
        code, _, err = run(
            "run", udf, "--start-timeout", "20", "--protocol", protocol, "-q", stdin="x"
        )
        assert code == 1
        assert time.monotonic() - started < 15  # said as soon as the server-info is there
        assert missing in err
        assert "drop it so that PYNUMAFLOW_RUN_DIR applies" in err


def test_a_script_serving_only_the_v1_protocols_is_explained(tmp_path: Path) -> None:
    """--protocol legacy: a v1-only script is named as such, quickly."""
    udf = script(
        tmp_path,
        "from pynumaflow.function import Server, Messages\n"
        "Server(map_handler=lambda k, d: Messages(), protocols=['v1']).start()\n",
    )
    code, _, err = run("run", udf, "--protocol", "legacy", stdin="x")
    assert code == 1
    assert "udf.py serves only the Numaflow >= 1.4 protocols (it wrote mapper-server-info)" in err
    assert "drop --protocol (v1 is the default)" in err


LEGACY_ONLY = (
    "from pynumaflow.function import Server, Message, Messages\n"
    "Server(map_handler=lambda k, d: Messages(Message(d.value)), protocols=['legacy']).start()\n"
)


def test_a_script_serving_only_legacy_is_called_on_legacy_by_default(tmp_path: Path) -> None:
    """No --protocol: a script that serves only the 0.8-0.9 protocols is called there."""
    code, outputs, err = run("run", script(tmp_path, LEGACY_ONLY), stdin="x")
    assert code == 0, err
    assert outputs[0]["value"] == "x"
    assert "udf.py serves only the legacy protocol, Numaflow 0.8-0.9: using it" in err


def test_a_script_serving_only_legacy_is_explained_on_protocol_v1(tmp_path: Path) -> None:
    code, _, err = run("run", script(tmp_path, LEGACY_ONLY), "--protocol", "v1", stdin="x")
    assert code == 1
    assert "udf.py serves only the Numaflow 0.8-0.9 protocols (it wrote server-info only)" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_handler_ends_the_run_within_the_timeout(tmp_path: Path, protocol: str) -> None:
    """A call without an answer in --timeout ends the run; the stuck script still exits.

    Its pool thread is abandoned (named in the log), not joined: the process ends on
    SIGTERM although the handler sleeps on.
    """
    udf = script(tmp_path, MAP_SCRIPT)
    started = time.monotonic()
    code, outputs, err = run(
        "run",
        udf,
        "-k",
        "map",
        "--timeout",
        "1",
        "--concurrency",
        "1",
        "--protocol",
        protocol,
        stdin="a\nhang\nb\n",
    )
    assert code == 1
    assert time.monotonic() - started < 15  # the handler would hang for 30 s
    assert [o["value"] for o in outputs] == ["a"]
    assert "error: line 2: DEADLINE_EXCEEDED" in err
    assert "abandoning 1 handler thread(s) still running: pynumaflow-handler_0" in err
    assert "stopped udf.py with SIGTERM; it exited with code 0" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_script_that_dies_mid_call_is_named(tmp_path: Path, protocol: str) -> None:
    """The connection drops because the script exited: that is what the error says."""
    udf = script(tmp_path, MAP_SCRIPT)
    code, _, err = run(
        "run", udf, "-k", "map", "--concurrency", "1", "--protocol", protocol, stdin="a\ndie\nb\n"
    )
    assert code == 1
    assert "error: udf.py exited with code 3 while handling line 2" in err


def test_a_script_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    """Not exiting after SIGTERM within --timeout is reported and fails the run."""
    udf = script(
        tmp_path,
        """
        import asyncio, signal
        from pynumaflow.function import AsyncServer, Messages

        async def main():
            async with AsyncServer(map_handler=lambda k, d: Messages()).running():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                await asyncio.sleep(60)

        asyncio.run(main())
        """,
    )
    code, _, err = run("run", udf, "--timeout", "1", stdin="x")
    assert code == 1
    assert "did not exit within 1 s of SIGTERM; killed it" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sink_sends_batches_and_prints_each_response(tmp_path: Path, protocol: str) -> None:
    """Sink scripts are found by their socket; --batch-size splits the SinkFn calls."""
    udf = script(tmp_path, SINK_SCRIPT)
    lines = '{"value": "a", "id": "x"}\nb\nc\n'
    code, outputs, err = run("run", udf, "--batch-size", "2", "--protocol", protocol, stdin=lines)
    assert code == 0, err
    assert outputs == [
        {"id": "x", "success": False, "err": "batch of 2"},
        {"id": "2", "success": False, "err": "batch of 2"},
        {"id": "3", "success": False, "err": "batch of 1"},
    ]
    assert f"udf.py ({SINK_SOCK[protocol]}) is ready; sending the input as sink" in err
    assert "the sink answered 3 of 3 datums as failed" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reduce_groups_inputs_into_fixed_windows(tmp_path: Path, protocol: str) -> None:
    """--window groups by event time; each window is one ReduceFn stream with its bounds."""
    udf = script(tmp_path, REDUCE_SCRIPT)
    lines = "\n".join(
        json.dumps({"value": v, "keys": k, "event_time": t})
        for v, k, t in [
            ("a", ["x"], "2024-05-06T07:00:01Z"),
            ("b", ["y"], "2024-05-06T07:00:09.999Z"),
            ("c", ["x"], "2024-05-06T07:00:10Z"),
            ("d", ["x"], "2024-05-06T07:00:05Z"),
        ]
    )
    code, outputs, err = run("run", udf, "--window", "10s", "--protocol", protocol, stdin=lines)
    assert code == 0, err
    first = "2024-05-06T07:00:00.000Z", "2024-05-06T07:00:10.000Z"
    second = "2024-05-06T07:00:10.000Z", "2024-05-06T07:00:20.000Z"
    assert sorted((o["window_start"], o["window_end"], o["keys"], o["value"]) for o in outputs) == [
        (*first, ["x"], "a+d"),
        (*first, ["y"], "b"),
        (*second, ["x"], "c"),
    ]


def test_malformed_input_is_a_usage_error(tmp_path: Path) -> None:
    """A bad envelope names its line; exit code 2."""
    code, _, err = run("run", script(tmp_path, MAP_SCRIPT), "-k", "map", stdin='ok\n{"value": 1}')
    assert code == 2
    assert "input line 2: value must be a string" in err


def test_missing_files_are_usage_errors(tmp_path: Path) -> None:
    """A missing script or input file is reported before anything starts."""
    assert run("run", str(tmp_path / "nope.py"))[0] == 2
    code, _, err = run("run", script(tmp_path, MAP_SCRIPT), "--input", str(tmp_path / "in"))
    assert code == 2
    assert "cannot read the input" in err


def test_call_talks_to_a_running_server(tmp_path: Path) -> None:
    """`pynumaflow call --sock` sends to a server someone else started."""
    proc = start_script(textwrap.dedent(MAP_SCRIPT), tmp_path)
    try:
        wait_for_server_info(proc, tmp_path / "server-info")
        sock = str(tmp_path / "function.sock")
        code, outputs, err = run("call", "--sock", sock, "--kind", "mapt", stdin="x\ny")
        assert code == 0, err
        assert [o["value"] for o in outputs] == ["x", "y"]
        assert run("call", "--sock", str(tmp_path / "none.sock"))[0] == 2
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_call_reports_a_server_that_is_not_ready(tmp_path: Path) -> None:
    """A socket nobody answers on fails within the timeout, naming the socket."""
    sock = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.close()  # the file stays, nobody listens: like a crashed server
    code, _, err = run("call", "--sock", str(sock), "--start-timeout", "0.5", stdin="x")
    assert code == 1
    assert "did not answer IsReady" in err
    assert str(sock) in err


def _cli(*args: str, stdin: str = "", exe: Optional[list[str]] = None) -> Any:
    command = (exe or [sys.executable, "-m", "pynumaflow"]) + list(args)
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_python_m_pynumaflow_runs_an_example_from_stdin() -> None:
    """`python -m pynumaflow run EXAMPLE --input -` works as a real process with a pipe."""
    result = _cli(
        "run", "examples/function/forward_message/example.py", "--input", "-", stdin="hi\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["value"] == "hi"


def test_the_console_script() -> None:
    """The installed `pynumaflow` command runs (required in the nox tests session)."""
    exe = shutil.which("pynumaflow")
    if exe is None:
        if os.environ.get("PYNUMAFLOW_CONSOLE_SCRIPT") == "required":
            pytest.fail("the pynumaflow console script is not installed")
        pytest.skip("pynumaflow is not installed with its console script here")
    result = _cli("--version", exe=[exe])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pynumaflow ")
