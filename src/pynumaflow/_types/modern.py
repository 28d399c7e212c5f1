"""The datatypes of the modern API (pynumaflow 0.9-0.14: ``pynumaflow.mapper`` and siblings).

A modern :class:`Datum` is a view of the one internal datum the codec builds (the 0.4
API's :class:`pynumaflow.function.Datum` or :class:`pynumaflow.sink.Datum`): the faces
wrap each request's datum once, and its user and system metadata are decoded only when
the request carried some. Results are the 0.4 types extended with user metadata, so the
codec encodes them by the same rules.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, List, Optional, Type, TypeVar, Union

from pynumaflow._types import function, sink
from pynumaflow._types.collections import ItemList
from pynumaflow._types.nack import NackOptions

__all__ = [
    "Datum",
    "MapStreamer",
    "Mapper",
    "Message",
    "MetadataResponse",
    "Reducer",
    "SinkDatum",
    "SinkMessage",
    "SinkResponse",
    "SinkResponses",
    "Sinker",
    "SourceTransformer",
    "SystemMetadata",
    "TransformMessage",
    "UserMetadata",
]

Groups = Dict[str, Dict[str, bytes]]


class SystemMetadata:
    """Metadata the platform attached to a message, by group and key (read-only)."""

    __slots__ = ("_data",)

    def __init__(self, _data: Optional[Groups] = None) -> None:
        self._data: Groups = _data if _data is not None else {}

    def groups(self) -> List[str]:
        """The group names."""
        return list(self._data)

    def keys(self, group: str) -> List[str]:
        """The keys of ``group`` (none if it does not exist)."""
        return list(self._data.get(group, {}))

    def value(self, group: str, key: str) -> Optional[bytes]:
        """The value of ``key`` in ``group``, or None."""
        return self._data.get(group, {}).get(key)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SystemMetadata)
        return self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(_data={self._data!r})"


class UserMetadata(SystemMetadata):
    """Metadata users attach to a message, by group and key; it travels downstream.

    Read it from ``datum.user_metadata``; give it to a result with
    ``Message(..., user_metadata=md)``. Numaflow >= 1.7 carries it.
    """

    __slots__ = ()

    def __contains__(self, group: object) -> bool:
        return group in self._data

    def __getitem__(self, group: str) -> Dict[str, bytes]:
        return self._data[group]

    def __setitem__(self, group: str, data: Dict[str, bytes]) -> None:
        self._data[group] = data

    def __delitem__(self, group: str) -> None:
        del self._data[group]

    def __len__(self) -> int:
        return len(self._data)

    def keys(self, group: str) -> List[str]:
        """The keys of ``group`` (none if it does not exist)."""
        return list(self._data.get(group) or {})

    def value(self, group: str, key: str) -> Optional[bytes]:
        """The value of ``key`` in ``group``, or None."""
        values = self._data.get(group)
        return None if values is None else values.get(key)

    def add_key(self, group: str, key: str, value: bytes) -> None:
        """Set ``key`` in ``group`` (creating the group)."""
        self._data.setdefault(group, {})[key] = value

    def remove_key(self, group: str, key: str) -> Optional[bytes]:
        """Remove ``key`` from ``group`` and return its value (None if absent).

        A group left empty is removed.
        """
        values = self._data.get(group)
        if values is None:
            return None
        value = values.pop(key, None)
        if not values:
            del self._data[group]
        return value

    def remove_group(self, group: str) -> Optional[Dict[str, bytes]]:
        """Remove ``group`` and return its keys and values (None if absent)."""
        return self._data.pop(group, None)

    def clear(self) -> None:
        """Remove every group."""
        self._data.clear()


def _check_user_metadata(user_metadata: Optional[UserMetadata]) -> UserMetadata:
    if user_metadata is None:
        return UserMetadata()
    if not isinstance(user_metadata, UserMetadata):
        raise TypeError(f"user_metadata must be UserMetadata, got {type(user_metadata).__name__}")
    return user_metadata


# --- inputs ---------------------------------------------------------------------------------


class _DatumView:
    """What every modern datum shows of the internal one it views."""

    __slots__ = ("_inner", "_system", "_user")
    _inner: Union[function.Datum, sink.Datum]

    @classmethod
    def _view(cls: Type[_V], inner: Any, user: UserMetadata, system: SystemMetadata) -> _V:
        view = object.__new__(cls)
        view._inner = inner
        view._user = user
        view._system = system
        return view

    def _metadata(
        self, user_metadata: Optional[UserMetadata], system_metadata: Optional[SystemMetadata]
    ) -> None:
        self._user = _check_user_metadata(user_metadata)
        self._system = system_metadata if system_metadata is not None else SystemMetadata()

    @property
    def keys(self) -> List[str]:
        """The keys."""
        return self._inner.keys

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._inner.value

    @property
    def event_time(self) -> datetime:
        """The event time (naive, UTC)."""
        return self._inner.event_time

    @property
    def watermark(self) -> datetime:
        """The watermark (naive, UTC)."""
        return self._inner.watermark

    @property
    def headers(self) -> Dict[str, str]:
        """A copy of the message headers."""
        return dict(self._inner.headers)

    @property
    def user_metadata(self) -> UserMetadata:
        """The message's user metadata (Numaflow >= 1.7, else empty)."""
        return self._user

    @property
    def system_metadata(self) -> SystemMetadata:
        """The metadata the platform attached (read-only; Numaflow >= 1.7, else empty)."""
        return self._system


_V = TypeVar("_V", bound=_DatumView)


class Datum(_DatumView):
    """One input of a map, map stream, source transformer or reduce handler.

    Times are naive ``datetime`` objects in UTC. ``headers`` is a copy (a ``dict``);
    ``id`` is the request id (empty for reduce).
    """

    __slots__ = ()
    _inner: function.Datum

    def __init__(
        self,
        keys: Optional[List[str]],
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        headers: Optional[Dict[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
        system_metadata: Optional[SystemMetadata] = None,
    ) -> None:
        self._inner = function.Datum(keys, value, event_time, watermark, headers=headers)
        self._metadata(user_metadata, system_metadata)

    @property
    def id(self) -> str:
        """The request id."""
        return self._inner.metadata.id

    def __repr__(self) -> str:
        inner = self._inner
        return (
            f"Datum(keys={list(inner.keys)!r}, value={inner.value!r}, "
            f"event_time={inner.event_time!r}, watermark={inner.watermark!r}, "
            f"headers={dict(inner.headers)!r})"
        )


class SinkDatum(_DatumView):
    """One datum of the batch a sink handler receives; answer it by its ``id``."""

    __slots__ = ()
    _inner: sink.Datum

    def __init__(
        self,
        keys: Optional[List[str]],
        sink_msg_id: str,
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        headers: Optional[Dict[str, str]] = None,
        user_metadata: Optional[UserMetadata] = None,
        system_metadata: Optional[SystemMetadata] = None,
    ) -> None:
        self._inner = sink.Datum(keys, sink_msg_id, value, event_time, watermark, headers=headers)
        self._metadata(user_metadata, system_metadata)

    @property
    def id(self) -> str:
        """The id its Response must carry."""
        return self._inner.id

    def __str__(self) -> str:
        inner = self._inner
        value = inner.value.decode("utf-8", "backslashreplace")
        return (
            f"keys: {inner.keys}, id: {inner.id}, value: {value}, "
            f"event_time: {inner.event_time}, watermark: {inner.watermark}, "
            f"headers: {dict(inner.headers)}"
        )

    __repr__ = __str__


# --- outputs ----------------------------------------------------------------------------------


class Message(function.Message):
    """One output of a map, map stream or reduce handler, with its user metadata.

    Args:
        value: the payload.
        keys: the keys the message is routed by; ``None`` means none.
        tags: tags for conditional forwarding; ``None`` means none.
        user_metadata: the metadata the message carries downstream; ``None`` means none.

    """

    __slots__ = ("_user_metadata",)

    def __init__(
        self,
        value: Optional[bytes],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, keys, tags)
        self._user_metadata = _check_user_metadata(user_metadata)

    @classmethod
    def to_drop(cls) -> Message:
        """Return a message that the platform drops."""
        return cls(b"", None, [function.DROP])

    @property
    def user_metadata(self) -> UserMetadata:
        """The user metadata the message carries."""
        return self._user_metadata


class TransformMessage(function.MessageT):
    """One output of a source transformer: a message with its (new) event time."""

    __slots__ = ("_user_metadata",)

    def __init__(
        self,
        value: Optional[bytes],
        event_time: datetime,
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, event_time, keys, tags)
        self._user_metadata = _check_user_metadata(user_metadata)

    @classmethod
    def to_drop(cls, event_time: datetime = datetime(1, 1, 1)) -> TransformMessage:
        """Return a message that the platform drops (keeping ``event_time``)."""
        return cls(b"", event_time, None, [function.DROP])

    @property
    def event_time(self) -> datetime:
        """The event time assigned to the message."""
        return self._event_time  # type: ignore[return-value]

    @property
    def user_metadata(self) -> UserMetadata:
        """The user metadata the message carries."""
        return self._user_metadata


class SinkMessage:
    """The message an on-success sink gets instead of the datum: value, keys, user metadata."""

    __slots__ = ("_keys", "_user_metadata", "_value")

    def __init__(
        self,
        value: bytes,
        keys: Optional[List[str]] = None,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        function.Message(value, keys)  # the same checks as every message's
        self._value = value
        self._keys = keys
        self._user_metadata = user_metadata

    def with_keys(self, keys: Optional[List[str]]) -> SinkMessage:
        """Set the keys; returns the message."""
        self._keys = keys
        return self

    def with_user_metadata(self, user_metadata: Optional[UserMetadata]) -> SinkMessage:
        """Set the user metadata; returns the message."""
        self._user_metadata = user_metadata
        return self

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._value

    @property
    def keys(self) -> Optional[List[str]]:
        """The keys."""
        return self._keys

    @property
    def user_metadata(self) -> Optional[UserMetadata]:
        """The user metadata."""
        return self._user_metadata

    def __repr__(self) -> str:
        return (
            f"Message(value={self._value!r}, keys={self._keys!r}, "
            f"user_metadata={self._user_metadata!r})"
        )


@dataclass(slots=True)
class SinkResponse:
    """The outcome of writing one datum, as pynumaflow 0.14.0 spells it.

    Build it with :meth:`as_success`, :meth:`as_failure`, :meth:`as_fallback`,
    :meth:`as_on_success` or :meth:`as_serve`.
    """

    id: str
    success: bool
    err: Optional[str]
    fallback: bool
    on_success: bool
    on_success_msg: Optional[SinkMessage]
    serve: bool = False
    serve_response: Optional[bytes] = None
    nack_options: Optional[NackOptions] = None

    @classmethod
    def as_success(cls, id_: str) -> SinkResponse:
        """The datum was written."""
        return cls(id_, True, None, False, False, None)

    @classmethod
    def as_failure(cls, id_: str, err_msg: str) -> SinkResponse:
        """The datum was not written, and why: the platform retries it."""
        return cls(id_, False, err_msg, False, False, None)

    @classmethod
    def as_fallback(cls, id_: str) -> SinkResponse:
        """Send the datum to the fallback sink."""
        return cls(id_, False, None, True, False, None)

    @classmethod
    def as_on_success(cls, id_: str, on_success: Optional[SinkMessage] = None) -> SinkResponse:
        """The datum was written; the on-success sink gets ``on_success`` or else the datum."""
        return cls(id_, False, None, False, True, on_success)

    @classmethod
    def as_serve(cls, id_: str, payload: Optional[bytes] = None) -> SinkResponse:
        """The datum was written; ``payload`` (default: its value) answers a serving pipeline.

        Numaflow >= 1.5; not in pynumaflow 0.14.0.
        """
        return cls(id_, True, None, False, False, None, True, payload)

    @classmethod
    def as_nack(cls, id_: str, options: Optional[NackOptions] = None) -> SinkResponse:
        """Ask the platform to redeliver the datum later: see ``pynumaflow.sink.Response.as_nack``.

        Not in pynumaflow 0.14.0.
        """
        options = options if options is not None else NackOptions()
        return cls(id_, False, options.reason, False, False, None, nack_options=options)


class SinkResponses(ItemList[SinkResponse]):
    """What a sink handler returns, one :class:`SinkResponse` per datum."""

    __slots__ = ()


@dataclass(slots=True, repr=False)
class MetadataResponse(sink.Response):
    """An internal on-success response whose message carries its own user metadata."""

    user_metadata: Optional[UserMetadata] = None


# --- handler classes --------------------------------------------------------------------------


class _HandlerClass(metaclass=ABCMeta):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler(*args, **kwargs)

    @abstractmethod
    def handler(self, *args: Any) -> Any:
        """The handler."""


class Mapper(_HandlerClass):
    """Base of a class map handler: implement ``handler(keys, datum) -> Messages`` (or async)."""


class MapStreamer(_HandlerClass):
    """Base of a class map stream handler: ``handler(keys, datum)`` yields ``Message``."""


class SourceTransformer(_HandlerClass):
    """Base of a class source transformer: ``handler(keys, datum) -> Messages``."""


class Reducer(_HandlerClass):
    """Base of a class reduce handler: ``async handler(keys, datums, md) -> Messages``.

    Give the class itself (with ``init_args``/``init_kwargs``) to ``ReduceAsyncServer``
    for a new instance per key and window.
    """


class Sinker(_HandlerClass):
    """Base of a class sink handler: ``handler(datums) -> Responses`` (or async)."""
