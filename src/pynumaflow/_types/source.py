"""The datatypes of a user-defined source (the pynumaflow 0.14.0 ``pynumaflow.sourcer`` API)."""

from __future__ import annotations

import os
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, NamedTuple, Optional, Protocol

__all__ = [
    "AckRequest",
    "Message",
    "NackRequest",
    "Offset",
    "PartitionsResponse",
    "PendingResponse",
    "ReadLimits",
    "ReadOutput",
    "ReadRequest",
    "Sourcer",
    "get_default_partitions",
    "read_limits",
]


def get_default_partitions() -> List[int]:
    """The partitions of a single-partition source: ``[$NUMAFLOW_REPLICA]`` (0 if unset)."""
    return [int(os.environ.get("NUMAFLOW_REPLICA") or 0)]


class ReadLimits(NamedTuple):
    """The read batch limits the platform announces to the source container (Numaflow >= 1.7)."""

    batch_size: int
    """``$NUMAFLOW_READ_BATCH_SIZE``: records per read request (default 500)."""
    timeout_ms: int
    """``$NUMAFLOW_READ_TIMEOUT_MS``: how long one read may take (default 1000)."""


def read_limits() -> ReadLimits:
    """The read limits from the environment, for sizing buffers before the first read.

    Each :class:`ReadRequest` carries the same values and is authoritative; before
    Numaflow 1.7 the variables are absent and the platform defaults are returned.
    """
    size = os.environ.get("NUMAFLOW_READ_BATCH_SIZE") or "500"
    timeout = os.environ.get("NUMAFLOW_READ_TIMEOUT_MS") or "1000"
    return ReadLimits(int(size), int(timeout))


@dataclass(init=False, slots=True)
class Offset:
    """Where a message sits in the source: opaque bytes and a partition.

    The platform echoes both byte for byte in acks and nacks.

    Args:
        offset: the offset (must not be empty when sent).
        partition_id: the partition (0-65535: the platform keeps 16 bits).

    """

    _offset: bytes
    _partition_id: int

    def __init__(self, offset: bytes, partition_id: int) -> None:
        self._offset = offset
        self._partition_id = partition_id

    @classmethod
    def offset_with_default_partition_id(cls, offset: bytes) -> Offset:
        """An offset in the default partition (:func:`get_default_partitions`)."""
        return cls(offset, get_default_partitions()[0])

    @property
    def as_dict(self) -> Dict[str, object]:
        """``{"offset": ..., "partition_id": ...}``."""
        return {"offset": self._offset, "partition_id": self._partition_id}

    @property
    def offset(self) -> bytes:
        """The offset bytes."""
        return self._offset

    @property
    def partition_id(self) -> int:
        """The partition."""
        return self._partition_id


@dataclass(init=False, slots=True)
class Message:
    """A message a source reads: payload, offset and event time (keys and headers optional).

    Args:
        payload: the message's bytes.
        offset: where it sits in the source; acks and nacks name it.
        event_time: its event time (naive means UTC); it drives the source watermark.
        keys: its keys.
        headers: its headers.

    Raises:
        TypeError: a field has the wrong type.

    """

    _payload: bytes
    _offset: Offset
    _event_time: datetime
    _keys: List[str]
    _headers: Dict[str, str]

    def __init__(
        self,
        payload: bytes,
        offset: Offset,
        event_time: datetime,
        keys: Optional[List[str]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not isinstance(payload, bytes):
            raise TypeError(f"Wrong data type: {type(payload)} for Message.payload")
        if not isinstance(offset, Offset):
            raise TypeError(f"Wrong data type: {type(offset)} for Message.offset")
        if not isinstance(event_time, datetime):
            raise TypeError(f"Wrong data type: {type(event_time)} for Message.event_time")
        self._payload = payload
        self._offset = offset
        self._event_time = event_time
        self._keys = keys or []
        self._headers = dict(headers) if headers else {}

    @property
    def payload(self) -> bytes:
        """The message's bytes."""
        return self._payload

    @property
    def offset(self) -> Offset:
        """Where it sits in the source."""
        return self._offset

    @property
    def event_time(self) -> datetime:
        """Its event time."""
        return self._event_time

    @property
    def keys(self) -> List[str]:
        """Its keys."""
        return self._keys

    @property
    def headers(self) -> Dict[str, str]:
        """Its headers."""
        return self._headers


@dataclass(init=False, slots=True)
class ReadRequest:
    """One read: at most ``num_records`` messages within ``timeout_in_ms``.

    Raises:
        TypeError: a field is not an int.

    """

    _num_records: int
    _timeout_in_ms: int

    def __init__(self, num_records: int, timeout_in_ms: int) -> None:
        if not isinstance(num_records, int):
            raise TypeError(f"Wrong data type: {type(num_records)} for ReadRequest.num_records")
        if not isinstance(timeout_in_ms, int):
            raise TypeError(f"Wrong data type: {type(timeout_in_ms)} for ReadRequest.timeout_in_ms")
        self._num_records = num_records
        self._timeout_in_ms = timeout_in_ms

    @property
    def num_records(self) -> int:
        """How many messages the platform asks for at most."""
        return self._num_records

    @property
    def timeout_in_ms(self) -> int:
        """How long the read may take; then the server ends the batch (0: no limit)."""
        return self._timeout_in_ms


@dataclass(init=False, slots=True)
class _OffsetsRequest:
    _offsets: List[Offset]

    def __init__(self, offsets: List[Offset]) -> None:
        self._offsets = offsets

    @property
    def offsets(self) -> List[Offset]:
        """The offsets, in the order the platform sent them."""
        return self._offsets


@dataclass(init=False, slots=True)
class AckRequest(_OffsetsRequest):
    """The offsets of a read batch that were processed (every offset of it not nacked)."""


@dataclass(init=False, slots=True)
class NackRequest(_OffsetsRequest):
    """Offsets whose messages failed downstream: the source should deliver them again."""


@dataclass(init=False, slots=True)
class PendingResponse:
    """The source's backlog: a record count, negative when not available.

    Raises:
        TypeError: ``count`` is not an int.

    """

    _count: int

    def __init__(self, count: int) -> None:
        if not isinstance(count, int):
            raise TypeError(f"Wrong data type: {type(count)} for Pending.count")
        self._count = count

    @property
    def count(self) -> int:
        """The number of pending records (negative: not available)."""
        return self._count


@dataclass(init=False, slots=True)
class PartitionsResponse:
    """The partitions this replica reads; the platform publishes a watermark per partition.

    Raises:
        TypeError: ``partitions`` is not a list.

    """

    _partitions: List[int]

    def __init__(self, partitions: List[int]) -> None:
        if not isinstance(partitions, list):
            raise TypeError(f"Wrong data type: {type(partitions)} for Partition.partitions")
        self._partitions = partitions

    @property
    def partitions(self) -> List[int]:
        """The partitions."""
        return self._partitions


class ReadOutput(Protocol):
    """Where a read handler puts the messages it read (the second argument of ``read_handler``)."""

    async def put(self, message: Message) -> None:
        """Send one message of the batch; once this returns, the message is in the batch."""


class Sourcer(metaclass=ABCMeta):
    """A user-defined source: implement the five async handlers.

    The server calls :meth:`read_handler` once per read request and ends the batch when
    it returns, or when the request's timeout has passed (the handler is then
    cancelled). The platform acks or nacks every offset it was sent; the server never
    acks on its own.
    """

    @abstractmethod
    async def read_handler(self, datum: ReadRequest, output: ReadOutput) -> None:
        """Read at most ``datum.num_records`` messages, ``await output.put(message)`` each."""

    @abstractmethod
    async def ack_handler(self, ack_request: AckRequest) -> None:
        """Acknowledge offsets: their messages were processed (return once durable)."""

    @abstractmethod
    async def nack_handler(self, nack_request: NackRequest) -> None:
        """Make these offsets readable again (Numaflow >= 1.7 calls it)."""

    @abstractmethod
    async def pending_handler(self) -> PendingResponse:
        """The backlog (negative count: not available)."""

    @abstractmethod
    async def active_partitions_handler(self) -> PartitionsResponse:
        """The partitions this replica reads (often :func:`get_default_partitions`)."""

    async def total_partitions_handler(self) -> Optional[int]:
        """The source's partitions over all replicas (Numaflow >= 1.8), or None (unknown)."""
        return None
