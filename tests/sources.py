"""Sources and side-input retrievers the tests share (over real sockets, any client)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from pynumaflow.sideinput import Response, SideInput
from pynumaflow.sourcer import (
    AckRequest,
    Message,
    NackRequest,
    Offset,
    PartitionsResponse,
    PendingResponse,
    ReadOutput,
    ReadRequest,
    Sourcer,
)

UTC = timezone.utc


class MemorySource(Sourcer):
    """Counts up from 0; offsets stay in flight until acked; nacked ones are read again."""

    def __init__(self, limit: Optional[int] = None, total: Optional[int] = None) -> None:
        self.next = 0
        self.limit = limit  # messages there are at all (None: endless)
        self.in_flight: set[int] = set()
        self.nacked: list[int] = []
        self.acked: list[int] = []
        self.reads: list[ReadRequest] = []
        self.total = total

    async def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:
        self.reads.append(datum)
        for _ in range(datum.num_records):
            if self.nacked:
                index = self.nacked.pop(0)
            elif self.limit is None or self.next < self.limit:
                index = self.next
                self.next += 1
            else:
                return
            await output.put(
                Message(
                    str(index).encode(),
                    Offset(str(index).encode(), 3),
                    datetime(2024, 1, 2, 3, 4, 5, index, tzinfo=UTC),
                    keys=["k"],
                    headers={"h": str(index)},
                )
            )
            self.in_flight.add(index)

    async def ack_handler(self, ack_request: AckRequest) -> None:
        for offset in ack_request.offsets:
            index = int(offset.offset)
            self.in_flight.discard(index)
            self.acked.append(index)

    async def nack_handler(self, nack_request: NackRequest) -> None:
        for offset in nack_request.offsets:
            index = int(offset.offset)
            self.in_flight.discard(index)
            self.nacked.append(index)

    async def pending_handler(self) -> PendingResponse:
        return PendingResponse(-1 if self.limit is None else self.limit - self.next)

    async def active_partitions_handler(self) -> PartitionsResponse:
        return PartitionsResponse([3])

    async def total_partitions_handler(self) -> Optional[int]:
        return self.total


class Failing(MemorySource):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    async def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:
        if self.where == "read":
            await output.put(Message(b"a", Offset(b"1", 0), datetime.now()))
            raise RuntimeError("upstream down")
        await super().read_handler(datum, output)

    async def ack_handler(self, ack_request: AckRequest) -> None:
        if self.where == "ack":
            raise RuntimeError("ack failed")

    async def pending_handler(self) -> PendingResponse:
        if self.where == "pending":
            raise RuntimeError("no count")
        return PendingResponse(0)


class Counter(SideInput):
    """Broadcasts every other call; says "nothing new" in between."""

    def __init__(self) -> None:
        self.calls = 0

    def retrieve_handler(self) -> Response:
        self.calls += 1
        if self.calls % 2:
            return Response.broadcast_message(f"v{self.calls}".encode())
        return Response.no_broadcast_message()
