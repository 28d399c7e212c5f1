"""The transport floor: a bare grpclib server of function.v1 MapFn, no SDK.

Request bytes in (not even decoded), one fixed small valid DatumResponseList out.
It advertises the same SETTINGS_MAX_CONCURRENT_STREAMS as our server (h2 would say
100), so calls in flight are not capped differently. Writes the same server-info
file, so the runner starts and times it like the SDK servers.

    python server_echo.py --sock /tmp/x/function.sock --info /tmp/x/server-info
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import _profile_hook
import grpclib.const
import grpclib.server
from grpclib.encoding.base import CodecBase
from h2.settings import SettingCodes

END = "U+005C__END__"
MAX_CONCURRENT_STREAMS = 1024
# DatumResponseList{elements: [DatumResponse{value: b"ok"}]}
RESPONSE = bytes([0x0A, 0x04, 0x12, 0x02]) + b"ok"


class RawCodec(CodecBase):
    __content_subtype__ = "proto"

    def encode(self, message, message_type):
        return message

    def decode(self, data, message_type):
        return data


async def map_fn(stream) -> None:
    await stream.recv_message()
    await stream.send_message(RESPONSE)


class Echo:
    def __mapping__(self):
        return {
            "/function.v1.UserDefinedFunction/MapFn": grpclib.const.Handler(
                map_fn, grpclib.const.Cardinality.UNARY_UNARY, bytes, bytes
            )
        }


class Server(grpclib.server.Server):
    def _protocol_factory(self):
        protocol = super()._protocol_factory()
        made = protocol.connection_made

        def connection_made(transport):
            made(transport)
            protocol.connection._connection.update_settings(
                {SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS}
            )
            protocol.connection.flush()

        protocol.connection_made = connection_made
        return protocol


async def serve(sock: str, info: str) -> None:
    server = Server([Echo()], codec=RawCodec())
    await server.start(path=sock)
    tmp = info + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:  # noqa: ASYNC230 - once, at start
        out.write(json.dumps({"protocol": "uds", "language": "python", "version": "echo"}) + END)
    os.replace(tmp, info)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sock", required=True)
    parser.add_argument("--info", required=True)
    args, _ = parser.parse_known_args()
    _profile_hook.install()
    asyncio.run(serve(args.sock, args.info))


if __name__ == "__main__":
    main()
