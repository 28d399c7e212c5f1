"""A lean gRPC client for the streaming benchmarks: gRPC spoken by hand over `h2`.

Why: grpcio's client spends about as much CPU per streamed message as the servers under
test do, so on a 2-core machine it, not the server, set the pace of ReduceFn, SinkFn and
MapStreamFn. This client does only what the wire needs, with no threads and no asyncio.

How: one HTTP/2 connection on a non-blocking Unix socket, driven by `select` and the `h2`
state machine (which also does the flow-control bookkeeping). A call is

- HEADERS: `:method POST`, `:scheme http`, `:path /pkg.Service/Method`, `:authority`,
  `content-type application/grpc`, `te trailers`, plus the caller's metadata;
- the request messages, already gRPC-framed by the caller with `frame()` (5-byte prefix:
  compressed flag, big-endian length) and serialized before any measurement starts, each
  in **one DATA frame of its own**, as grpc-go (Numaflow's client) sends them: packing many
  messages into one frame would spare the server work a real client never spares it.
  Frames are queued into h2 while its send windows allow and written to the socket in
  batches of up to 32 KiB (many frames per `send`, as grpc-go's write buffer does); an
  exhausted window waits for the server's WINDOW_UPDATE;
- END_STREAM; then the response: DATA frames are gathered as bytes (split into messages
  with `unframe()`, after the measured window if the caller wants), and the trailers (or
  a trailers-only response) give `grpc-status` / `grpc-message`.

The client opens its own receive windows to 2**31-1 at the start, so responses never wait
on it. Several calls can be open at once (the MapStreamFn closed loop); `on_done`
callbacks run as calls end, and may start new calls.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

PREFIX = struct.Struct(">BI")  # gRPC message prefix: compressed flag, length
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
MIN_MAX_FRAME = 16_384  # every HTTP/2 peer accepts DATA frames this large
# Bytes of frames queued per write: grpc-go's default write buffer (WriteBufferSize).
WRITE_BATCH = 32 * 1024
# Small reads keep the client and the server working at the same time: with 1 MiB reads
# the client took a whole burst of responses, answered it with a burst of new calls, and
# the two processes took turns (each ~50% busy; MapStreamFn x64 ran at 770 calls/s
# against 1,200-1,570 with 4-16 KiB reads, the same server).
READ_SIZE = 16 * 1024
INTERNAL, UNKNOWN, UNAVAILABLE = 13, 2, 14  # gRPC status codes used for transport errors

Metadata = Sequence[Tuple[str, str]]


def frame(message: bytes) -> bytes:
    """One serialized protobuf message as a gRPC length-prefixed message (uncompressed)."""
    return PREFIX.pack(0, len(message)) + message


def unframe(body: bytes | bytearray) -> List[bytes]:
    """The messages of a gRPC response body (what the DATA frames carried, concatenated)."""
    out: List[bytes] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < PREFIX.size:
            raise ValueError("truncated gRPC message prefix")
        flag, size = PREFIX.unpack_from(body, pos)
        if flag:
            raise ValueError("compressed gRPC message (none was negotiated)")
        pos += PREFIX.size
        if end - pos < size:
            raise ValueError("truncated gRPC message")
        out.append(bytes(body[pos : pos + size]))
        pos += size
    return out


class Call:
    """One RPC on the channel: its framed requests going out, its response coming in."""

    def __init__(
        self, stream_id: int, messages: Sequence[bytes], on_done: Optional[Callable[[Call], None]]
    ) -> None:
        self.stream_id = stream_id
        self.messages = messages
        self.sent = 0  # messages handed to h2 so far
        self.half_closed = False  # END_STREAM sent
        self.on_done = on_done
        self.started = time.perf_counter()
        self.finished = 0.0
        self.body = bytearray()  # response DATA, still framed
        self.http_status = b""
        self.status: Optional[int] = None  # grpc-status
        self.message = ""  # grpc-message
        self.done = False

    @property
    def ok(self) -> bool:
        return self.status == 0

    def responses(self) -> List[bytes]:
        """The response messages, each a serialized protobuf."""
        return unframe(self.body)

    def _set_status(self, headers: List[Tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if name == b"grpc-status":
                self.status = int(value)
            elif name == b"grpc-message":
                self.message = unquote(value.decode("utf-8", "replace"))


class Channel:
    """One HTTP/2 connection to a gRPC server on a Unix socket; not thread-safe."""

    def __init__(self, path: str, authority: str = "localhost", timeout: float = 300.0) -> None:
        self.authority = authority.encode()
        self.timeout = timeout  # for one `run_until`
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.conn.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MAX_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self.conn.increment_flow_control_window(MAX_WINDOW - DEFAULT_WINDOW)
        self.out = bytearray(self.conn.data_to_send())
        self.calls: Dict[int, Call] = {}
        self.closed = ""  # why the connection ended, once it has

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.conn.close_connection()
            with contextlib.suppress(OSError):
                self.sock.send(self.conn.data_to_send())
            self.closed = "closed by the client"
        self.sock.close()

    # --- calls -------------------------------------------------------------------------

    def start(
        self,
        path: str,
        messages: Sequence[bytes],
        metadata: Metadata = (),
        on_done: Optional[Callable[[Call], None]] = None,
    ) -> Call:
        """Open a call; its messages go out as `run_until` pumps the connection."""
        if self.closed:
            raise ConnectionError(f"connection closed: {self.closed}")
        if any(len(m) > MIN_MAX_FRAME for m in messages):
            raise ValueError(f"messages over {MIN_MAX_FRAME} bytes need more than one frame")
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", self.authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *((k.encode(), v.encode()) for k, v in metadata),
        ]
        call = Call(stream_id, messages, on_done)
        self.conn.send_headers(stream_id, headers, end_stream=not messages)
        call.half_closed = not messages
        self.calls[stream_id] = call
        return call

    def call(self, path: str, messages: Sequence[bytes], metadata: Metadata = ()) -> Call:
        """Run one call to its end (blocking) and return it."""
        call = self.start(path, messages, metadata)
        self.run_until(lambda: call.done)
        return call

    def run_until(self, done: Callable[[], bool], poll: float = 0.05) -> None:
        """Pump the connection until `done()`; `poll` bounds each wait for the socket."""
        deadline = time.perf_counter() + self.timeout
        while not done():
            if self.closed:
                raise ConnectionError(f"connection closed: {self.closed}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no completion within {self.timeout} s")
            self._queue_frames()
            self._io(poll)

    # --- the pump ----------------------------------------------------------------------

    def _queue_frames(self) -> None:
        """Hand h2 the next DATA frames of every sending call, as far as the windows go."""
        queued = len(self.out)
        for call in list(self.calls.values()):
            if call.half_closed or queued >= WRITE_BATCH:
                continue
            messages, i, sid = call.messages, call.sent, call.stream_id
            window = self.conn.local_flow_control_window(sid)
            while i < len(messages) and queued < WRITE_BATCH:
                message = messages[i]
                if len(message) > window:
                    break  # until WINDOW_UPDATE
                self.conn.send_data(sid, message)  # one DATA frame per gRPC message
                window -= len(message)
                queued += len(message) + 9  # + the frame header
                i += 1
            call.sent = i
            if i == len(messages):
                self.conn.end_stream(sid)
                call.half_closed = True
        self.out += self.conn.data_to_send()

    def _io(self, timeout: float) -> None:
        """Wait for the socket; write what is queued; read and dispatch what came in."""
        readable, writable, _ = select.select(
            [self.sock], [self.sock] if self.out else [], [], timeout
        )
        try:
            if writable:
                del self.out[: self.sock.send(self.out)]
            data = self.sock.recv(READ_SIZE) if readable else None
        except BlockingIOError:
            return
        except ConnectionError as err:  # reset, broken pipe
            self._lose(f"{type(err).__name__}: {err}")
            return
        if data is not None:
            if not data:
                self._lose("the server closed the connection")
                return
            for event in self.conn.receive_data(data):
                self._dispatch(event)
            self.out += self.conn.data_to_send()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            call = self.calls.get(event.stream_id or 0)
            if call is not None and event.data:
                call.body += event.data
            if event.flow_controlled_length and event.stream_id:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            call = self.calls.get(event.stream_id or 0)
            if call is not None:
                headers = list(event.headers or [])  # bytes: header_encoding=None
                call.http_status = dict(headers).get(b":status", b"")
                call._set_status(headers)
        elif isinstance(event, h2.events.TrailersReceived):
            call = self.calls.get(event.stream_id or 0)
            if call is not None:
                call._set_status(list(event.headers or []))
        elif isinstance(event, h2.events.StreamEnded):
            call = self.calls.get(event.stream_id or 0)
            if call is not None:
                if call.status is None:
                    call.status = UNKNOWN
                    call.message = f"no grpc-status (HTTP {call.http_status.decode()})"
                self._finish(call)
        elif isinstance(event, h2.events.StreamReset):
            call = self.calls.get(event.stream_id or 0)
            if call is not None:
                call.half_closed = True  # h2 closed the stream: nothing more to send
                call.status, call.message = INTERNAL, f"RST_STREAM {event.error_code!r}"
                self._finish(call)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._lose(f"GOAWAY {event.error_code!r} {event.additional_data!r}")

    def _finish(self, call: Call) -> None:
        call.done = True
        call.finished = time.perf_counter()
        del self.calls[call.stream_id]
        if not call.half_closed:
            # The server answered before the request ended (an error, e.g. UNIMPLEMENTED).
            call.half_closed = True
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.conn.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
        if call.on_done is not None:
            call.on_done(call)

    def _lose(self, why: str) -> None:
        self.closed = why
        for call in list(self.calls.values()):
            call.half_closed = True
            call.status, call.message = UNAVAILABLE, why
            self._finish(call)
