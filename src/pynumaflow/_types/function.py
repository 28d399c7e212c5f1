"""The datatypes user-defined functions receive and return (pynumaflow 0.4 API)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time
from types import MappingProxyType
from typing import List, Optional, Type, TypeVar, Union

from pynumaflow._types.collections import ItemList
from pynumaflow._types.nack import NACK, NackOptions

__all__ = [
    "DROP",
    "Datum",
    "DatumMetadata",
    "IntervalWindow",
    "Keys",
    "Message",
    "MessageT",
    "MessageTs",
    "Messages",
    "Metadata",
]

DROP = "U+005C__DROP__"
"""Tag that tells the platform to drop a message (the literal string the platform matches)."""

_EVENT_TIME_FOR_DROP = datetime(1, 1, 1)


class Keys(List[str]):
    """The keys of a datum: a list of strings that can also be called.

    pynumaflow 0.4 made ``Datum.keys`` a method, later versions a list. Both styles
    work: ``datum.keys()`` returns the list itself, and ``datum.keys`` is the list.
    """

    __slots__ = ()

    def __call__(self) -> Keys:
        return self


def _check_str_list(what: str, items: Optional[Iterable[str]]) -> List[str]:
    if items is None:
        return []
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{what} must be a list of str, got {type(items).__name__}")
    result = list(items)
    for item in result:
        if not isinstance(item, str):
            raise TypeError(f"{what} must be a list of str, found {type(item).__name__}")
    return result


def _check_value(value: Optional[bytes]) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    hint = "; encode it first, e.g. value.encode()" if isinstance(value, str) else ""
    raise TypeError(f"message value must be bytes, got {type(value).__name__}{hint}")


class _Nackable:
    """What a result that can be a NACK keeps: its options (None for any other result)."""

    __slots__ = ("_nack",)
    _nack: Optional[NackOptions]

    def _as_nack(self, options: Optional[NackOptions]) -> None:
        self._nack = options if options is not None else NackOptions()

    @property
    def nack_options(self) -> Optional[NackOptions]:
        """The options of a ``to_nack()`` result, else None."""
        return self._nack


_M = TypeVar("_M", bound="Message")


class Message(_Nackable):
    """One output of a map, map stream or reduce handler.

    Args:
        value: the payload; ``None`` means empty.
        keys: the keys the message is routed by; ``None`` means none.
        tags: tags for conditional forwarding; ``None`` means none.

    """

    __slots__ = ("_keys", "_tags", "_value")

    def __init__(
        self,
        value: Optional[bytes],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
    ) -> None:
        self._value = _check_value(value)
        self._keys = _check_str_list("message keys", keys)
        self._tags = _check_str_list("message tags", tags)
        self._nack = None

    @classmethod
    def to_drop(cls) -> Message:
        """Return a message that the platform drops."""
        return cls(b"", None, [DROP])

    @classmethod
    def to_nack(cls: Type[_M], options: Optional[NackOptions] = None) -> _M:
        """Return a result asking the platform to redeliver the input later (a NACK).

        Honoured by Numaflow >= 1.8.2 on v1, and sent only when ``PYNUMAFLOW_NACK=1``
        says the platform is that new; elsewhere a nack fails the request like a
        handler error, so that the platform retries the input. Other results of the
        same input are still forwarded. Not for reduce results (they have no input to
        nack).
        """
        message = cls(b"", None, [NACK])
        message._as_nack(options)
        return message

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._value

    @property
    def keys(self) -> List[str]:
        """The keys of the message."""
        return self._keys

    @property
    def tags(self) -> List[str]:
        """The tags of the message."""
        return self._tags

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Message)
        return (self._value, self._keys, self._tags, self._nack) == (
            other._value,
            other._keys,
            other._tags,
            other._nack,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message(value={self._value!r}, keys={self._keys!r}, tags={self._tags!r})"


EventTimeLike = Union[datetime, time]
_MT = TypeVar("_MT", bound="MessageT")


class MessageT(_Nackable):
    """One output of a mapt (source transformer) handler: a message with a new event time.

    ``MessageT(value, event_time, keys=None, tags=None)`` as in pynumaflow 0.4; the
    order ``MessageT(event_time, value, keys)`` of the 0.4 README works too (the two are
    told apart by type). A naive ``datetime`` is taken as UTC. A bare ``datetime.time``
    means that time of day on the UTC date of the request's event time.
    """

    __slots__ = ("_event_time", "_keys", "_tags", "_value")

    def __init__(
        self,
        value: Union[Optional[bytes], EventTimeLike],
        event_time: Union[EventTimeLike, Optional[bytes]],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
    ) -> None:
        if isinstance(value, (datetime, time)) and not isinstance(event_time, (datetime, time)):
            value, event_time = event_time, value
        if not isinstance(event_time, (datetime, time)):
            raise TypeError(
                "MessageT event_time must be a datetime (or datetime.time), "
                f"got {type(event_time).__name__}"
            )
        self._value = _check_value(value)  # type: ignore[arg-type]
        self._event_time: EventTimeLike = event_time
        self._keys = _check_str_list("message keys", keys)
        self._tags = _check_str_list("message tags", tags)
        self._nack = None

    @classmethod
    def to_drop(cls) -> MessageT:
        """Return a message that the platform drops."""
        return cls(b"", _EVENT_TIME_FOR_DROP, None, [DROP])

    @classmethod
    def to_nack(cls: Type[_MT], options: Optional[NackOptions] = None) -> _MT:
        """Return a result asking the platform to redeliver the input later (a NACK).

        As :meth:`Message.to_nack` (Numaflow >= 1.8.2 on v1 with ``PYNUMAFLOW_NACK=1``,
        else a failure the platform retries); its event time is ``to_drop()``'s.
        """
        message = cls(b"", _EVENT_TIME_FOR_DROP, None, [NACK])
        message._as_nack(options)
        return message

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._value

    @property
    def event_time(self) -> EventTimeLike:
        """The event time assigned to the message, as given."""
        return self._event_time

    @property
    def keys(self) -> List[str]:
        """The keys of the message."""
        return self._keys

    @property
    def tags(self) -> List[str]:
        """The tags of the message."""
        return self._tags

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, MessageT)
        return (self._value, self._event_time, self._keys, self._tags, self._nack) == (
            other._value,
            other._event_time,
            other._keys,
            other._tags,
            other._nack,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"MessageT(value={self._value!r}, event_time={self._event_time!r}, "
            f"keys={self._keys!r}, tags={self._tags!r})"
        )


class Messages(ItemList[Message]):
    """The messages a map, map stream or reduce handler returns: ``Messages(*items)``."""

    __slots__ = ()


class MessageTs(ItemList[MessageT]):
    """The messages a mapt handler returns: ``MessageTs(*items)``."""

    __slots__ = ()


class DatumMetadata:
    """Delivery metadata of a datum: its message id and how often it was delivered."""

    __slots__ = ("_id", "_num_delivered")

    def __init__(self, msg_id: str = "", num_delivered: int = 0) -> None:
        self._id = msg_id
        self._num_delivered = num_delivered

    @property
    def id(self) -> str:
        """The message id."""
        return self._id

    @property
    def num_delivered(self) -> int:
        """How many times the message has been delivered (1 on first delivery)."""
        return self._num_delivered

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatumMetadata):
            return NotImplemented
        return (self._id, self._num_delivered) == (other._id, other._num_delivered)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DatumMetadata(msg_id={self._id!r}, num_delivered={self._num_delivered!r})"


NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Datum:
    """One input of a user-defined function.

    Times are naive ``datetime`` objects in UTC, microsecond exact, as in pynumaflow 0.4.
    ``headers`` are the message headers Numaflow >= 1.4 sends (empty on 0.8-0.9).
    """

    __slots__ = (
        "_event_time",
        "_headers",
        "_keys",
        "_metadata",
        "_user_metadata",
        "_value",
        "_watermark",
    )

    def __init__(
        self,
        keys: Optional[List[str]],
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        metadata: Optional[DatumMetadata] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not isinstance(event_time, datetime):
            raise TypeError(f"Wrong data type: {type(event_time)} for Datum.event_time")
        if not isinstance(watermark, datetime):
            raise TypeError(f"Wrong data type: {type(watermark)} for Datum.watermark")
        self._keys = Keys(keys or ())
        self._value = value or b""
        self._event_time = event_time
        self._watermark = watermark
        self._metadata = metadata if metadata is not None else DatumMetadata()
        self._headers = MappingProxyType(dict(headers)) if headers else NO_HEADERS
        # Encoded common.Metadata holding the request's user metadata (Numaflow >= 1.7),
        # echoed into this datum's results so that it is not lost downstream.
        self._user_metadata = b""

    @property
    def headers(self) -> Mapping[str, str]:
        """The message headers (read-only; Numaflow >= 1.4, else empty)."""
        return self._headers

    @property
    def keys(self) -> Keys:
        """The keys of the datum; ``datum.keys()`` and ``datum.keys`` both give the list."""
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

    @property
    def metadata(self) -> DatumMetadata:
        """Delivery metadata: ``metadata.id`` and ``metadata.num_delivered``."""
        return self._metadata

    def __repr__(self) -> str:
        return (
            f"Datum(keys={list(self._keys)!r}, value={self._value!r}, "
            f"event_time={self._event_time!r}, watermark={self._watermark!r}, "
            f"metadata={self._metadata!r})"
        )


class IntervalWindow:
    """The window a reduce call covers: ``start`` and ``end``, timezone-aware UTC."""

    __slots__ = ("_end", "_start")

    def __init__(self, start: datetime, end: datetime) -> None:
        self._start = start
        self._end = end

    @property
    def start(self) -> datetime:
        """The start of the window (inclusive)."""
        return self._start

    @property
    def end(self) -> datetime:
        """The end of the window (exclusive)."""
        return self._end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalWindow):
            return NotImplemented
        return (self._start, self._end) == (other._start, other._end)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IntervalWindow(start={self._start!r}, end={self._end!r})"


class Metadata:
    """What a reduce handler knows about its call: the ``interval_window``."""

    __slots__ = ("_interval_window",)

    def __init__(self, interval_window: IntervalWindow) -> None:
        self._interval_window = interval_window

    @property
    def interval_window(self) -> IntervalWindow:
        """The window being reduced."""
        return self._interval_window

    def __repr__(self) -> str:
        return f"Metadata(interval_window={self._interval_window!r})"
