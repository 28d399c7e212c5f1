"""Every example runs with its sample input and gives the output recorded beside it.

Through `pynumaflow run`, except the batch map examples (the command does not drive
batch map yet): those run as the platform runs them, a process serving batchmap.sock,
and get their sample input as one batch through grpcio stubs. The expected output is
recorded beside the input (event_time is left out there when it is the time of the run;
reduce output is compared in any order, since key groups answer as they finish).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from pynumaflow._cli._input import parse_time

from conftest import CHANNEL_OPTIONS, ROOT
from helpers import v1_request_fields
from procs import finish, start_script, wait_for_server_info

# `pynumaflow run` does not drive batch map yet: those examples are fed their input
# through grpcio stubs instead.
ALL_EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/*/expected.jsonl"))
BATCH_MAP = [p for p in ALL_EXAMPLES if p.parent.name == "batchmap"]
# Nor the streaming window kinds (reduce stream, accumulator, session reduce):
# test_examples_windows.py drives those examples as the platform does.
WINDOWS = [
    ROOT / "examples" / "modern" / name
    for name in ("reducestream_counter", "accumulator_sorter", "session_counter")
]
EXAMPLES = [p for p in ALL_EXAMPLES if p not in BATCH_MAP and p not in WINDOWS]
IDS = [str(p.relative_to(ROOT / "examples")) for p in EXAMPLES]


@pytest.fixture(scope="module")
def runs() -> dict[Path, tuple[int, str, str]]:
    """Every example's run, started all at once (each waits mostly on process start-up)."""
    procs = {}
    for folder in EXAMPLES:
        command = [sys.executable, "-m", "pynumaflow", "run", "example.py", "-q"]
        # A side-input retriever reads no input; a source reads its own file.
        command += [arg for sample in folder.glob("input.*") for arg in ("-i", sample.name)]
        procs[folder] = subprocess.Popen(
            command,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for folder, proc in procs.items():
        out, err = proc.communicate(timeout=90)
        results[folder] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_example_gives_its_expected_output(
    folder: Path, runs: dict[Path, tuple[int, str, str]]
) -> None:
    """The example's outputs for its sample input are the recorded ones, and it exits 0."""
    code, out, err = runs[folder]
    assert code == 0, err
    actual = [json.loads(line) for line in out.splitlines()]
    expected = [json.loads(line) for line in (folder / "expected.jsonl").read_text().splitlines()]
    # Only the fields recorded are compared: event_time is missing where it is "now".
    recorded = set().union(*expected)
    shown = [{key: value for key, value in line.items() if key in recorded} for line in actual]
    # Times are compared as times: 2021-06-01T00:00:00Z is 2021-06-01T00:00:00.000Z.
    for line in (*shown, *expected):
        if "event_time" in line:
            line["event_time"] = parse_time(line["event_time"])
    if "reduce" in folder.name:
        shown, expected = sorted(shown, key=json.dumps), sorted(expected, key=json.dumps)
    assert shown == expected
    assert "with SIGTERM; it exited with code 0" in err


@pytest.mark.anyio
@pytest.mark.parametrize("folder", BATCH_MAP, ids=[p.name for p in BATCH_MAP])
async def test_batch_map_example_gives_its_expected_output(
    folder: Path, tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """The sample input as one batch: the outputs in input order, then SIGTERM, exit 0."""
    pb2 = stubs["map_pb2"]
    lines = [json.loads(line) for line in (folder / "input.jsonl").read_text().splitlines()]
    proc = start_script((folder / "example.py").read_text(encoding="utf-8"), tmp_path)
    try:
        await asyncio.to_thread(wait_for_server_info, proc, tmp_path / "mapper-server-info")
        target = f"unix://{tmp_path / 'batchmap.sock'}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = stubs["map_grpc"].MapStub(channel).MapFn()
            await call.write(pb2.MapRequest(handshake=pb2.Handshake(sot=True)))
            requests = [
                pb2.MapRequest(
                    id=f"in-{i}",
                    request=pb2.MapRequest.Request(
                        **v1_request_fields(line["value"].encode(), keys=line["keys"])
                    ),
                )
                for i, line in enumerate(lines)
            ]
            assert (await call.read()).handshake.sot
            for request in requests:
                await call.write(request)
            await call.write(pb2.MapRequest(status=pb2.TransmissionStatus(eot=True)))
            responses = [await asyncio.wait_for(call.read(), 30) for _ in range(len(lines) + 1)]
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
        proc.send_signal(signal.SIGTERM)
        code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, output
    *answers, end = responses
    assert end.status.eot
    by_id = {answer.id: answer.results for answer in answers}
    assert sorted(by_id) == sorted(request.id for request in requests)
    actual = [
        {"keys": list(r.keys), "value": r.value.decode(), "tags": list(r.tags)}
        for request in requests
        for r in by_id[request.id]
    ]
    expected = [json.loads(line) for line in (folder / "expected.jsonl").read_text().splitlines()]
    assert actual == expected
