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
from typing import Callable, Dict, List, Optional, Self, Sequence, Tuple
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


def request_headers(path: str, authority: bytes, metadata: Metadata) -> List[Tuple[bytes, bytes]]:
    """The HEADERS of a gRPC call."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *((k.encode(), v.encode()) for k, v in metadata),
    ]


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


class _Pump:
    """A non-blocking Unix-socket connection, pumped by `run_until` (both channels)."""

    read_size = READ_SIZE

    def __init__(self, path: str, timeout: float) -> None:
        self.timeout = timeout  # for one `run_until`
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.out = bytearray()  # bytes queued for the socket
        self.closed = ""  # why the connection ended, once it has

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

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

    def _queue_frames(self) -> None:
        """Queue into `out` what the calls may send now."""
        raise NotImplementedError

    def _received(self, data: bytes) -> None:
        """Handle bytes read from the socket."""
        raise NotImplementedError

    def _lose(self, why: str) -> None:
        """The connection is gone: fail every open call with `why`."""
        raise NotImplementedError

    def _io(self, timeout: float) -> None:
        """Wait for the socket; write what is queued; hand on what came in."""
        readable, writable, _ = select.select(
            [self.sock], [self.sock] if self.out else [], [], timeout
        )
        try:
            if writable:
                del self.out[: self.sock.send(self.out)]
            data = self.sock.recv(self.read_size) if readable else None
        except BlockingIOError:
            return
        except ConnectionError as err:  # reset, broken pipe
            self._lose(f"{type(err).__name__}: {err}")
            return
        if data is None:
            return
        if not data:
            self._lose("the server closed the connection")
            return
        self._received(data)


class Channel(_Pump):
    """One HTTP/2 connection to a gRPC server on a Unix socket; not thread-safe."""

    def __init__(self, path: str, authority: str = "localhost", timeout: float = 300.0) -> None:
        super().__init__(path, timeout)
        self.authority = authority.encode()
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
        self.out += self.conn.data_to_send()
        self.calls: Dict[int, Call] = {}

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
        headers = request_headers(path, self.authority, metadata)
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

    def _received(self, data: bytes) -> None:
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


# --- the v1 client: one long bidi stream, raw frames --------------------------------------
#
# The v1 workloads (map.v1, sourcetransformer.v1, sink.v1, reduce.v1) are one long bidi
# stream carrying tens of thousands of messages each way. At that rate h2's pure-Python
# frame handling (tens of µs per received frame) would make the client, not the server,
# the bottleneck, so `RawChannel` parses and writes HTTP/2 frames itself: a 9-byte header
# per frame, DATA payloads appended to the call's body, HPACK (the `hpack` package) only
# for the few header blocks. It does what the wire needs for gRPC over one connection:
# SETTINGS (and their ACKs), flow control both ways, PING replies, RST_STREAM and GOAWAY.
#
# Framing is the caller's choice, per `send`: `packed=True` (the default) cuts the bytes
# into DATA frames as large as the server allows (SETTINGS_MAX_FRAME_SIZE, 16 KiB unless
# it says more), messages straddling frames, as tonic/hyper (the Rust data plane's
# client, Numaflow >= 1.6) send a request stream: tonic's encoder concatenates every
# message the stream has ready into one buffer, and hyper's h2 cuts it at the peer's max
# frame size. `packed=False` sends one DATA frame per message, as grpc-go does.

_FRAME = struct.Struct(">BHBBI")  # length as 1+2 bytes, type, flags, stream id
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW, _CONT = 0, 1, 3, 4, 6, 7, 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RAW_READ_SIZE = 256 * 1024


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


class RawCall:
    """One stream of a `RawChannel`: what is still to send, and the response so far."""

    def __init__(self, stream_id: int, window: int) -> None:
        self.stream_id = stream_id
        self.window = window  # what the server lets us send on this stream
        self.pending: List[Tuple[memoryview, bool]] = []  # (bytes, packed) still to send
        self.pending_pos = 0
        self.end_requested = False
        self.half_closed = False
        self.body = bytearray()  # response DATA, still framed
        self.scanned = 0  # bytes of `body` already returned by `take`
        self.status: Optional[int] = None
        self.message = ""
        self.done = False
        self.started = time.perf_counter()
        self.finished = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 0

    def take(self) -> List[bytes]:
        """The response messages completed since the last `take` (serialized protobufs)."""
        out: List[bytes] = []
        body, pos, end = self.body, self.scanned, len(self.body)
        while end - pos >= PREFIX.size:
            _, size = PREFIX.unpack_from(body, pos)
            if end - pos - PREFIX.size < size:
                break
            out.append(bytes(body[pos + PREFIX.size : pos + PREFIX.size + size]))
            pos += PREFIX.size + size
        self.scanned = pos
        if pos > 1 << 20:  # keep the buffer small on a long stream
            del body[:pos]
            self.scanned = 0
        return out


class RawChannel(_Pump):
    """One HTTP/2 connection to a gRPC server on a Unix socket, frames handled by hand."""

    read_size = RAW_READ_SIZE

    def __init__(self, path: str, authority: str = "localhost", timeout: float = 300.0) -> None:
        import hpack  # h2's own dependency

        super().__init__(path, timeout)
        self.authority = authority.encode()
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.send_window = DEFAULT_WINDOW  # connection-level, what the server allows
        self.peer_initial_window = DEFAULT_WINDOW
        self.max_frame = MIN_MAX_FRAME
        self.recv_unacked = 0  # connection-level bytes received since our last update
        self.inbuf = bytearray()
        self.header_block = bytearray()
        self.header_stream = 0
        self.header_end_stream = False
        self.next_id = 1
        self.calls: Dict[int, RawCall] = {}
        settings = struct.pack(">HIHI", 0x2, 0, 0x4, MAX_WINDOW)  # no push, big windows
        self.out += PREFACE + _frame(_SETTINGS, 0, 0, settings)
        self.out += _frame(_WINDOW, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW))

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.send(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            self.closed = "closed by the client"
        self.sock.close()

    def open(self, path: str, metadata: Metadata = ()) -> RawCall:
        """Start a call (HEADERS); its messages follow with `send`."""
        if self.closed:
            raise ConnectionError(f"connection closed: {self.closed}")
        sid, self.next_id = self.next_id, self.next_id + 2
        headers = request_headers(path, self.authority, metadata)
        self.out += _frame(_HEADERS, _END_HEADERS, sid, self.encoder.encode(headers))
        call = RawCall(sid, self.peer_initial_window)
        self.calls[sid] = call
        return call

    def send(self, call: RawCall, messages: Sequence[bytes], packed: bool = True) -> None:
        """Queue framed gRPC messages: packed into large DATA frames, or one frame each."""
        if packed:
            call.pending.append((memoryview(b"".join(messages)), True))
        else:
            call.pending.extend((memoryview(m), False) for m in messages)

    def end(self, call: RawCall) -> None:
        """Half-close the call once everything queued is sent."""
        call.end_requested = True

    # --- the pump ----------------------------------------------------------------------

    def _queue_frames(self) -> None:
        out = self.out
        for call in self.calls.values():
            while call.pending and len(out) < RAW_READ_SIZE:
                chunk, packed = call.pending[0]
                pos = call.pending_pos
                n = min(len(chunk) - pos, self.max_frame, self.send_window, call.window)
                if n <= 0:
                    break  # until WINDOW_UPDATE
                if not packed and n < len(chunk) - pos and n < self.max_frame:
                    break  # one frame per message: wait for the window to take it whole
                out += _frame(_DATA, 0, call.stream_id, chunk[pos : pos + n])
                self.send_window -= n
                call.window -= n
                if pos + n == len(chunk):
                    call.pending.pop(0)
                    call.pending_pos = 0
                else:
                    call.pending_pos = pos + n
            if call.end_requested and not call.pending and not call.half_closed:
                out += _frame(_DATA, _END_STREAM, call.stream_id)
                call.half_closed = True

    def _received(self, data: bytes) -> None:
        self.inbuf += data
        self._parse()

    def _parse(self) -> None:
        buf, pos, end = self.inbuf, 0, len(self.inbuf)
        while end - pos >= 9:
            hi, lo, kind, flags, sid = _FRAME.unpack_from(buf, pos)
            length = (hi << 16) | lo
            if end - pos - 9 < length:
                break
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            sid &= 0x7FFFFFFF
            if kind == _DATA:
                self._on_data(sid, flags, payload)
            else:
                self._on_control(kind, flags, sid, payload)
        del buf[:pos]
        if self.recv_unacked > MAX_WINDOW // 2:
            self.out += _frame(_WINDOW, 0, 0, struct.pack(">I", self.recv_unacked))
            self.recv_unacked = 0

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        self.recv_unacked += len(payload)
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        call = self.calls.get(sid)
        if call is None:
            return
        call.body += payload
        if flags & _END_STREAM:  # a body without trailers
            call.status, call.message = UNKNOWN, "stream ended without grpc-status"
            self._finish(call)

    def _on_control(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind in (_HEADERS, _CONT):
            if kind == _HEADERS:
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & _PRIORITY:
                    payload = payload[5:]
                self.header_block = bytearray(payload)
                self.header_stream, self.header_end_stream = sid, bool(flags & _END_STREAM)
            else:
                self.header_block += payload
            if flags & _END_HEADERS:
                # Every block must be decoded, in order, to keep HPACK's table in step.
                headers = self.decoder.decode(bytes(self.header_block), raw=True)
                call = self.calls.get(self.header_stream)
                if call is not None:
                    for name, value in headers:
                        if name == b"grpc-status":
                            call.status = int(value)
                        elif name == b"grpc-message":
                            call.message = unquote(value.decode("utf-8", "replace"))
                    if self.header_end_stream:
                        if call.status is None:
                            call.status, call.message = UNKNOWN, "no grpc-status"
                        self._finish(call)
        elif kind == _SETTINGS and not flags & _ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == 0x4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                    for call in self.calls.values():
                        call.window += value - self.peer_initial_window
                    self.peer_initial_window = value
                elif key == 0x5:
                    self.max_frame = value
                elif key == 0x1:
                    self.encoder.header_table_size = value
            self.out += _frame(_SETTINGS, _ACK, 0)
        elif kind == _WINDOW:
            (increment,) = struct.unpack(">I", payload)
            if sid == 0:
                self.send_window += increment & 0x7FFFFFFF
            elif sid in self.calls:
                self.calls[sid].window += increment & 0x7FFFFFFF
        elif kind == _PING and not flags & _ACK:
            self.out += _frame(_PING, _ACK, 0, payload)
        elif kind == _RST:
            call = self.calls.get(sid)
            if call is not None:
                call.status, call.message = INTERNAL, f"RST_STREAM {payload.hex()}"
                self._finish(call)
        elif kind == _GOAWAY:
            self._lose(f"GOAWAY {payload[4:8].hex()} {payload[8:]!r}")

    def _finish(self, call: RawCall) -> None:
        call.done = True
        call.finished = time.perf_counter()
        self.calls.pop(call.stream_id, None)
        if not call.half_closed:  # the server ended the call before the request did
            call.half_closed = True
            self.out += _frame(_RST, 0, call.stream_id, struct.pack(">I", 0x8))  # CANCEL

    def _lose(self, why: str) -> None:
        self.closed = why
        for call in list(self.calls.values()):
            call.status, call.message = UNAVAILABLE, why
            call.half_closed = True
            self._finish(call)
