"""Hypothesis strategies and wire helpers the codec tests share (one place, not copies)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

from hypothesis import strategies as st

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
U64 = 1 << 64

# Whole microseconds from year 1 to 9999: what a datetime can hold.
moments = st.integers(
    min_value=(datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1),
    max_value=(datetime(9999, 12, 31, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1),
).map(lambda us: EPOCH + timedelta(microseconds=us))
# A time field that may be left out.
optional_times: st.SearchStrategy[Optional[datetime]] = st.none() | st.datetimes(
    timezones=st.just(UTC)
)
# Timestamps datetime can hold (years 1..9999), with any nanos.
seconds_in_range = st.integers(-62_135_596_800, 253_402_300_799)


def key_lists(max_size: int) -> st.SearchStrategy[list[str]]:
    """Lists of keys (any text)."""
    return st.lists(st.text(), max_size=max_size)


def payloads(max_size: int) -> st.SearchStrategy[bytes]:
    """Datum values."""
    return st.binary(max_size=max_size)


def unknown_fields(first: int) -> st.SearchStrategy[list[tuple[int, bytes]]]:
    """Up to three length-delimited fields numbered from ``first`` (unknown to a decoder)."""
    return st.lists(
        st.tuples(st.integers(min_value=first, max_value=2000), st.binary(max_size=16)),
        max_size=3,
    )


def varint(value: int) -> bytes:
    """Encode a non-negative int as a protobuf varint."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    """A field's tag followed by ``payload`` (already encoded for ``wire_type``)."""
    return varint(number << 3 | wire_type) + payload


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return field(number, 2, varint(len(payload)) + payload)


def unknown_field_bytes(first: int) -> st.SearchStrategy[bytes]:
    """One encoded field numbered from ``first``, of any wire type a decoder must skip."""
    numbers = st.integers(first, 2**29 - 1)
    return st.one_of(
        st.builds(lambda n, v: field(n, 0, varint(v)), numbers, st.integers(0, U64 - 1)),
        st.builds(lambda n, b: field(n, 1, b), numbers, st.binary(min_size=8, max_size=8)),
        st.builds(length_delimited, numbers, st.binary(max_size=20)),
        st.builds(lambda n, b: field(n, 5, b), numbers, st.binary(min_size=4, max_size=4)),
    )
