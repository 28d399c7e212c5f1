"""The window-kind examples (reduce stream, accumulator, session reduce) run with their input.

test_examples_run.py runs them through ``pynumaflow run``; here, for a check that does
not go through our own client, each example runs as the platform runs it (a process
serving its socket in a run folder) and a small driver plays the platform: it turns the
sample input into the kind's window operations (fixed 60 s windows; an accumulator per
key closed at the end; 10 s sessions opened, expanded and merged as Numaflow does) with
grpcio stubs, and the results must be the recorded ones (their EOF lines aside). Then
SIGTERM, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conftest import CHANNEL_OPTIONS, ROOT
from procs import finish, start_script, wait_for_server_info

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
UTC = timezone.utc
Row = dict[str, Any]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def iso(stamp: Timestamp) -> str:
    return stamp.ToDatetime().isoformat() + "Z"


async def read_all(call: Any) -> list[Any]:
    replies = []
    while (reply := await call.read()) is not grpc.aio.EOF:
        replies.append(reply)
    assert await call.code() == grpc.StatusCode.OK
    return replies


async def reduce_stream(stubs: dict[str, ModuleType], channel: Any, rows: list[Row]) -> list[Row]:
    """Fixed 60 s windows, one ReduceFn stream each: OPEN, then APPENDs."""
    pb2 = stubs["reduce_pb2"]
    stub = stubs["reduce_grpc"].ReduceStub(channel)
    windows: dict[datetime, list[Row]] = {}
    for row in rows:
        moment = parse_time(row["event_time"])
        windows.setdefault(moment.replace(second=0, microsecond=0), []).append(row)
    out = []
    for start, members in windows.items():
        window = pb2.Window(start=ts(start), end=ts(start + timedelta(minutes=1)), slot="slot-0")
        call = stub.ReduceFn()
        for index, row in enumerate(members):
            op = pb2.ReduceRequest.WindowOperation
            moment = ts(parse_time(row["event_time"]))
            await call.write(
                pb2.ReduceRequest(
                    payload=pb2.ReduceRequest.Payload(
                        keys=row["keys"], value=row["value"].encode(), event_time=moment
                    ),
                    operation=op(event=op.APPEND if index else op.OPEN, windows=[window]),
                )
            )
        await call.done_writing()
        for reply in await read_all(call):
            if not reply.EOF:
                out.append(
                    {
                        "keys": list(reply.result.keys),
                        "value": reply.result.value.decode(),
                        "window_start": iso(reply.window.start),
                        "window_end": iso(reply.window.end),
                    }
                )
    return out


async def accumulate(stubs: dict[str, ModuleType], channel: Any, rows: list[Row]) -> list[Row]:
    """One stream: OPEN a key's first datum, APPEND the rest, CLOSE every key at the end."""
    pb2 = stubs["accumulator_pb2"]
    op = pb2.AccumulatorRequest.WindowOperation
    call = stubs["accumulator_grpc"].AccumulatorStub(channel).AccumulateFn()
    opened: dict[tuple[str, ...], Any] = {}
    for row in rows:
        keys = tuple(row["keys"])
        event = op.APPEND if keys in opened else op.OPEN
        moment = parse_time(row["event_time"])
        window = opened.setdefault(
            keys,
            pb2.KeyedWindow(start=ts(moment), end=ts(moment + timedelta(seconds=10)), keys=keys),
        )
        await call.write(
            pb2.AccumulatorRequest(
                payload=pb2.Payload(
                    keys=keys,
                    value=row["value"].encode(),
                    event_time=ts(moment),
                    watermark=ts(parse_time(row["watermark"])),
                    id=f"{row['value']}-id",
                ),
                operation=op(event=event, keyedWindow=window),
            )
        )
    for window in opened.values():
        await call.write(pb2.AccumulatorRequest(operation=op(event=op.CLOSE, keyedWindow=window)))
    await call.done_writing()
    out = []
    for reply in await read_all(call):
        if not reply.EOF:
            assert reply.payload.id == f"{reply.payload.value.decode()}-id"
            out.append(
                {
                    "keys": list(reply.payload.keys),
                    "value": reply.payload.value.decode(),
                    "event_time": iso(reply.payload.event_time),
                }
            )
    return out


async def sessions(stubs: dict[str, ModuleType], channel: Any, rows: list[Row]) -> list[Row]:
    """10 s sessions per key: OPEN, APPEND inside, EXPAND past the end, MERGE on overlap."""
    pb2 = stubs["session_pb2"]
    op = pb2.SessionReduceRequest.WindowOperation
    call = stubs["session_grpc"].SessionReduceStub(channel).SessionReduceFn()
    gap = timedelta(seconds=10)
    open_sessions: dict[tuple[str, ...], list[tuple[datetime, datetime]]] = {}

    def window(keys: tuple[str, ...], span: tuple[datetime, datetime]) -> Any:
        return pb2.KeyedWindow(start=ts(span[0]), end=ts(span[1]), slot="0", keys=keys)

    async def send(event: int, keys: tuple[str, ...], spans: list[Any], row: Row | None) -> None:
        request = pb2.SessionReduceRequest(
            operation=op(event=event, keyedWindows=[window(keys, s) for s in spans])
        )
        if row is not None:
            request.payload.CopyFrom(
                pb2.SessionReduceRequest.Payload(
                    keys=keys,
                    value=row["value"].encode(),
                    event_time=ts(parse_time(row["event_time"])),
                )
            )
        await call.write(request)

    for row in rows:
        keys = tuple(row["keys"])
        moment = parse_time(row["event_time"])
        spans = open_sessions.setdefault(keys, [])
        hit = next((s for s in spans if s[0] < moment + gap and moment < s[1]), None)
        if hit is None:
            spans.append((moment, moment + gap))
            await send(op.OPEN, keys, [spans[-1]], row)
        elif hit[0] <= moment and moment + gap <= hit[1]:
            await send(op.APPEND, keys, [hit], row)
        else:
            grown = (min(hit[0], moment), max(hit[1], moment + gap))
            spans[spans.index(hit)] = grown
            await send(op.EXPAND, keys, [hit, grown], row)
            other = next(
                (s for s in spans if s != grown and s[0] < grown[1] and grown[0] < s[1]), None
            )
            if other is not None:
                spans.remove(grown)
                spans.remove(other)
                spans.append((min(grown[0], other[0]), max(grown[1], other[1])))
                await send(op.MERGE, keys, [grown, other], None)
    for keys, spans in open_sessions.items():
        for span in spans:
            await send(op.CLOSE, keys, [span], None)
    await call.done_writing()
    return [
        {
            "keys": list(reply.result.keys),
            "value": reply.result.value.decode(),
            "window_start": iso(reply.keyedWindow.start),
            "window_end": iso(reply.keyedWindow.end),
        }
        for reply in await read_all(call)
        if not reply.EOF
    ]


Driver = Callable[[dict[str, ModuleType], Any, list[Row]], Coroutine[Any, Any, list[Row]]]
CASES: dict[str, tuple[str, str, Driver, bool]] = {
    # folder: (socket, server-info file, driver, output order matters per key)
    "modern/reducestream_counter": (
        "reducestream.sock",
        "reducestreamer-server-info",
        reduce_stream,
        False,
    ),
    "modern/accumulator_sorter": ("accumulator.sock", "accumulator-server-info", accumulate, True),
    "modern/session_counter": (
        "sessionreduce.sock",
        "sessionreducer-server-info",
        sessions,
        False,
    ),
}


def test_every_window_example_is_driven() -> None:
    """Every example serving one of these kinds is in CASES."""
    servers = ("ReduceStreamAsyncServer", "AccumulatorAsyncServer", "SessionReduceAsyncServer")
    folders = {
        str(p.parent.relative_to(ROOT / "examples"))
        for p in (ROOT / "examples").glob("*/*/example.py")
        if any(server in p.read_text(encoding="utf-8") for server in servers)
    }
    assert folders == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_window_example_gives_its_expected_output(
    name: str, tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    folder = ROOT / "examples" / name
    sock, info, driver, ordered = CASES[name]
    rows = [json.loads(line) for line in (folder / "input.jsonl").read_text().splitlines()]
    recorded = [json.loads(line) for line in (folder / "expected.jsonl").read_text().splitlines()]
    expected = [row for row in recorded if not row.get("eof")]  # the drivers show no EOF
    proc = start_script((folder / "example.py").read_text(encoding="utf-8"), tmp_path)
    try:
        await asyncio.to_thread(wait_for_server_info, proc, tmp_path / info)
        target = f"unix://{tmp_path / sock}"
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            actual = await driver(stubs, channel, rows)
        proc.send_signal(signal.SIGTERM)
        code, output = await asyncio.to_thread(finish, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    if ordered:  # each key's outputs in order; keys may interleave
        by_key: dict[str, list[Row]] = {}
        for row in actual:
            by_key.setdefault(json.dumps(row["keys"]), []).append(row)
        actual = [row for key in sorted(by_key) for row in by_key[key]]
    else:
        actual, expected = sorted(actual, key=json.dumps), sorted(expected, key=json.dumps)
    assert actual == expected
    assert code == 0, output
