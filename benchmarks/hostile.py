"""What hostile clients cost the server: RSS before and after, at test scale.

Starts a legacy function server (async map handler) in a subprocess for each of:

- ``oversize``: a MapFn request whose prefix announces 4 GiB - 1, then as much DATA as
  the server lets the client send (up to ``--oversize-mib``), then a 64 MiB + 5 B one;
- ``resets``: ``--resets`` streams on one connection, each reset right after its HEADERS
  and DATA (before its handler can start), in batches of 500;
- ``idle``: ``--idle`` connections that completed the preface and then say nothing.

It prints the server's RSS before and after each, and what the client got. Minutes of
CPU never: about 10 s with the defaults. Run ``python benchmarks/hostile.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h2.errors
import h2.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rawh2 import RawConnection, frame

SERVER = """
import asyncio
from pynumaflow.function import AsyncServer, Messages, Message

async def echo(keys, datum):
    return Messages(Message(datum.value))

asyncio.run(AsyncServer(map_handler=echo, protocols=["legacy"]).start())
"""
MAP_FN = "/function.v1.UserDefinedFunction/MapFn"
# An empty DatumRequest is valid: the MapFn calls that the resets cut short.
DATUM = frame(b"")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def push(connection: RawConnection, stream_id: int, limit: int, seconds: float) -> int:
    """DATA as flow control allows, until the stream ends, ``limit`` bytes or ``seconds``."""
    chunk = b"\0" * connection.conn.max_outbound_frame_size
    outcome = connection.outcomes[stream_id]
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < limit and not (outcome.ended or outcome.reset) and time.monotonic() < deadline:
        window = min(connection.conn.local_flow_control_window(stream_id), len(chunk))
        if window <= 0:
            connection.pump(0.2)
            continue
        try:
            connection.conn.send_data(stream_id, chunk[:window])
        except h2.exceptions.StreamClosedError:
            break
        sent += window
        connection.flush()
        connection.pump(0.0001)
    return sent


def oversize(path: str, pid: int, limit_mib: int) -> None:
    for announced, label in ((2**32 - 1, "4 GiB - 1"), ((64 << 20) + 5, "64 MiB + 5 B")):
        before = rss_mib(pid)
        connection = RawConnection(path)
        stream_id = connection.open(MAP_FN)
        connection.send(stream_id, struct.pack(">BI", 0, announced))
        sent = push(connection, stream_id, min(announced, limit_mib << 20), 30)
        peak = rss_mib(pid)
        try:
            outcome = connection.wait(stream_id, 10)
            answer = f"grpc-status {outcome.status}, reset {outcome.reset}"
        except TimeoutError:
            answer = "no answer in 10 s"
        connection.close()
        time.sleep(0.5)
        print(
            f"oversize {label}: client sent {sent / 2**20:.1f} MiB; {answer}; "
            f"RSS {before:.1f} -> {peak:.1f} MiB, {rss_mib(pid):.1f} MiB after the client left"
        )


def resets(path: str, pid: int, count: int) -> None:
    before = rss_mib(pid)
    connection = RawConnection(path)
    done = 0
    while done < count:
        for _ in range(min(500, count - done)):
            stream_id = connection.open(MAP_FN)
            connection.conn.send_data(stream_id, DATUM)
            connection.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            done += 1
        connection.flush()
        connection.pump(0.01)
    good = connection.call(MAP_FN, DATUM)
    time.sleep(0.5)
    print(
        f"resets: {count} streams reset before their handler started on one connection; "
        f"a call after them: grpc-status {good.status}; RSS {before:.1f} -> {rss_mib(pid):.1f} MiB "
        "with the connection still open"
    )
    connection.close()


def idle(path: str, pid: int, count: int) -> None:
    warm = [RawConnection(path) for _ in range(20)]
    for connection in warm:
        connection.pump(0.02)
    time.sleep(0.3)
    before = rss_mib(pid)
    connections = [RawConnection(path) for _ in range(count)]
    for connection in connections:
        connection.pump(0.02)
    time.sleep(0.5)
    after = rss_mib(pid)
    print(
        f"idle: {count} idle connections: RSS {before:.1f} -> {after:.1f} MiB, "
        f"{(after - before) * 1024 / count:.1f} KiB each"
    )
    for connection in warm + connections:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oversize-mib", type=int, default=256)
    parser.add_argument("--resets", type=int, default=60_000)
    parser.add_argument("--idle", type=int, default=1_000)
    parser.add_argument("--only", nargs="*", choices=["oversize", "resets", "idle"])
    args = parser.parse_args()
    scenarios = {
        "oversize": lambda path, pid: oversize(path, pid, args.oversize_mib),
        "resets": lambda path, pid: resets(path, pid, args.resets),
        "idle": lambda path, pid: idle(path, pid, args.idle),
    }
    for name in args.only or scenarios:
        with tempfile.TemporaryDirectory() as folder:  # a fresh server for each
            env = dict(os.environ, PYNUMAFLOW_RUN_DIR=folder)
            server = subprocess.Popen([sys.executable, "-c", SERVER], env=env)
            info = Path(folder) / "server-info"
            while not info.exists() or not info.read_text().endswith("__END__"):
                time.sleep(0.05)
            try:
                print(f"{name}: server RSS at start {rss_mib(server.pid):.1f} MiB")
                scenarios[name](str(Path(folder) / "function.sock"), server.pid)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(30)


if __name__ == "__main__":
    main()
