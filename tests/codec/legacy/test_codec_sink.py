"""The sink.v1 section of the hand-written codec, checked against the betterproto classes."""

from __future__ import annotations

import contextlib
from collections import namedtuple
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Optional

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    U64,
    field,
    key_lists,
    length_delimited,
    optional_times,
    seconds_in_range,
    unknown_field_bytes,
    varint,
)

from pynumaflow._codec.legacy.function import decode_datum_request
from pynumaflow._codec.legacy.sink import decode_sink_datum_request, encode_response_list
from pynumaflow._codec.results import read_responses
from pynumaflow._proto.function import v1 as fn_pb
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._types.errors import CodecError
from pynumaflow.sink import Datum, Response, Responses

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1)
keys_lists = key_lists(max_size=20)
times = optional_times
unknown_fields = unknown_field_bytes(6)


def sink_request(
    keys: list[str],
    value: bytes,
    event_time: Optional[datetime],
    watermark: Optional[datetime],
    msg_id: str,
) -> sink_pb.DatumRequest:
    message = sink_pb.DatumRequest(keys=keys, value=value, id=msg_id)
    if event_time is not None:
        message.event_time = sink_pb.EventTime(event_time=event_time)
    if watermark is not None:
        message.watermark = sink_pb.Watermark(watermark=watermark)
    return message


sink_requests = st.builds(sink_request, keys_lists, st.binary(), times, times, st.text())


def naive(moment: Optional[datetime]) -> datetime:
    return EPOCH if moment is None else moment.replace(tzinfo=None)


def fields_of(datum: Datum) -> tuple[Any, ...]:
    return (datum.keys, datum.value, datum.event_time, datum.watermark, datum.id)


def betterproto_fields(data: bytes) -> tuple[Any, ...]:
    """Read the bytes with betterproto, in the sink Datum's terms."""
    message = sink_pb.DatumRequest().parse(data)
    return (
        message.keys,
        message.value,
        message.event_time.event_time.replace(tzinfo=None),
        message.watermark.watermark.replace(tzinfo=None),
        message.id,
    )


# betterproto replaces a sub-message that occurs twice instead of merging the two, as
# protobuf specifies (and grpc-go, google.protobuf and our codec do), so concatenations
# are checked against google.protobuf.
@pytest.fixture(scope="module")
def google_pb2(stubs: dict[str, ModuleType]) -> dict[str, ModuleType]:
    return stubs


def google_fields(pb2: ModuleType, data: bytes) -> tuple[Any, ...]:
    """Read the bytes with google.protobuf, in the sink Datum's terms."""
    message = pb2.DatumRequest.FromString(data)
    return (
        list(message.keys),
        message.value,
        message.event_time.event_time.ToDatetime(),
        message.watermark.watermark.ToDatetime(),
        message.id,
    )


@given(keys_lists, st.binary(), times, times, st.text())
@example(["k"] * 1000, b"", None, None, "")
@example(
    ["", "ü", "\U0001f600"], b"\x00\xff", datetime(1969, 12, 31, 23, 59, 59, 1, UTC), None, "é"
)
def test_decode_round_trips_what_betterproto_encodes(
    keys: list[str],
    value: bytes,
    event_time: Optional[datetime],
    watermark: Optional[datetime],
    msg_id: str,
) -> None:
    """Keys, value, id and microsecond times (pre-1970 too) come back as they were encoded."""
    data = bytes(sink_request(keys, value, event_time, watermark, msg_id))
    datum = decode_sink_datum_request(data)
    assert fields_of(datum) == (keys, value, naive(event_time), naive(watermark), msg_id)
    assert datum.event_time.tzinfo is None


@given(parts=st.lists(sink_requests.map(bytes) | unknown_fields, max_size=8))
@example(  # the second event time has no nanos: the first one's remain
    parts=[
        bytes(sink_request([], b"", datetime(1970, 1, 1, 0, 0, 0, 500000, UTC), None, "a")),
        bytes(sink_request(["k"], b"", datetime(1970, 1, 1, 0, 1, 40, tzinfo=UTC), None, "")),
    ]
)
def test_decode_merges_and_skips_like_protobuf(
    google_pb2: dict[str, ModuleType], parts: list[bytes]
) -> None:
    """Concatenated requests merge (keys append, times merge, last id wins); unknowns skipped."""
    data = b"".join(parts)
    expected = google_fields(google_pb2["sink_pb2"], data)
    assert fields_of(decode_sink_datum_request(data)) == expected


@given(seconds_in_range, st.integers(0, 999_999_999), st.lists(unknown_fields, max_size=2))
@example(-1, 999_999_999, [])
def test_decode_any_timestamp_like_betterproto(
    seconds: int, nanos: int, noise: list[bytes]
) -> None:
    """Any in-range Timestamp, with unknown fields inside its wrapper, floors to microseconds."""
    timestamp = bytes(
        sink_pb.betterproto_lib_google_protobuf.Timestamp(seconds=seconds, nanos=nanos)
    )
    wrapper = b"".join(noise) + length_delimited(1, timestamp)
    data = length_delimited(3, wrapper) + length_delimited(4, wrapper)
    assert fields_of(decode_sink_datum_request(data)) == betterproto_fields(data)


@pytest.mark.parametrize("seconds", [-62_135_596_801, 253_402_300_800, -(1 << 63)])
def test_decode_out_of_range_timestamp_is_codec_error(seconds: int) -> None:
    """A Timestamp outside datetime's range is a CodecError, not an OverflowError."""
    timestamp = field(1, 0, varint(seconds % U64))
    with pytest.raises(CodecError, match="outside datetime's range"):
        decode_sink_datum_request(length_delimited(3, length_delimited(1, timestamp)))


responses_st = st.lists(
    st.builds(Response, st.text(), st.booleans(), st.none() | st.text()), max_size=30
)


@given(responses_st)
@example([Response("", False, None), Response("", False, "")])
def test_encode_is_byte_identical_to_betterproto(responses: list[Response]) -> None:
    """ResponseList bytes equal betterproto's (defaults omitted, empty responses kept)."""
    expected = sink_pb.ResponseList(
        responses=[
            sink_pb.Response(id=r.id, success=r.success, err_msg=r.err or "") for r in responses
        ]
    )
    data = encode_response_list(Responses(*responses))
    assert data == bytes(expected)
    parsed = sink_pb.ResponseList().parse(data).responses
    assert [(p.id, p.success, p.err_msg) for p in parsed] == [
        (r.id, r.success, r.err or "") for r in responses
    ]


def test_encode_escapes_unencodable_error_text() -> None:
    """An error text with a lone surrogate is sent backslash-escaped, as valid UTF-8."""
    data = encode_response_list([Response.as_failure("a", "bad name \udcff")])
    (parsed,) = sink_pb.ResponseList().parse(data).responses
    assert parsed.err_msg == "bad name \\udcff"


def test_read_responses_accepts_lookalikes() -> None:
    """Objects with id, success and err count as responses; a Response stays itself."""
    Lookalike = namedtuple("Lookalike", ["id", "success", "err"])
    own = Response.as_success("a")
    assert read_responses([own, Lookalike("b", False, "no")]) == [own, Response("b", False, "no")]
    assert read_responses([own])[0] is own


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_codec_error(data: bytes) -> None:
    """Any bytes either decode to a Datum or raise CodecError, nothing else."""
    try:
        datum = decode_sink_datum_request(data)
    except CodecError:
        return
    assert isinstance(datum, Datum)


@given(sink_requests.map(bytes), st.data())
def test_damaged_requests_only_raise_codec_error(data: bytes, draw: st.DataObject) -> None:
    """Truncated or byte-flipped valid requests either decode or raise CodecError."""
    cut = draw.draw(st.integers(0, len(data)))
    damaged = bytearray(data[:cut] if draw.draw(st.booleans()) else data)
    if damaged:
        where = draw.draw(st.integers(0, len(damaged) - 1))
        damaged[where] = draw.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        decode_sink_datum_request(bytes(damaged))


function_requests = st.builds(
    lambda keys, value, msg_id, delivered: bytes(
        fn_pb.DatumRequest(
            keys=keys, value=value, metadata=fn_pb.Metadata(id=msg_id, num_delivered=delivered)
        )
    ),
    keys_lists,
    st.binary(max_size=20),
    st.text(max_size=10),
    st.integers(0, U64 - 1),
)


@given(parts=st.lists(function_requests | unknown_fields, max_size=6))
def test_function_decode_still_merges_like_protobuf(
    google_pb2: dict[str, ModuleType], parts: list[bytes]
) -> None:
    """The field loop shared with function.v1 still merges Metadata as protobuf specifies."""
    data = b"".join(parts)
    message = google_pb2["fn_pb2"].DatumRequest.FromString(data)
    datum = decode_datum_request(data)
    assert (list(datum.keys), datum.value, datum.metadata.id, datum.metadata.num_delivered) == (
        list(message.keys),
        message.value,
        message.metadata.id,
        message.metadata.num_delivered,
    )
