"""function.v1 ReduceFn (Numaflow 0.8-0.9): the window in two request headers, groups by keys.

Served by the reduce engine (:class:`~pynumaflow._engines.reduce.ReduceStream`): each
key group's messages go out as one ``DatumResponseList`` as soon as its call returns;
the stream ends OK once every call has answered after the input ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Tuple, Union

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.legacy import function as codec
from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._engines.reduce import RawStream, ReduceStream
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._types.function import IntervalWindow, Metadata

__all__ = ["WINDOW_END_HEADER", "WINDOW_START_HEADER", "reduce_fn", "window_metadata"]

WINDOW_START_HEADER = "x-numaflow-win-start-time"
WINDOW_END_HEADER = "x-numaflow-win-end-time"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLIS = re.compile(r"-?[0-9]{1,19}")


def _header_time(metadata: Mapping[str, Union[str, bytes]], name: str) -> datetime:
    raw = metadata.get(name)
    if raw is None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"missing request header {name}")
    if not isinstance(raw, str) or not _MILLIS.fullmatch(raw):
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            f"malformed request header {name}: {raw!r} is not epoch milliseconds",
        )
    try:
        return _EPOCH + timedelta(milliseconds=int(raw))
    except OverflowError:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"malformed request header {name}: {raw} is out of range"
        ) from None


def window_metadata(metadata: Optional[Mapping[str, Union[str, bytes]]]) -> Metadata:
    """Read the window of a ReduceFn call from its request headers.

    Args:
        metadata: the call's request metadata (header names in lower case).

    Returns:
        ``Metadata`` whose ``interval_window`` bounds are timezone-aware UTC datetimes.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` naming the header that is missing or is not
            epoch milliseconds as a decimal string.

    """
    headers = metadata or {}
    start = _header_time(headers, WINDOW_START_HEADER)
    end = _header_time(headers, WINDOW_END_HEADER)
    return Metadata(IntervalWindow(start, end))


class _LegacyReduce(ReduceStream[Tuple[str, ...]]):
    """function.v1 ReduceFn: the window in headers, one DatumResponseList per key group."""

    def __init__(self, stream: RawStream, handler: Handler, invoker: Invoker, md: Metadata) -> None:
        super().__init__(stream, handler, invoker)
        self._md = md

    async def _read(self) -> None:
        async for data in self._requests:
            datum = decode_or_refuse(codec.decode_datum_request, data, "DatumRequest")
            await self._feed(tuple(datum.keys), datum.keys, self._md, datum)

    def _encode(self, group: Tuple[str, ...], result: Any) -> bytes:
        return codec.encode_datum_response_list(result)

    async def _answer(self, group: Tuple[str, ...], answer: bytes) -> None:
        await self._send(answer)


async def reduce_fn(stream: RawStream, handler: Handler, invoker: Invoker) -> None:
    """Serve one ReduceFn stream (one window) with the reduce handler.

    Args:
        stream: the grpclib stream, exchanging raw DatumRequest / DatumResponseList bytes.
        handler: the inspected reduce handler, ``h(keys, datums, md) -> Messages``.
        invoker: awaits async handlers, runs sync ones in its bounded pool.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` for missing or malformed window headers or
            datums, ``UNKNOWN`` with the error text and keys when a handler fails.

    """
    md = window_metadata(stream.metadata)
    await _LegacyReduce(stream, handler, invoker, md).run()
