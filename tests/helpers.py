"""Small helpers the tests share: building requests and running a server in the test's loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

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
