"""Small helpers the tests share: building requests and running a server in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Optional

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pynumaflow.function import AsyncServer, Datum, Message, Messages, Metadata

UTC = timezone.utc


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def datum_request(
    pb2: ModuleType,
    value: bytes = b"",
    keys: list[str] | None = None,
    event_time: datetime = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    watermark: datetime = datetime(2023, 5, 6, 7, 0, 0, 654321, tzinfo=UTC),
    msg_id: str = "id-1",
    num_delivered: int = 1,
) -> Any:
    return pb2.DatumRequest(
        keys=keys or [],
        value=value,
        event_time=pb2.EventTime(event_time=timestamp(event_time)),
        watermark=pb2.Watermark(watermark=timestamp(watermark)),
        metadata=pb2.Metadata(id=msg_id, num_delivered=num_delivered),
    )


@contextlib.asynccontextmanager
async def serving(sock_path: str, info_path: str, **handlers: Any) -> AsyncIterator[AsyncServer]:
    """Run an AsyncServer with these handlers/options on the test's event loop."""
    server = AsyncServer(sock_path=sock_path, server_info_file=info_path, **handlers)
    async with server.running():
        yield server


# --- v1 protocols (Numaflow >= 1.4): bidi streams ------------------------------------


@dataclass
class Conversation:
    """What a bidi call answered: its responses, then its status."""

    responses: list[Any]
    code: grpc.StatusCode
    details: str
    trailing: Any  # grpc.aio.Metadata

    def status_details(self) -> Any:
        """The google.rpc.Status in the grpc-status-details-bin trailer (betterproto)."""
        from pynumaflow._proto.google import rpc

        raw = dict(self.trailing)["grpc-status-details-bin"]
        return rpc.Status().parse(raw)


async def converse(call: Any, requests: Sequence[Any], *, await_first: bool = True) -> Conversation:
    """Write ``requests`` on a grpc.aio bidi ``call`` and read it to the end.

    With ``await_first``, the first response is awaited before the rest is written, as
    the platform waits for the handshake's answer.
    """
    responses: list[Any] = []
    pending = list(requests)
    try:
        if await_first and pending:
            await call.write(pending.pop(0))
            first = await call.read()
            if first is not grpc.aio.EOF:
                responses.append(first)
        for request in pending:
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the server ended the call: its status says why
    while True:
        try:
            response = await call.read()
        except grpc.aio.AioRpcError:
            break
        if response is grpc.aio.EOF:
            break
        responses.append(response)
    return Conversation(
        responses, await call.code(), await call.details() or "", await call.trailing_metadata()
    )


def v1_request_fields(
    value: bytes = b"",
    keys: Optional[list[str]] = None,
    event_time: datetime = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    watermark: Optional[datetime] = datetime(2023, 5, 6, 7, 0, 0, 654321, tzinfo=UTC),
    headers: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Keyword arguments of a v1 ``Request`` message (map, transformer) for grpcio stubs."""
    fields: dict[str, Any] = {
        "keys": keys or [],
        "value": value,
        "event_time": timestamp(event_time),
        "headers": headers or {},
    }
    if watermark is not None:
        fields["watermark"] = timestamp(watermark)
    return fields


# --- reduce streams (legacy and v1) ----------------------------------------------------


async def drain(call: Any, into: list[Any] | None = None) -> None:
    """Read a call's replies to its end (keeping them in into)."""
    async for reply in call:
        if into is not None:
            into.append(reply)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until condition() holds (the server cleans up after the client has left)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Running:
    """Counts handler calls in progress, in any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.started = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.started += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


async def held_open(
    items: Iterable[Any], stop: asyncio.Event, sent: threading.Event | None = None
) -> AsyncIterator[Any]:
    """Send the items, set sent, then keep the stream open until stop is set.

    Error tests write nothing once the server may have ended the call: grpcio aio
    reports INTERNAL instead of the server's status when a write fails after the
    status has arrived (grpc/grpc#36066).
    """
    for item in items:
        yield item
    if sent is not None:
        sent.set()
    await stop.wait()


async def count_async(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
    values = [d.value async for d in datums]
    return Messages(Message(describe(keys, values, md), keys=keys))


def count_sync(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
    values = [d.value for d in datums]
    return Messages(Message(describe(keys, values, md), keys=keys))


def describe(keys: list[str], values: list[bytes], md: Metadata) -> bytes:
    window = md.interval_window
    return json.dumps(
        {
            "keys": list(keys),
            "count": len(values),
            "values": b"".join(values).decode(),
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
        }
    ).encode()


class Peak:
    """Counts how many calls run at once (thread-safe)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.threads.add(threading.current_thread().name)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def blocking_echo(peak: Peak, seconds: float) -> Callable[[list[str], Any], Any]:
    """A sync map handler blocking ``seconds`` under ``peak``, echoing the datum's value."""
    from pynumaflow.function import Message, Messages

    def blocking(keys: list[str], datum: Any) -> Messages:
        with peak:
            time.sleep(seconds)
        return Messages(Message(datum.value))

    return blocking
