"""reduce.v1 as the pynumaflow 0.14.0 wheel's stubs see it: one window per stream."""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pynumaflow.function import Datum, Message, Messages, Metadata

from helpers import serving
from reference_client import ReferenceClient, b64, rfc3339, unb64

pytestmark = [pytest.mark.anyio, pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
START = datetime(2024, 1, 2, 3, 4, 0, tzinfo=UTC)
END = START + timedelta(minutes=1)
WINDOW = {"start": rfc3339(START), "end": rfc3339(END), "slot": "slot-0"}
# The same window as proto JSON prints it back (no fraction of a second when it is 0).
ECHOED = {"start": "2024-01-02T03:04:00Z", "end": "2024-01-02T03:05:00Z", "slot": "slot-0"}


def payload(keys: list[str], value: bytes, event: str) -> dict[str, Any]:
    return {
        "operation": {"event": event, "windows": [WINDOW]},
        "payload": {
            "keys": keys,
            "value": b64(value),
            "event_time": rfc3339(START + timedelta(seconds=1)),
            "watermark": rfc3339(START),
        },
    }


async def test_reduce_window_through_the_reference_client(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """OPEN then APPENDs over two keys; a result per key, the window echoed, then EOF."""
    seen: dict[tuple[str, ...], tuple[datetime, datetime]] = {}

    async def total(keys: list[str], datums: AsyncIterable[Datum], md: Metadata) -> Messages:
        values = [datum.value async for datum in datums]
        seen[tuple(keys)] = (md.interval_window.start, md.interval_window.end)
        return Messages(Message(b"+".join(values), keys=keys, tags=["t"]))

    requests = [
        payload(["a"], b"1", "OPEN"),
        payload(["b"], b"2", "APPEND"),
        payload(["a"], b"3", "APPEND"),
    ]
    async with serving(
        str(sock_dir / "function.sock"),
        str(sock_dir / "server-info"),
        reduce_handler=total,
        protocols=["v1"],
    ):
        talk = await reference_client.converse(
            "reduce", sock_dir / "reduce.sock", requests, await_first=False
        )
    assert (talk["ready"], talk["code"]) == (True, "OK")
    *results, eof = talk["responses"]
    assert eof == {"window": ECHOED, "EOF": True}
    by_keys = {tuple(r["result"]["keys"]): r for r in results}
    assert sorted(by_keys) == [("a",), ("b",)]
    for response in results:
        assert response["window"] == ECHOED
        assert response["result"]["tags"] == ["t"]
    assert unb64(by_keys[("a",)]["result"]["value"]) == b"1+3"
    assert unb64(by_keys[("b",)]["result"]["value"]) == b"2"
    assert seen == {("a",): (START, END), ("b",): (START, END)}


async def test_reduce_with_two_windows_in_one_request_is_refused(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """A request naming two windows breaks the protocol: INVALID_ARGUMENT, stated."""

    async def count(keys: list[str], datums: AsyncIterable[Datum], md: Metadata) -> Messages:
        return Messages(Message(str(len([d async for d in datums])).encode(), keys=keys))

    bad = payload(["a"], b"1", "OPEN")
    bad["operation"]["windows"] = [WINDOW, WINDOW]
    async with serving(
        str(sock_dir / "function.sock"),
        str(sock_dir / "server-info"),
        reduce_handler=count,
        protocols=["v1"],
    ):
        talk = await reference_client.converse(
            "reduce", sock_dir / "reduce.sock", [bad], await_first=False
        )
    assert talk["code"] == "INVALID_ARGUMENT"
    assert "window" in talk["details"].lower()
