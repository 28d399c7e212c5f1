"""The sink.v1 Sink codec, checked against betterproto and google.protobuf."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Optional

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import optional_times

from pynumaflow._codec.legacy.sink import LEGACY_FALLBACK_ERR, encode_response_list
from pynumaflow._codec.results import read_responses
from pynumaflow._codec.v1.sink import (
    EOT_RESPONSE,
    HANDSHAKE_RESPONSE,
    decode_sink_request,
    encode_result,
)
from pynumaflow._proto import common
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow.sink import Response

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1)

times = optional_times
texts = st.text(max_size=12)
groups = st.dictionaries(
    texts, st.dictionaries(texts, st.binary(max_size=8), max_size=3), max_size=3
)


def metadata(user: dict[str, dict[str, bytes]], system: dict[str, dict[str, bytes]]) -> Any:
    return common.Metadata(
        previous_vertex="in",
        user_metadata={g: common.KeyValueGroup(key_value=kv) for g, kv in user.items()},
        sys_metadata={g: common.KeyValueGroup(key_value=kv) for g, kv in system.items()},
    )


def request(
    keys: list[str],
    value: bytes,
    event_time: Optional[datetime],
    watermark: Optional[datetime],
    msg_id: str,
    headers: dict[str, str],
    user: dict[str, dict[str, bytes]],
) -> sink_pb.SinkRequest:
    body = sink_pb.SinkRequestRequest(keys=keys, value=value, id=msg_id, headers=headers)
    if event_time is not None:
        body.event_time = event_time
    if watermark is not None:
        body.watermark = watermark
    if user:
        body.metadata = metadata(user, {"sink": {"retry_count": b"0"}})
    return sink_pb.SinkRequest(request=body)


requests = st.builds(
    request,
    st.lists(texts, max_size=5),
    st.binary(max_size=30),
    times,
    times,
    texts,
    st.dictionaries(texts, texts, max_size=3),
    groups,
)


def naive(moment: Optional[datetime]) -> datetime:
    return EPOCH if moment is None else moment.replace(tzinfo=None)


def test_handshake_and_eot_are_betterproto_bytes() -> None:
    """The handshake answer and the EOT are the SinkResponses betterproto encodes."""
    assert bytes(sink_pb.SinkResponse(handshake=sink_pb.Handshake(sot=True))) == HANDSHAKE_RESPONSE
    assert bytes(sink_pb.SinkResponse(status=sink_pb.TransmissionStatus(eot=True))) == EOT_RESPONSE


@settings(max_examples=300, deadline=None)
@given(requests)
@example(
    request(["", "ü"], b"\xff\x00", datetime(1969, 12, 31, 23, 59, 59, 1, UTC), None, "é", {}, {})
)
def test_decode_request_round_trips_betterproto(message: sink_pb.SinkRequest) -> None:
    """Keys, value, id, headers and naive-UTC times come back; the user metadata is kept."""
    data = bytes(message)
    decoded = decode_sink_request(data)
    # What the bytes hold (betterproto leaves out map entries whose key and value are empty).
    body = sink_pb.SinkRequest().parse(data).request
    assert (decoded.eot, decoded.handshake) == (False, None)
    datum = decoded.datum
    assert datum is not None
    assert (datum.keys, datum.value, datum.id, dict(datum.headers)) == (
        body.keys,
        body.value,
        body.id,
        body.headers,
    )
    assert datum.event_time == naive(message.request.event_time)
    assert datum.watermark == naive(message.request.watermark)
    echoed = common.Metadata().parse(datum._user_metadata)
    assert echoed.user_metadata == body.metadata.user_metadata
    assert (echoed.sys_metadata, echoed.previous_vertex) == ({}, "")


def test_decode_eot_handshake_and_both() -> None:
    """EOT and handshake are read from their messages; a request and an EOT may share one."""
    eot = sink_pb.SinkRequest(status=sink_pb.TransmissionStatus(eot=True))
    assert decode_sink_request(bytes(eot)) == (None, True, None)
    shake = sink_pb.SinkRequest(handshake=sink_pb.Handshake(sot=True))
    assert decode_sink_request(bytes(shake)) == (None, False, True)
    assert decode_sink_request(b"\x1a\x00") == (None, False, False)  # handshake{sot: false}
    both = sink_pb.SinkRequest(
        request=sink_pb.SinkRequestRequest(id="a"), status=sink_pb.TransmissionStatus(eot=True)
    )
    datum, end, handshake = decode_sink_request(bytes(both))
    assert (datum is not None and datum.id, end, handshake) == ("a", True, None)
    empty = decode_sink_request(b"\x0a\x00")  # a request with every field at its default
    assert empty.datum is not None
    assert empty.datum.id == ""
    assert decode_sink_request(b"") == (None, False, None)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests.map(bytes), min_size=1, max_size=4))
def test_decode_merges_repeated_requests_like_protobuf(
    stubs: dict[str, ModuleType], parts: list[bytes]
) -> None:
    """Concatenated SinkRequests merge as google.protobuf merges them (keys append, last id)."""
    data = b"".join(parts)
    expected = stubs["sinkv1_pb2"].SinkRequest.FromString(data).request
    datum = decode_sink_request(data).datum
    assert datum is not None
    assert (datum.keys, datum.value, datum.id, dict(datum.headers)) == (
        list(expected.keys),
        expected.value,
        expected.id,
        dict(expected.headers),
    )
    assert datum.event_time == expected.event_time.ToDatetime()
    assert datum.watermark == expected.watermark.ToDatetime()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x01", "field 1 has wire type 0"),
        (b"\x0a\x05ab", "truncated"),
        (b"\x12\x02\x08", "truncated"),
        (b"\x12\x02\x0a\x00", "TransmissionStatus field 1 has wire type 2"),
        (b"\x0a\x03\x0a\x01\xff", "not valid UTF-8"),
        (b"\x0a\x02\x28\x01", "Request field 5 has wire type 0"),
        (b"\x0a\x04\x32\x02\x0a\x01", "truncated"),
        (b"\x0a\x02\x40\x80\x20\x00", "overruns"),  # an unknown varint past the request
        (b"\x0a\x09\x1a\x07\x08\x80\x83\xd1\xff\xaf\x07", "outside datetime's range"),
    ],
    ids=[
        "request-varint",
        "cut",
        "status-cut",
        "eot-wire",
        "utf8",
        "id-wire",
        "header",
        "overrun",
        "time",
    ],
)
def test_malformed_requests_are_codec_errors(data: bytes, message: str) -> None:
    """Bytes that are not a SinkRequest raise CodecError naming the problem."""
    with pytest.raises(CodecError, match=message):
        decode_sink_request(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | requests.map(bytes), st.data())
def test_any_bytes_only_raise_codec_error(data: bytes, draw: st.DataObject) -> None:
    """Random and damaged SinkRequests either decode or raise CodecError, nothing else."""
    damaged = bytearray(data[: draw.draw(st.integers(0, len(data)))])
    if damaged:
        damaged[draw.draw(st.integers(0, len(damaged) - 1))] = draw.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        decode_sink_request(bytes(damaged))


def betterproto_result(response: Response, user: bytes) -> sink_pb.SinkResponseResult:
    number = {None: 0 if response.success else 1, "fallback": 2, "serve": 3, "on_success": 4}
    result = sink_pb.SinkResponseResult(
        id=response.id, status=sink_pb.Status(number[response.status]), err_msg=response.err or ""
    )
    if response.status == "serve" and response.value is not None:
        result.serve_response = response.value
    if response.status == "on_success" and response.value is not None:
        message = sink_pb.SinkResponseResultMessage(value=response.value, keys=response.keys or [])
        if user:
            message.metadata = common.Metadata().parse(user)
        result.on_success_msg = message
    return result


responses = st.one_of(
    st.builds(Response, texts, st.booleans(), st.none() | texts),
    st.builds(Response.as_fallback, texts),
    st.builds(Response.as_serve, texts, st.none() | st.binary(max_size=20)),
    st.builds(Response.as_on_success, texts, st.binary(max_size=20), st.none() | st.lists(texts)),
    st.builds(Response.as_on_success, texts),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(responses, groups), max_size=10))
@example([(Response("", True), {}), (Response.as_serve("", b""), {})])
def test_results_are_byte_identical_to_betterproto(
    items: list[tuple[Response, dict[str, dict[str, bytes]]]],
) -> None:
    """Every status, serve_response and on_success_msg encode as betterproto's SinkResponse."""
    encoded = []
    expected = []
    for response, user in items:
        user_bytes = bytes(metadata(user, {}))[len(b"\x0a\x02in") :]  # drop previous_vertex
        encoded.append(encode_result(response, user_bytes))
        expected.append(betterproto_result(response, user_bytes))
    data = b"".join(encoded)
    assert data == bytes(sink_pb.SinkResponse(results=expected))


def test_error_text_that_is_not_utf8_is_escaped() -> None:
    """A lone surrogate in an error text is sent backslash-escaped, as valid UTF-8."""
    data = encode_result(Response.as_failure("a", "bad \udcff"))
    (result,) = sink_pb.SinkResponse().parse(data).results
    assert (result.status, result.err_msg) == (sink_pb.Status.FAILURE, "bad \\udcff")


def test_legacy_encoding_of_the_v1_statuses() -> None:
    """The legacy ResponseList: fallback is a failure saying why; serve and on-success succeed."""
    data = encode_response_list(
        [Response.as_fallback("f"), Response.as_serve("s", b"x"), Response.as_on_success("o")]
    )
    parsed = sink_pb.ResponseList().parse(data).responses
    assert [(r.id, r.success, r.err_msg) for r in parsed] == [
        ("f", False, LEGACY_FALLBACK_ERR),
        ("s", True, ""),
        ("o", True, ""),
    ]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (Response("a", True, None, "fallback"), "status 'fallback' needs success=False"),
        (Response("a", False, None, "serve"), "status 'serve' needs success=True"),
        (Response("a", True, None, "maybe"), "status must be None, 'fallback'"),  # type: ignore[arg-type]
        (Response("a", True, None, None, b"x"), "only sent with status 'serve' or 'on_success'"),
        (Response("a", False, None, "fallback", b"x"), "only sent with status 'serve'"),
        (Response("a", True, None, "serve", "x"), "value must be bytes, found str"),  # type: ignore[arg-type]
        (
            Response("a", True, None, "serve", b"x", ["k"]),
            "keys are only sent with status 'on_success'",
        ),
        (Response("a", True, None, "on_success", None, ["k"]), "keys need a value too"),
        (Response("a", True, None, "on_success", b"", "k"), "keys must be a list of str"),  # type: ignore[arg-type]
        (Response("a", True, None, "on_success", b"", ["\udcff"]), "encodable as UTF-8"),
    ],
    ids=[
        "fallback-success",
        "serve-failure",
        "unknown",
        "plain-value",
        "fallback-value",
        "str-value",
        "serve-keys",
        "keys-no-value",
        "str-keys",
        "surrogate-key",
    ],
)
def test_read_responses_checks_the_v1_fields(response: Response, message: str) -> None:
    """A status, value or keys that cannot be sent is a ReturnTypeError saying why."""
    with pytest.raises(ReturnTypeError, match=message):
        read_responses([response])


def test_read_responses_copies_a_subclass_with_its_v1_fields() -> None:
    """A Response subclass is sent as a Response with the same fields."""

    class Mine(Response):
        __slots__ = ()

    (copied,) = read_responses([Mine("a", True, None, "on_success", b"v", ["k"])])
    assert type(copied) is Response
    assert copied == Response.as_on_success("a", b"v", ["k"])
