"""The datatypes user-defined sinks receive and return (pynumaflow 0.4 API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import List, Optional

from pynumaflow._collections import ItemList
from pynumaflow.function._types import NO_HEADERS

__all__ = ["Datum", "Response", "Responses"]


def _check_time(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"Wrong data type: {type(value)} for Datum.{name}")
    return value


class Datum:
    """One datum of the batch a sink handler receives.

    Times are naive ``datetime`` objects in UTC, microsecond exact, as in pynumaflow 0.4.
    ``str()`` and ``repr()`` never raise, whatever bytes the value holds.

    ``headers`` are the message headers Numaflow >= 1.4 sends (empty on 0.8-0.9).

    Args:
        keys: the keys of the datum; ``None`` means none.
        sink_msg_id: the id the response for this datum must carry.
        value: the payload; ``None`` means empty.
        event_time: the event time.
        watermark: the watermark.
        headers: the message headers.

    Raises:
        TypeError: a time is not a ``datetime``.

    """

    __slots__ = ("_event_time", "_headers", "_id", "_keys", "_value", "_watermark")

    def __init__(
        self,
        keys: Optional[List[str]],
        sink_msg_id: str,
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        *,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._keys = keys if keys is not None else []
        self._id = sink_msg_id or ""
        self._value = value or b""
        self._event_time = _check_time("event_time", event_time)
        self._watermark = _check_time("watermark", watermark)
        self._headers = MappingProxyType(dict(headers)) if headers else NO_HEADERS

    @property
    def headers(self) -> Mapping[str, str]:
        """The message headers (read-only; Numaflow >= 1.4, else empty)."""
        return self._headers

    @property
    def id(self) -> str:
        """The datum's id: answer it with ``Response.as_success(id)`` or ``as_failure``."""
        return self._id

    @property
    def keys(self) -> List[str]:
        """The keys of the datum (a property, as in pynumaflow 0.4's sink)."""
        return self._keys

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._value

    @property
    def event_time(self) -> datetime:
        """The event time (naive, UTC)."""
        return self._event_time

    @property
    def watermark(self) -> datetime:
        """The watermark (naive, UTC)."""
        return self._watermark

    def __str__(self) -> str:
        # 0.4's format; bytes that are not UTF-8 show as escapes instead of raising.
        value = self._value.decode("utf-8", "backslashreplace")
        return (
            f"id: {self._id}, value: {value}, "
            f"event_time: {self._event_time}, watermark: {self._watermark}"
        )

    def __repr__(self) -> str:
        return (
            f"Datum(keys={self._keys!r}, sink_msg_id={self._id!r}, value={self._value!r}, "
            f"event_time={self._event_time!r}, watermark={self._watermark!r})"
        )


@dataclass(slots=True)
class Response:
    """The outcome of writing one datum: the platform retries the failed ones.

    A plain (mutable) dataclass as in pynumaflow 0.4.

    Attributes:
        id: the id of the datum this answers.
        success: whether the datum was written.
        err: why it was not (``None`` on success).

    """

    id: str
    success: bool
    err: Optional[str] = None

    @classmethod
    def as_success(cls, id_: str) -> Response:
        """Return a response saying the datum with this id was written."""
        return cls(id_, True, None)

    @classmethod
    def as_failure(cls, id_: str, err_msg: str) -> Response:
        """Return a response saying the datum with this id failed, and why."""
        return cls(id_, False, err_msg)


class Responses(ItemList[Response]):
    """What a sink handler returns, one :class:`Response` per datum: ``Responses(*items)``."""

    __slots__ = ()
