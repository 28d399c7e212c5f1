"""What a test sends: values or whole datums, with sensible defaults."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional, Union

from pynumaflow._client.legacy import epoch_millis
from pynumaflow._types.function import (
    Datum,
    DatumMetadata,
    IntervalWindow,
)
from pynumaflow._types.sink import Datum as SinkDatum

DatumLike = Union[bytes, str, Datum]
"""What a function call takes: a value (``str`` is encoded as UTF-8) or a whole Datum."""
SinkDatumLike = Union[bytes, str, SinkDatum]
"""What a sink call takes: a value (``str`` is encoded as UTF-8) or a whole sink Datum."""


_UTC = timezone.utc
_DEFAULT_WINDOW = timedelta(seconds=60)


def _naive_utc(moment: Optional[datetime]) -> datetime:
    if moment is None:
        return datetime.now(_UTC).replace(tzinfo=None)
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(_UTC).replace(tzinfo=None)


def _bytes(value: Union[bytes, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def make_datum(
    value: Union[bytes, str],
    keys: Optional[Sequence[str]] = None,
    *,
    event_time: Optional[datetime] = None,
    watermark: Optional[datetime] = None,
    msg_id: str = "",
    num_delivered: int = 1,
    headers: Optional[Mapping[str, str]] = None,
) -> Datum:
    """Build a function :class:`~pynumaflow.function.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).
        msg_id: ``datum.metadata.id`` (v1 sends it as the request id; empty: the
            client numbers the requests).
        num_delivered: ``datum.metadata.num_delivered`` (legacy only: v1 has no count,
            the handler sees 0).
        headers: the message headers (v1 only).

    Returns:
        The datum, with times as the handler receives them (naive UTC).

    """
    event = _naive_utc(event_time)
    return Datum(
        list(keys or ()),
        _bytes(value),
        event,
        _naive_utc(watermark) if watermark is not None else event,
        DatumMetadata(msg_id, num_delivered),
        headers=headers,
    )


def make_sink_datum(
    value: Union[bytes, str],
    msg_id: str,
    keys: Optional[Sequence[str]] = None,
    *,
    event_time: Optional[datetime] = None,
    watermark: Optional[datetime] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> SinkDatum:
    """Build a :class:`pynumaflow.sink.Datum` with sensible defaults.

    Args:
        value: the payload; a ``str`` is encoded as UTF-8.
        msg_id: the id the handler answers with ``Response.as_success(id)``.
        keys: the datum's keys (default none).
        event_time: its event time (default now); naive datetimes are UTC.
        watermark: its watermark (default: the event time).
        headers: the message headers (v1 only).

    Returns:
        The sink datum.

    """
    event = _naive_utc(event_time)
    return SinkDatum(
        list(keys or ()),
        msg_id,
        _bytes(value),
        event,
        _naive_utc(watermark) if watermark is not None else event,
        headers=headers,
    )


def _as_datum(item: DatumLike, keys: Optional[Sequence[str]], **fields: Any) -> Datum:
    if isinstance(item, Datum):
        if keys is not None or any(v is not None for v in fields.values()):
            raise TypeError("pass either a Datum or a value with keys/event_time/watermark")
        return item
    return make_datum(item, keys, **{k: v for k, v in fields.items() if v is not None})


def _window_around(datums: Sequence[Datum]) -> IntervalWindow:
    moment = datums[0].event_time if datums else _naive_utc(None)
    size = _DEFAULT_WINDOW // timedelta(milliseconds=1)
    start = datetime(1970, 1, 1, tzinfo=_UTC) + timedelta(
        milliseconds=epoch_millis(moment) // size * size
    )
    return IntervalWindow(start, start + _DEFAULT_WINDOW)
