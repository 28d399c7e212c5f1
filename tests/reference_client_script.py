"""One bidi conversation with a v1 server, through the pynumaflow 0.14.0 wheel's own stubs.

Runs only in the reference virtualenv that ``reference_client.py`` builds (``python -I``:
never imported into the test process, where our own ``pynumaflow`` lives). Reads one
JSON object on stdin::

    {"service": "map" | "sourcetransform" | "reduce" | "accumulator" | "sink" | "source-read"
                | "source-ack" | "source-nack" | "source-pending" | "source-partitions"
                | "sideinput",
     "socket": "/path/to/map.sock",
     "requests": [<request message in proto JSON>, ...],
     "await_first": true,        # wait for the first response before sending the rest
     "read_before_close": 0,     # responses to read after the requests, before half-closing
     "metadata": [["key", "value"], ...],
     "timeout": 30}

and prints one JSON object on stdout::

    {"ready": true,                        # IsReady's answer
     "responses": [<response in proto JSON>, ...],
     "raw_responses": [<base64 of each response as the stubs serialize it>, ...],
     "code": "OK", "details": "...",       # the call's final status
     "status_details": null | {"code": 13, "message": "...",
                               "details": [{"type_url": "...", "detail": "..."}]}}

Proto JSON is ``google.protobuf.json_format`` with the proto's field names: bytes are
base64, Timestamps RFC 3339 strings, 64-bit integers strings, and a message field is
present exactly when it was on the wire. ``raw_responses`` keep the fields these stubs
do not know (``nack_options``): protobuf parses them as unknown fields and serializes
them again unchanged.

The unary services (``source-nack``, ``source-pending``, ``source-partitions``,
``sideinput``) make one call per request (``[]``: one call with an empty message) and
stop at the first failure, whose status is the one printed.
"""

import asyncio
import base64
import importlib
import json
import sys

import grpc
from google.protobuf import empty_pb2, json_format
from google.rpc import error_details_pb2, status_pb2

# service -> (module of the wheel's protos, stub, bidi method, request message)
SERVICES = {
    "map": ("pynumaflow.proto.mapper.map", "MapStub", "MapFn", "MapRequest"),
    "sourcetransform": (
        "pynumaflow.proto.sourcetransformer.transform",
        "SourceTransformStub",
        "SourceTransformFn",
        "SourceTransformRequest",
    ),
    "reduce": ("pynumaflow.proto.reducer.reduce", "ReduceStub", "ReduceFn", "ReduceRequest"),
    "accumulator": (
        "pynumaflow.proto.accumulator.accumulator",
        "AccumulatorStub",
        "AccumulateFn",
        "AccumulatorRequest",
    ),
    "sink": ("pynumaflow.proto.sinker.sink", "SinkStub", "SinkFn", "SinkRequest"),
    "source-read": ("pynumaflow.proto.sourcer.source", "SourceStub", "ReadFn", "ReadRequest"),
    "source-ack": ("pynumaflow.proto.sourcer.source", "SourceStub", "AckFn", "AckRequest"),
}
# service -> (module, stub, unary method, request message or None for Empty)
UNARY = {
    "source-nack": ("pynumaflow.proto.sourcer.source", "SourceStub", "NackFn", "NackRequest"),
    "source-pending": ("pynumaflow.proto.sourcer.source", "SourceStub", "PendingFn", None),
    "source-partitions": ("pynumaflow.proto.sourcer.source", "SourceStub", "PartitionsFn", None),
    "sideinput": (
        "pynumaflow.proto.sideinput.sideinput",
        "SideInputStub",
        "RetrieveSideInput",
        None,
    ),
}
MAX_MESSAGE = 64 * 1024 * 1024


def to_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def report(ready, responses, code, details, trailing):
    return {
        "ready": ready.ready,
        "responses": [to_json(r) for r in responses],
        "raw_responses": [base64.b64encode(r.SerializeToString()).decode() for r in responses],
        "code": code,
        "details": details,
        "status_details": status_details(trailing),
    }


def status_details(trailing):
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            details = []
            for item in status.details:
                entry = {"type_url": item.type_url}
                if item.Is(error_details_pb2.DebugInfo.DESCRIPTOR):
                    debug = error_details_pb2.DebugInfo()
                    item.Unpack(debug)
                    entry["detail"] = debug.detail
                details.append(entry)
            return {"code": status.code, "message": status.message, "details": details}
    return None


async def call_unary(spec):
    """One unary call per request (an Empty when the method takes one)."""
    module, stub_name, method, request_name = UNARY[spec["service"]]
    pb2 = importlib.import_module(module + "_pb2")
    pb2_grpc = importlib.import_module(module + "_pb2_grpc")
    message = getattr(pb2, request_name) if request_name else empty_pb2.Empty
    async with grpc.aio.insecure_channel("unix://" + spec["socket"]) as channel:
        stub = getattr(pb2_grpc, stub_name)(channel)
        ready = await stub.IsReady(empty_pb2.Empty(), timeout=spec.get("timeout", 30))
        responses, code, details, trailing = [], "OK", "", None
        for request in spec["requests"] or [{}]:
            call = getattr(stub, method)(json_format.ParseDict(request, message()))
            try:
                responses.append(await call)
            except grpc.aio.AioRpcError as err:
                code, details = err.code().name, err.details() or ""
                trailing = err.trailing_metadata()
                break
        return report(ready, responses, code, details, trailing)


async def converse(spec):
    if spec["service"] in UNARY:
        return await call_unary(spec)
    module, stub_name, method, request_name = SERVICES[spec["service"]]
    pb2 = importlib.import_module(module + "_pb2")
    pb2_grpc = importlib.import_module(module + "_pb2_grpc")
    requests = [json_format.ParseDict(r, getattr(pb2, request_name)()) for r in spec["requests"]]
    timeout = spec.get("timeout", 30)
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    async with grpc.aio.insecure_channel("unix://" + spec["socket"], options=options) as channel:
        stub = getattr(pb2_grpc, stub_name)(channel)
        ready = await stub.IsReady(empty_pb2.Empty(), timeout=timeout)
        call = getattr(stub, method)(
            metadata=[tuple(pair) for pair in spec.get("metadata", [])], timeout=timeout
        )
        responses = []
        try:
            if spec.get("await_first", True) and requests:
                await call.write(requests.pop(0))
                first = await call.read()
                if first is not grpc.aio.EOF:
                    responses.append(first)
            for request in requests:
                await call.write(request)
            for _ in range(spec.get("read_before_close", 0)):
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                responses.append(response)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the server ended the call: its status says why
        while True:
            try:
                response = await call.read()
            except grpc.aio.AioRpcError:
                break
            if response is grpc.aio.EOF:
                break
            responses.append(response)
        code = await call.code()
        details = await call.details() or ""
        return report(ready, responses, code.name, details, await call.trailing_metadata())


def main():
    spec = json.load(sys.stdin)
    json.dump(asyncio.run(converse(spec)), sys.stdout)


if __name__ == "__main__":
    main()
