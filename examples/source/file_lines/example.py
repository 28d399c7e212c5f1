"""A user-defined source serving the lines of a file; nacked lines are read again.

An offset is the line's number. A line counts as handed out once ``output.put`` returned
(a put cut off by the read timeout handed out nothing); it stays in flight until the
platform acks it, and a nacked line is served again before any new one.
"""

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Set

from pynumaflow.sourcer import (
    AckRequest,
    Message,
    NackRequest,
    Offset,
    PartitionsResponse,
    PendingResponse,
    ReadOutput,
    ReadRequest,
    SourceAsyncServer,
    Sourcer,
    get_default_partitions,
)


class FileLines(Sourcer):
    def __init__(self, path: Path) -> None:
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.next = 0
        self.in_flight: Set[int] = set()
        self.nacked: List[int] = []

    async def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:
        partition = get_default_partitions()[0]
        for _ in range(datum.num_records):
            redelivery = bool(self.nacked)
            if redelivery:
                index = self.nacked[0]
            elif self.next < len(self.lines):
                index = self.next
            else:
                return  # nothing more for now: the batch ends early
            message = Message(
                self.lines[index].encode(),
                Offset(str(index).encode(), partition),
                datetime.now(timezone.utc),
                keys=["line"],
            )
            await output.put(message)
            # put returned: the line is in the batch. Nothing changed before it, so a
            # read cut off by its timeout (the put raises CancelledError) loses nothing.
            if redelivery:
                self.nacked.pop(0)
            else:
                self.next += 1
            self.in_flight.add(index)

    async def ack_handler(self, ack_request: AckRequest) -> None:
        for offset in ack_request.offsets:
            self.in_flight.discard(int(offset.offset))

    async def nack_handler(self, nack_request: NackRequest) -> None:
        for offset in nack_request.offsets:
            index = int(offset.offset)
            if index in self.in_flight:
                self.in_flight.discard(index)
                self.nacked.append(index)

    async def pending_handler(self) -> PendingResponse:
        return PendingResponse(len(self.lines) - self.next + len(self.nacked))

    async def active_partitions_handler(self) -> PartitionsResponse:
        return PartitionsResponse(get_default_partitions())


if __name__ == "__main__":
    path = Path(os.environ.get("SOURCE_FILE") or Path(__file__).with_name("input.txt"))
    SourceAsyncServer(FileLines(path)).start()
