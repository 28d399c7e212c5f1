"""Fuzz the wire decoders with hypothesis at a large budget; print how many inputs were tried.

Every decoder must either return or raise CodecError, whatever the bytes. Inputs are
arbitrary bytes and mutations of valid requests (so the fuzzer reaches deep fields).
Run with `nox -s fuzz` (or `python tools/fuzz_codec.py [EXAMPLES_PER_TARGET]`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynumaflow._codec.legacy import function as legacy_function
from pynumaflow._codec.legacy import sink as legacy_sink
from pynumaflow._codec.v1 import accumulator as accumulator_codec
from pynumaflow._codec.v1 import map as map_codec
from pynumaflow._codec.v1 import reduce as reduce_codec
from pynumaflow._codec.v1 import session as session_codec
from pynumaflow._codec.v1 import sink as sink_codec
from pynumaflow._codec.v1 import source as source_codec
from pynumaflow._codec.wire import check_message
from pynumaflow._proto import common
from pynumaflow._proto.accumulator import v1 as accumulator
from pynumaflow._proto.function import v1 as fn
from pynumaflow._proto.map import v1 as map_v1
from pynumaflow._proto.reduce import v1 as reduce
from pynumaflow._proto.sessionreduce import v1 as session
from pynumaflow._proto.sink import v1 as sink
from pynumaflow._proto.source import v1 as source
from pynumaflow._proto.sourcetransformer import v1 as transform
from pynumaflow._types.errors import CodecError

UTC = timezone.utc
SEEDS = [
    bytes(
        fn.DatumRequest(
            keys=["k", "ü"],
            value=b"value",
            event_time=fn.EventTime(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
            watermark=fn.Watermark(datetime(1969, 1, 1, tzinfo=UTC)),
            metadata=fn.Metadata(id="id", num_delivered=3),
        )
    ),
    bytes(
        sink.DatumRequest(
            keys=["a"],
            value=b"\xff\x00",
            event_time=sink.EventTime(datetime(2024, 1, 1, tzinfo=UTC)),
            id="x",
        )
    ),
    bytes(
        map_v1.MapRequest(
            request=map_v1.MapRequestRequest(
                keys=["k"],
                value=b"v",
                event_time=datetime(2024, 1, 2, tzinfo=UTC),
                headers={"h": "x"},
                metadata=common.Metadata(
                    user_metadata={"g": common.KeyValueGroup(key_value={"a": b"1"})}
                ),
            ),
            id="vertex-1-0",
        )
    ),
    bytes(map_v1.MapRequest(handshake=map_v1.Handshake(sot=True))),
    bytes(
        transform.SourceTransformRequest(
            request=transform.SourceTransformRequestRequest(
                keys=["k"], value=b"v", id="1-0", headers={"h": "x"}
            )
        )
    ),
    bytes(
        reduce.ReduceRequest(
            payload=reduce.ReduceRequestPayload(
                keys=["k"],
                value=b"v",
                event_time=datetime(2024, 1, 1, tzinfo=UTC),
                headers={"h": "v"},
            ),
            operation=reduce.ReduceRequestWindowOperation(
                event=reduce.ReduceRequestWindowOperationEvent.APPEND,
                windows=[
                    reduce.Window(
                        start=datetime(2024, 1, 1, tzinfo=UTC),
                        end=datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
                        slot="0",
                    )
                ],
            ),
        )
    ),
    bytes(
        session.SessionReduceRequest(
            payload=session.SessionReduceRequestPayload(
                keys=["k"], value=b"v", event_time=datetime(2024, 1, 1, tzinfo=UTC)
            ),
            operation=session.SessionReduceRequestWindowOperation(
                event=session.SessionReduceRequestWindowOperationEvent.EXPAND,
                keyed_windows=[
                    session.KeyedWindow(
                        start=datetime(2024, 1, 1, tzinfo=UTC),
                        end=datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
                        slot="0",
                        keys=["k"],
                    ),
                    session.KeyedWindow(
                        start=datetime(2024, 1, 1, tzinfo=UTC),
                        end=datetime(2024, 1, 1, 0, 2, tzinfo=UTC),
                        slot="0",
                        keys=["k"],
                    ),
                ],
            ),
        )
    ),
    bytes(
        accumulator.AccumulatorRequest(
            payload=accumulator.Payload(
                keys=["k"],
                value=b"v",
                event_time=datetime(2024, 1, 1, tzinfo=UTC),
                id="x",
                headers={"h": "v"},
            ),
            operation=accumulator.AccumulatorRequestWindowOperation(
                event=accumulator.AccumulatorRequestWindowOperationEvent.APPEND,
                keyed_window=accumulator.KeyedWindow(
                    start=datetime(2024, 1, 1, tzinfo=UTC), slot="0", keys=["k"]
                ),
            ),
        )
    ),
    bytes(
        source.ReadRequest(request=source.ReadRequestRequest(num_records=500, timeout_in_ms=1000))
    ),
    bytes(
        source.AckRequest(
            request=source.AckRequestRequest(offsets=[source.Offset(offset=b"1", partition_id=2)])
        )
    ),
    bytes(
        source.NackRequest(
            request=[
                source.NackRequestRequest(
                    offsets=[source.Offset(offset=b"7", partition_id=0)],
                    nack_options=common.NackOptions(reason="r", delay=5),
                )
            ]
        )
    ),
    bytes(
        sink.SinkRequest(
            request=sink.SinkRequestRequest(
                keys=["a"],
                value=b"\xff",
                event_time=datetime(2024, 1, 1, tzinfo=UTC),
                id="x",
                headers={"h": "v"},
                metadata=common.Metadata(
                    user_metadata={"g": common.KeyValueGroup(key_value={"k": b"v"})}
                ),
            ),
            status=sink.TransmissionStatus(eot=True),
        )
    ),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with bytes flipped, cut, or spliced in."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


INPUTS = st.one_of(st.binary(max_size=256), mutated())
TARGETS: dict[str, Callable[[bytes], object]] = {
    "function.v1 DatumRequest": legacy_function.decode_datum_request,
    "sink.v1 DatumRequest": legacy_sink.decode_sink_datum_request,
    "map.v1 MapRequest": map_codec.decode_map_request,
    "map.v1 MapRequest (modern API)": map_codec.decode_map_request_own,
    "sourcetransformer.v1 SourceTransformRequest": map_codec.decode_transform_request,
    "sourcetransformer.v1 SourceTransformRequest (modern API)": (
        map_codec.decode_transform_request_own
    ),
    "reduce.v1 ReduceRequest": reduce_codec.decode_reduce_request,
    "sessionreduce.v1 SessionReduceRequest": session_codec.decode_session_request,
    "accumulator.v1 AccumulatorRequest": accumulator_codec.decode_accumulator_request,
    "sink.v1 SinkRequest": sink_codec.decode_sink_request,
    "sink.v1 SinkRequest (modern API)": sink_codec.decode_sink_request_own,
    "source.v1 ReadRequest": source_codec.decode_read_request,
    "source.v1 AckRequest": source_codec.decode_ack_request,
    "source.v1 NackRequest": source_codec.decode_nack_request,
    "well-formedness check": check_message,
}


def fuzz(name: str, decode: Callable[[bytes], object], examples: int) -> int:
    """Run one target; return how many inputs it tried."""
    tried = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(INPUTS)
    def target(data: bytes) -> None:
        nonlocal tried
        tried += 1
        with contextlib.suppress(CodecError):
            decode(data)

    target()
    return tried


def main() -> None:
    """Fuzz every target and report the counts."""
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    total = 0
    for name, decode in TARGETS.items():
        started = time.monotonic()
        tried = fuzz(name, decode, examples)
        total += tried
        seconds = time.monotonic() - started
        print(f"{name}: {tried} inputs, no unexpected exception ({seconds:.0f} s)")
    print(f"total: {total} inputs")


if __name__ == "__main__":
    main()
