"""Kinds the command pulls from instead of feeding: a source is read, a side input retrieved.

source: ``--reads`` read requests of ``--batch-size`` records, each message printed as a
JSON line, then the batch acked (or nacked with ``--nack``), as the platform does; the
pending count and partitions are reported at the end. side-input: ``--reads``
retrievals, one JSON line each. The input is not read.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional, TextIO

from pynumaflow._cli._drive import Tally
from pynumaflow._cli._errors import RunError
from pynumaflow._cli._output import bytes_fields, format_time
from pynumaflow._cli._served import PULLED
from pynumaflow._client.base import CallError
from pynumaflow._client.source import SideInputConnection, SourceConnection
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import Kind
from pynumaflow._types.source import Message, read_limits

__all__ = ["PULLED", "pull", "source_line"]


def source_line(message: Message) -> str:
    """One message read: payload, offset (partition), event_time, keys, headers."""
    line: dict[str, Any] = bytes_fields("payload", message.payload)
    line.update(bytes_fields("offset", message.offset.offset))
    line["partition_id"] = message.offset.partition_id
    line["event_time"] = format_time(message.event_time)
    line["keys"] = list(message.keys)
    line["headers"] = dict(message.headers)
    return json.dumps(line, ensure_ascii=False)


async def _wait_ready(connection: Any, deadline: float) -> None:
    while not await connection.is_ready():
        if time.monotonic() >= deadline:
            raise RunError("the server did not answer IsReady with ready=true in time")
        await asyncio.sleep(0.05)


def _emit(out: TextIO, tally: Tally, line: str) -> None:
    out.write(line + "\n")
    out.flush()
    tally.outputs += 1


async def pull(
    kind: Kind,
    sock: str,
    *,
    reads: int,
    batch_size: int,
    nack: bool,
    timeout: Optional[float],
    deadline: float,
    out: TextIO,
    err: TextIO,
) -> Tally:
    """Read from a source, or retrieve a side input, ``reads`` times; print what comes back."""
    tally = Tally()
    connection: Any = (SourceConnection if kind is kinds.SOURCE else SideInputConnection)(
        sock, timeout
    )
    try:
        await _wait_ready(connection, deadline)
        print(f"pynumaflow: {sock} is ready; pulling as {kind.name}", file=err)
        for number in range(1, reads + 1):
            tally.inputs += 1
            try:
                if kind is kinds.SOURCE:
                    await _read_once(connection, batch_size, nack, out, err, tally)
                else:
                    answer = await connection.retrieve()
                    line = {**bytes_fields("value", answer.value)}
                    line["no_broadcast"] = answer.no_broadcast
                    _emit(out, tally, json.dumps(line, ensure_ascii=False))
            except CallError as error:
                tally.failed_calls += 1
                print(f"pynumaflow: call {number} failed: {error}", file=err)
                break
        if kind is kinds.SOURCE and not tally.failed_calls:
            partitions, total = await connection.partitions()
            tally.notes.append(
                f"pending {await connection.pending()}; partitions {partitions}"
                + (f" of {total}" if total is not None else "")
            )
    except CallError as error:
        raise RunError(str(error)) from None
    finally:
        connection.close()
    return tally


async def _read_once(
    connection: SourceConnection,
    batch_size: int,
    nack: bool,
    out: TextIO,
    err: TextIO,
    tally: Tally,
) -> None:
    messages = await connection.read(batch_size, read_limits().timeout_ms)
    for message in messages:
        _emit(out, tally, source_line(message))
    if messages:
        offsets = [m.offset for m in messages]
        await (connection.nack(offsets) if nack else connection.ack(offsets))
        print(f"pynumaflow: {'nacked' if nack else 'acked'} {len(offsets)} offset(s)", file=err)
