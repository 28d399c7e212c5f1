"""The sessionreduce.v1 and accumulator.v1 codecs against betterproto (hypothesis)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import EPOCH, UTC, key_lists, length_delimited, moments, payloads
from strategies import unknown_fields as unknown_fields_from

from pynumaflow._codec.v1 import accumulator as acc
from pynumaflow._codec.v1 import session as ses
from pynumaflow._codec.wire import timestamp_parts, varint
from pynumaflow._proto.accumulator import v1 as acc_pb
from pynumaflow._proto.sessionreduce import v1 as ses_pb
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow.accumulator import Message as AccumulatorMessage
from pynumaflow.sessionreducer import Message

keys = key_lists(max_size=4)
values = payloads(max_size=512)
texts = st.text(max_size=8)
# betterproto leaves out a map entry whose key and value are both empty.
headers = st.dictionaries(st.text(min_size=1, max_size=8), texts, max_size=3)
unknown_fields = unknown_fields_from(8)


def _unknown(extra: list[tuple[int, bytes]]) -> bytes:
    return b"".join(length_delimited(f, p) for f, p in extra)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


session_windows = st.builds(ses_pb.KeyedWindow, start=moments, end=moments, slot=texts, keys=keys)


@settings(max_examples=200, deadline=None)
@given(
    event=st.integers(0, 4),
    windows=st.lists(session_windows, max_size=3),
    key_list=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    hdrs=headers,
    with_payload=st.booleans(),
    extra=unknown_fields,
)
def test_decode_session_request_matches_betterproto(
    event: int,
    windows: list[Any],
    key_list: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    hdrs: dict[str, str],
    with_payload: bool,
    extra: list[tuple[int, bytes]],
) -> None:
    request = ses_pb.SessionReduceRequest(
        operation=ses_pb.SessionReduceRequestWindowOperation(
            event=ses_pb.SessionReduceRequestWindowOperationEvent(event), keyed_windows=windows
        )
    )
    if with_payload:
        request.payload = ses_pb.SessionReduceRequestPayload(
            keys=key_list, value=value, event_time=event_time, watermark=watermark, headers=hdrs
        )
    decoded = ses.decode_session_request(bytes(request) + _unknown(extra))
    assert decoded.event == event
    assert [(w.start, w.end, w.slot, list(w.keys)) for w in decoded.windows] == [
        (timestamp_parts(w.start), timestamp_parts(w.end), w.slot, w.keys) for w in windows
    ]
    for ours, theirs in zip(decoded.windows, windows, strict=True):
        assert ses_pb.KeyedWindow().parse(ours.encoded) == theirs
    # An empty payload (Go 1.4-1.5 sends Payload{} with MERGE and CLOSE) is none.
    if not with_payload or not bytes(request.payload):
        assert decoded.datum is None
        return
    datum = decoded.datum
    assert datum is not None
    assert (list(datum.keys), datum.value) == (key_list, value)
    assert (datum.event_time, datum.watermark) == (_naive(event_time), _naive(watermark))
    assert dict(datum.headers) == hdrs


@settings(max_examples=200, deadline=None)
@given(windows=st.lists(session_windows, min_size=2, max_size=4))
def test_a_merged_window_is_the_earliest_start_to_the_latest_end(windows: list[Any]) -> None:
    decoded = tuple(ses.decode_session_window(bytes(w)) for w in windows)
    merged = ses_pb.KeyedWindow().parse(ses.merged_window(decoded).encoded)
    assert merged.start == min(w.start for w in windows)
    assert merged.end == max(w.end for w in windows)
    assert (merged.slot, merged.keys) == (windows[0].slot, windows[0].keys)


@settings(max_examples=200, deadline=None)
@given(window=session_windows, out_keys=keys, value=values, tags=keys)
def test_session_responses_match_betterproto(
    window: Any, out_keys: list[str], value: bytes, tags: list[str]
) -> None:
    decoded = ses.decode_session_window(bytes(window))
    result = ses_pb.SessionReduceResponse().parse(
        ses.encode_session_result(Message(value, out_keys, tags), decoded)
    )
    assert result == ses_pb.SessionReduceResponse(
        result=ses_pb.SessionReduceResponseResult(keys=out_keys, value=value, tags=tags),
        keyed_window=window,
    )
    eof = ses_pb.SessionReduceResponse().parse(ses.encode_session_eof(decoded))
    assert eof == ses_pb.SessionReduceResponse(keyed_window=window, eof=True)


@settings(max_examples=200, deadline=None)
@given(
    event=st.integers(0, 2),
    window_keys=keys,
    key_list=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    msg_id=texts,
    hdrs=headers,
    with_payload=st.booleans(),
    extra=unknown_fields,
)
def test_decode_accumulator_request_matches_betterproto(
    event: int,
    window_keys: list[str],
    key_list: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    msg_id: str,
    hdrs: dict[str, str],
    with_payload: bool,
    extra: list[tuple[int, bytes]],
) -> None:
    window = acc_pb.KeyedWindow(start=event_time, end=watermark, slot="0", keys=window_keys)
    request = acc_pb.AccumulatorRequest(
        operation=acc_pb.AccumulatorRequestWindowOperation(
            event=acc_pb.AccumulatorRequestWindowOperationEvent(event), keyed_window=window
        )
    )
    if with_payload:
        request.payload = acc_pb.Payload(
            keys=key_list,
            value=value,
            event_time=event_time,
            watermark=watermark,
            id=msg_id,
            headers=hdrs,
        )
    decoded = acc.decode_accumulator_request(bytes(request) + _unknown(extra))
    assert decoded.event == event
    assert decoded.window.keys == tuple(window_keys)
    assert acc_pb.KeyedWindow().parse(decoded.window.encoded) == window
    if not with_payload:
        assert decoded.datum is None
        return
    datum = decoded.datum
    assert datum is not None
    assert (list(datum.keys), datum.value, datum.metadata.id) == (key_list, value, msg_id)
    assert (datum.event_time, datum.watermark) == (_naive(event_time), _naive(watermark))
    assert dict(datum.headers) == hdrs


def test_a_far_future_window_end_is_not_converted() -> None:
    """Numaflow 1.8.1+ names windows ending at chrono's MAX_UTC (year 262142)."""
    end = Timestamp(seconds=8210266876799, nanos=999999999).SerializeToString()
    encoded = b"\x12" + varint(len(end)) + end + b"\x22\x01k"
    operation = b"\x08\x02\x12" + varint(len(encoded)) + encoded  # APPEND
    decoded = acc.decode_accumulator_request(b"\x12" + varint(len(operation)) + operation)
    assert decoded == acc.AccumulatorRequest(acc.APPEND, acc.KeyedWindow(("k",), encoded), None)
    # betterproto cannot parse such a Timestamp either: the EOF's bytes, then.
    assert (
        acc.encode_accumulator_eof(encoded) == b"\x12" + varint(len(encoded)) + encoded + b" \x01"
    )


@settings(max_examples=200, deadline=None)
@given(
    out_keys=keys,
    window_keys=keys,
    value=values,
    tags=keys,
    event_time=st.none() | moments,
    watermark=st.none() | moments,
    previous=moments,
    msg_id=texts,
    hdrs=headers,
)
def test_accumulator_results_match_betterproto(
    out_keys: list[str],
    window_keys: list[str],
    value: bytes,
    tags: list[str],
    event_time: datetime | None,
    watermark: datetime | None,
    previous: datetime,
    msg_id: str,
    hdrs: dict[str, str],
) -> None:
    """The window's end is the highest watermark so far; the event time is always there."""
    message = AccumulatorMessage(value, out_keys, tags, watermark, event_time, hdrs, msg_id)
    encoded, highest = acc.encode_accumulator_result(
        message, tuple(window_keys), timestamp_parts(previous)
    )
    expected_end = max(previous, watermark) if watermark is not None else previous
    assert highest == timestamp_parts(expected_end)
    response = acc_pb.AccumulatorResponse().parse(encoded)
    payload = acc_pb.Payload(
        keys=out_keys,
        value=value,
        event_time=event_time or EPOCH,
        id=msg_id,
        headers=hdrs,
    )
    if watermark is not None:
        payload.watermark = watermark
    assert response == acc_pb.AccumulatorResponse(
        payload=payload,
        window=acc_pb.KeyedWindow(start=EPOCH, end=expected_end, slot="slot-0", keys=window_keys),
        tags=tags,
    )
    # The event time is always on the wire (the platform panics without it), even the epoch.
    assert b"\x1a\x00" in encoded or event_time not in (None, EPOCH)


@pytest.mark.parametrize("bad", [b"raw", "text", None])
def test_what_is_not_a_message_is_refused(bad: object) -> None:
    with pytest.raises(ReturnTypeError):
        acc.encode_accumulator_result(bad, ("k",), (0, 0))
    window = ses.decode_session_window(b"")
    with pytest.raises(ReturnTypeError):
        ses.encode_session_result(bad, window)


def test_a_message_time_of_the_wrong_type_is_refused() -> None:
    message = AccumulatorMessage(b"v")
    message._event_time = "yesterday"  # type: ignore[assignment]
    with pytest.raises(ReturnTypeError, match="event_time must be a datetime"):
        acc.encode_accumulator_result(message, ("k",), (0, 0))


def test_a_nack_result_is_refused() -> None:
    """A session or accumulator result has no input to nack (as reduce): a wrong type."""
    nack = Message.to_nack()
    with pytest.raises(ReturnTypeError, match="NACK"):
        acc.encode_accumulator_result(nack, ("k",), (0, 0))
    with pytest.raises(ReturnTypeError, match="NACK"):
        ses.encode_session_result(nack, ses.decode_session_window(b""))
