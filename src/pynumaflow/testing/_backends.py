"""How the function and sink clients talk: legacy or v1 calls behind one shape."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Union

from pynumaflow._client.legacy import CallError, Connection
from pynumaflow._client.v1 import Input, UserMetadata, V1Connection
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import Kind
from pynumaflow._types.function import (
    Datum,
    IntervalWindow,
    Messages,
    MessageTs,
)
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Responses
from pynumaflow.testing._results import (
    _message,
    _message_t,
)


def _input(datum: Datum, user_metadata: Optional[UserMetadata]) -> Input:
    return Input(
        datum.value,
        list(datum.keys),
        datum.event_time,
        datum.watermark,
        datum.metadata.id,
        datum.headers,
        user_metadata or {},
    )


class _Legacy:
    """Calls over function.v1 and the UserDefinedSink (Numaflow 0.8-0.9)."""

    def __init__(self, connection: Connection, service: str) -> None:
        self._connection = connection
        self._service = service

    @staticmethod
    def _plain(headers: Mapping[str, str], user_metadata: Optional[UserMetadata]) -> None:
        if headers or user_metadata:
            raise ValueError(
                "headers and user metadata exist on Numaflow >= 1.4 only: serve with "
                "protocol='v1' (the default) to send them"
            )

    async def is_ready(self) -> bool:
        return await self._connection.is_ready(self._service)  # type: ignore[arg-type]

    async def one(self, kind: Kind, datum: Datum, user_metadata: Optional[UserMetadata]) -> Any:
        self._plain(datum.headers, user_metadata)
        if kind is kinds.MAP:
            return await self._connection.map(datum)
        if kind is kinds.MAPT:
            return await self._connection.mapt(datum)
        return Messages(*[m async for m in self._connection.map_stream(datum)])

    async def reduce(
        self, datums: List[Datum], window: IntervalWindow, user_metadata: Optional[UserMetadata]
    ) -> Messages:
        for datum in datums:
            self._plain(datum.headers, user_metadata)
        answers = await self._connection.reduce(datums, window)
        return Messages(*(m for answer in answers for m in answer))

    async def sink(
        self, datums: List[SinkDatum], user_metadata: Optional[UserMetadata]
    ) -> Responses:
        for datum in datums:
            self._plain(datum.headers, user_metadata)
        return await self._connection.sink(datums)


class _V1:
    """Calls over map.v1, sourcetransformer.v1, reduce.v1, sink.v1 (Numaflow >= 1.4)."""

    def __init__(self, connections: Mapping[str, V1Connection]) -> None:
        self._connections = connections

    def _to(self, kind: Kind) -> V1Connection:
        connection = self._connections.get(kind.name)
        if connection is None:
            raise CallError("UNIMPLEMENTED", f"no {kind.keyword} is served")
        return connection

    async def is_ready(self) -> bool:
        for name, connection in self._connections.items():
            if not await connection.is_ready(name):
                return False
        return True

    async def one(self, kind: Kind, datum: Datum, user_metadata: Optional[UserMetadata]) -> Any:
        results = await self._to(kind).call(kind.name, _input(datum, user_metadata))
        if kind is kinds.MAPT:
            return MessageTs(*map(_message_t, results))
        return Messages(*map(_message, results))

    async def reduce(
        self, datums: List[Datum], window: IntervalWindow, user_metadata: Optional[UserMetadata]
    ) -> Messages:
        inputs = [_input(d, user_metadata) for d in datums]
        return Messages(*map(_message, await self._to(kinds.REDUCE).reduce(inputs, window)))

    async def sink(
        self, datums: List[SinkDatum], user_metadata: Optional[UserMetadata]
    ) -> Responses:
        inputs = [
            Input(d.value, d.keys, d.event_time, d.watermark, d.id, d.headers, user_metadata or {})
            for d in datums
        ]
        responses, _ = await self._to(kinds.SINK).sink(inputs)
        return Responses(*responses)


_Backend = Union[_Legacy, _V1]
