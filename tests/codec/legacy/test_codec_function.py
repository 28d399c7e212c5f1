"""The hand-written codec against the betterproto classes, byte for byte (hypothesis)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import key_lists, length_delimited, moments, payloads
from strategies import unknown_fields as unknown_fields_from

from pynumaflow._codec.legacy.function import (
    decode_datum_request,
    encode_datum_response,
    encode_datum_response_list,
    encode_datum_response_t_list,
)
from pynumaflow._proto.function import v1
from pynumaflow._types.errors import CodecError
from pynumaflow.function import DROP, Message, Messages, MessageT, MessageTs

keys = key_lists(max_size=8)
values = payloads(max_size=2048)
unknown_fields = unknown_fields_from(6)


@settings(max_examples=300, deadline=None)
@given(
    keys=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    msg_id=st.text(),
    num_delivered=st.integers(min_value=0, max_value=2**64 - 1),
    extra=unknown_fields,
)
def test_decode_datum_request_matches_betterproto(
    keys: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    msg_id: str,
    num_delivered: int,
    extra: list[tuple[int, bytes]],
) -> None:
    """Every field decodes exactly as betterproto encodes it; unknown fields are skipped."""
    message = v1.DatumRequest(
        keys=keys,
        value=value,
        event_time=v1.EventTime(event_time),
        watermark=v1.Watermark(watermark),
        metadata=v1.Metadata(id=msg_id, num_delivered=num_delivered),
    )
    data = bytes(message) + b"".join(length_delimited(f, p) for f, p in extra)
    datum = decode_datum_request(data)
    assert datum.keys() == keys
    assert datum.keys == keys
    assert datum.value == value
    assert datum.event_time == event_time.replace(tzinfo=None)
    assert datum.watermark == watermark.replace(tzinfo=None)
    assert (datum.metadata.id, datum.metadata.num_delivered) == (msg_id, num_delivered)


def test_decode_defaults() -> None:
    """An empty request is all defaults, with epoch times (as 0.4's ToDatetime gave)."""
    datum = decode_datum_request(b"")
    assert (datum.keys, datum.value, datum.metadata.id) == ([], b"", "")
    assert datum.event_time == datum.watermark == datetime(1970, 1, 1)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes_only_raises_codec_error(data: bytes) -> None:
    """Garbage never escapes as anything but CodecError."""
    with contextlib.suppress(CodecError):
        decode_datum_request(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05ab", "truncated"),
        (b"\x08\x01", "wire type 0, expected 2"),
        (b"\x0a\x02\xff\xfe", "UTF-8"),
        (b"\x1a\x02\x0a\x05", "truncated"),
        (b"\x80", "truncated varint"),
        (b"\x33", "unsupported wire type"),
    ],
    ids=["short-field", "wrong-wire-type", "bad-utf8", "short-timestamp", "varint", "group"],
)
def test_decode_errors_say_why(data: bytes, reason: str) -> None:
    """Malformed requests raise CodecError with a reason."""
    with pytest.raises(CodecError, match=reason):
        decode_datum_request(data)


messages = st.builds(
    Message,
    value=values,
    keys=st.one_of(st.none(), keys),
    tags=st.one_of(st.none(), st.lists(st.text(), max_size=3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=6))
def test_encode_response_list_matches_betterproto(items: list[Message]) -> None:
    """A map handler's Messages encode to exactly betterproto's DatumResponseList bytes."""
    expected = v1.DatumResponseList(
        elements=[v1.DatumResponse(keys=m.keys, value=m.value, tags=m.tags) for m in items]
    )
    assert encode_datum_response_list(Messages(*items)) == bytes(expected)
    assert encode_datum_response_list(items) == bytes(expected)
    for message, element in zip(items, expected.elements, strict=False):
        assert encode_datum_response(message) == bytes(element)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(messages, moments), max_size=5),
    request_time=moments,
    watermark=moments,
)
def test_encode_t_list_matches_betterproto(
    items: list[tuple[Message, datetime]], request_time: datetime, watermark: datetime
) -> None:
    """MessageTs encode with their event times and the request's watermark, as betterproto."""
    outputs = [MessageT(m.value, moment, m.keys, m.tags) for m, moment in items]
    expected = v1.DatumResponseList(
        elements=[
            v1.DatumResponse(
                keys=m.keys,
                value=m.value,
                tags=m.tags,
                event_time=v1.EventTime(moment),
                watermark=v1.Watermark(watermark),
            )
            for m, moment in items
        ]
    )
    encoded = encode_datum_response_t_list(
        MessageTs(*outputs), request_time.replace(tzinfo=None), watermark.replace(tzinfo=None)
    )
    assert encoded == bytes(expected)


def test_naive_and_aware_times_encode_alike() -> None:
    """A naive datetime is taken as UTC; an aware one in another zone is converted."""
    naive = MessageTs(MessageT(b"", datetime(2024, 1, 1, 12)))
    aware = MessageTs(MessageT(b"", datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))))
    now = datetime(2024, 1, 1)
    assert encode_datum_response_t_list(naive, now, now) == encode_datum_response_t_list(
        aware, now, now
    )


def test_drop_encodes_the_drop_tag() -> None:
    """Message.to_drop() is an element with only the DROP tag."""
    assert encode_datum_response_list(Messages(Message.to_drop())) == bytes(
        v1.DatumResponseList(elements=[v1.DatumResponse(tags=[DROP])])
    )
