"""Test your handlers over the real gRPC path, without a cluster.

Each helper starts a real server for your handlers on a temporary Unix socket in the
running process and hands you a client that calls it the way the Numaflow platform
does (same RPCs, same bytes), returning the public datatypes::

    from pynumaflow import testing
    from pynumaflow.function import Message, Messages

    def double(keys, datum):
        return Messages(Message(datum.value * 2, keys=keys))

    async def test_double():  # e.g. with pytest-asyncio or anyio's pytest plugin
        async with testing.serve_function(map_handler=double) as udf:
            assert await udf.map(b"ab", keys=["k"]) == Messages(Message(b"abab", keys=["k"]))

    def test_double_sync():  # plain pytest, no async plugin needed
        with testing.serve_function_sync(map_handler=double) as udf:
            assert udf.map(b"ab")[0].value == b"abab"

The client speaks the protocols of Numaflow >= 1.4 (``protocol="v1"``, the default:
map.v1, sourcetransformer.v1, reduce.v1, sink.v1, what every current cluster runs),
or those of 0.8-0.9 (``protocol="legacy"``: function.v1 and the UserDefinedSink). Only
v1 carries headers and user metadata (``headers=``, ``user_metadata=``; the messages
returned carry the ``user_metadata`` the platform would get) and the sink's fallback,
serve and on-success answers.

The kinds new in v1 have a kit each too, with the modern API's handlers:
:func:`serve_source`, :func:`serve_side_input`, :func:`serve_batch_map` (batches, one
response per id), :func:`serve_reduce_stream` (a window closed, or opened to read its
results while it is open), :func:`serve_accumulator` (keys opened, appended to and
closed; outputs and each key's EOF) and :func:`serve_session_reduce` (sessions derived
from event times as the platform does, or the operations given one by one); each with
a ``_sync`` form.

A handler that raises makes the call fail with :class:`CallError` as the platform
would see it: on v1 ``status`` is ``"INTERNAL"``, ``details``
``"UDF_EXECUTION_ERROR(udf): ValueError('...')"`` and ``traceback`` the handler's
traceback; on legacy ``"UNKNOWN"`` and the error text.
"""

from pynumaflow._client.legacy import CallError
from pynumaflow.testing._accumulator import (
    AccumulatorClient,
    AccumulatorStreamClient,
    SyncAccumulatorClient,
    serve_accumulator,
    serve_accumulator_sync,
)
from pynumaflow.testing._batchmap import (
    BatchMapClient,
    SyncBatchMapClient,
    serve_batch_map,
    serve_batch_map_sync,
)
from pynumaflow.testing._data import make_datum, make_sink_datum
from pynumaflow.testing._function import (
    FunctionClient,
    SyncFunctionClient,
    serve_function,
    serve_function_sync,
)
from pynumaflow.testing._reducestream import (
    ReduceStreamClient,
    ReduceStreamWindow,
    SyncReduceStreamClient,
    serve_reduce_stream,
    serve_reduce_stream_sync,
)
from pynumaflow.testing._results import KeyedAnswer, ResultMessage, ResultMessageT
from pynumaflow.testing._sessionreduce import (
    SessionReduceClient,
    SessionStreamClient,
    SyncSessionReduceClient,
    serve_session_reduce,
    serve_session_reduce_sync,
)
from pynumaflow.testing._sideinput import (
    SideInputClient,
    SyncSideInputClient,
    serve_side_input,
    serve_side_input_sync,
)
from pynumaflow.testing._sink import SinkClient, SyncSinkClient, serve_sink, serve_sink_sync
from pynumaflow.testing._source import (
    SourceClient,
    SyncSourceClient,
    serve_source,
    serve_source_sync,
)

__all__ = [
    "AccumulatorClient",
    "AccumulatorStreamClient",
    "BatchMapClient",
    "CallError",
    "FunctionClient",
    "KeyedAnswer",
    "ReduceStreamClient",
    "ReduceStreamWindow",
    "ResultMessage",
    "ResultMessageT",
    "SessionReduceClient",
    "SessionStreamClient",
    "SideInputClient",
    "SinkClient",
    "SourceClient",
    "SyncAccumulatorClient",
    "SyncBatchMapClient",
    "SyncFunctionClient",
    "SyncReduceStreamClient",
    "SyncSessionReduceClient",
    "SyncSideInputClient",
    "SyncSinkClient",
    "SyncSourceClient",
    "make_datum",
    "make_sink_datum",
    "serve_accumulator",
    "serve_accumulator_sync",
    "serve_batch_map",
    "serve_batch_map_sync",
    "serve_function",
    "serve_function_sync",
    "serve_reduce_stream",
    "serve_reduce_stream_sync",
    "serve_session_reduce",
    "serve_session_reduce_sync",
    "serve_side_input",
    "serve_side_input_sync",
    "serve_sink",
    "serve_sink_sync",
    "serve_source",
    "serve_source_sync",
]
