"""The server's h2 connections remember only reset streams, and still answer late frames on them.

h2 keeps how each of the last 65,536 closed streams was closed; one unary call is one
stream, so under the legacy protocol that record grew to ~11 MiB (up to 20 MiB of RSS)
per connection (see pynumaflow/_h2streams.py and the soak in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import gc
import struct
from types import ModuleType
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, StreamEnded, TrailersReceived
from h2.stream import StreamClosedBy
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from pynumaflow._core.h2streams import ResetStreams
from pynumaflow.function import Datum, Message, Messages

from helpers import datum_request, serving

pytestmark = pytest.mark.anyio

MAP_FN = "/function.v1.UserDefinedFunction/MapFn"


async def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value, keys=keys))


def server_connections() -> list[H2Connection]:
    """The h2 connections of servers in this process (the tests' clients are grpcio)."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, H2Connection) and not obj.config.client_side
    ]


def test_reset_streams_keeps_only_resets_and_at_most_its_limit() -> None:
    record = ResetStreams(limit=2)
    record[1] = StreamClosedBy.SEND_END_STREAM
    record[3] = StreamClosedBy.RECV_RST_STREAM
    record[5] = None
    record[7] = StreamClosedBy.SEND_RST_STREAM
    record[9] = StreamClosedBy.RECV_END_STREAM
    record[11] = StreamClosedBy.RECV_RST_STREAM
    assert list(record.items()) == [
        (7, StreamClosedBy.SEND_RST_STREAM),
        (11, StreamClosedBy.RECV_RST_STREAM),
    ]


async def test_unary_calls_that_end_normally_leave_no_record(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    async with serving(sock_path, info_path, map_handler=echo):
        for index in range(300):
            await fn_stub.MapFn(datum_request(fn_pb2, value=str(index).encode()))
        gc.collect()
        connections = [c for c in server_connections() if c.highest_inbound_stream_id >= 599]
        assert connections
        for connection in connections:
            assert len(connection._closed_streams) == 0
            assert isinstance(connection._closed_streams, ResetStreams)


class RawClient:
    """A bare h2 client on the server's Unix socket, for frames grpcio would not send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.events: list[Any] = []
        self.frames: list[Frame] = []  # every frame the server sent, as h2 hides some
        self._unparsed = b""

    async def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())
        await self.writer.drain()

    def start_call(self, stream_id: int) -> None:
        self.h2.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", MAP_FN),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )

    async def call(self, stream_id: int, message: bytes) -> tuple[bytes, dict[str, str]]:
        """A whole unary call on `stream_id`: its response message and trailers."""
        self.start_call(stream_id)
        self.h2.send_data(stream_id, b"\0" + struct.pack(">I", len(message)) + message)
        self.h2.end_stream(stream_id)
        await self.flush()
        body, trailers = b"", {}
        while True:
            event = await self.next_event()
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, DataReceived):
                body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, TrailersReceived):
                trailers = dict(event.headers)
            elif isinstance(event, StreamEnded):
                return body[5:], trailers

    async def next_event(self) -> Any:
        while not self.events:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection"
            self._split(data)
            self.events.extend(self.h2.receive_data(data))
            await self.flush()
        event = self.events.pop(0)
        assert not isinstance(event, ConnectionTerminated), event
        return event

    def _split(self, data: bytes) -> None:
        self._unparsed += data
        while len(self._unparsed) >= 9:
            end = 9 + int.from_bytes(self._unparsed[:3], "big")
            if len(self._unparsed) < end:
                return
            frame, _ = Frame.parse_frame_header(memoryview(self._unparsed[:9]))
            frame.parse_body(memoryview(self._unparsed[9:end]))
            self.frames.append(frame)
            self._unparsed = self._unparsed[end:]


async def test_late_headers_on_a_reset_stream_are_refused_and_the_connection_serves_on(
    sock_path: str, info_path: str, fn_pb2: ModuleType
) -> None:
    message = datum_request(fn_pb2, value=b"hello").SerializeToString()
    async with serving(sock_path, info_path, map_handler=echo):
        reader, writer = await asyncio.open_unix_connection(sock_path)
        client = RawClient(reader, writer)
        try:
            client.h2.initiate_connection()
            client.start_call(1)
            client.h2.reset_stream(1, ErrorCodes.CANCEL)
            await client.flush()
            # Opening stream 3 makes the server sweep the closed stream 1 into its record.
            body, trailers = await client.call(3, message)
            assert trailers["grpc-status"] == "0"
            assert b"hello" in body
            # Late trailers on stream 1, as a raw frame (h2's API refuses to send them).
            # Were stream 1 forgotten, the server would end the whole connection here.
            block = client.h2.encoder.encode([("grpc-late", "1")])
            writer.write(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
            await writer.drain()
            body, trailers = await client.call(5, message)
            assert trailers["grpc-status"] == "0"
            assert b"hello" in body
            resets = [f for f in client.frames if isinstance(f, RstStreamFrame)]
            assert [(f.stream_id, f.error_code) for f in resets] == [(1, ErrorCodes.STREAM_CLOSED)]
            assert not [f for f in client.frames if isinstance(f, GoAwayFrame)]
        finally:
            writer.close()
