"""accumulator.v1 through the pynumaflow 0.14.0 wheel's stubs: keyed windows, results as emitted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pynumaflow.accumulator import (
    Accumulator,
    AccumulatorAsyncServer,
    Datum,
    Message,
    NonBlockingIterator,
)

from reference_client import ReferenceClient, b64, rfc3339, unb64

pytestmark = [pytest.mark.anyio, pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
T0 = datetime(2024, 1, 2, 3, 4, 0, tzinfo=UTC)


def window(keys: list[str], end: datetime) -> dict[str, Any]:
    return {"start": rfc3339(T0), "end": rfc3339(end), "slot": "slot-0", "keys": keys}


def datum(event: str, keys: list[str], value: bytes, second: int, msg_id: str) -> dict[str, Any]:
    return {
        "operation": {"event": event, "keyedWindow": window(keys, T0 + timedelta(minutes=1))},
        "payload": {
            "keys": keys,
            "value": b64(value),
            "event_time": rfc3339(T0 + timedelta(seconds=second)),
            "watermark": rfc3339(T0 + timedelta(seconds=second - 1)),
            "id": msg_id,
            "headers": {"h": msg_id},
        },
    }


def close(keys: list[str], end: datetime) -> dict[str, Any]:
    return {"operation": {"event": "CLOSE", "keyedWindow": window(keys, end)}}


def serve(sock_dir: Path, handler: Any, **kwargs: Any) -> AccumulatorAsyncServer:
    return AccumulatorAsyncServer(
        handler,
        sock_path=str(sock_dir / "accumulator.sock"),
        server_info_file=str(sock_dir / "accumulator-server-info"),
        **kwargs,
    )


async def forward(datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]) -> None:
    """Passes each datum on at once; then how many it saw, tagged."""
    seen = 0
    async for d in datums:
        seen += 1
        await output.put(Message.from_datum(d))
    await output.put(Message(str(seen).encode(), keys=["count"], tags=["total"]))


async def test_results_as_emitted_and_the_eof_echoes_the_close(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Key a is closed while b stays open.

    a's results and EOF (the CLOSE's window, exactly) come before the half-close; b is
    closed by the half-close.
    """
    close_end = T0 + timedelta(minutes=5, microseconds=123)
    requests = [
        datum("OPEN", ["a"], b"a1", 10, "id-a1"),
        datum("OPEN", ["b"], b"b1", 11, "id-b1"),
        datum("APPEND", ["a"], b"a2", 12, "id-a2"),
        close(["a"], close_end),
    ]
    async with serve(sock_dir, forward).running():
        talk = await reference_client.converse(
            "accumulator",
            sock_dir / "accumulator.sock",
            requests,
            await_first=False,
            read_before_close=5,  # a1, b1, a2, a's count, a's EOF
            timeout=20,
        )
    assert (talk["ready"], talk["code"]) == (True, "OK"), talk
    early, late = talk["responses"][:5], talk["responses"][5:]
    a_early = [r for r in early if r["window"]["keys"] == ["a"]]
    assert [unb64(r["payload"]["value"]) for r in a_early[:3]] == [b"a1", b"a2", b"2"]
    first = a_early[0]
    assert first["payload"]["id"] == "id-a1"
    assert first["payload"]["headers"] == {"h": "id-a1"}
    assert first["payload"]["event_time"] == "2024-01-02T03:04:10Z"
    assert first["payload"]["watermark"] == "2024-01-02T03:04:09Z"
    # The window's end is the highest watermark emitted for the key so far.
    assert [r["window"]["end"] for r in a_early[:3]] == ["2024-01-02T03:04:09Z"] + [
        "2024-01-02T03:04:11Z"
    ] * 2
    assert a_early[2]["tags"] == ["total"]
    eof = a_early[3]
    assert eof == {
        "window": {
            "start": "2024-01-02T03:04:00Z",
            "end": "2024-01-02T03:09:00.000123Z",
            "slot": "slot-0",
            "keys": ["a"],
        },
        "EOF": True,
    }
    b_all = [r for r in talk["responses"] if r["window"]["keys"] == ["b"]]
    assert [unb64(r["payload"]["value"]) for r in b_all[:2]] == [b"b1", b"1"]
    # Closed by the half-close: an EOF with a window of the epoch to b's watermark.
    assert b_all[2]["EOF"] is True
    assert b_all[2]["window"]["end"] == "2024-01-02T03:04:10Z"
    assert late[-1] is b_all[2] or late[-1] == b_all[2]


class Sorter(Accumulator):
    """A class handler: holds a key's datums, emits them sorted by event time at its end."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.held: list[Datum] = []

    async def handler(
        self, datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]
    ) -> None:
        async for d in datums:
            self.held.append(d)
        for d in sorted(self.held, key=lambda d: d.event_time):
            await output.put(Message(self.prefix + d.value, keys=d.keys, event_time=d.event_time))


async def test_a_key_closed_then_reopened_starts_afresh(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """A class instance per key and per reopening; each reads only its own datums."""
    requests = [
        datum("OPEN", ["k"], b"late", 20, "1"),
        datum("APPEND", ["k"], b"early", 5, "2"),
        close(["k"], T0 + timedelta(minutes=1)),
        datum("OPEN", ["k"], b"again", 30, "3"),
        close(["k"], T0 + timedelta(minutes=2)),
    ]
    async with serve(sock_dir, Sorter, init_args=(b">",)).running():
        talk = await reference_client.converse(
            "accumulator", sock_dir / "accumulator.sock", requests, await_first=False
        )
    assert talk["code"] == "OK", talk
    values = [
        unb64(r["payload"]["value"]) if "payload" in r else r["window"]["end"]
        for r in talk["responses"]
    ]
    assert values == [
        b">early",
        b">late",
        "2024-01-02T03:05:00Z",
        b">again",
        "2024-01-02T03:06:00Z",
    ]


async def test_a_failing_handler_fails_the_stream_once(
    reference_client: ReferenceClient, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails(datums: AsyncIterable[Datum], output: NonBlockingIterator[Message]) -> None:
        async for d in datums:
            await output.put(Message.from_datum(d))
            raise RuntimeError("state lost")

    with caplog.at_level(logging.ERROR, logger="pynumaflow"):
        async with serve(sock_dir, fails).running():
            talk = await reference_client.converse(
                "accumulator",
                sock_dir / "accumulator.sock",
                [datum("OPEN", ["a"], b"1", 1, "x")],
                await_first=False,
                read_before_close=1,
            )
    assert talk["code"] == "INTERNAL", talk
    assert talk["details"].startswith("UDF_EXECUTION_ERROR(udf): RuntimeError('state lost')")
    assert [unb64(r["payload"]["value"]) for r in talk["responses"]] == [b"1"]
    assert (
        len([r for r in caplog.records if r.exc_info and "state lost" in str(r.exc_info[1])]) == 1
    )


async def test_a_close_for_an_unknown_key_is_refused(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    async with serve(sock_dir, forward).running():
        talk = await reference_client.converse(
            "accumulator",
            sock_dir / "accumulator.sock",
            [close(["nobody"], T0)],
            await_first=False,
        )
    assert talk["code"] == "INVALID_ARGUMENT", talk
    assert "CLOSE for keys ['nobody'] with no task" in talk["details"]
