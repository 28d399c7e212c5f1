"""The map.v1 / sourcetransformer.v1 codec against the betterproto classes (hypothesis)."""

from __future__ import annotations

import contextlib
from datetime import datetime, time
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import EPOCH, UTC, key_lists, length_delimited, moments, payloads
from strategies import unknown_fields as unknown_fields_from

from pynumaflow._codec.v1.map import (
    BATCH_EOT,
    HANDSHAKE_RESPONSE,
    decode_map_request,
    decode_transform_request,
    encode_map_eot,
    encode_map_response,
    encode_map_stream_response,
    encode_transform_response,
)
from pynumaflow._codec.wire import decode_timestamp
from pynumaflow._proto import common
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow._proto.sourcetransformer import v1 as st_pb
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow.function import DROP, Datum, DatumMetadata, Message, Messages, MessageT, MessageTs

keys = key_lists(max_size=5)
values = payloads(max_size=512)
# betterproto leaves out map entries whose key and value are both defaults (protobuf
# keeps them): test_default_map_entries covers those, with google protobuf's bytes.
headers = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4)
groups = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.builds(
        common.KeyValueGroup,
        key_value=st.dictionaries(
            st.text(min_size=1, max_size=6), st.binary(max_size=6), min_size=1, max_size=3
        ),
    ),
    max_size=3,
)
unknown_fields = unknown_fields_from(8)


def _unknown(extra: list[tuple[int, bytes]]) -> bytes:
    return b"".join(length_delimited(f, p) for f, p in extra)


def _check_datum(
    datum: Optional[Datum],
    msg_id: str,
    request: Any,
    user: dict[str, common.KeyValueGroup],
) -> None:
    assert datum is not None
    assert datum.keys == request.keys
    assert datum.value == request.value
    assert datum.event_time == request.event_time.replace(tzinfo=None)
    assert datum.watermark == request.watermark.replace(tzinfo=None)
    assert dict(datum.headers) == request.headers
    assert datum.metadata == DatumMetadata(msg_id, 0)
    echoed = common.Metadata().parse(datum._user_metadata)
    assert echoed.user_metadata == user
    assert (echoed.previous_vertex, echoed.sys_metadata) == ("", {})


@settings(max_examples=200, deadline=None)
@given(
    keys=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    headers=headers,
    user=groups,
    system=groups,
    msg_id=st.text(),
    extra=unknown_fields,
)
def test_decode_map_request_matches_betterproto(
    keys: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    headers: dict[str, str],
    user: dict[str, common.KeyValueGroup],
    system: dict[str, common.KeyValueGroup],
    msg_id: str,
    extra: list[tuple[int, bytes]],
) -> None:
    """Every MapRequest field decodes as betterproto encodes it; unknown fields are skipped."""
    request = map_pb.MapRequestRequest(
        keys=keys,
        value=value,
        event_time=event_time,
        watermark=watermark,
        headers=headers,
        metadata=common.Metadata(previous_vertex="p", sys_metadata=system, user_metadata=user),
    )
    data = bytes(map_pb.MapRequest(request=request, id=msg_id)) + _unknown(extra)
    incoming = decode_map_request(data)
    assert not incoming.handshake
    assert not incoming.eot
    _check_datum(incoming.datum, msg_id, request, user)


@settings(max_examples=200, deadline=None)
@given(
    keys=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    headers=headers,
    user=groups,
    msg_id=st.text(),
    extra=unknown_fields,
)
def test_decode_transform_request_matches_betterproto(
    keys: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    headers: dict[str, str],
    user: dict[str, common.KeyValueGroup],
    msg_id: str,
    extra: list[tuple[int, bytes]],
) -> None:
    """A SourceTransformRequest decodes alike, its id taken from inside the request."""
    request = st_pb.SourceTransformRequestRequest(
        keys=keys,
        value=value,
        event_time=event_time,
        watermark=watermark,
        headers=headers,
        id=msg_id,
        metadata=common.Metadata(user_metadata=user),
    )
    data = bytes(st_pb.SourceTransformRequest(request=request)) + _unknown(extra)
    incoming = decode_transform_request(data)
    assert not incoming.handshake
    _check_datum(incoming.datum, msg_id, request, user)


def test_control_messages() -> None:
    """Handshakes and EOTs carry no datum; an empty message is an all-default request."""
    handshake = decode_map_request(bytes(map_pb.MapRequest(handshake=map_pb.Handshake(sot=True))))
    assert handshake == (True, None, False)
    unset = decode_map_request(bytes(map_pb.MapRequest(handshake=map_pb.Handshake(sot=False))))
    assert unset == (False, None, False)
    eot = map_pb.MapRequest(status=map_pb.TransmissionStatus(eot=True))
    assert decode_map_request(bytes(eot)) == (False, None, True)  # a batch's end (batch mode)
    not_eot = map_pb.MapRequest(status=map_pb.TransmissionStatus(eot=False))
    assert decode_map_request(bytes(not_eot)) == (False, None, False)
    st_handshake = st_pb.SourceTransformRequest(handshake=st_pb.Handshake(sot=True))
    assert decode_transform_request(bytes(st_handshake)) == (True, None, False)
    for decode in (decode_map_request, decode_transform_request):
        empty = decode(b"")
        assert not empty.handshake
        assert empty.datum is not None
        assert (empty.datum.keys, empty.datum.value, empty.datum.metadata.id) == ([], b"", "")
        assert empty.datum.event_time == empty.datum.watermark == datetime(1970, 1, 1)


def test_default_map_entries(stubs: dict[str, Any]) -> None:
    """Map entries with empty keys and values, as google protobuf writes them, decode."""
    pb2, common_pb2 = stubs["map_pb2"], stubs["common_pb2"]
    message = pb2.MapRequest(id="i")
    message.request.headers[""] = ""
    message.request.metadata.user_metadata[""].CopyFrom(common_pb2.KeyValueGroup())
    message.request.metadata.user_metadata["g"].key_value[""] = b""
    datum = decode_map_request(message.SerializeToString()).datum
    assert datum is not None
    assert dict(datum.headers) == {"": ""}
    echoed = common_pb2.Metadata.FromString(datum._user_metadata)
    assert echoed == common_pb2.Metadata(user_metadata=message.request.metadata.user_metadata)


def test_repeated_request_fields_merge() -> None:
    """A request field that occurs twice is merged, as protobuf parsers do."""
    first = bytes(map_pb.MapRequest(request=map_pb.MapRequestRequest(keys=["a"], value=b"1")))
    second = bytes(map_pb.MapRequest(request=map_pb.MapRequestRequest(keys=["b"]), id="x"))
    incoming = decode_map_request(first + second)
    assert incoming.datum is not None
    assert (incoming.datum.keys, incoming.datum.value) == (["a", "b"], b"1")
    assert incoming.datum.metadata.id == "x"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=96))
def test_decode_arbitrary_bytes_only_raises_codec_error(data: bytes) -> None:
    """Garbage never escapes as anything but CodecError."""
    for decode in (decode_map_request, decode_transform_request):
        with contextlib.suppress(CodecError):
            decode(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05ab", "MapRequest field 1 is truncated"),
        (b"\x10\x01", "MapRequest field 2 has wire type 0, expected 2"),
        (b"\x12\x02\xff\xfe", "not valid UTF-8"),
        (b"\x0a\x03\x0a\x05a", "Request field 1 is truncated"),
        (b"\x0a\x02\x08\x01", "Request field 1 has wire type 0, expected 2"),
        (b"\x1a\x02\x0a\x00", "Handshake field 1 has wire type 2, expected 0"),
        (b"\x0a\x04\x1a\x02\x08\x80", "truncated varint"),
        (b"\x33", "unsupported wire type"),
    ],
    ids=[
        "short-request",
        "wrong-wire-type",
        "bad-utf8-id",
        "short-keys",
        "keys-wire-type",
        "handshake-wire-type",
        "short-timestamp",
        "group",
    ],
)
def test_decode_errors_say_why(data: bytes, reason: str) -> None:
    """Malformed requests raise CodecError with a reason."""
    with pytest.raises(CodecError, match=reason):
        decode_map_request(data)


def _datum(msg_id: str = "id-1", user: Optional[dict[str, Any]] = None, **fields: Any) -> Datum:
    """A datum as the decoder makes it (with its user metadata) for the encoders."""
    request = map_pb.MapRequestRequest(
        event_time=fields.get("event_time", datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)),
        metadata=common.Metadata(user_metadata=user or {}),
    )
    datum = decode_map_request(bytes(map_pb.MapRequest(request=request, id=msg_id))).datum
    assert datum is not None
    return datum


def _echoed(user: dict[str, common.KeyValueGroup]) -> dict[str, Any]:
    """A result's metadata field: the user metadata, left out when there is none."""
    return {"metadata": common.Metadata(user_metadata=user)} if user else {}


messages = st.builds(
    Message,
    value=values,
    keys=st.one_of(st.none(), keys),
    tags=st.one_of(st.none(), st.lists(st.text(), max_size=3)),
)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(messages, max_size=5), msg_id=st.text(), user=groups)
def test_encode_map_response_matches_betterproto(
    items: list[Message], msg_id: str, user: dict[str, common.KeyValueGroup]
) -> None:
    """Messages encode to exactly betterproto's MapResponse; stream responses too."""
    datum = _datum(msg_id, user)
    expected = [
        map_pb.MapResponseResult(keys=m.keys, value=m.value, tags=m.tags, **_echoed(user))
        for m in items
    ]
    assert encode_map_response(Messages(*items), datum) == bytes(
        map_pb.MapResponse(results=expected, id=msg_id)
    )
    for message, result in zip(items, expected, strict=True):
        assert encode_map_stream_response(message, datum) == bytes(
            map_pb.MapResponse(results=[result], id=msg_id)
        )


def test_control_responses() -> None:
    """The handshake and EOT responses are betterproto's bytes."""
    assert bytes(map_pb.MapResponse(handshake=map_pb.Handshake(sot=True))) == HANDSHAKE_RESPONSE
    assert (
        bytes(st_pb.SourceTransformResponse(handshake=st_pb.Handshake(sot=True)))
        == HANDSHAKE_RESPONSE
    )
    assert encode_map_eot(_datum("e")) == bytes(
        map_pb.MapResponse(id="e", status=map_pb.TransmissionStatus(eot=True))
    )
    assert encode_map_response(Messages(), _datum("")) == b""
    assert bytes(map_pb.MapResponse(status=map_pb.TransmissionStatus(eot=True))) == BATCH_EOT


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(messages, moments.filter(lambda m: m != EPOCH)), max_size=5),
    msg_id=st.text(),
    user=groups,
)
def test_encode_transform_response_matches_betterproto(
    items: list[tuple[Message, datetime]], msg_id: str, user: dict[str, common.KeyValueGroup]
) -> None:
    """MessageTs encode to exactly betterproto's SourceTransformResponse, event times included."""
    outputs = [MessageT(m.value, moment, m.keys, m.tags) for m, moment in items]
    expected = st_pb.SourceTransformResponse(
        results=[
            st_pb.SourceTransformResponseResult(
                keys=m.keys, value=m.value, tags=m.tags, event_time=moment, **_echoed(user)
            )
            for m, moment in items
        ],
        id=msg_id,
    )
    assert encode_transform_response(MessageTs(*outputs), _datum(msg_id, user)) == bytes(expected)


def test_transform_event_time_is_always_present() -> None:
    """The epoch is sent as an empty Timestamp (betterproto would leave it out); drop is year 1."""
    datum = _datum("d")
    encoded = encode_transform_response(MessageTs(MessageT(b"", datetime(1970, 1, 1))), datum)
    assert encoded == b"\x0a\x02\x1a\x00" + b"\x12\x01d"
    dropped = encode_transform_response(MessageTs(MessageT.to_drop()), datum)
    (result,) = st_pb.SourceTransformResponse().parse(dropped).results
    assert result.tags == [DROP]
    assert b"\x1a\x0b\x08\x80\x92\xb8\xc3\x98\xfe\xff\xff\xff\x01" in dropped  # -62135596800 s


def test_transform_bare_time_uses_the_request_date() -> None:
    """A datetime.time is that time of day on the UTC date of the request's event time."""
    datum = _datum("d", event_time=datetime(2023, 5, 6, 23, 59, tzinfo=UTC))
    encoded = encode_transform_response(MessageTs(MessageT(b"", time(6, 30))), datum)
    (result,) = st_pb.SourceTransformResponse().parse(encoded).results
    assert result.event_time == datetime(2023, 5, 6, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("encode", "returned", "reason"),
    [
        (encode_map_response, None, "returned NoneType; expected Messages"),
        (encode_map_response, [b"x"], "expected Message objects, found bytes"),
        (encode_map_response, [SimpleNamespace(keys=[], value=b"", tags=[1])], "tags must be str"),
        (encode_transform_response, [Message(b"")], "expected MessageT objects"),
        (encode_transform_response, "text", "returned str; expected MessageTs"),
        (encode_map_stream_response, b"x", "yielded bytes; expected Message"),
    ],
)
def test_wrong_returns_are_return_type_errors(encode: Any, returned: Any, reason: str) -> None:
    """What cannot be sent raises ReturnTypeError saying what was expected."""
    with pytest.raises(ReturnTypeError, match=reason):
        encode(returned, _datum())


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.integers(-(2**63), 2**63 - 1),
    nanos=st.integers(-(2**31), 2**31 - 1),
    order=st.sampled_from(["canonical", "reversed", "seconds-only", "nanos-only", "with-unknown"]),
)
def test_decode_timestamp_any_encoding(seconds: int, nanos: int, order: str) -> None:
    """Timestamps decode alike whichever way they are laid out (fast path or not)."""
    s_field, n_field = b"\x08" + _varint(seconds), b"\x10" + _varint(nanos)
    data, expected = {
        "canonical": (s_field + n_field, (seconds, nanos)),
        "reversed": (n_field + s_field, (seconds, nanos)),
        "seconds-only": (s_field, (seconds, 0)),
        "nanos-only": (n_field, (0, nanos)),
        "with-unknown": (s_field + b"\x18\x01" + n_field, (seconds, nanos)),
    }[order]
    assert decode_timestamp(b"\xff" + data + b"\xff", 1, 1 + len(data), (0, 0)) == expected
