"""A handshake, then requests answered one at a time, in order: the source's read and ack streams.

source.v1's ``ReadFn`` and ``AckFn`` are long-lived bidi streams: the client opens each
with a handshake, which the server answers first, then sends a request and reads its
whole answer (a read batch up to its EOT, one ack response) before it sends the next.
:func:`serve_in_order` drives that conversation; the service says how one request is
answered. When the server drains, a stream ends ``UNAVAILABLE`` as soon as no request is
being answered; a request being answered is finished first.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable, Optional, Tuple, TypeVar

import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._engines.drain import IdleDrain

__all__ = ["serve_in_order"]

_R = TypeVar("_R")
RawStream = grpclib.server.Stream[bytes, bytes]


async def serve_in_order(
    stream: RawStream,
    decode: Callable[[bytes], Tuple[bool, Optional[_R]]],
    answer: Callable[[_R], Awaitable[None]],
    *,
    what: str,
    handshake_response: bytes,
) -> None:
    """Serve one stream: the handshake, then each request answered before the next is read.

    Args:
        stream: the grpclib stream, exchanging raw bytes.
        decode: the codec's decoder: (the message carries a handshake, its request or None).
        answer: answers one request, sending its responses on ``stream``.
        what: the request message's name, for error texts.
        handshake_response: the encoded answer to the handshake.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` when the first message is not a handshake, a later
            one carries no request, or one is malformed; whatever ``answer`` raised;
            ``UNAVAILABLE`` when the drain ended the stream.

    """
    drain = IdleDrain()
    async with drain.reading():
        first = await stream.recv_message()
        if first is None:
            return
        if not decode_or_refuse(decode, first, what)[0]:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"expected a handshake ({what} with handshake.sot true) first",
            )
        await stream.send_message(handshake_response)
        async for data in stream:
            request = decode_or_refuse(decode, data, what)[1]
            if request is None:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"expected a request after the handshake, got a {what} without one",
                )
            with drain.busy():  # the drain waits for this answer, then cuts the reading
                await answer(request)
    drain.check()
