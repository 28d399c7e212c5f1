"""The one request-field decoder: every protocol's layout agrees with its proto."""

from __future__ import annotations

import dataclasses
from typing import Any

import betterproto
import pytest

from pynumaflow._codec import fields
from pynumaflow._codec.legacy import function as legacy_function
from pynumaflow._codec.legacy import sink as legacy_sink
from pynumaflow._codec.v1 import accumulator as accumulator_codec
from pynumaflow._codec.v1 import map as map_codec
from pynumaflow._codec.v1 import reduce as reduce_codec
from pynumaflow._codec.v1 import session as session_codec
from pynumaflow._codec.v1 import sink as sink_codec
from pynumaflow._proto.accumulator import v1 as accumulator_pb
from pynumaflow._proto.function import v1 as function_pb
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow._proto.reduce import v1 as reduce_pb
from pynumaflow._proto.sessionreduce import v1 as session_pb
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._proto.sourcetransformer import v1 as transform_pb

# What each field after the watermark holds, by its name in the protos.
ROLES = {"id": fields.ID, "headers": fields.HEADER}
# function.v1's `metadata` is the delivery Metadata; every v1 request's is common.Metadata.
METADATA_ROLE = {
    function_pb.DatumRequest: fields.DELIVERY,
    # The window kinds: user and system metadata, kept whole for the modern datum views.
    reduce_pb.ReduceRequestPayload: fields.METADATA,
    session_pb.SessionReduceRequestPayload: fields.METADATA,
    accumulator_pb.Payload: fields.METADATA,
}
IGNORED: dict[Any, set[str]] = {}

LAYOUTS: list[tuple[fields.RequestLayout, Any, bool]] = [
    (legacy_function._LAYOUT, function_pb.DatumRequest, True),
    (legacy_sink._LAYOUT, sink_pb.DatumRequest, True),
    (map_codec._MAP.request, map_pb.MapRequestRequest, False),
    (
        map_codec._TRANSFORM.request,
        transform_pb.SourceTransformRequestRequest,
        False,
    ),
    (reduce_codec._PAYLOAD, reduce_pb.ReduceRequestPayload, False),
    (session_codec._PAYLOAD, session_pb.SessionReduceRequestPayload, False),
    (accumulator_codec._PAYLOAD, accumulator_pb.Payload, False),
    (sink_codec._REQUEST, sink_pb.SinkRequestRequest, False),
]


def numbers(message: Any) -> dict[str, int]:
    return {
        field.name: betterproto.FieldMetadata.get(field).number
        for field in dataclasses.fields(message)
    }


@pytest.mark.parametrize(
    ("layout", "message", "wrapped_times"), LAYOUTS, ids=[m.__qualname__ for _, m, _ in LAYOUTS]
)
def test_layout_matches_the_proto(
    layout: fields.RequestLayout, message: Any, wrapped_times: bool
) -> None:
    """Fields 1-4 are shared; the layout names every later field of the request by its role."""
    by_name = numbers(message)
    assert [by_name[name] for name in ("keys", "value", "event_time", "watermark")] == [1, 2, 3, 4]
    roles = {**ROLES, "metadata": METADATA_ROLE.get(message, fields.USER_METADATA)}
    ignored = IGNORED.get(message, set())
    expected = {
        number: roles[name]
        for name, number in by_name.items()
        if number > 4 and name not in ignored
    }
    assert dict(layout.extra) == expected
    assert layout.last == max(expected)
    assert layout.wrapped_times is wrapped_times


def test_occurrences_of_a_request_merge() -> None:
    """decode_request continues the fields it is given: keys add up, the last value wins."""
    layout = fields.RequestLayout("Request", {5: fields.HEADER, 6: fields.ID})
    first = bytes(transform_pb.SourceTransformRequestRequest(keys=["a"], value=b"1", id="x"))
    second = bytes(
        transform_pb.SourceTransformRequestRequest(keys=["b"], value=b"2", headers={"h": "v"})
    )
    decoded = fields.decode_request(first, layout)
    decoded = fields.decode_request(second, layout, fields=decoded)
    keys, value, _, _, msg_id, _, headers, _ = decoded
    assert (keys, value, msg_id, headers) == (
        ["a", "b"],
        b"2",
        "x",
        {"h": "v"},
    )
