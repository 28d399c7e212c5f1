"""Wire pieces every v1 protocol (Numaflow >= 1.4) shares: headers and common.Metadata.

Headers are a ``map<string, string>``: repeated entries ``{1 key, 2 value}``.
``common.Metadata`` (Numaflow >= 1.7) is ``{1 previous_vertex, 2 sys_metadata,
3 user_metadata}``; the SDK does not interpret it, but copies the request's user
metadata into its results so that it is not lost downstream (the platform takes a
result's user metadata only from the result).
"""

from __future__ import annotations

from typing import Dict

from pynumaflow._errors import CodecError
from pynumaflow._wire import read_varint, skip_field, varint

__all__ = ["decode_string_map_entry", "result_metadata", "user_metadata_of"]


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


def result_metadata(tag: bytes, user_metadata: bytes) -> bytes:
    """Encode a result's ``metadata`` field (with its ``tag``) carrying ``user_metadata``.

    Empty user metadata leaves the field out, as proto3 encoders do.
    """
    if not user_metadata:
        return b""
    return tag + varint(len(user_metadata)) + user_metadata
