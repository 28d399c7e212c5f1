"""The reduce.v1 codec against the betterproto classes, byte for byte (hypothesis)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import EPOCH, UTC, key_lists, length_delimited, moments, payloads
from strategies import unknown_fields as unknown_fields_from

from pynumaflow._codec.v1.reduce import (
    APPEND,
    CLOSE,
    OPEN,
    decode_reduce_request,
    decode_window,
    encode_reduce_eof,
    encode_reduce_results,
)
from pynumaflow._proto import common
from pynumaflow._proto.reduce import v1
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow.function import DROP, DatumMetadata, Message, Messages

keys = key_lists(max_size=8)  # as the function.v1 codec tests draw them
values = payloads(max_size=2048)
unknown_fields = unknown_fields_from(7)
windows = st.builds(
    lambda start, end, slot: v1.Window(start=start, end=end, slot=slot),
    moments,
    moments,
    st.sampled_from(["0", "slot-0", "", "é"]) | st.text(max_size=8),
)
groups = st.dictionaries(st.text(max_size=8), st.binary(max_size=16), max_size=2)
metadata = st.builds(
    lambda prev, user, system: common.Metadata(
        previous_vertex=prev,
        user_metadata={k: common.KeyValueGroup(key_value={k: v}) for k, v in user.items()},
        sys_metadata={k: common.KeyValueGroup(key_value={k: v}) for k, v in system.items()},
    ),
    st.text(max_size=8),
    groups,
    groups,
)


def _unknown(extra: list[tuple[int, bytes]]) -> bytes:
    return b"".join(length_delimited(f, p) for f, p in extra)


@settings(max_examples=300, deadline=None)
@given(
    keys=keys,
    value=values,
    event_time=moments,
    watermark=moments,
    headers=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    md=metadata,
    event=st.sampled_from([OPEN, CLOSE, APPEND]),
    request_windows=st.lists(windows, max_size=3),
    extra=unknown_fields,
)
def test_decode_reduce_request_matches_betterproto(
    keys: list[str],
    value: bytes,
    event_time: datetime,
    watermark: datetime,
    headers: dict[str, str],
    md: common.Metadata,
    event: int,
    request_windows: list[v1.Window],
    extra: list[tuple[int, bytes]],
) -> None:
    """Every field decodes as betterproto encodes it; unknown fields are skipped anywhere."""
    payload = v1.ReduceRequestPayload(
        keys=keys,
        value=value,
        event_time=event_time,
        watermark=watermark,
        headers=headers,
        metadata=md,
    )
    encoded_windows = [bytes(w) + _unknown(extra) for w in request_windows]
    operation = bytes((0x08, event)) if event else b""
    operation += b"".join(length_delimited(2, w) for w in encoded_windows)
    data = (
        length_delimited(1, bytes(payload) + _unknown(extra))
        + length_delimited(2, operation + _unknown(extra))
        + _unknown(extra)
    )
    expected = v1.ReduceRequest().parse(data)
    request = decode_reduce_request(data)
    assert request.event == expected.operation.event == event
    datum = request.datum
    assert datum.keys == datum.keys() == expected.payload.keys
    assert datum.value == value
    assert datum.event_time == event_time.replace(tzinfo=None)
    assert datum.watermark == watermark.replace(tzinfo=None)
    assert datum.headers == expected.payload.headers  # betterproto drops an entry {'': ''}
    assert datum.metadata == DatumMetadata("", 0)
    assert len(request.windows) == len(request_windows)
    seen = zip(request.windows, expected.operation.windows, encoded_windows, strict=True)
    for window, sent, raw in seen:
        assert window.encoded == raw
        assert window.slot == sent.slot
        assert window.metadata.interval_window.start == sent.start
        assert window.metadata.interval_window.end == sent.end
        assert window.metadata.interval_window.start.tzinfo is UTC


def test_decode_grpcio_style_window_and_absent_parts() -> None:
    """A window whose start is the epoch, sent present but empty, decodes; so do bare requests."""
    raw = b"\x0a\x00\x12\x02\x08\x3c\x1a\x01\x30"  # start {} (epoch), end 60 s, slot "0"
    window = decode_window(raw)
    assert window.bounds == ((0, 0), (60, 0))
    assert window.metadata.interval_window.start == EPOCH
    assert window.metadata.interval_window.end == EPOCH + timedelta(seconds=60)
    assert window.slot == "0"
    assert decode_window(raw) is window  # every request of a stream names the same window
    headers = decode_reduce_request(length_delimited(1, b"\x2a\x00\x2a\x06\x0a\x01h\x12\x01v"))
    assert headers.datum.headers == {"": "", "h": "v"}  # an all-default entry is an entry
    bare = decode_reduce_request(b"")
    assert (bare.event, bare.windows, bare.datum.keys, bare.datum.value) == (OPEN, (), [], b"")
    assert bare.datum.event_time == datetime(1970, 1, 1)


def test_fields_occurring_twice_merge() -> None:
    """Protobuf merge rules: two payloads add their keys, two operations add their windows."""
    first = bytes(v1.ReduceRequestPayload(keys=["a"], value=b"x"))
    second = bytes(v1.ReduceRequestPayload(keys=["b"]))
    window = bytes(v1.Window(end=EPOCH + timedelta(seconds=1), slot="0"))
    op = bytes(v1.ReduceRequestWindowOperation(event=v1.ReduceRequestWindowOperationEvent.APPEND))
    data = (
        length_delimited(1, first)
        + length_delimited(2, op + length_delimited(2, window))
        + length_delimited(1, second)
        + length_delimited(2, length_delimited(2, window))
    )
    request = decode_reduce_request(data)
    assert request.datum.keys == ["a", "b"]
    assert request.datum.value == b"x"
    assert request.event == APPEND
    assert [w.encoded for w in request.windows] == [window, window]


def test_long_payloads_and_operations_decode_as_short_ones() -> None:
    """Past the lengths the common request shape is read for in place, the same answers."""
    window = v1.Window(end=EPOCH + timedelta(seconds=1), slot="s" * 200)  # operation > 127 B
    for value in (b"v" * 100, b"v" * 20_000, b"v" * 3_000_000):  # 1-, 2- and 3-byte lengths
        for windows_sent in ([v1.Window(end=EPOCH + timedelta(seconds=1), slot="0")], [window]):
            data = bytes(
                v1.ReduceRequest(
                    payload=v1.ReduceRequestPayload(keys=["k"], value=value),
                    operation=v1.ReduceRequestWindowOperation(
                        event=v1.ReduceRequestWindowOperationEvent.APPEND, windows=windows_sent
                    ),
                )
            )
            request = decode_reduce_request(data)
            assert (request.datum.keys, request.datum.value) == (["k"], value)
            assert request.event == APPEND
            assert [w.encoded for w in request.windows] == [bytes(w) for w in windows_sent]
            # A payload that runs past the request is refused, whatever its length's size.
            with pytest.raises(CodecError):
                decode_reduce_request(data[:-1] if len(data) < 200 else data[: len(value)])


messages = st.lists(
    st.builds(
        Message,
        value=values,
        keys=st.none() | keys,
        tags=st.none() | st.lists(st.sampled_from([DROP, "even", "odd", ""]) | st.text()),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(results=messages, window=windows, extra=unknown_fields)
def test_encode_reduce_results_matches_betterproto(
    results: list[Message], window: v1.Window, extra: list[tuple[int, bytes]]
) -> None:
    """One ReduceResponse per message, the window echoed as its exact request bytes."""
    raw = bytes(window) + _unknown(extra)
    encoded = encode_reduce_results(Messages(*results), decode_window(raw))
    assert len(encoded) == len(results)
    for data, message in zip(encoded, results, strict=True):
        # Set explicitly, an empty result is still sent: the platform makes a message of it.
        result = v1.ReduceResponseResult(keys=message.keys, value=message.value, tags=message.tags)
        expected = bytes(v1.ReduceResponse(result=result, window=v1.Window().parse(raw)))
        if not extra:
            assert data == expected
        assert data.endswith(length_delimited(2, raw))
        parsed = v1.ReduceResponse().parse(data)
        assert (parsed.result.keys, parsed.result.value, parsed.result.tags) == (
            message.keys,
            message.value,
            message.tags,
        )
        assert parsed.eof is False


def test_empty_message_is_a_present_result() -> None:
    """Message(b"") still encodes a result field (0a 00), so the platform emits it."""
    window = decode_window(bytes(v1.Window(end=EPOCH + timedelta(seconds=60), slot="0")))
    (data,) = encode_reduce_results(Messages(Message(b"")), window)
    assert data.startswith(b"\x0a\x00\x12")


@given(window=windows)
def test_encode_reduce_eof_matches_betterproto(window: v1.Window) -> None:
    """The EOF response is the window and EOF true, no result."""
    raw = bytes(window)
    assert encode_reduce_eof(decode_window(raw)) == bytes(
        v1.ReduceResponse(window=window, eof=True)
    )


class _Duck:
    def __init__(self, value: Any, keys: Any = (), tags: Any = ()) -> None:
        self.value, self.keys, self.tags = value, keys, tags


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (None, "handler returned NoneType; expected Messages"),
        (Message(b"x"), "handler returned Message; expected Messages"),
        (b"x", "handler returned bytes"),
        ([object()], "expected Message objects, found object"),
        ([_Duck("text")], "message value must be bytes, found str"),
        ([_Duck(b"x", keys=[1])], "message keys must be str, found int"),
        ([_Duck(b"x", tags=["\ud800"])], "not encodable as UTF-8"),
    ],
    ids=["none", "message", "bytes", "object", "str-value", "int-key", "surrogate"],
)
def test_wrong_results_raise_return_type_error(result: Any, text: str) -> None:
    """What cannot be sent raises ReturnTypeError naming the problem."""
    window = decode_window(b"")
    with pytest.raises(ReturnTypeError, match=text):
        encode_reduce_results(result, window)


def test_duck_typed_messages_are_encoded() -> None:
    """Objects with value, keys and tags count as messages, as in the legacy codec."""
    window = decode_window(b"")
    (data,) = encode_reduce_results([_Duck(b"v", ["k"], ["t"])], window)
    assert data == b"\x0a\x09\x0a\x01k\x12\x01v\x1a\x01t\x12\x00"


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_codec_error(data: bytes) -> None:
    """Garbage never escapes as anything but CodecError."""
    with contextlib.suppress(CodecError):
        decode_reduce_request(data)


@settings(max_examples=500, deadline=None)
@given(
    request_windows=st.lists(windows, min_size=1, max_size=2),
    keys=keys,
    cut=st.integers(min_value=0),
    flip=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_damaged_requests_only_raise_codec_error(
    request_windows: list[v1.Window], keys: list[str], cut: int, flip: int, bit: int
) -> None:
    """Truncated or bit-flipped real requests decode or raise CodecError, nothing else."""
    data = bytearray(
        bytes(
            v1.ReduceRequest(
                payload=v1.ReduceRequestPayload(keys=keys, headers={"h": "v"}),
                operation=v1.ReduceRequestWindowOperation(windows=request_windows),
            )
        )
    )
    data[flip % len(data)] ^= 1 << bit
    for candidate in (bytes(data), bytes(data[: cut % len(data)])):
        with contextlib.suppress(CodecError):
            decode_reduce_request(candidate)
