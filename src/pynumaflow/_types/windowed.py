"""The modern API's streaming window kinds: reduce stream, accumulator, session reduce.

Their handlers write their output to an ``output`` they are given (a
:class:`~pynumaflow.shared.asynciter.NonBlockingIterator`, as in pynumaflow 0.14.0)
instead of returning it; the faces relay each message as it is put.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import AsyncIterable
from datetime import datetime
from typing import Any, Dict, List, Optional

from pynumaflow._types import function
from pynumaflow._types.modern import Datum, Message, UserMetadata, _HandlerClass

__all__ = [
    "Accumulator",
    "AccumulatorDatum",
    "AccumulatorMessage",
    "KeyedWindow",
    "ReduceStreamer",
    "ReduceWindow",
    "SessionReducer",
]


class ReduceStreamer(_HandlerClass):
    """Base of a class reduce stream handler: ``async handler(keys, datums, output, md)``.

    ``output.put(Message(...))`` sends a result at once, while the window is still open.
    Give the class itself (with ``init_args``/``init_kwargs``) to
    ``ReduceStreamAsyncServer`` for a new instance per key and window.
    """


class Accumulator(_HandlerClass):
    """Base of a class accumulator: ``async handler(datums, output)``, one instance per key.

    It reads a key's datums as they come and puts messages on ``output`` whenever it
    likes (typically in event-time order as the watermark progresses).
    """


class SessionReducer(metaclass=ABCMeta):
    """Base of a session reducer: one instance per session (a new one for a merged session).

    Give the class (with ``init_args``/``init_kwargs``) to ``SessionReduceAsyncServer``.
    ``accumulator`` and ``merge_accumulator`` may be plain or ``async`` methods.
    """

    @abstractmethod
    async def session_reduce(
        self, keys: List[str], datums: AsyncIterable[Datum], output: Any
    ) -> None:
        """Read the session's datums; put each result on ``output`` (sent at once)."""

    @abstractmethod
    def accumulator(self) -> Any:
        """The session's state as bytes, once ``session_reduce`` has returned.

        Called when the session is merged into another; may be ``async``.
        """

    @abstractmethod
    def merge_accumulator(self, accumulator: bytes) -> Any:
        """Take in the state of a session merged into this one (before its first datum).

        May be ``async``.
        """


class AccumulatorDatum(Datum):
    """One input of an accumulator: a :class:`~pynumaflow.mapper.Datum` whose ``id`` is set.

    Args:
        keys: the keys.
        value: the payload.
        event_time: the event time.
        watermark: the watermark.
        id_: the message id (an output built with :meth:`AccumulatorMessage.from_datum`
            carries it on).
        headers: the message headers.

    """

    __slots__ = ()

    def __init__(
        self,
        keys: Optional[List[str]],
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        id_: str = "",
        headers: Optional[Dict[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(keys, value, event_time, watermark, headers, user_metadata)
        self._inner._metadata = function.DatumMetadata(id_, 0)


class AccumulatorMessage(Message):
    """One output of an accumulator.

    Args:
        value: the payload.
        keys: the keys the message is routed by; ``None`` means none.
        tags: tags for conditional forwarding; ``None`` means none.
        watermark: its watermark; by convention the input datum's (it moves the
            key's window end, which lets the platform release what it holds).
        event_time: its event time; by convention the input datum's (``None``: the epoch).
        headers: its headers.
        id: its message id, by convention the input datum's (the platform dedups by it).
        user_metadata: ignored by the platform today; kept for symmetry.

    """

    __slots__ = ("_event_time", "_headers", "_id", "_watermark")

    def __init__(
        self,
        value: Optional[bytes],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        watermark: Optional[datetime] = None,
        event_time: Optional[datetime] = None,
        headers: Optional[Dict[str, str]] = None,
        id: Optional[str] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, keys, tags, user_metadata)
        for name, moment in (("watermark", watermark), ("event_time", event_time)):
            if moment is not None and not isinstance(moment, datetime):
                raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
        self._watermark = watermark
        self._event_time = event_time
        self._headers = dict(headers or {})
        self._id = id or ""

    @classmethod
    def from_datum(cls, datum: Datum) -> AccumulatorMessage:
        """The datum passed on as it is: its value, keys, times, headers and id."""
        return cls(
            datum.value,
            list(datum.keys),
            None,
            datum.watermark,
            datum.event_time,
            datum.headers,
            datum.id,
        )

    @classmethod
    def to_drop(cls) -> AccumulatorMessage:
        """Return a message that the platform drops."""
        return cls(b"", None, [function.DROP])

    @property
    def watermark(self) -> Optional[datetime]:
        """The watermark, if set."""
        return self._watermark

    @property
    def event_time(self) -> Optional[datetime]:
        """The event time, if set."""
        return self._event_time

    @property
    def headers(self) -> Dict[str, str]:
        """The headers."""
        return self._headers

    @property
    def id(self) -> str:
        """The message id."""
        return self._id


class ReduceWindow:
    """A reduce window and its slot, as pynumaflow 0.14.0 names it (handlers get ``md``).

    Args:
        start: its start.
        end: its end.
        slot: the platform's slot name.

    """

    __slots__ = ("_slot", "_window")

    def __init__(self, start: datetime, end: datetime, slot: str = "") -> None:
        self._window = function.IntervalWindow(start, end)
        self._slot = slot

    @property
    def start(self) -> datetime:
        """The start."""
        return self._window.start

    @property
    def end(self) -> datetime:
        """The end."""
        return self._window.end

    @property
    def slot(self) -> str:
        """The slot."""
        return self._slot

    @property
    def window(self) -> function.IntervalWindow:
        """The start and end as an interval window."""
        return self._window


class KeyedWindow(ReduceWindow):
    """A window with the keys it is for (an accumulator's window, or a session).

    Args:
        start: its start.
        end: its end.
        slot: the platform's slot name.
        keys: its keys.

    """

    __slots__ = ("_keys",)

    def __init__(
        self, start: datetime, end: datetime, slot: str = "", keys: Optional[List[str]] = None
    ) -> None:
        super().__init__(start, end, slot)
        self._keys = list(keys or [])

    @property
    def keys(self) -> List[str]:
        """The keys."""
        return self._keys

    def __repr__(self) -> str:
        return (
            f"KeyedWindow(start={self.start!r}, end={self.end!r}, "
            f"slot={self._slot!r}, keys={self._keys!r})"
        )
