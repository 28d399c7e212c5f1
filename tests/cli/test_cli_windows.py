"""`pynumaflow call` on the kinds new in v1: batch map, reduce stream, accumulator, session reduce.

Each example of these kinds runs as its pod would (a process serving its socket in a
folder) and `call --sock` sends it the example's sample input: the outputs are the
recorded ones. A handler that raises fails the call as the platform would see it
(INTERNAL, the handler's traceback shown once), and the server goes on serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pynumaflow._cli._input import parse_time

from conftest import ROOT
from procs import finish, start_script, wait_for_server_info
from procs import run_cli as run

# Per kind: the example folder, its socket, its server-info file, extra arguments.
EXAMPLES = {
    "batch-map": ("batchmap/enrich", "batchmap.sock", "mapper-server-info", []),
    "reduce-stream": (
        "modern/reducestream_counter",
        "reducestream.sock",
        "reducestreamer-server-info",
        [],
    ),
    "accumulator": (
        "modern/accumulator_sorter",
        "accumulator.sock",
        "accumulator-server-info",
        [],
    ),
    "session-reduce": (
        "modern/session_counter",
        "sessionreduce.sock",
        "sessionreducer-server-info",
        ["--window", "10s"],
    ),
}


def comparable(lines: list[dict[str, Any]], recorded: set[str]) -> list[str]:
    """The recorded fields of each line, times as times, in a stable order per key."""
    shown = []
    for line in lines:
        kept = {key: value for key, value in line.items() if key in recorded}
        for name in ("event_time", "window_start", "window_end"):
            if name in kept:
                kept[name] = parse_time(kept[name]).isoformat()
        shown.append(kept)
    return sorted((json.dumps(line, sort_keys=True) for line in shown), key=lambda s: s)


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_call_sends_the_example_input_and_prints_the_recorded_output(
    tmp_path: Path, kind: str
) -> None:
    folder, sock, info, extra = EXAMPLES[kind]
    example = ROOT / "examples" / folder
    proc = start_script((example / "example.py").read_text(), tmp_path, container_type="udf")
    try:
        wait_for_server_info(proc, tmp_path / info)
        stdin = (example / "input.jsonl").read_text()
        code, outputs, err = run("call", "--sock", str(tmp_path / sock), *extra, stdin=stdin)
        assert code == 0, err
        assert f"sending the input as {kind} (v1 protocol" in err
        if kind == "session-reduce":  # the example's input expands and merges sessions
            assert "session operations sent: 3 OPEN, 3 EXPAND, 1 MERGE, 2 CLOSE" in err
    finally:
        proc.terminate()
        finish(proc)
    expected = [json.loads(line) for line in (example / "expected.jsonl").read_text().splitlines()]
    recorded = set().union(*expected)
    assert comparable(outputs, recorded) == comparable(expected, recorded)


FAILING = {
    "batch-map": """
        from pynumaflow.batchmapper import BatchMapAsyncServer, BatchResponse, BatchResponses
        from pynumaflow.batchmapper import Message

        async def handler(datums):
            responses = BatchResponses()
            async for datum in datums:
                if datum.value == b"boom":
                    raise ValueError("boom in batch")
                responses.append(BatchResponse.with_msgs(datum.id, [Message(datum.value)]))
            return responses

        BatchMapAsyncServer(handler).start()
    """,
    "reduce-stream": """
        from pynumaflow.reducestreamer import Message, ReduceStreamAsyncServer

        async def handler(keys, datums, output, md):
            async for datum in datums:
                if datum.value == b"boom":
                    raise ValueError("boom in window")
                await output.put(Message(datum.value, keys=keys))

        ReduceStreamAsyncServer(handler).start()
    """,
    "accumulator": """
        from pynumaflow.accumulator import AccumulatorAsyncServer, Message

        async def handler(datums, output):
            async for datum in datums:
                if datum.value == b"boom":
                    raise ValueError("boom in key")
                await output.put(Message.from_datum(datum))

        AccumulatorAsyncServer(handler).start()
    """,
    "session-reduce": """
        from pynumaflow.sessionreducer import Message, SessionReduceAsyncServer
        from pynumaflow.sessionreducer import SessionReducer

        class Echo(SessionReducer):
            async def session_reduce(self, keys, datums, output):
                async for datum in datums:
                    if datum.value == b"boom":
                        raise ValueError("boom in session")
                    await output.put(Message(datum.value, keys=keys))

            def accumulator(self):
                return b""

            def merge_accumulator(self, accumulator):
                pass

        SessionReduceAsyncServer(Echo).start()
    """,
}
GOOD = '{"value": "ok", "keys": ["k"], "event_time": "2024-05-06T07:00:01Z"}\n'
BAD = '{"value": "boom", "keys": ["k"], "event_time": "2024-05-06T07:00:02Z"}\n'


@pytest.mark.parametrize("kind", list(FAILING))
def test_a_handler_error_fails_the_call_as_the_platform_sees_it(tmp_path: Path, kind: str) -> None:
    """INTERNAL with the handler's error and traceback; the server serves the next call."""
    import textwrap

    _, sock, info, _ = EXAMPLES[kind]
    proc = start_script(textwrap.dedent(FAILING[kind]), tmp_path, container_type="udf")
    try:
        wait_for_server_info(proc, tmp_path / info)
        address = str(tmp_path / sock)
        code, _, err = run("call", "--sock", address, stdin=GOOD + BAD)
        assert code == 1, err
        assert "failed: INTERNAL: UDF_EXECUTION_ERROR(udf): ValueError('boom in" in err
        assert err.count("the handler's traceback, from the server") == 1
        assert 'raise ValueError("boom in' in err
        code, outputs, err = run("call", "--sock", address, stdin=GOOD)
        assert code == 0, err
        assert [line["value"] for line in outputs if not line.get("eof")] == ["ok"]
    finally:
        proc.terminate()
        finish(proc)


BATCHES = """
    from pynumaflow.batchmapper import BatchMapAsyncServer, BatchResponse, BatchResponses
    from pynumaflow.batchmapper import Message

    async def handler(datums):
        batch = [datum async for datum in datums]
        size = str(len(batch)).encode()
        return BatchResponses(
            *(BatchResponse.with_msgs(d.id, [Message(d.value + b"/" + size)]) for d in batch)
        )

    BatchMapAsyncServer(handler).start()
"""


def test_batch_map_sends_batch_size_datums_per_batch_in_input_order(tmp_path: Path) -> None:
    """Five lines, --batch-size 2: batches of 2, 2 and 1; a repeated id is made unique."""
    import textwrap

    proc = start_script(textwrap.dedent(BATCHES), tmp_path, container_type="udf")
    try:
        wait_for_server_info(proc, tmp_path / "mapper-server-info")
        lines = "".join(f'{{"value": "v{n}", "id": "same"}}\n' for n in range(5))
        args = ("call", "--sock", str(tmp_path / "batchmap.sock"), "--batch-size", "2")
        code, outputs, err = run(*args, stdin=lines)
        assert code == 0, err
    finally:
        proc.terminate()
        finish(proc)
    assert [line["value"] for line in outputs] == ["v0/2", "v1/2", "v2/2", "v3/2", "v4/1"]


STREAMED = {
    "reduce-stream": (
        "modern/reducestream_counter",
        '{"value": "c", "keys": ["k"], "event_time": "2024-05-06T07:00:01Z"}\n',
        "so far:2",
    ),
    "accumulator": (
        "modern/accumulator_sorter",
        '{"value": "c", "keys": ["k"], "event_time": "2024-05-06T07:00:01Z", '
        '"watermark": "2024-05-06T07:00:05Z"}\n',
        "c",
    ),
}


@pytest.mark.timeout(60)  # a command that waits for the end of its input never prints
@pytest.mark.parametrize("kind", list(STREAMED))
def test_call_prints_each_output_while_its_window_is_open(tmp_path: Path, kind: str) -> None:
    """Input typed into a pipe: the output shows before the input (and the window) ends."""
    folder, sock, info, _ = EXAMPLES[kind]
    _, line, value = STREAMED[kind]
    example = ROOT / "examples" / folder
    proc = start_script((example / "example.py").read_text(), tmp_path, container_type="udf")
    command = [sys.executable, "-m", "pynumaflow", "call", "--sock", str(tmp_path / sock)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    try:
        wait_for_server_info(proc, tmp_path / info)
        with subprocess.Popen(command, text=True, **pipes) as call:
            call.stdin.write(line * 2)
            call.stdin.flush()
            first = call.stdout.readline()  # the input is still open
            still_running = call.poll() is None
            _, err = call.communicate(timeout=30)
        assert json.loads(first)["value"] == value, err
        assert still_running
        assert call.returncode == 0, err
    finally:
        proc.terminate()
        finish(proc)
