"""A raw HTTP/2 client for faults a gRPC client cannot make.

Bad framing, early resets, stalled frames, a reader that never reads. Blocking, on a
Unix socket, driven by `h2` (benchmarks/h2client.py is the full-featured one).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(message: bytes, compressed: bool = False) -> bytes:
    """One gRPC length-prefixed message."""
    return struct.pack(">BI", int(compressed), len(message)) + message


@dataclass
class Outcome:
    """What the server answered on one stream."""

    status: Optional[int] = None  # grpc-status
    message: str = ""
    reset: bool = False  # the server sent RST_STREAM
    ended: bool = False
    body: bytearray = field(default_factory=bytearray)
    data_frames: int = 0  # DATA frames with a payload

    def messages(self) -> list[bytes]:
        """The gRPC messages of the body."""
        found, pos = [], 0
        while pos < len(self.body):
            (length,) = struct.unpack_from(">I", self.body, pos + 1)
            found.append(bytes(self.body[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        return found


class RawConnection:
    """One HTTP/2 connection to a server's Unix socket, spoken by hand."""

    def __init__(self, path: str, *, window: Optional[int] = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.outcomes: dict[int, Outcome] = {}
        self.closed = False
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.settimeout(30)  # pump() leaves its own, maybe tiny, timeout
            self.sock.sendall(data)

    def open(self, path: str, *, end_stream: bool = False) -> int:
        """Send a gRPC request's HEADERS; return the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            # A legacy ReduceFn's window (other RPCs ignore them).
            ("x-numaflow-win-start-time", "0"),
            ("x-numaflow-win-end-time", "60000"),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.outcomes[stream_id] = Outcome()
        return stream_id

    def send(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send DATA (in frames the peer accepts), without waiting for flow control."""
        size = self.conn.max_outbound_frame_size
        for start in range(0, len(data), size):
            self.conn.send_data(stream_id, data[start : start + size])
        if end_stream:
            self.conn.end_stream(stream_id)
        self.flush()

    def call(self, path: str, body: bytes, timeout: float = 10.0) -> Outcome:
        """Send one request body (already framed, or deliberately not) and read the answer."""
        stream_id = self.open(path)
        self.send(stream_id, body, end_stream=True)
        return self.wait(stream_id, timeout)

    def wait(self, stream_id: int, timeout: float = 10.0) -> Outcome:
        """Read until the stream ends or is reset."""
        outcome = self.outcomes[stream_id]
        deadline = time.monotonic() + timeout
        while not (outcome.ended or outcome.reset):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"stream {stream_id} got no answer in {timeout} s")
            self.pump(left)
        return outcome

    def pump(self, timeout: float) -> bool:
        """Read once (up to ``timeout``) and dispatch; False once the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return not self.closed
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._dispatch(event)
        self.flush()
        return True

    def _dispatch(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        outcome = self.outcomes.get(stream_id or 0)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True
        if outcome is None:
            return
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            for name, value in event.headers or []:
                if name == "grpc-status":
                    outcome.status = int(value)
                elif name == "grpc-message":
                    outcome.message = unquote(value)
        elif isinstance(event, h2.events.DataReceived):
            outcome.body += event.data or b""
            outcome.data_frames += bool(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            outcome.ended = True
        elif isinstance(event, h2.events.StreamReset):
            outcome.reset = True


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (reading what it sends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False
