"""How each protocol generation sends records of a kind and turns answers into lines.

:class:`LegacyCalls` speaks function.v1 and the UserDefinedSink (Numaflow 0.8-0.9),
:class:`V1Calls` map.v1, sourcetransformer.v1, reduce.v1 and sink.v1 (Numaflow >= 1.4).
Both offer the three conversations the driver needs: one record of a map kind, one
reduce window, one sink batch. Per-kind details are small functions in a table keyed
by the kind's name, so that a new kind adds a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Sequence
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from pynumaflow._cli._input import Record
from pynumaflow._cli._output import message_line, response_line
from pynumaflow._client.base import CallError
from pynumaflow._client.legacy import Connection
from pynumaflow._client.streams import (
    AccumulatorStream,
    BatchMapStream,
    ReduceWindow,
    SessionStream,
)
from pynumaflow._client.v1 import Input, V1Connection
from pynumaflow._faces.kinds import Kind
from pynumaflow._types.function import Datum, DatumMetadata, IntervalWindow
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Response

__all__ = ["Calls", "LegacyCalls", "V1Calls", "input_of"]

SinkAnswer = List[Tuple[Response, str]]
"""Each sink response, and its output line."""


class Calls(Protocol):
    """What the driver asks of a protocol generation."""

    notes: List[str]

    async def one(self, kind: Kind, record: Record) -> List[str]:
        """Send one record to a map, mapt or map stream server; the output lines."""

    async def window(self, records: Sequence[Record], window: IntervalWindow) -> List[str]:
        """Send one reduce window; the output lines."""

    async def batch(self, records: Sequence[Record]) -> SinkAnswer:
        """Send one sink batch; each response and its line."""


# --- legacy ------------------------------------------------------------------------------


def _datum(record: Record) -> Datum:
    return Datum(
        list(record.keys),
        record.value,
        record.event_time,
        record.watermark,
        DatumMetadata(record.id, 1),
    )


def _sink_datum(record: Record) -> SinkDatum:
    return SinkDatum(
        list(record.keys), record.id, record.value, record.event_time, record.watermark
    )


async def _legacy_map(connection: Connection, record: Record) -> List[str]:
    messages = await connection.map(_datum(record))
    return [message_line(m, record.event_time) for m in messages]


async def _legacy_mapt(connection: Connection, record: Record) -> List[str]:
    return [message_line(m) for m in await connection.mapt(_datum(record))]


async def _legacy_map_stream(connection: Connection, record: Record) -> List[str]:
    return [message_line(m, record.event_time) async for m in connection.map_stream(_datum(record))]


_LEGACY: Dict[str, Callable[[Connection, Record], Awaitable[List[str]]]] = {
    "map": _legacy_map,
    "mapt": _legacy_mapt,
    "map-stream": _legacy_map_stream,
}


class LegacyCalls:
    """Numaflow 0.8-0.9: a unary or server-streaming call per record, a stream per batch.

    Headers and user metadata do not exist there: records carrying them are sent
    without, and a note says so.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.notes: List[str] = []

    def _check(self, records: Sequence[Record]) -> None:
        if not self.notes and any(r.headers or r.user_metadata for r in records):
            self.notes.append(
                "the legacy protocol (Numaflow 0.8-0.9) has no headers nor user metadata: "
                "the input's were not sent (use --protocol v1)"
            )

    async def one(self, kind: Kind, record: Record) -> List[str]:
        self._check((record,))
        return await _LEGACY[kind.name](self._connection, record)

    async def window(self, records: Sequence[Record], window: IntervalWindow) -> List[str]:
        self._check(records)
        answers = await self._connection.reduce([_datum(r) for r in records], window)
        return [message_line(m, window=window) for answer in answers for m in answer]

    async def batch(self, records: Sequence[Record]) -> SinkAnswer:
        self._check(records)
        responses = await self._connection.sink([_sink_datum(r) for r in records])
        return [(r, response_line(r)) for r in responses]


# --- v1 ------------------------------------------------------------------------------------


def input_of(record: Record) -> Input:
    """The datum the platform sends for a record."""
    return Input(
        record.value,
        record.keys,
        record.event_time,
        record.watermark,
        record.id,
        record.headers,
        record.user_metadata,
    )


class V1Calls:
    """Numaflow >= 1.4: records on the kind's long-lived stream, a stream per window.

    The kinds new in v1 (batch map, reduce stream, accumulator, session reduce) are
    conversations the driver holds itself: their streams are made here.
    """

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection
        self.notes: List[str] = []
        self._batches: Optional[BatchMapStream] = None

    async def one(self, kind: Kind, record: Record) -> List[str]:
        results = await self._connection.call(kind.name, input_of(record))
        # The platform gives each output its input's headers, and its event time
        # (the transformer's results carry their own).
        event_time = None if kind.name == "mapt" else record.event_time
        return [message_line(r, event_time, headers=record.headers) for r in results]

    async def window(self, records: Sequence[Record], window: IntervalWindow) -> List[str]:
        results = await self._connection.reduce([input_of(r) for r in records], window)
        return [message_line(r, window=window) for r in results]

    async def batch(self, records: Sequence[Record]) -> SinkAnswer:
        responses, metadata = await self._connection.sink([input_of(r) for r in records])
        return [(r, response_line(r, md)) for r, md in zip(responses, metadata, strict=True)]

    async def batch_map(self, records: Sequence[Record]) -> List[str]:
        """Send one batch map batch and its EOT; the output lines in input order."""
        seen: Dict[str, int] = {}
        items = []
        for record in records:  # ids are unique in a batch: a repeated one gets its line
            n = seen[record.id] = seen.get(record.id, 0) + 1
            unique = record.id if n == 1 else f"{record.id}#{record.line}"
            items.append(dataclasses.replace(input_of(record), id=unique))
        if self._batches is None:
            self._batches = BatchMapStream(self._connection)
        try:
            answers = await self._batches.batch(items)
        except CallError:
            stream, self._batches = self._batches, None
            await stream.aclose()  # the platform reconnects for the next batch
            raise
        return [
            message_line(result, record.event_time, headers=record.headers)
            for record, item in zip(records, items, strict=True)
            for result in answers[item.id]
        ]

    async def close(self) -> None:
        """End the batch map stream, as the platform does at shutdown."""
        stream, self._batches = self._batches, None
        if stream is not None:
            await stream.close()

    def reduce_window(self, window: IntervalWindow) -> ReduceWindow:
        """A new ReduceFn stream for one window (reduce stream)."""
        return ReduceWindow(self._connection, window)

    def accumulator(self) -> AccumulatorStream:
        """A new AccumulateFn stream."""
        return AccumulatorStream(self._connection)

    def sessions(self) -> SessionStream:
        """A new SessionReduceFn stream."""
        return SessionStream(self._connection)
