"""NACK on the wire (Numaflow >= 1.8.2), checked byte for byte against betterproto.

``common.NackOptions`` (reason 1, max_deliveries 2, delay 3 ms, nack_map 4) in a map
result (field 5, with the NACK tag), a transformer result (field 6, with the NACK tag)
and a sink result (field 6, with status NACK=5);
refused where it cannot be sent: a failure, so that the platform retries the input.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynumaflow import sourcetransformer
from pynumaflow._codec.legacy.function import (
    encode_datum_response_list,
    encode_datum_response_t_list,
)
from pynumaflow._codec.legacy.sink import encode_response_list
from pynumaflow._codec.results import encode_nack_options, read_responses
from pynumaflow._codec.v1.map import (
    NACK_REFUSED,
    encode_map_response,
    encode_map_stream_response,
    encode_transform_response,
    encode_transform_response_own,
)
from pynumaflow._codec.v1.reduce import decode_window, encode_reduce_results
from pynumaflow._codec.v1.sink import encode_result
from pynumaflow._proto import common
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._proto.sourcetransformer import v1 as st_pb
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow._types.function import Datum, DatumMetadata
from pynumaflow.function import NACK, Message, Messages, MessageT, MessageTs, NackOptions
from pynumaflow.sink import Response

texts = st.text(max_size=10)
# betterproto leaves out a map entry whose key and value are both empty (losing it), so
# the byte comparisons use non-empty ones; test_empty_map_entries covers the rest.
options = st.builds(
    NackOptions,
    reason=st.none() | texts,
    max_deliveries=st.none() | st.integers(0, 2**32 - 1),
    delay=st.none() | st.integers(0, 2**64 - 1),
    nack_map=st.dictionaries(st.text(min_size=1), st.text(min_size=1), max_size=3),
)


def betterproto_options(opts: NackOptions) -> common.NackOptions:
    return common.NackOptions(
        reason=opts.reason,
        max_deliveries=opts.max_deliveries,
        delay=opts.delay_ms,
        nack_map=dict(opts.nack_map),
    )


def datum(msg_id: str) -> Datum:
    return Datum([], b"", datetime(2024, 1, 1), datetime(2024, 1, 1), DatumMetadata(msg_id, 0))


@settings(max_examples=300, deadline=None)
@given(opts=options)
def test_nack_options_are_betterprotos_bytes(opts: NackOptions) -> None:
    """Optional scalars are sent whenever set, even to 0 or ""; absent ones not at all."""
    assert encode_nack_options(opts) == bytes(betterproto_options(opts))


def test_empty_map_entries_keep_key_and_value() -> None:
    """As protobuf writes them: an entry holds its key and value, even empty ones."""
    encoded = encode_nack_options(NackOptions(nack_map={"": "", "k": ""}))
    assert encoded == b"\x22\x04\x0a\x00\x12\x00\x22\x05\x0a\x01k\x12\x00"
    assert common.NackOptions().parse(encoded).nack_map == {"": "", "k": ""}


def test_explicit_presence_of_default_values() -> None:
    zero = NackOptions(reason="", max_deliveries=0, delay=0)
    assert encode_nack_options(zero) == b"\x0a\x00\x10\x00\x18\x00"
    assert encode_nack_options(NackOptions()) == b""


@settings(max_examples=200, deadline=None)
@given(opts=st.none() | options, msg_id=texts)
def test_map_nack_result_is_betterprotos_bytes(opts: Optional[NackOptions], msg_id: str) -> None:
    """Message.to_nack(): empty value, the NACK tag, nack_options 5 (empty options too)."""
    result = Messages(Message(b"out", ["k"]), Message.to_nack(opts))
    expected = map_pb.MapResponse(
        id=msg_id,
        results=[
            map_pb.MapResponseResult(keys=["k"], value=b"out"),
            map_pb.MapResponseResult(
                tags=[NACK], nack_options=betterproto_options(opts or NackOptions())
            ),
        ],
    )
    assert encode_map_response(result, datum(msg_id), nack=True) == bytes(expected)
    stream = encode_map_stream_response(Message.to_nack(opts), datum(msg_id), nack=True)
    assert stream == bytes(map_pb.MapResponse(id=msg_id, results=expected.results[1:]))


def test_map_nack_is_refused_unless_enabled_and_elsewhere() -> None:
    """Without PYNUMAFLOW_NACK, on function.v1 and in reduce results: a ReturnTypeError."""
    nacked = Messages(Message.to_nack(NackOptions(reason="later")))
    with pytest.raises(ReturnTypeError, match="PYNUMAFLOW_NACK=1") as refused:
        encode_map_response(nacked, datum("a"))
    assert str(refused.value) == NACK_REFUSED
    with pytest.raises(ReturnTypeError, match=r"0\.8-0\.9 protocol"):
        encode_datum_response_list(nacked)
    with pytest.raises(ReturnTypeError, match="no input to nack"):
        encode_reduce_results(nacked, decode_window(b""))
    # A message merely tagged NACK by hand carries no options: an ordinary tag.
    assert encode_map_response(Messages(Message(b"", tags=[NACK])), datum("a")) == bytes(
        map_pb.MapResponse(id="a", results=[map_pb.MapResponseResult(tags=[NACK])])
    )


YEAR_ONE = datetime(1, 1, 1, tzinfo=timezone.utc)  # to_drop()'s and to_nack()'s event time


@settings(max_examples=200, deadline=None)
@given(opts=st.none() | options, msg_id=texts)
def test_transform_nack_result_is_betterprotos_bytes(
    opts: Optional[NackOptions], msg_id: str
) -> None:
    """MessageT.to_nack(): empty value, year-1 event time, the NACK tag, nack_options 6."""
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    result = MessageTs(MessageT(b"out", moment, ["k"]), MessageT.to_nack(opts))
    expected = st_pb.SourceTransformResponse(
        id=msg_id,
        results=[
            st_pb.SourceTransformResponseResult(keys=["k"], value=b"out", event_time=moment),
            st_pb.SourceTransformResponseResult(
                event_time=YEAR_ONE,
                tags=[NACK],
                nack_options=betterproto_options(opts or NackOptions()),
            ),
        ],
    )
    assert encode_transform_response(result, datum(msg_id), nack=True) == bytes(expected)


@settings(max_examples=100, deadline=None)
@given(opts=st.none() | options, msg_id=texts)
def test_modern_transform_nack_carries_its_metadata_then_options(
    opts: Optional[NackOptions], msg_id: str
) -> None:
    """sourcetransformer.Message.to_nack(): its own (empty) user metadata 5, options 6."""
    nacked = sourcetransformer.Message.to_nack(opts)
    assert type(nacked) is sourcetransformer.Message
    expected = st_pb.SourceTransformResponse(
        id=msg_id,
        results=[
            st_pb.SourceTransformResponseResult(
                event_time=YEAR_ONE,
                tags=[NACK],
                metadata=common.Metadata(),
                nack_options=betterproto_options(opts or NackOptions()),
            )
        ],
    )
    encoded = encode_transform_response_own(
        sourcetransformer.Messages(nacked), datum(msg_id), nack=True
    )
    # betterproto leaves out the empty metadata message the modern API sends (as 0.14.0)
    assert st_pb.SourceTransformResponse().parse(encoded) == expected
    assert b"\x2a\x00\x32" in encoded


def test_transform_nack_is_refused_unless_enabled_and_on_legacy() -> None:
    nacked = MessageTs(MessageT.to_nack(NackOptions(reason="later")))
    with pytest.raises(ReturnTypeError, match="PYNUMAFLOW_NACK=1") as refused:
        encode_transform_response(nacked, datum("a"))
    assert str(refused.value) == NACK_REFUSED
    with pytest.raises(ReturnTypeError, match="PYNUMAFLOW_NACK=1"):
        encode_transform_response_own(
            sourcetransformer.Messages(sourcetransformer.Message.to_nack()), datum("a")
        )
    with pytest.raises(ReturnTypeError, match=r"0\.8-0\.9 protocol"):
        encode_datum_response_t_list(nacked, datetime(2024, 1, 1), datetime(2024, 1, 1))
    assert MessageT.to_nack() == MessageT.to_nack(NackOptions())
    assert MessageT.to_nack() != MessageT(b"", datetime(1, 1, 1), tags=[NACK])
    assert MessageT.to_nack(NackOptions(reason="r")).nack_options == NackOptions(reason="r")
    assert MessageT.to_drop().nack_options is None


@settings(max_examples=200, deadline=None)
@given(opts=st.none() | options, msg_id=texts)
def test_sink_nack_is_status_5_with_options(opts: Optional[NackOptions], msg_id: str) -> None:
    (response,) = read_responses([Response.as_nack(msg_id, opts)])
    expected = sink_pb.SinkResponse(
        results=[
            sink_pb.SinkResponseResult(
                id=msg_id,
                status=sink_pb.Status.NACK,
                nack_options=betterproto_options(opts or NackOptions()),
            )
        ]
    )
    assert encode_result(response, nack=True) == bytes(expected)


def test_sink_nack_is_a_failure_unless_enabled() -> None:
    """Without PYNUMAFLOW_NACK (and on the legacy protocol): FAILURE with the reason."""
    response = Response.as_nack("a", NackOptions(reason="busy", delay=timedelta(seconds=2)))
    assert (response.success, response.err, response.status) == (False, "busy", "nack")
    expected = sink_pb.SinkResponse(
        results=[sink_pb.SinkResponseResult(id="a", status=sink_pb.Status.FAILURE, err_msg="busy")]
    )
    assert encode_result(response) == bytes(expected)
    assert Response.as_nack("b").err == "nack"
    # The 0.8-0.9 sink protocol: the failure it knows, with the reason.
    legacy = encode_response_list(read_responses([response]))
    assert legacy == encode_response_list([Response.as_failure("a", "busy")])


def test_nack_options_are_checked() -> None:
    assert NackOptions(delay=timedelta(milliseconds=1500)).delay_ms == 1500
    assert NackOptions(delay=7).delay_ms == 7
    with pytest.raises(ValueError, match="max_deliveries"):
        NackOptions(max_deliveries=-1)
    with pytest.raises(ValueError, match="delay"):
        NackOptions(delay=2**64)
    with pytest.raises(TypeError, match="reason"):
        NackOptions(reason=b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_deliveries"):
        NackOptions(max_deliveries=True)
    with pytest.raises(TypeError, match="nack_map"):
        NackOptions(nack_map={"k": 1})  # type: ignore[dict-item]
    assert Message.to_nack() == Message.to_nack(NackOptions())
    assert Message.to_nack() != Message(b"", tags=[NACK])
    assert Message.to_nack(NackOptions(reason="r")).nack_options == NackOptions(reason="r")
