"""pynumaflow._codec.rpc agrees with the generated betterproto code it stands in for."""

from __future__ import annotations

import betterproto.lib.google.protobuf as pb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynumaflow._codec.rpc import DEBUG_INFO_TYPE_URL, READY, SERVICES, encode_status
from pynumaflow._proto.accumulator import v1 as accumulator_v1
from pynumaflow._proto.function import v1 as function_v1
from pynumaflow._proto.google import rpc
from pynumaflow._proto.map import v1 as map_v1
from pynumaflow._proto.reduce import v1 as reduce_v1
from pynumaflow._proto.sessionreduce import v1 as session_v1
from pynumaflow._proto.sideinput import v1 as sideinput_v1
from pynumaflow._proto.sink import v1 as sink_v1
from pynumaflow._proto.source import v1 as source_v1
from pynumaflow._proto.sourcetransformer import v1 as transform_v1

GENERATED = [
    (function_v1.UserDefinedFunctionBase, function_v1.ReadyResponse),
    (map_v1.MapBase, map_v1.ReadyResponse),
    (reduce_v1.ReduceBase, reduce_v1.ReadyResponse),
    (session_v1.SessionReduceBase, session_v1.ReadyResponse),
    (accumulator_v1.AccumulatorBase, accumulator_v1.ReadyResponse),
    (sink_v1.UserDefinedSinkBase, sink_v1.ReadyResponse),
    (sink_v1.SinkBase, sink_v1.ReadyResponse),
    (transform_v1.SourceTransformBase, transform_v1.ReadyResponse),
    (source_v1.SourceBase, source_v1.ReadyResponse),
    (sideinput_v1.SideInputBase, sideinput_v1.ReadyResponse),
]


def test_services_are_the_generated_ones() -> None:
    """Every method path and cardinality, and no service more or less."""
    generated = {
        path: handler.cardinality
        for base, _ in GENERATED
        for path, handler in base().__mapping__().items()
    }
    ours = {
        f"/{service}/{method}": cardinality
        for service, methods in SERVICES.items()
        for method, cardinality in methods.items()
    }
    assert ours == generated


@pytest.mark.parametrize("ready_response", [r for _, r in GENERATED])
def test_ready_is_ready_response_true(ready_response: type) -> None:
    assert bytes(ready_response(ready=True)) == READY


@given(
    code=st.integers(-(2**31), 2**31 - 1),
    message=st.text(max_size=20),
    detail=st.text(max_size=200),
)
def test_status_encodes_as_betterproto(code: int, message: str, detail: str) -> None:
    debug = rpc.DebugInfo(detail=detail)
    packed = pb.Any(type_url=DEBUG_INFO_TYPE_URL, value=bytes(debug))
    expected = bytes(rpc.Status(code=code, message=message, details=[packed]))
    assert encode_status(code, message, detail) == expected
