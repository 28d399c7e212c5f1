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

A handler that raises makes the call fail with :class:`CallError` as the platform
would see it: on v1 ``status`` is ``"INTERNAL"``, ``details``
``"UDF_EXECUTION_ERROR(udf): ValueError('...')"`` and ``traceback`` the handler's
traceback; on legacy ``"UNKNOWN"`` and the error text.
"""

from pynumaflow._client.legacy import CallError
from pynumaflow.testing._data import make_datum, make_sink_datum
from pynumaflow.testing._function import (
    FunctionClient,
    SyncFunctionClient,
    serve_function,
    serve_function_sync,
)
from pynumaflow.testing._results import ResultMessage, ResultMessageT
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
    "CallError",
    "FunctionClient",
    "ResultMessage",
    "ResultMessageT",
    "SideInputClient",
    "SinkClient",
    "SourceClient",
    "SyncFunctionClient",
    "SyncSideInputClient",
    "SyncSinkClient",
    "SyncSourceClient",
    "make_datum",
    "make_sink_datum",
    "serve_function",
    "serve_function_sync",
    "serve_side_input",
    "serve_side_input_sync",
    "serve_sink",
    "serve_sink_sync",
    "serve_source",
    "serve_source_sync",
]
