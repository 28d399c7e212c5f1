"""Metadata (Numaflow >= 1.7) on the windowed kinds: reduce, reduce stream, session, accumulator.

Requests: the payload's ``common.Metadata`` is kept whole, so the modern datum views show
its user and system groups (reduce's payload 6, as the session's 6 and the accumulator's
7). Results: a message's own user metadata is its result's ``metadata`` (reduce and
session ``Result`` 4, accumulator ``Payload`` 7) when it has some, and absent otherwise,
so a result without metadata is the bytes pynumaflow 0.14.0 sends. Checked against
betterproto.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import length_delimited

from pynumaflow import accumulator, reducer, sessionreducer
from pynumaflow._codec.v1 import accumulator as acc
from pynumaflow._codec.v1 import session as ses
from pynumaflow._codec.v1.reduce import decode_reduce_request, decode_window, encode_reduce_results
from pynumaflow._codec.wire import timestamp_parts
from pynumaflow._faces.modern import view
from pynumaflow._proto import common
from pynumaflow._proto.accumulator import v1 as acc_pb
from pynumaflow._proto.reduce import v1 as reduce_pb
from pynumaflow._proto.sessionreduce import v1 as ses_pb
from pynumaflow.function import Message as PlainMessage

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
group_names = st.text(min_size=1, max_size=6)
# Non-empty values: betterproto leaves an empty one out of its map entry (protobuf keeps it).
groups = st.dictionaries(
    group_names,
    st.dictionaries(group_names, st.binary(min_size=1, max_size=8), min_size=1, max_size=2),
)


def betterproto_groups(data: dict[str, dict[str, bytes]]) -> dict[str, common.KeyValueGroup]:
    return {name: common.KeyValueGroup(key_value=dict(kv)) for name, kv in data.items()}


def sent_metadata(user: dict[str, dict[str, bytes]]) -> dict[str, common.Metadata]:
    """The ``metadata`` keyword of a betterproto result: absent without user metadata."""
    return {"metadata": common.Metadata(user_metadata=betterproto_groups(user))} if user else {}


@settings(max_examples=200, deadline=None)
@given(user=groups, system=groups)
def test_reduce_datums_show_user_and_system_metadata(
    user: dict[str, dict[str, bytes]], system: dict[str, dict[str, bytes]]
) -> None:
    """reduce.v1 payload 6: what the modern reducer and reduce streamer datums read."""
    md = common.Metadata(
        previous_vertex="in",
        user_metadata=betterproto_groups(user),
        sys_metadata=betterproto_groups(system),
    )
    payload = reduce_pb.ReduceRequestPayload(keys=["k"], value=b"v", metadata=md)
    window = reduce_pb.Window(start=START, end=START, slot="slot-0")
    operation = length_delimited(2, bytes(window))
    data = length_delimited(1, bytes(payload)) + length_delimited(2, operation)
    datum = view(decode_reduce_request(data).datum)
    assert {g: {k: datum.user_metadata.value(g, k) for k in user[g]} for g in user} == user
    assert datum.user_metadata.groups() == list(user)
    assert {g: {k: datum.system_metadata.value(g, k) for k in system[g]} for g in system} == (
        system
    )
    assert datum.value == b"v"


def test_reduce_datums_without_metadata_have_none() -> None:
    payload = reduce_pb.ReduceRequestPayload(keys=["k"], value=b"v")
    data = length_delimited(1, bytes(payload)) + length_delimited(2, b"")
    datum = decode_reduce_request(data).datum
    assert datum._user_metadata == b""
    assert view(datum).user_metadata.groups() == view(datum).system_metadata.groups() == []


@settings(max_examples=200, deadline=None)
@given(user=groups)
def test_reduce_results_carry_their_user_metadata(user: dict[str, dict[str, bytes]]) -> None:
    """Result field 4 holds the message's user metadata, only when it has some."""
    raw_window = bytes(reduce_pb.Window(start=START, end=START, slot="slot-0"))
    message = reducer.Message(b"out", ["k"], ["t"], user_metadata=reducer.UserMetadata(user))
    (encoded,) = encode_reduce_results(reducer.Messages(message), decode_window(raw_window))
    expected = reduce_pb.ReduceResponse(
        result=reduce_pb.ReduceResponseResult(
            keys=["k"],
            value=b"out",
            tags=["t"],
            **sent_metadata(user),
        ),
        window=reduce_pb.Window().parse(raw_window),
    )
    assert encoded == bytes(expected)
    if not user:  # as pynumaflow 0.14.0 and the 0.4 API send it: no metadata field
        (plain,) = encode_reduce_results(
            [PlainMessage(b"out", ["k"], ["t"])], decode_window(raw_window)
        )
        assert encoded == plain


@settings(max_examples=200, deadline=None)
@given(user=groups)
def test_session_results_carry_their_user_metadata(user: dict[str, dict[str, bytes]]) -> None:
    window = ses_pb.KeyedWindow(start=START, end=START, slot="s", keys=["k"])
    decoded = ses.decode_session_window(bytes(window))
    message = sessionreducer.Message(b"out", ["k"], user_metadata=sessionreducer.UserMetadata(user))
    encoded = ses.encode_session_result(message, decoded)
    expected = ses_pb.SessionReduceResponse(
        result=ses_pb.SessionReduceResponseResult(
            keys=["k"],
            value=b"out",
            **sent_metadata(user),
        ),
        keyed_window=window,
    )
    assert encoded == bytes(expected)


@settings(max_examples=200, deadline=None)
@given(user=groups)
def test_accumulator_results_carry_their_user_metadata(
    user: dict[str, dict[str, bytes]],
) -> None:
    message = accumulator.Message(
        b"out", ["k"], event_time=START, id="7", user_metadata=accumulator.UserMetadata(user)
    )
    encoded, _ = acc.encode_accumulator_result(message, ("k",), timestamp_parts(EPOCH))
    expected = acc_pb.AccumulatorResponse(
        payload=acc_pb.Payload(
            keys=["k"],
            value=b"out",
            event_time=START,
            id="7",
            **sent_metadata(user),
        ),
        window=acc_pb.KeyedWindow(start=EPOCH, end=EPOCH, slot="slot-0", keys=["k"]),
    )
    assert acc_pb.AccumulatorResponse().parse(encoded) == expected
    assert (b"\x3a" in encoded) == bool(user)  # Payload field 7: only when set
