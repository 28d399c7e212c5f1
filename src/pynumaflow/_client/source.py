"""The platform's side of source.v1 and sideinput.v1: a grpclib client for the test kit and CLI.

Each call opens its own stream (the platform keeps the read and ack streams open; the
conversation on them is the same): the handshake, one request, its whole answer.
Answers come back as the public datatypes; calls raise
:class:`~pynumaflow._client.base.CallError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timezone
from typing import Any, List, Optional, Tuple

from betterproto.lib.google.protobuf import Empty
from grpclib.const import Cardinality

from pynumaflow._client.base import CallError, call_errors, channel
from pynumaflow._proto.sideinput import v1 as si_pb
from pynumaflow._proto.source import v1 as src_pb
from pynumaflow._types.sideinput import Response
from pynumaflow._types.source import Message, Offset

__all__ = ["SideInputConnection", "SourceConnection"]

_READ = "/source.v1.Source/ReadFn"
_ACK = "/source.v1.Source/AckFn"


def _offsets(offsets: Iterable[Offset]) -> List[src_pb.Offset]:
    return [src_pb.Offset(offset=o.offset, partition_id=o.partition_id) for o in offsets]


def _message(result: src_pb.ReadResponseResult) -> Message:
    event_time: datetime = result.event_time
    return Message(
        result.payload,
        Offset(result.offset.offset, result.offset.partition_id),
        event_time.astimezone(timezone.utc).replace(tzinfo=None),
        keys=list(result.keys),
        headers=dict(result.headers),
    )


class _Connection:
    _stub: Any  # the service's betterproto stub, with is_ready

    def __init__(self, sock_path: str, timeout: Optional[float] = None) -> None:
        self._channel = channel(sock_path)
        self._timeout = timeout

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._channel.close()

    async def is_ready(self) -> bool:
        """IsReady's answer; ``False`` when the server is not reachable."""
        try:
            with call_errors():
                return bool((await self._stub.is_ready(Empty())).ready)
        except CallError:
            return False


class SourceConnection(_Connection):
    """One connection to a source server's socket."""

    def __init__(self, sock_path: str, timeout: Optional[float] = None) -> None:
        super().__init__(sock_path, timeout)
        self._stub = src_pb.SourceStub(self._channel, timeout=timeout)

    @contextlib.asynccontextmanager
    async def _stream(
        self, path: str, request_type: Any, response_type: Any, what: str
    ) -> AsyncIterator[Any]:
        """A bidi stream whose handshake the server answered; its trailers read at the end."""
        with call_errors():
            async with self._channel.request(
                path, Cardinality.STREAM_STREAM, request_type, response_type, timeout=self._timeout
            ) as stream:
                await stream.send_message(request_type(handshake=src_pb.Handshake(sot=True)))
                first = await stream.recv_message()
                if first is None or first.handshake is None or not first.handshake.sot:
                    raise CallError("UNKNOWN", f"the server did not answer the {what} handshake")
                yield stream
                await stream.recv_trailing_metadata()

    async def read(self, num_records: int, timeout_ms: int) -> List[Message]:
        """One read: the handshake, one ReadRequest, the messages up to the EOT."""
        messages = []
        async with self._stream(_READ, src_pb.ReadRequest, src_pb.ReadResponse, "read") as stream:
            request = src_pb.ReadRequestRequest(num_records=num_records, timeout_in_ms=timeout_ms)
            await stream.send_message(src_pb.ReadRequest(request=request), end=True)
            while True:
                reply = await stream.recv_message()
                if reply is None:  # the status says why, if it is not OK
                    await stream.recv_trailing_metadata()
                    raise CallError("UNKNOWN", "the read stream ended before its EOT")
                if reply.status.eot:
                    break
                messages.append(_message(reply.result))
        return messages

    async def ack(self, offsets: Iterable[Offset]) -> None:
        """One ack: the handshake, one AckRequest, its one response."""
        async with self._stream(_ACK, src_pb.AckRequest, src_pb.AckResponse, "ack") as stream:
            request = src_pb.AckRequestRequest(offsets=_offsets(offsets))
            await stream.send_message(src_pb.AckRequest(request=request), end=True)
            if await stream.recv_message() is None:
                await stream.recv_trailing_metadata()
                raise CallError("UNKNOWN", "the ack stream ended without an answer")

    async def nack(self, offsets: Iterable[Offset]) -> None:
        """NackFn, one Request per offset as Numaflow 1.8.2+ sends it."""
        requests = [src_pb.NackRequestRequest(offsets=_offsets([o])) for o in offsets]
        with call_errors():
            await self._stub.nack_fn(src_pb.NackRequest(request=requests))

    async def pending(self) -> int:
        """PendingFn's count (negative: not available)."""
        with call_errors():
            reply = await self._stub.pending_fn(Empty())
        return int(reply.result.count)

    async def partitions(self) -> Tuple[List[int], Optional[int]]:
        """PartitionsFn's partitions, and the total when the source reports one."""
        with call_errors():
            reply = await self._stub.partitions_fn(Empty())
        return list(reply.result.partitions), reply.result.total_partitions


class SideInputConnection(_Connection):
    """One connection to a side-input retriever's socket."""

    def __init__(self, sock_path: str, timeout: Optional[float] = None) -> None:
        super().__init__(sock_path, timeout)
        self._stub = si_pb.SideInputStub(self._channel, timeout=timeout)

    async def retrieve(self) -> Response:
        """RetrieveSideInput's answer."""
        with call_errors():
            reply = await self._stub.retrieve_side_input(Empty())
        return Response(value=reply.value, no_broadcast=reply.no_broadcast)
