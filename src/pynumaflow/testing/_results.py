"""The messages a v1 server answers, as the platform receives them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from pynumaflow._client.v1 import Result, UserMetadata
from pynumaflow._types.function import (
    Message,
    MessageT,
)
from pynumaflow._types.windowed import KeyedWindow
from pynumaflow.testing._data import (
    _UTC,
)


class _UserMetadata:
    """What a message as the platform received it over v1 adds: its user metadata.

    Equal to a plain message of its base class with the same fields; two such messages
    also compare their user metadata.
    """

    __slots__ = ()
    _user_metadata: Dict[str, Dict[str, bytes]]
    _plain: type = Message
    _fields: Tuple[str, ...] = ("value", "keys", "tags")

    @property
    def user_metadata(self) -> Dict[str, Dict[str, bytes]]:
        """The result's user metadata: group name -> key -> bytes."""
        return self._user_metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, self._plain):
            return NotImplemented
        same = all(getattr(self, f) == getattr(other, f) for f in self._fields)
        if isinstance(other, _UserMetadata):
            same = same and self._user_metadata == other._user_metadata
        return same

    __hash__ = None  # type: ignore[assignment]


def _copy(user_metadata: Optional[UserMetadata]) -> Dict[str, Dict[str, bytes]]:
    return {group: dict(kv) for group, kv in (user_metadata or {}).items()}


class ResultMessage(_UserMetadata, Message):
    """A map, map stream or reduce output as the platform received it over v1.

    A :class:`~pynumaflow.function.Message` that also carries the ``user_metadata`` of
    the result (the server echoes the request's); it compares equal to a plain
    ``Message`` with the same value, keys and tags.
    """

    __slots__ = ("_user_metadata",)

    def __init__(
        self,
        value: Optional[bytes],
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        *,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, keys, tags)
        self._user_metadata = _copy(user_metadata)


class ResultMessageT(_UserMetadata, MessageT):
    """A mapt output as the platform received it over v1, with its ``user_metadata``.

    Compares equal to a plain :class:`~pynumaflow.function.MessageT` with the same
    value, event time, keys and tags.
    """

    __slots__ = ("_user_metadata",)
    _plain = MessageT
    _fields = ("value", "event_time", "keys", "tags")

    def __init__(
        self,
        value: Optional[bytes],
        event_time: datetime,
        keys: Optional[List[str]] = None,
        tags: Optional[List[str]] = None,
        *,
        user_metadata: Optional[UserMetadata] = None,
    ) -> None:
        super().__init__(value, event_time, keys, tags)
        self._user_metadata = _copy(user_metadata)


def _message(result: Result) -> ResultMessage:
    return ResultMessage(result.value, result.keys, result.tags, user_metadata=result.user_metadata)


def _message_t(result: Result) -> ResultMessageT:
    moment = result.event_time or datetime(1970, 1, 1, tzinfo=_UTC)
    return ResultMessageT(
        result.value, moment, result.keys, result.tags, user_metadata=result.user_metadata
    )


@dataclass(frozen=True)
class KeyedAnswer:
    """One answer of an accumulator or session reduce server: an output, or an EOF.

    Attributes:
        window: the window it came with: the accumulator key's window (for the EOF,
            the closed window echoed), or the session's current window.
        message: the output (an accumulator ``Message`` with its event time, watermark,
            id and headers; for session reduce a :class:`ResultMessage`); None for
            the EOF.

    """

    window: KeyedWindow
    message: Optional[Message] = None

    @property
    def eof(self) -> bool:
        """Whether this is the EOF of its window (the key or session is done)."""
        return self.message is None
