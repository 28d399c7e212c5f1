"""The field library every codec shares: the request-field loop, flags, maps, metadata, times.

The request of every protocol starts with the same four fields (1 keys, 2 value,
3 event_time, 4 watermark); what follows differs by protocol and generation, and a
:class:`RequestLayout` names it. :func:`decode_request` is the one loop that reads them
all. Headers are a ``map<string, string>``: repeated entries ``{1 key, 2 value}``.
``common.Metadata`` (Numaflow >= 1.7) is ``{1 previous_vertex, 2 sys_metadata,
3 user_metadata}``; the SDK does not interpret it, but copies the request's user
metadata into its results so that it is not lost downstream (the platform takes a
result's user metadata only from the result).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, List, Optional, Tuple

from pynumaflow._codec.wire import (
    U64,
    TimestampParts,
    decode_timestamp,
    fast_varint,
    naive_utc,
    read_varint,
    skip_field,
    varint,
)
from pynumaflow._types.errors import CodecError
from pynumaflow._types.function import NO_HEADERS, Datum, DatumMetadata, Keys
from pynumaflow._types.sink import Datum as SinkDatum

__all__ = [
    "DELIVERY",
    "HEADER",
    "ID",
    "METADATA",
    "USER_METADATA",
    "RequestFields",
    "RequestLayout",
    "decode_flag",
    "decode_metadata",
    "decode_request",
    "decode_string_map_entry",
    "decode_time_wrapper",
    "encode_user_metadata",
    "new_datum",
    "new_sink_datum",
    "read_length",
    "result_metadata",
    "user_metadata_of",
]

# --- times --------------------------------------------------------------------------------


def decode_time_wrapper(
    data: bytes, pos: int, end: int, parts: TimestampParts, name: str
) -> TimestampParts:
    """Decode a legacy EventTime/Watermark: a message whose field 1 is a Timestamp."""
    # Fast path for what encoders write: 0a LEN Timestamp, nothing else.
    if end - pos >= 2 and data[pos] == 0x0A and data[pos + 1] == end - pos - 2:
        return decode_timestamp(data, pos + 2, end, parts)
    return _decode_time_wrapper_slow(data, pos, end, parts, name)


def _decode_time_wrapper_slow(
    data: bytes, pos: int, end: int, parts: TimestampParts, name: str
) -> TimestampParts:
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1:
            if wire_type != 2:
                raise CodecError(f"{name} field 1 has wire type {wire_type}, expected 2")
            length, pos = read_varint(data, pos)
            sub_end = pos + length
            if sub_end > end:
                raise CodecError(f"{name} is truncated")
            parts = decode_timestamp(data, pos, sub_end, parts)
            pos = sub_end
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError(f"{name} overruns its enclosing message")
    return parts


# --- the request fields ---------------------------------------------------------------------

ID, HEADER, USER_METADATA, DELIVERY, METADATA = range(5)
"""What a request field after the watermark holds: the id (a string), one headers
entry, a common.Metadata (its user metadata is kept), function.v1's delivery Metadata,
a common.Metadata kept whole (the modern API reads its user and system metadata)."""


@dataclass(frozen=True)
class RequestLayout:
    """Where one protocol puts the request fields after 1-4.

    Attributes:
        name: the request message's name, for errors.
        extra: field number -> ID, HEADER, USER_METADATA, DELIVERY or METADATA.
        wrapped_times: fields 3 and 4 are EventTime/Watermark messages wrapping a
            Timestamp (the legacy protocols), not bare Timestamps (v1).

    """

    name: str
    extra: Mapping[int, int]
    wrapped_times: bool = False
    last: int = dataclasses.field(init=False)
    """The highest field number the layout knows; higher ones are skipped."""
    roles: Tuple[Optional[int], ...] = dataclasses.field(init=False)
    """:attr:`extra` as a tuple indexed by field number (None: not used)."""

    def __post_init__(self) -> None:
        last = max(self.extra, default=4)
        object.__setattr__(self, "last", last)
        object.__setattr__(self, "roles", tuple(self.extra.get(n) for n in range(last + 1)))


RequestFields = Tuple[
    List[str], bytes, TimestampParts, TimestampParts, str, int, Optional[Dict[str, str]], bytes
]
"""The request fields decoded so far: keys, value, event time, watermark, id, delivery
count, headers (None: none) and encoded user metadata. A plain tuple: it is built for
every request."""

_NO_FIELDS_YET: Tuple[bytes, TimestampParts, TimestampParts, str, int, None, bytes] = (
    b"",
    (0, 0),
    (0, 0),
    "",
    0,
    None,
    b"",
)


def decode_request(
    data: bytes,
    layout: RequestLayout,
    pos: int = 0,
    size: Optional[int] = None,
    fields: Optional[RequestFields] = None,
) -> RequestFields:
    """Decode the request in ``data[pos:size]`` (by default all of ``data``).

    Unknown fields are skipped; ``fields`` (from an earlier occurrence of the same
    message) is continued, so that occurrences merge as protobuf says. Strings that
    are not UTF-8 raise ``UnicodeDecodeError``: the caller names the message.

    Raises:
        CodecError: a field has the wrong wire type, is truncated, or overruns ``size``.
        UnicodeDecodeError: a key or id is not valid UTF-8.

    """
    if fields is None:
        keys: List[str] = []
        value, event_time, watermark, msg_id, num_delivered, headers, user_metadata = _NO_FIELDS_YET
    else:
        keys, value, event_time, watermark, msg_id, num_delivered, headers, user_metadata = fields
    name, roles, wrapped_times, last = layout.name, layout.roles, layout.wrapped_times, layout.last
    if size is None:
        size = len(data)
    while pos < size:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(data, pos)
        field = tag >> 3
        wire_type = tag & 7
        if not 1 <= field <= last:
            pos = skip_field(data, pos, wire_type, field)
            continue
        if wire_type != 2:
            raise CodecError(f"{name} field {field} has wire type {wire_type}, expected 2")
        # read_length, inlined: this loop runs for every field of every request.
        length = data[pos] if pos < size else 0x80
        if length < 0x80:
            pos += 1
        else:
            length, pos = read_varint(data, pos)
        end = pos + length
        if end > size:
            raise CodecError(f"{name} field {field} is truncated")
        if field == 1:
            keys.append(data[pos:end].decode())
        elif field == 2:
            value = data[pos:end]
        elif field == 3:
            if wrapped_times:
                event_time = decode_time_wrapper(data, pos, end, event_time, "EventTime")
            else:
                event_time = decode_timestamp(data, pos, end, event_time)
        elif field == 4:
            if wrapped_times:
                watermark = decode_time_wrapper(data, pos, end, watermark, "Watermark")
            else:
                watermark = decode_timestamp(data, pos, end, watermark)
        else:
            role = roles[field]
            if role == DELIVERY:
                msg_id, num_delivered = _decode_delivery(data, pos, end, msg_id, num_delivered)
            elif role == ID:
                msg_id = data[pos:end].decode()
            elif role == HEADER:
                if headers is None:
                    headers = {}
                decode_string_map_entry(data, pos, end, headers)
            elif role == USER_METADATA:
                user_metadata += user_metadata_of(data, pos, end)
            elif role == METADATA:
                _check_metadata(data, pos, end)  # malformed: refused here, as above
                user_metadata += data[pos:end]  # occurrences merge: concatenated
            # else: a field between known ones that this layout does not use: skipped.
        pos = end
    if pos != size:  # an unknown field ran past the message's end
        raise CodecError(f"{name} overruns its enclosing message")
    return keys, value, event_time, watermark, msg_id, num_delivered, headers, user_metadata


def _decode_delivery(
    data: bytes, pos: int, end: int, msg_id: str, num_delivered: int
) -> Tuple[str, int]:
    """Decode function.v1 Metadata{1 id, 2 num_delivered} over the values seen so far."""
    # Fast path for what encoders write: [0a LEN id] [10 num_delivered], nothing else.
    if pos < end and data[pos] == 0x0A and data[pos + 1] < 0x80:
        id_end = pos + 2 + data[pos + 1]
        if id_end == end or (id_end < end and data[id_end] == 0x10):
            cursor = id_end
            raw = num_delivered
            if id_end < end:
                raw, cursor = fast_varint(data, id_end + 1, end)
            if cursor == end:
                return data[pos + 2 : id_end].decode(), raw & (U64 - 1)
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 and wire_type == 2:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise CodecError("Metadata.id is truncated")
            msg_id = data[pos : pos + length].decode()
            pos += length
        elif field == 2 and wire_type == 0:
            num_delivered, pos = read_varint(data, pos)
            num_delivered &= U64 - 1
        elif field in (1, 2):
            raise CodecError(f"Metadata field {field} has wire type {wire_type}")
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError("Metadata overruns its enclosing message")
    return msg_id, num_delivered


# --- datums -----------------------------------------------------------------------------------

_new_object = object.__new__


def new_datum(fields: RequestFields, metadata: DatumMetadata) -> Datum:
    """A function Datum from decoded fields, built without Datum.__init__'s argument checks.

    Its ``user_metadata`` is an encoded common.Metadata holding only the request's user
    metadata (see :func:`user_metadata_of`).
    """
    keys, value, event_time, watermark, _, _, headers, user_metadata = fields
    datum = _new_object(Datum)
    datum._keys = Keys(keys)
    datum._value = value
    datum._event_time = naive_utc(event_time)
    datum._watermark = naive_utc(watermark)
    datum._metadata = metadata
    datum._headers = MappingProxyType(headers) if headers else NO_HEADERS
    datum._user_metadata = user_metadata
    return datum


def new_sink_datum(fields: RequestFields) -> SinkDatum:
    """A sink Datum from decoded fields, built without Datum.__init__'s argument checks."""
    keys, value, event_time, watermark, msg_id, _, headers, user_metadata = fields
    datum = _new_object(SinkDatum)
    datum._keys = keys
    datum._id = msg_id
    datum._value = value
    datum._event_time = naive_utc(event_time)
    datum._watermark = naive_utc(watermark)
    datum._headers = MappingProxyType(headers) if headers else NO_HEADERS
    datum._user_metadata = user_metadata
    return datum


# --- small messages -----------------------------------------------------------------------------


def read_length(data: bytes, pos: int, size: int, what: str, field: int = 0) -> Tuple[int, int]:
    """Read the length prefix at ``pos``: (start, end) of the value, which ends by ``size``.

    Raises:
        CodecError: the value runs past ``size`` ("<what> [field <field>] is truncated").

    """
    length = data[pos] if pos < size else 0x80
    if length < 0x80:
        pos += 1
    else:
        length, pos = read_varint(data, pos)
    end = pos + length
    if end > size:
        raise CodecError(f"{what} field {field} is truncated" if field else f"{what} is truncated")
    return pos, end


def decode_flag(data: bytes, pos: int, end: int, value: bool, name: str) -> bool:
    """Decode a message whose field 1 is a bool (Handshake.sot, TransmissionStatus.eot)."""
    while pos < end:
        tag, pos = read_varint(data, pos)
        if tag == 0x08:
            raw, pos = read_varint(data, pos)
            value = raw != 0
        elif tag >> 3 == 1:
            raise CodecError(f"{name} field 1 has wire type {tag & 7}, expected 0")
        else:
            pos = skip_field(data, pos, tag & 7, tag >> 3)
    if pos != end:
        raise CodecError(f"{name} overruns its enclosing message")
    return value


def decode_string_map_entry(data: bytes, pos: int, end: int, into: Dict[str, str]) -> None:
    """Decode one ``map<string, string>`` entry in data[pos:end] into ``into``."""
    key = ""
    value = ""
    try:
        while pos < end:
            tag, pos = read_varint(data, pos)
            field, wire_type = tag >> 3, tag & 7
            if field in (1, 2) and wire_type == 2:
                length, pos = read_varint(data, pos)
                if pos + length > end:
                    raise CodecError("map entry is truncated")
                text = data[pos : pos + length].decode()
                pos += length
                if field == 1:
                    key = text
                else:
                    value = text
            elif field in (1, 2):
                raise CodecError(f"map entry field {field} has wire type {wire_type}")
            else:
                pos = skip_field(data, pos, wire_type, field)
    except UnicodeDecodeError as err:
        raise CodecError(f"map entry is not valid UTF-8: {err}") from None
    if pos != end:
        raise CodecError("map entry overruns its enclosing message")
    into[key] = value


def user_metadata_of(data: bytes, pos: int, end: int) -> bytes:
    """From a common.Metadata in data[pos:end], the user_metadata entries, still encoded.

    The result is itself a valid common.Metadata body holding only the user metadata.
    """
    kept = []
    while pos < end:
        start = pos
        tag, pos = read_varint(data, pos)
        pos = skip_field(data, pos, tag & 7, tag >> 3)
        if pos > end:
            raise CodecError("Metadata is truncated")
        if tag == 0x1A:  # field 3, length-delimited: one user_metadata entry
            kept.append(data[start:pos])
    return b"".join(kept)


def _check_metadata(data: bytes, pos: int, end: int) -> None:
    """Refuse a common.Metadata in data[pos:end] that :func:`user_metadata_of` would refuse.

    Its fields 1-3 with lengths under 16 KiB, as encoders write them, are walked here;
    anything else is left to :func:`user_metadata_of`.
    """
    start = pos
    while pos < end:
        if data[pos] not in (0x0A, 0x12, 0x1A) or pos + 1 >= end:
            break
        length = data[pos + 1]
        pos += 2
        if length >= 0x80:
            if pos >= end or data[pos] >= 0x80:
                break
            length = (length & 0x7F) | data[pos] << 7
            pos += 1
        pos += length
    else:
        if pos == end:
            return
    user_metadata_of(data, start, end)


def result_metadata(tag: bytes, user_metadata: bytes) -> bytes:
    """Encode a result's ``metadata`` field (with its ``tag``) carrying ``user_metadata``.

    Empty user metadata leaves the field out, as proto3 encoders do.
    """
    if not user_metadata:
        return b""
    return tag + varint(len(user_metadata)) + user_metadata


MetadataGroups = Dict[str, Dict[str, bytes]]
"""Metadata by group name, then key."""


def decode_metadata(raw: bytes) -> Tuple[MetadataGroups, MetadataGroups]:
    """The user and the system metadata groups of a common.Metadata body.

    ``raw`` may also be the user entries alone that :func:`user_metadata_of` kept.
    Each group is a ``map<string, KeyValueGroup>`` entry, ``{1 group, 2
    KeyValueGroup{1 key_value: map<string, bytes>}}``: system groups at field 2, user
    groups at field 3.

    Raises:
        CodecError: the bytes are not such a message.

    """
    user: MetadataGroups = {}
    system: MetadataGroups = {}
    try:
        for field, entry in _length_fields(raw, 0, len(raw), "Metadata"):
            if field not in (2, 3):
                continue
            name, values = "", {}
            for entry_field, part in _length_fields(entry, 0, len(entry), "metadata entry"):
                if entry_field == 1:
                    name = part.decode()
                elif entry_field == 2:
                    values = _decode_key_values(part)
            (user if field == 3 else system).setdefault(name, {}).update(values)
    except UnicodeDecodeError as err:
        raise CodecError(f"metadata is not valid UTF-8: {err}") from None
    return user, system


def _decode_key_values(body: bytes) -> Dict[str, bytes]:
    """KeyValueGroup{1 key_value: map<string, bytes>}."""
    values: Dict[str, bytes] = {}
    for field, entry in _length_fields(body, 0, len(body), "KeyValueGroup"):
        if field == 1:
            key, value = "", b""
            for entry_field, part in _length_fields(entry, 0, len(entry), "key_value entry"):
                if entry_field == 1:
                    key = part.decode()
                elif entry_field == 2:
                    value = part
            values[key] = value
    return values


def _length_fields(data: bytes, pos: int, end: int, what: str) -> List[Tuple[int, bytes]]:
    """The length-delimited fields of the message in data[pos:end]; others are skipped."""
    found = []
    while pos < end:
        tag, pos = read_varint(data, pos)
        if tag & 7 != 2:
            pos = skip_field(data, pos, tag & 7, tag >> 3)
            continue
        start, pos = read_length(data, pos, end, what)
        found.append((tag >> 3, data[start:pos]))
    if pos != end:
        raise CodecError(f"{what} overruns its enclosing message")
    return found


def encode_user_metadata(groups: Mapping[str, Mapping[str, bytes]]) -> bytes:
    """Encode user metadata groups as a common.Metadata body (its field 3 entries)."""
    out: List[bytes] = []
    for name, values in groups.items():
        group = b"".join(
            _entry(b"\x0a", _entry(b"\x0a", key.encode()) + _entry(b"\x12", value))
            for key, value in values.items()
        )
        out.append(_entry(b"\x1a", _entry(b"\x0a", name.encode()) + _entry(b"\x12", group)))
    return b"".join(out)


def _entry(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body
