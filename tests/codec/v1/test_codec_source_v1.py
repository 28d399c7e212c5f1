"""The source.v1 and sideinput.v1 codecs, checked against betterproto byte for byte."""

from __future__ import annotations

from datetime import datetime, timezone
from types import ModuleType
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynumaflow._codec.v1 import source as codec
from pynumaflow._codec.v1.sideinput import encode_side_input_response
from pynumaflow._proto import common
from pynumaflow._proto.sideinput import v1 as si_pb
from pynumaflow._proto.source import v1 as pb
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow.sideinput import Response
from pynumaflow.sourcer import Message, Offset, PartitionsResponse, PendingResponse

UTC = timezone.utc
texts = st.text(max_size=8)
offsets = st.builds(
    lambda raw, part: (raw, part), st.binary(min_size=1, max_size=8), st.integers(0, 0xFFFF)
)
moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(
    payload=st.binary(max_size=16),
    offset=offsets,
    event_time=moments,
    keys=st.lists(texts, max_size=3),
    headers=st.dictionaries(texts, texts, max_size=3),
)
def test_read_result_is_betterprotos(
    payload: bytes,
    offset: tuple[bytes, int],
    event_time: datetime,
    keys: list[str],
    headers: dict[str, str],
) -> None:
    message = Message(payload, Offset(*offset), event_time, keys=keys, headers=headers)
    encoded = codec.encode_read_result(message)
    parsed = pb.ReadResponse().parse(encoded)
    assert parsed.result.payload == payload
    assert (parsed.result.offset.offset, parsed.result.offset.partition_id) == offset
    assert parsed.result.event_time == event_time
    assert (parsed.result.keys, parsed.result.headers) == (keys, headers)
    assert parsed.status.eot is False
    assert parsed.result.metadata is None or not bytes(parsed.result.metadata)


def test_constant_responses_are_google_protobufs(stubs: dict[str, ModuleType]) -> None:
    """As protobuf encodes the reference SDKs' answers (an empty status or result is sent)."""
    pb2 = stubs["source_pb2"]
    sot = pb2.Handshake(sot=True)
    success = pb2.AckResponse.Result(success={})
    handshake = pb2.ReadResponse(status=pb2.ReadResponse.Status(), handshake=sot)
    assert handshake.SerializeToString() == codec.READ_HANDSHAKE_RESPONSE
    eot = pb2.ReadResponse(status=pb2.ReadResponse.Status(eot=True))
    assert eot.SerializeToString() == codec.READ_EOT
    ack_handshake = pb2.AckResponse(result=success, handshake=sot)
    assert ack_handshake.SerializeToString() == codec.ACK_HANDSHAKE_RESPONSE
    assert pb2.AckResponse(result=success).SerializeToString() == codec.ACK_RESPONSE
    nack = pb2.NackResponse(result=pb2.NackResponse.Result(success={}))
    assert nack.SerializeToString() == codec.NACK_RESPONSE


def test_a_read_result_is_google_protobufs(stubs: dict[str, ModuleType]) -> None:
    pb2 = stubs["source_pb2"]
    moment = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    message = Message(b"p", Offset(b"o", 7), moment, keys=["k"], headers={"h": "v"})
    expected = pb2.ReadResponse(
        result=pb2.ReadResponse.Result(
            payload=b"p",
            offset=pb2.Offset(offset=b"o", partition_id=7),
            event_time={"seconds": int(moment.timestamp()), "nanos": 6000},
            keys=["k"],
            headers={"h": "v"},
        ),
        status=pb2.ReadResponse.Status(),
    )
    assert codec.encode_read_result(message) == expected.SerializeToString()


@given(st.integers(-(2**63), 2**63 - 1))
def test_pending_is_betterprotos(count: int) -> None:
    expected = bytes(pb.PendingResponse(result=pb.PendingResponseResult(count=count)))
    assert codec.encode_pending_response(PendingResponse(count)) == expected


@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
)
def test_partitions_are_betterprotos(partitions: list[int], total: Optional[int]) -> None:
    result = pb.PartitionsResponseResult(partitions=partitions, total_partitions=total)
    expected = bytes(pb.PartitionsResponse(result=result))
    assert codec.encode_partitions_response(PartitionsResponse(partitions), total) == expected


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.booleans())
def test_read_request_decodes_as_betterproto(num: int, timeout: int, handshake: bool) -> None:
    message = pb.ReadRequest(request=pb.ReadRequestRequest(num_records=num, timeout_in_ms=timeout))
    if handshake:
        message.handshake = pb.Handshake(sot=True)
    sot, request = codec.decode_read_request(bytes(message))
    assert sot is handshake
    assert request is not None
    assert (request.num_records, request.timeout_in_ms) == (num, timeout)


def test_a_bare_handshake_has_no_request() -> None:
    data = bytes(pb.ReadRequest(handshake=pb.Handshake(sot=True)))
    assert codec.decode_read_request(data) == (True, None)
    assert codec.decode_ack_request(bytes(pb.AckRequest(handshake=pb.Handshake(sot=True)))) == (
        True,
        None,
    )


@given(st.lists(st.lists(offsets, max_size=3), max_size=4))
def test_nack_requests_concatenate_their_offsets(groups: list[list[tuple[bytes, int]]]) -> None:
    requests = [
        pb.NackRequestRequest(
            offsets=[pb.Offset(offset=o, partition_id=p) for o, p in group],
            nack_options=common.NackOptions(reason="r", delay=1),
        )
        for group in groups
    ]
    decoded = codec.decode_nack_request(bytes(pb.NackRequest(request=requests)))
    assert [(o.offset, o.partition_id) for o in decoded] == [o for g in groups for o in g]


@given(st.lists(offsets, max_size=4))
def test_ack_request_offsets(items: list[tuple[bytes, int]]) -> None:
    offsets_pb = [pb.Offset(offset=o, partition_id=p) for o, p in items]
    data = bytes(pb.AckRequest(request=pb.AckRequestRequest(offsets=offsets_pb)))
    sot, decoded = codec.decode_ack_request(data)
    assert sot is False
    assert decoded is not None
    assert [(o.offset, o.partition_id) for o in decoded] == items


@pytest.mark.parametrize("data", [b"\x0a\x05\x08", b"\x08\x01", b"\x12\x01"])
@pytest.mark.parametrize(
    "decode", [codec.decode_read_request, codec.decode_ack_request, codec.decode_nack_request]
)
def test_malformed_requests_are_codec_errors(decode: Any, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


@pytest.mark.parametrize(
    "message",
    [
        Message(b"x", Offset(b"", 0), datetime(2024, 1, 1)),
        Message(b"x", Offset(b"1", 70000), datetime(2024, 1, 1)),
        Message(b"x", Offset(b"1", -1), datetime(2024, 1, 1)),
        "not a message",
    ],
)
def test_what_the_platform_refuses_is_a_return_type_error(message: object) -> None:
    with pytest.raises(ReturnTypeError):
        codec.encode_read_result(message)


@given(st.binary(max_size=16), st.booleans())
def test_side_input_response_is_betterprotos(value: bytes, no_broadcast: bool) -> None:
    expected = bytes(si_pb.SideInputResponse(value=value, no_broadcast=no_broadcast))
    assert encode_side_input_response(Response(value, no_broadcast)) == expected


def test_a_side_input_answer_must_be_a_response() -> None:
    with pytest.raises(ReturnTypeError):
        encode_side_input_response(b"x")
