"""Every example runs with its sample input and gives the output recorded beside it.

Through `pynumaflow run`, every kind; the batch map examples also as the platform runs
them, a process serving batchmap.sock fed its sample input as one batch through grpcio
stubs (test_examples_windows.py does the same for the streamed window kinds). The
expected output is recorded beside the input (event_time is left out there when it is
the time of the run; reduce, reduce stream and session output is compared in any
order, since key groups answer as they finish; accumulator output in order per key).
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

EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/*/expected.jsonl"))
BATCH_MAP = [p for p in EXAMPLES if p.parent.name == "batchmap"]
# The arguments an example's pipeline.yaml implies: session_counter's 10 s session gap.
ARGS = {"session_counter": ["--window", "10s"]}
IDS = [str(p.relative_to(ROOT / "examples")) for p in EXAMPLES]


@pytest.fixture(scope="module")
def runs() -> dict[Path, tuple[int, str, str]]:
    """Every example's run, started all at once (each waits mostly on process start-up)."""
    procs = {}
    for folder in EXAMPLES:
        command = [sys.executable, "-m", "pynumaflow", "run", "example.py", "-q"]
        command += ARGS.get(folder.name, [])
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
        for name in ("event_time", "window_start", "window_end"):
            if name in line:
                line[name] = parse_time(line[name])
    if "reduce" in folder.name or "session" in folder.name:
        shown, expected = sorted(shown, key=repr), sorted(expected, key=repr)
    elif "accumulator" in folder.name:  # each key's outputs in order; keys may interleave
        shown, expected = by_key(shown), by_key(expected)
    assert shown == expected
    assert "with SIGTERM; it exited with code 0" in err


def by_key(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(lines, key=lambda line: json.dumps(line["keys"]))  # stable: order kept


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
