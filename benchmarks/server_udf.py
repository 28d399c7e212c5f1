"""A benchmark UDF server: the same handlers, run by our SDK or by pynumaflow 0.4.2.

Both SDKs expose the same public names, so this one file serves both: the
interpreter it is started with decides which `pynumaflow` it imports (ours, or
0.4.2 from its own virtualenv). Only the start-up differs: ours takes
`server_info_file=`, 0.4.2 writes to a hard-coded path that is patched here.

    python server_udf.py --impl ours|original --api sync|async --rpc map \
        --sock /tmp/x/function.sock --info /tmp/x/server-info [--outputs 10]

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

import _profile_hook

RPCS = ("map", "mapt", "mapstream", "reduce", "sink")


def make_handlers(api: str, rpc: str, outputs: int):
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


def serve_ours(api: str, rpc: str, handlers: dict, sock: str, info: str) -> None:
    if rpc == "sink":
        from pynumaflow.sink import AsyncSink, Sink

        cls = Sink if api == "sync" else AsyncSink
    else:
        from pynumaflow.function import AsyncServer, Server

        cls = Server if api == "sync" else AsyncServer
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("ours", "original"), required=True)
    parser.add_argument("--api", choices=("sync", "async"), required=True)
    parser.add_argument("--rpc", choices=RPCS, required=True)
    parser.add_argument("--sock", required=True)
    parser.add_argument("--info", required=True)
    parser.add_argument("--outputs", type=int, default=10)
    args = parser.parse_args()
    _profile_hook.install()
    handlers = make_handlers(args.api, args.rpc, args.outputs)
    serve = serve_ours if args.impl == "ours" else serve_original
    serve(args.api, args.rpc, handlers, args.sock, args.info)


if __name__ == "__main__":
    sys.exit(main())
