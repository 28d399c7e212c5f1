"""The platform's side of map.v1, sourcetransformer.v1, reduce.v1 and sink.v1.

The numa container's part of the Numaflow >= 1.4 protocols, for ``pynumaflow
run``/``call`` and :mod:`pynumaflow.testing`. Requests are built with the
betterproto classes generated from ``protos/`` (our own codec encodes only what a
server sends): the client is not on a server's path.

- map (unary and stream mode) and the transformer: one long-lived bidi stream opened
  with the handshake, many requests in flight matched by id; a stream-mode request is
  answered when its EOT arrives. A stream that fails fails every request in flight; the
  next call opens a new stream, as the platform reconnects.
- reduce: one stream per window, ``OPEN`` then ``APPEND`` with the window, half-closed
  as the platform does once the watermark passes; read until the window's EOF.
- sink: one stream opened with the handshake; a batch is its requests and an EOT, its
  answer the results up to the server's EOT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

import betterproto
from betterproto.lib.google.protobuf import Empty
from grpclib.client import Stream
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from pynumaflow._client.base import (
    CallError,
    aware,
    call_errors,
    channel,
    ended_with,
    error_of,
)
from pynumaflow._proto import common as common_pb
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._proto.sourcetransformer import v1 as transform_pb
from pynumaflow._types.function import IntervalWindow
from pynumaflow._types.sink import Response

__all__ = ["SERVICES", "Input", "Result", "UserMetadata", "V1Connection", "fields", "result_of"]

UserMetadata = Mapping[str, Mapping[str, bytes]]
"""User metadata (Numaflow >= 1.7): groups of key -> bytes, by group name."""

SERVICES = {
    "map": "map.v1.Map",
    "map-stream": "map.v1.Map",
    "batch-map": "map.v1.Map",
    "reduce-stream": "reduce.v1.Reduce",
    "accumulator": "accumulator.v1.Accumulator",
    "session-reduce": "sessionreduce.v1.SessionReduce",
    "mapt": "sourcetransformer.v1.SourceTransform",
    "reduce": "reduce.v1.Reduce",
    "sink": "sink.v1.Sink",
    "source": "source.v1.Source",
    "side-input": "sideinput.v1.SideInput",
}
"""The v1 service of each kind, by its ``--kind`` name."""

_SLOT = "slot-0"
_OPEN, _APPEND = 0, 4  # reduce.v1 WindowOperation events
_STATUS = {
    sink_pb.Status.SUCCESS: None,
    sink_pb.Status.FAILURE: None,
    sink_pb.Status.FALLBACK: "fallback",
    sink_pb.Status.SERVE: "serve",
    sink_pb.Status.ON_SUCCESS: "on_success",
}


@dataclass(frozen=True)
class Input:
    """One datum as the platform sends it."""

    value: bytes
    keys: Sequence[str] = ()
    event_time: datetime = field(default_factory=lambda: datetime(1970, 1, 1))
    watermark: Optional[datetime] = None
    id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    user_metadata: UserMetadata = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """One output message as the platform receives it."""

    keys: List[str]
    value: bytes
    tags: List[str]
    event_time: Optional[datetime] = None
    """The transformer's event time (timezone-aware UTC); None for the other kinds."""
    user_metadata: Dict[str, Dict[str, bytes]] = field(default_factory=dict)


def _metadata(user_metadata: UserMetadata) -> common_pb.Metadata:
    return common_pb.Metadata(
        user_metadata={
            group: common_pb.KeyValueGroup(key_value=dict(values))
            for group, values in user_metadata.items()
        }
    )


def user_metadata_of(metadata: Optional[common_pb.Metadata]) -> Dict[str, Dict[str, bytes]]:
    """The user metadata of a result's ``common.Metadata``."""
    if metadata is None:
        return {}
    return {group: dict(kv.key_value) for group, kv in metadata.user_metadata.items()}


def fields(item: Input) -> Dict[str, Any]:
    """The fields every v1 request message has, by name.

    Keys, value, times, headers and metadata; the numbers of the last two differ by
    protocol, their names do not.
    """
    event_time = aware(item.event_time)
    return {
        "keys": list(item.keys),
        "value": item.value,
        "event_time": event_time,
        "watermark": aware(item.watermark) if item.watermark is not None else event_time,
        "headers": dict(item.headers),
        "metadata": _metadata(item.user_metadata),
    }


def _map_request(item: Input, request_id: str) -> map_pb.MapRequest:
    return map_pb.MapRequest(request=map_pb.MapRequestRequest(**fields(item)), id=request_id)


def _transform_request(item: Input, request_id: str) -> transform_pb.SourceTransformRequest:
    request = transform_pb.SourceTransformRequestRequest(**fields(item), id=request_id)
    return transform_pb.SourceTransformRequest(request=request)


def result_of(element: Any, event_time: bool = False) -> Result:
    moment = None
    if event_time and betterproto.serialized_on_wire(element):
        moment = element.event_time
    return Result(
        list(element.keys),
        element.value,
        list(element.tags),
        moment,
        user_metadata_of(element.metadata),
    )


@dataclass(frozen=True)
class _Bidi:
    """How one bidi kind (map, map stream, transformer) is spoken."""

    path: str
    request: Callable[[Input, str], Any]
    request_type: type
    response_type: type
    handshake: Any
    event_time: bool = False
    stream: bool = False  # answers end with an EOT per id


_BIDI = {
    "map": _Bidi(
        "/map.v1.Map/MapFn",
        _map_request,
        map_pb.MapRequest,
        map_pb.MapResponse,
        map_pb.MapRequest(handshake=map_pb.Handshake(sot=True)),
    ),
    "map-stream": _Bidi(
        "/map.v1.Map/MapFn",
        _map_request,
        map_pb.MapRequest,
        map_pb.MapResponse,
        map_pb.MapRequest(handshake=map_pb.Handshake(sot=True)),
        stream=True,
    ),
    "mapt": _Bidi(
        "/sourcetransformer.v1.SourceTransform/SourceTransformFn",
        _transform_request,
        transform_pb.SourceTransformRequest,
        transform_pb.SourceTransformResponse,
        transform_pb.SourceTransformRequest(handshake=transform_pb.Handshake(sot=True)),
        event_time=True,
    ),
}


class _BidiSession:
    """One handshaken map or transformer stream; requests in flight matched by id."""

    def __init__(self, connection: V1Connection, kind: _Bidi) -> None:
        self._connection = connection
        self._kind = kind
        self._exit = contextlib.AsyncExitStack()
        self._stream: Optional[Stream[Any, Any]] = None
        self._reader: Optional[asyncio.Task[None]] = None
        self._pending: Dict[str, Tuple[asyncio.Future[List[Result]], List[Result]]] = {}
        self._send = asyncio.Lock()
        self._next_id = 0

    async def _open(self) -> Stream[Any, Any]:
        kind = self._kind
        stream: Stream[Any, Any] = await self._exit.enter_async_context(
            self._connection.channel.request(
                kind.path, Cardinality.STREAM_STREAM, kind.request_type, kind.response_type
            )
        )
        with call_errors():
            await stream.send_message(kind.handshake)
            first = await asyncio.wait_for(stream.recv_message(), self._connection.timeout)
        if first is None or first.handshake is None or not first.handshake.sot:
            raise CallError("UNKNOWN", f"invalid handshake response: {first!r}")
        self._stream = stream
        self._reader = asyncio.create_task(self._read(stream))
        return stream

    async def _read(self, stream: Stream[Any, Any]) -> None:
        error = CallError("UNAVAILABLE", "the server ended the stream")
        try:
            while (response := await stream.recv_message()) is not None:
                self._answer(response)
        except GRPCError as err:
            error = error_of(err)
        except Exception as err:  # reset after its trailers, or the connection is gone
            error = CallError("UNAVAILABLE", f"connection failed: {err or type(err).__name__}")
        error = ended_with(stream) or error
        self._stream = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _answer(self, response: Any) -> None:
        entry = self._pending.get(response.id)
        if entry is None:
            return  # an unknown id: the platform logs and ignores it
        future, results = entry
        results.extend(result_of(r, self._kind.event_time) for r in response.results)
        eot = getattr(response, "status", None)
        if not self._kind.stream or (eot is not None and eot.eot):
            del self._pending[response.id]
            if not future.done():
                future.set_result(results)

    async def call(self, item: Input) -> List[Result]:
        """Send one request; its results once it is answered."""
        self._next_id += 1
        request_id = item.id or str(self._next_id)
        if request_id in self._pending:
            request_id = f"{request_id}#{self._next_id}"
        future: asyncio.Future[List[Result]] = asyncio.get_running_loop().create_future()
        async with self._send:
            stream = self._stream or await self._open_again()
            self._pending[request_id] = (future, [])
            with call_errors():
                await stream.send_message(self._kind.request(item, request_id))
        with call_errors():
            return await asyncio.wait_for(future, self._connection.timeout)

    async def _open_again(self) -> Stream[Any, Any]:
        if self._reader is not None:  # the last stream failed: the platform reconnects
            await self._close_stream()
        return await self._open()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.end()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(reader), self._connection.timeout)
            if not reader.done() and stream is not None:
                # Answers still owed after the timeout: reset the stream, or its end
                # would wait for them.
                with contextlib.suppress(Exception):
                    await stream.cancel()
            reader.cancel()
        with contextlib.suppress(Exception):  # its end was reported by the reader
            await self._exit.aclose()
        self._exit = contextlib.AsyncExitStack()

    async def close(self) -> None:
        """Half-close the stream as the platform does at shutdown; wait for the end."""
        async with self._send:
            await self._close_stream()


class _SinkSession:
    """One handshaken sink stream; a batch at a time."""

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection
        self._exit = contextlib.AsyncExitStack()
        self._stream: Optional[Stream[sink_pb.SinkRequest, sink_pb.SinkResponse]] = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Stream[sink_pb.SinkRequest, sink_pb.SinkResponse]:
        stream = await self._exit.enter_async_context(
            self._connection.channel.request(
                "/sink.v1.Sink/SinkFn",
                Cardinality.STREAM_STREAM,
                sink_pb.SinkRequest,
                sink_pb.SinkResponse,
            )
        )
        await stream.send_message(sink_pb.SinkRequest(handshake=sink_pb.Handshake(sot=True)))
        first = await stream.recv_message()
        if first is None or first.handshake is None or not first.handshake.sot:
            raise CallError("UNKNOWN", f"invalid handshake response: {first!r}")
        self._stream = stream
        return stream

    async def batch(self, items: Iterable[Input]) -> Tuple[List[Response], List[UserMetadata]]:
        """Send one batch and its EOT.

        Returns:
            One Response per datum, and each on-success message's user metadata.

        """
        async with self._lock:
            try:
                with call_errors():
                    return await asyncio.wait_for(self._batch(items), self._connection.timeout)
            except CallError as error:
                stream = self._stream
                await self._reset()
                raise (ended_with(stream) if stream is not None else None) or error from None

    async def _batch(self, items: Iterable[Input]) -> Tuple[List[Response], List[UserMetadata]]:
        stream = self._stream or await self._open()
        for item in items:
            request = sink_pb.SinkRequestRequest(**fields(item), id=item.id)
            await stream.send_message(sink_pb.SinkRequest(request=request))
        await stream.send_message(sink_pb.SinkRequest(status=sink_pb.TransmissionStatus(eot=True)))
        responses: List[Response] = []
        metadata: List[UserMetadata] = []
        while True:
            reply = await stream.recv_message()
            if reply is None:
                raise CallError("UNAVAILABLE", "the server ended the stream before its EOT")
            for result in reply.results:
                responses.append(_response(result))
                message = result.on_success_msg
                metadata.append(user_metadata_of(message.metadata) if message else {})
            if reply.status is not None and reply.status.eot:
                return responses, metadata

    async def _reset(self) -> None:
        self._stream = None
        with contextlib.suppress(Exception):
            await self._exit.aclose()
        self._exit = contextlib.AsyncExitStack()

    async def close(self) -> None:
        """Half-close the stream and wait for the server to end it."""
        async with self._lock:
            stream = self._stream
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.end()
                    await asyncio.wait_for(stream.recv_message(), self._connection.timeout)
            await self._reset()


def _response(result: sink_pb.SinkResponseResult) -> Response:
    status = _STATUS.get(result.status)
    if status == "fallback":
        return Response(result.id, False, result.err_msg or None, "fallback")
    if status == "serve":
        return Response(result.id, True, None, "serve", result.serve_response)
    if status == "on_success":
        message = result.on_success_msg
        if message is None:
            return Response(result.id, True, None, "on_success")
        return Response(result.id, True, None, "on_success", message.value, list(message.keys))
    success = result.status == sink_pb.Status.SUCCESS
    err = result.err_msg or (None if success else f"status {result.status!r}")
    return Response(result.id, success, err)


class V1Connection:
    """One HTTP/2 connection to a v1 server's socket; calls raise :class:`CallError`.

    Use as an async context manager: leaving it half-closes the open streams as the
    platform does at shutdown.

    Args:
        sock_path: the server's socket.
        timeout: seconds each call may take (``None``: no limit).

    """

    def __init__(self, sock_path: str, timeout: Optional[float] = None) -> None:
        self.channel = channel(sock_path)
        self.timeout = timeout
        self._sessions: Dict[str, _BidiSession] = {}
        self._sink: Optional[_SinkSession] = None

    async def __aenter__(self) -> V1Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the streams and close the connection (idempotent)."""
        with contextlib.suppress(Exception):
            for session in self._sessions.values():
                await session.close()
            if self._sink is not None:
                await self._sink.close()
        self._sessions.clear()
        self._sink = None
        self.channel.close()

    async def is_ready(self, kind: str) -> bool:
        """Ask the kind's v1 service IsReady; ``False`` when not served or not reachable."""
        path = f"/{SERVICES[kind]}/IsReady"
        try:
            with call_errors():
                async with self.channel.request(
                    path, Cardinality.UNARY_UNARY, Empty, map_pb.ReadyResponse, timeout=self.timeout
                ) as stream:
                    await stream.send_message(Empty(), end=True)
                    reply = await stream.recv_message()
        except CallError:
            return False
        return bool(reply is not None and reply.ready)

    async def call(self, kind: str, item: Input) -> List[Result]:
        """Send one datum to a map, map stream or transformer server; its results."""
        session = self._sessions.get(kind)
        if session is None:
            session = self._sessions[kind] = _BidiSession(self, _BIDI[kind])
        return await session.call(item)

    async def reduce(self, items: Sequence[Input], window: IntervalWindow) -> List[Result]:
        """Send one window's datums on one ReduceFn stream; every result up to its EOF."""
        from pynumaflow._client.streams import ReduceWindow  # it builds on this module

        async with ReduceWindow(self, window) as stream:
            for item in items:
                await stream.send(item)
            await stream.end()
            return [result async for result in stream.results()]

    async def sink(self, items: Iterable[Input]) -> Tuple[List[Response], List[UserMetadata]]:
        """Send one batch on the sink stream.

        Returns:
            One Response per datum in the order answered, and the user metadata of
            each on-success message (empty for the other responses).

        """
        if self._sink is None:
            self._sink = _SinkSession(self)
        return await self._sink.batch(items)
