"""The batch map results of the modern API (``pynumaflow.batchmapper``, pynumaflow 0.14.0).

A batch map handler gets a batch's datums (the modern :class:`~pynumaflow.mapper.Datum`,
whose ``id`` is the request id) and returns :class:`BatchResponses`: one
:class:`BatchResponse` per datum, carrying all of that datum's output messages.
"""

from __future__ import annotations

from typing import List, Optional

from pynumaflow._types.collections import ItemList
from pynumaflow._types.modern import Message, _HandlerClass

__all__ = ["BatchMapper", "BatchResponse", "BatchResponses"]


class BatchResponse:
    """The output of one datum of a batch: its ``id`` and its messages (none: no output).

    An empty response still answers the datum: the platform acknowledges it.
    """

    __slots__ = ("_id", "messages")

    def __init__(self, _id: str, messages: Optional[List[Message]] = None) -> None:
        self._id = _id
        self.messages: List[Message] = messages if messages is not None else []

    @classmethod
    def from_id(cls, id_: str) -> BatchResponse:
        """An answer to datum ``id_`` with no messages yet."""
        return cls(id_)

    @classmethod
    def with_msgs(cls, id_: str, msgs: List[Message]) -> BatchResponse:
        """An answer to datum ``id_`` with these messages."""
        return cls(id_, msgs)

    def append(self, message: Message) -> None:
        """Add one output message."""
        self.messages.append(message)

    def items(self) -> List[Message]:
        """The output messages."""
        return self.messages

    @property
    def id(self) -> str:
        """The id of the datum answered."""
        return self._id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchResponse):
            return NotImplemented
        return self._id == other._id and self.messages == other.messages

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BatchResponse(id={self._id!r}, messages={self.messages!r})"


class BatchResponses(ItemList[BatchResponse]):
    """What a batch map handler returns: one :class:`BatchResponse` per datum of the batch."""

    __slots__ = ()

    def items(self) -> List[BatchResponse]:
        """The responses as a list (not deprecated here, as in pynumaflow 0.14.0)."""
        return self._items


class BatchMapper(_HandlerClass):
    """Base of a class batch map handler: ``async handler(datums) -> BatchResponses``.

    ``datums`` is an async iterator over the batch's datums (a plain iterator for a sync
    ``handler``).
    """
