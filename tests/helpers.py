"""Small helpers the tests share: building requests and running a server in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Optional

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pynumaflow.function import AsyncServer

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
