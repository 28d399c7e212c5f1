"""Reduce stream and accumulator answer as pynumaflow 0.14.0 does: one script, both servers.

As tests/modern/test_twins.py: each script is written against 0.14.0's API, runs
unchanged under 0.14.0 itself and under ours, and the 0.14.0 wheel's stubs send both the
same requests; the answers must be the same (in any order across keys).
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reference_client import ReferenceClient, b64, rfc3339
from twins import Served, serve_and_converse

pytestmark = [pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
T0 = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
WINDOW = {"start": rfc3339(T0), "end": rfc3339(T0 + timedelta(minutes=1)), "slot": "slot-0"}

PRELUDE = """\
import os
from collections.abc import AsyncIterable

INVOKE = os.environ["INVOKE"]
"""

REDUCE_STREAM_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.reducestreamer import (
    Datum, Message, Metadata, ReduceStreamAsyncServer, ReduceStreamer,
)


async def handler(keys, datums: AsyncIterable[Datum], output, md: Metadata) -> None:
    count = 0
    async for datum in datums:
        count += 1
        await output.put(Message(datum.value, keys=keys, tags=["each"]))
    window = md.interval_window
    await output.put(Message(f"{count} {window.start} {window.end}".encode(), keys=keys))


class Counter(ReduceStreamer):
    def __init__(self, start: int, *, step: int = 1) -> None:
        self.count = start
        self.step = step

    async def handler(self, keys, datums, output, md) -> None:
        async for _ in datums:
            self.count += self.step
            await output.put(Message(str(self.count).encode(), keys=keys))


if INVOKE == "class":
    server = ReduceStreamAsyncServer(Counter, init_args=(10,), init_kwargs={"step": 2})
else:
    server = ReduceStreamAsyncServer(handler)
server.start()
"""
)

ACCUMULATOR_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.accumulator import Accumulator, AccumulatorAsyncServer, Datum, Message


async def handler(datums: AsyncIterable[Datum], output) -> None:
    async for datum in datums:
        await output.put(Message.from_datum(datum))


class Sorter(Accumulator):
    def __init__(self) -> None:
        self.held = []

    async def handler(self, datums, output) -> None:
        async for datum in datums:
            self.held.append(datum)
        for datum in sorted(self.held, key=lambda d: d.event_time):
            await output.put(Message.from_datum(datum))


server = AccumulatorAsyncServer(Sorter if INVOKE == "class" else handler)
server.start()
"""
)


def reduce_request(event: str, key: str, value: bytes) -> dict[str, Any]:
    return {
        "operation": {"event": event, "windows": [WINDOW]},
        "payload": {
            "keys": [key],
            "value": b64(value),
            "event_time": rfc3339(T0 + timedelta(seconds=5)),
            "watermark": rfc3339(T0),
        },
    }


def keyed_window(key: str, end: datetime) -> dict[str, Any]:
    return {"start": rfc3339(T0), "end": rfc3339(end), "slot": "slot-0", "keys": [key]}


def accumulator_request(event: str, key: str, value: bytes, second: int) -> dict[str, Any]:
    return {
        "operation": {"event": event, "keyedWindow": keyed_window(key, T0 + timedelta(hours=1))},
        "payload": {
            "keys": [key],
            "value": b64(value),
            "event_time": rfc3339(T0 + timedelta(seconds=second)),
            "watermark": rfc3339(T0 + timedelta(seconds=second - 3)),
            "id": f"{key}-{second}",
            "headers": {"h": value.decode()},
        },
    }


def twins(
    client: ReferenceClient,
    tmp_path: Path,
    script: str,
    kind: str,
    requests: list[dict[str, Any]],
    invoke: str,
) -> tuple[Served, Served]:
    path = tmp_path / "udf.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    env = {"INVOKE": invoke}
    served = [
        serve_and_converse(
            client, path, kind, requests, tmp_path / name, reference=ref, env=env,
            await_first=False,
        )
        for name, ref in (("o", False), ("r", True))
    ]  # fmt: skip
    return served[0], served[1]


def canonical(talk: dict[str, Any]) -> Any:
    return talk["code"], sorted(json.dumps(r, sort_keys=True) for r in talk["responses"])


def assert_same(ours: Served, theirs: Served) -> None:
    assert ours.talk["code"] == "OK", ours.output
    assert canonical(ours.talk) == canonical(theirs.talk)
    assert ours.exit_code == 0, ours.output


@pytest.mark.parametrize("invoke", ["function", "class"])
def test_reduce_stream(reference_client: ReferenceClient, tmp_path: Path, invoke: str) -> None:
    requests = [
        reduce_request("OPEN", "a", b"1"),
        reduce_request("APPEND", "b", b"22"),
        reduce_request("APPEND", "a", b"3"),
    ]
    ours, theirs = twins(
        reference_client, tmp_path, REDUCE_STREAM_SCRIPT, "reducestream", requests, invoke
    )
    assert_same(ours, theirs)
    assert ours.talk["responses"][-1]["EOF"] is True


@pytest.mark.parametrize("invoke", ["function", "class"])
def test_accumulator(reference_client: ReferenceClient, tmp_path: Path, invoke: str) -> None:
    """Results, a CLOSE's EOF, and the half-close's flush as 0.14.0 gives them.

    Results carry ids, times, headers and the key's watermark; a CLOSE's EOF echoes its
    window; the key still open at the half-close is flushed and gets its EOF.
    """
    requests = [
        accumulator_request("OPEN", "a", b"late", 20),
        accumulator_request("OPEN", "b", b"only", 11),
        accumulator_request("APPEND", "a", b"early", 10),
        {
            "operation": {
                "event": "CLOSE",
                "keyedWindow": keyed_window("a", T0 + timedelta(seconds=30)),
            }
        },
    ]
    ours, theirs = twins(
        reference_client, tmp_path, ACCUMULATOR_SCRIPT, "accumulator", requests, invoke
    )
    assert_same(ours, theirs)
    eofs = [r for r in ours.talk["responses"] if r.get("EOF")]
    assert len(eofs) == 2
