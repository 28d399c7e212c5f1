"""A benchmark UDF server: the same handlers, run by our SDK or by the SDK it replaces.

Both SDKs expose the same public names, so this one file serves both: the
interpreter it is started with decides which `pynumaflow` it imports (ours, or
0.4.2 from its own virtualenv). Only the start-up differs: ours takes
`server_info_file=`, 0.4.2 writes to a hard-coded path that is patched here.

    python server_udf.py --impl ours|original --api sync|async --rpc map \
        --sock /tmp/x/function.sock --info /tmp/x/server-info [--outputs 10]

`--protocol v1` serves Numaflow >= 1.4's protocols instead (map.v1, sourcetransformer.v1,
reduce.v1, sink.v1): ours with `protocols=["v1"]`, its sockets and server-info files found
in `$PYNUMAFLOW_RUN_DIR` (set by run.py), or, as `--impl original`, pynumaflow 0.14.0's
own servers (`MapServer`, `MapAsyncServer`, ...; 0.14.0 renamed its API, so its handlers
are written here again in its style) with the same socket and server-info names in
`--run-dir`. `--sleep-ms N` makes the map handler sleep N ms (asyncio.sleep when async).

Experiment (our server only; the default run does not set it): BENCH_LOOP=asyncio|uvloop
runs our AsyncServer with asyncio.run or uvloop.run instead of aiorun.run (the documented
way).

Profiling hook (no change to src/): BENCH_PROFILE=cprofile:/path/out.pstats or
yappi:/path/out.pstats profiles the whole server process until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import _profile_hook

RPCS = (
    "map", "mapt", "mapstream", "reduce", "sink", "batchmap", "reducestream", "accumulator",
    "source",
)  # fmt: skip
# Kinds only pynumaflow 0.14.0's API has (async only): ours serves them through its
# modern API, with the very same handler code as 0.14.0 (serve_v014 for both).
MODERN_ONLY = ("reducestream", "accumulator", "source")


def make_handlers(api: str, rpc: str, outputs: int, sleep_ms: int = 0):
    """The user handlers: identical code for both SDKs (as the 0.4 README writes them)."""
    if rpc == "sink":
        from pynumaflow.sink import Response, Responses

        if api == "sync":

            def sink_handler(datums):
                responses = Responses()
                for d in datums:
                    responses.append(Response.as_success(d.id))
                return responses

        else:

            async def sink_handler(datums):
                responses = Responses()
                async for d in datums:
                    responses.append(Response.as_success(d.id))
                return responses

        return {"sink_handler": sink_handler}

    from pynumaflow.function import Message, Messages, MessageT, MessageTs

    if api == "sync":

        def map_handler(keys, datum):
            if sleep_ms:
                time.sleep(sleep_ms / 1000)
            return Messages(Message(datum.value, keys=keys))

        def mapt_handler(keys, datum):
            return MessageTs(MessageT(datum.value, event_time=datum.event_time, keys=keys))

        def map_stream_handler(keys, datum):
            value = datum.value
            for _ in range(outputs):
                yield Message(value, keys=keys)

        def reduce_handler(keys, datums, md):
            count = 0
            for _ in datums:
                count += 1
            return Messages(Message(str(count).encode(), keys=keys))

    else:

        async def map_handler(keys, datum):
            if sleep_ms:
                await asyncio.sleep(sleep_ms / 1000)
            return Messages(Message(datum.value, keys=keys))

        async def mapt_handler(keys, datum):
            return MessageTs(MessageT(datum.value, event_time=datum.event_time, keys=keys))

        async def map_stream_handler(keys, datum):
            value = datum.value
            for _ in range(outputs):
                yield Message(value, keys=keys)

        async def reduce_handler(keys, datums, md):
            count = 0
            async for _ in datums:
                count += 1
            return Messages(Message(str(count).encode(), keys=keys))

    return {
        "map": {"map_handler": map_handler},
        "mapt": {"mapt_handler": mapt_handler},
        "mapstream": {"map_stream_handler": map_stream_handler},
        "reduce": {"reduce_handler": reduce_handler},
    }[rpc]


def serve_ours(api: str, rpc: str, handlers: dict, sock: str, info: str, v1: bool) -> None:
    if rpc == "sink":
        from pynumaflow.sink import AsyncSink, Sink

        cls = Sink if api == "sync" else AsyncSink
    else:
        from pynumaflow.function import AsyncServer, Server

        cls = Server if api == "sync" else AsyncServer
    if v1:  # the v1 sockets and server-info files, in $PYNUMAFLOW_RUN_DIR
        server = cls(**handlers, protocols=["v1"])
    else:
        server = cls(**handlers, sock_path=sock, server_info_file=info)
    if api == "sync":
        server.start()
    elif os.environ.get("BENCH_LOOP") == "asyncio":  # experiment: without aiorun
        asyncio.run(server.start())
    elif os.environ.get("BENCH_LOOP") == "uvloop":  # experiment: the uvloop extra
        import uvloop

        uvloop.run(server.start())
    else:
        import aiorun

        aiorun.run(server.start(), stop_on_unhandled_errors=True)


def serve_original(api: str, rpc: str, handlers: dict, sock: str, info: str) -> None:
    # 0.4.2 always writes /var/run/numaflow/server-info: point its module constant here.
    if rpc == "sink":
        import pynumaflow.sink.server as sync_mod
        from pynumaflow.sink import Sink

        modules = [sync_mod]
        try:
            import pynumaflow.sink.async_sink as async_mod
            from pynumaflow.sink import AsyncSink

            modules.append(async_mod)
        except ImportError:  # pragma: no cover - depends on the 0.4.x release
            AsyncSink = None  # noqa: N806 - the class name it stands for
        cls = Sink if api == "sync" else AsyncSink
    else:
        import pynumaflow.function.async_server as async_mod
        import pynumaflow.function.server as sync_mod
        from pynumaflow.function import AsyncServer, Server

        modules = [sync_mod, async_mod]
        cls = Server if api == "sync" else AsyncServer
    for module in modules:
        module.SERVER_INFO_FILE_PATH = info
    server = cls(**handlers, sock_path=sock)
    if api == "sync":
        server.start()
    else:
        import aiorun

        aiorun.run(server.start(), stop_on_unhandled_errors=True)


# rpc -> (0.14.0 module, sync server or None, async server, keyword, socket, server-info)
V014_SERVERS = {
    "map": ("mapper", "MapServer", "MapAsyncServer", "mapper_instance",
            "map.sock", "mapper-server-info"),
    "mapt": ("sourcetransformer", "SourceTransformServer", "SourceTransformAsyncServer",
             "source_transform_instance", "sourcetransform.sock",
             "sourcetransformer-server-info"),
    "mapstream": ("mapstreamer", None, "MapStreamAsyncServer", "map_stream_instance",
                  "mapstream.sock", "mapper-server-info"),
    "reduce": ("reducer", None, "ReduceAsyncServer", "reducer_instance",
               "reduce.sock", "reducer-server-info"),
    "sink": ("sinker", "SinkServer", "SinkAsyncServer", "sinker_instance",
             "sink.sock", "sinker-server-info"),
    "reducestream": ("reducestreamer", None, "ReduceStreamAsyncServer",
                     "reduce_stream_instance", "reducestream.sock",
                     "reducestreamer-server-info"),
    "accumulator": ("accumulator", None, "AccumulatorAsyncServer", "accumulator_instance",
                    "accumulator.sock", "accumulator-server-info"),
    "batchmap": ("batchmapper", None, "BatchMapAsyncServer", "batch_mapper_instance",
                 "batchmap.sock", "mapper-server-info"),
    "source": ("sourcer", None, "SourceAsyncServer", "sourcer_instance",
               "source.sock", "sourcer-server-info"),
}  # fmt: skip


def v014_handler(api: str, rpc: str, outputs: int, sleep_ms: int):
    """The same echo / count handlers, in pynumaflow 0.14.0's API."""
    import importlib

    mod = importlib.import_module(f"pynumaflow.{V014_SERVERS[rpc][0]}")
    if rpc == "sink":
        Response, Responses = mod.Response, mod.Responses  # noqa: N806 - its class names

        def sink(datums):
            responses = Responses()
            for d in datums:
                responses.append(Response.as_success(d.id))
            return responses

        async def async_sink(datums):
            responses = Responses()
            async for d in datums:
                responses.append(Response.as_success(d.id))
            return responses

        return sink if api == "sync" else async_sink
    if rpc == "reducestream":  # a count per key, put when the window closes

        async def reduce_stream(keys, datums, output, md):
            count = 0
            async for _ in datums:
                count += 1
            await output.put(mod.Message(str(count).encode(), keys=keys))

        return reduce_stream
    if rpc == "accumulator":  # every datum passed on as it comes

        async def accumulate(datums, output):
            async for d in datums:
                await output.put(mod.Message.from_datum(d))

        return accumulate
    if rpc == "source":  # an endless source, as 0.14.0's example: offsets kept until acked
        return _endless_source(mod)
    if rpc == "batchmap":  # our pynumaflow.batchmapper takes the same handler
        BatchResponse, BatchResponses = mod.BatchResponse, mod.BatchResponses  # noqa: N806
        Message = mod.Message  # noqa: N806

        async def batch_map(datums):
            responses = BatchResponses()
            async for d in datums:
                responses.append(BatchResponse.with_msgs(d.id, [Message(d.value, keys=d.keys)]))
            return responses

        return batch_map
    Message, Messages = mod.Message, mod.Messages  # noqa: N806 - its class names
    if rpc == "map":

        def map_(keys, datum):
            if sleep_ms:
                time.sleep(sleep_ms / 1000)
            return Messages(Message(datum.value, keys=keys))

        async def async_map(keys, datum):
            if sleep_ms:
                await asyncio.sleep(sleep_ms / 1000)
            return Messages(Message(datum.value, keys=keys))

        return map_ if api == "sync" else async_map
    if rpc == "mapt":

        def mapt(keys, datum):
            return Messages(Message(datum.value, datum.event_time, keys=keys))

        async def async_mapt(keys, datum):
            return Messages(Message(datum.value, datum.event_time, keys=keys))

        return mapt if api == "sync" else async_mapt
    if rpc == "mapstream":

        async def map_stream(keys, datum):
            value = datum.value
            for _ in range(outputs):
                yield Message(value, keys=keys)

        return map_stream

    async def reduce(keys, datums, md):
        count = 0
        async for _ in datums:
            count += 1
        return Messages(Message(str(count).encode(), keys=keys))

    return reduce


def _endless_source(mod):
    """A Sourcer (0.14.0's API, ours the same) that reads every message asked for at once:
    100-byte payloads, a key, a header; each offset kept until its ack removes it."""
    from datetime import datetime, timezone

    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    payload = b"x" * 100

    class Endless(mod.Sourcer):
        def __init__(self):
            self.read_idx = 0
            self.to_ack = set()

        async def read_handler(self, datum, output):
            for _ in range(datum.num_records):
                idx = self.read_idx = self.read_idx + 1
                self.to_ack.add(idx)
                offset = mod.Offset(str(idx).encode(), 0)
                await output.put(mod.Message(payload, offset, now, keys=["key"]))

        async def ack_handler(self, ack_request):
            for offset in ack_request.offsets:
                self.to_ack.remove(int(offset.offset))

        async def nack_handler(self, nack_request):
            pass

        async def pending_handler(self):
            return mod.PendingResponse(count=0)

        async def active_partitions_handler(self):
            return mod.PartitionsResponse(partitions=[0])

    return Endless()


def serve_v014(api: str, rpc: str, outputs: int, sleep_ms: int, run_dir: str) -> None:
    """pynumaflow 0.14.0's own server for `rpc` (it has no sync map stream or reduce); or
    ours for the kinds only the 0.14.0 API has (the same names, in our modern API)."""
    import importlib

    module, sync_cls, async_cls, keyword, sock, info = V014_SERVERS[rpc]
    name = sync_cls if api == "sync" else async_cls
    if name is None:
        sys.exit(f"UNIMPLEMENTED: pynumaflow 0.14.0 has no sync server for {rpc}")
    cls = getattr(importlib.import_module(f"pynumaflow.{module}"), name)
    handler = v014_handler(api, rpc, outputs, sleep_ms)
    server = cls(
        **{keyword: handler},
        sock_path=os.path.join(run_dir, sock),
        server_info_file=os.path.join(run_dir, info),
    )
    server.start()  # its async servers run themselves under aiorun (with uvloop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("ours", "original"), required=True)
    parser.add_argument("--api", choices=("sync", "async"), required=True)
    parser.add_argument("--rpc", choices=RPCS, required=True)
    parser.add_argument("--sock", default="", help="legacy: the socket")
    parser.add_argument("--info", default="", help="legacy: the server-info file")
    parser.add_argument("--outputs", type=int, default=10)
    parser.add_argument("--protocol", choices=("legacy", "v1"), default="legacy")
    parser.add_argument("--run-dir", help="v1: the folder of the sockets and server-info")
    parser.add_argument("--sleep-ms", type=int, default=0, help="map handler sleeps this long")
    args = parser.parse_args()
    _profile_hook.install()
    v1 = args.protocol == "v1"
    if args.rpc == "batchmap" and args.impl == "ours":  # the modern API only
        from pynumaflow.batchmapper import BatchMapAsyncServer

        handler = v014_handler(args.api, args.rpc, args.outputs, args.sleep_ms)
        BatchMapAsyncServer(handler).start()  # sockets in $PYNUMAFLOW_RUN_DIR
        return
    if v1 and (args.impl == "original" or args.rpc in MODERN_ONLY):
        serve_v014(args.api, args.rpc, args.outputs, args.sleep_ms, args.run_dir)
        return
    handlers = make_handlers(args.api, args.rpc, args.outputs, args.sleep_ms)
    if args.impl == "ours":
        serve_ours(args.api, args.rpc, handlers, args.sock, args.info, v1)
    else:
        serve_original(args.api, args.rpc, handlers, args.sock, args.info)


if __name__ == "__main__":
    sys.exit(main())
