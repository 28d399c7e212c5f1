"""Peak server memory of ReduceFn against window size.

Starts the reduce server in a fresh subprocess per run, streams one window of N
datums over K keys to it with a grpcio client, checks every key's count, and prints
the server's peak RSS (VmHWM from /proc/<pid>/status). Bounded per-key feeds mean the
peak should not grow with N.

    PYTHONPATH=src python benchmarks/reduce_memory.py
    PYTHONPATH=src python benchmarks/reduce_memory.py --handler sync --max-threads 16
    PYTHONPATH=src python benchmarks/reduce_memory.py --datums 100000 1000000 --keys 10

A sync handler holds a pool thread per key while its window is open; with fewer
``max_threads`` than keys, the calls waiting for a thread keep their datums in memory
(see pynumaflow/function/_reduce.py), so give sync runs at least as many threads as keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from pathlib import Path

import grpc

from pynumaflow._proto.function.v1 import DatumRequest, DatumResponseList, EventTime

METHOD = "/function.v1.UserDefinedFunction/ReduceFn"
WINDOW = (("x-numaflow-win-start-time", "60000"), ("x-numaflow-win-end-time", "120000"))
END_MARKER = "U+005C__END__"


# --- the server side (run as: reduce_memory.py serve SOCK INFO HANDLER THREADS) -----------


def serve(sock: str, info: str, handler_kind: str, max_threads: int) -> None:
    from pynumaflow.function import AsyncServer, Datum, Message, Messages, Metadata

    async def count_async(keys: list[str], datums: AsyncIterable[Datum], md: Metadata) -> Messages:
        counter = 0
        async for _ in datums:
            counter += 1
        return Messages(Message(str(counter).encode(), keys))

    def count_sync(keys: list[str], datums: Iterable[Datum], md: Metadata) -> Messages:
        counter = sum(1 for _ in datums)
        return Messages(Message(str(counter).encode(), keys))

    handler = count_async if handler_kind == "async" else count_sync
    server = AsyncServer(
        reduce_handler=handler, sock_path=sock, server_info_file=info, max_threads=max_threads
    )
    asyncio.run(server.start())


# --- the client side -----------------------------------------------------------------------


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_server(info: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not (info.exists() and info.read_text().endswith(END_MARKER)):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in 30 s")
        time.sleep(0.05)


def encoded_requests(keys: int, value_size: int) -> list[bytes]:
    """One pre-encoded DatumRequest per key; the client only cycles through them."""
    value = bytes(range(256)) * (value_size // 256 + 1)
    return [
        bytes(
            DatumRequest(
                keys=[f"key-{k}"],
                value=value[:value_size],
                event_time=EventTime(),
            )
        )
        for k in range(keys)
    ]


def window(requests: list[bytes], datums: int) -> Iterator[bytes]:
    for i in range(datums):
        yield requests[i % len(requests)]


def run_once(args: argparse.Namespace, datums: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nf-reduce-") as tmp:
        sock, info = Path(tmp) / "function.sock", Path(tmp) / "server-info"
        command = [sys.executable, __file__, "serve", str(sock), str(info)]
        command += [args.handler, str(args.max_threads)]
        proc = subprocess.Popen(command)
        try:
            wait_for_server(info, proc)
            idle = peak_rss_kib(proc.pid)
            requests = encoded_requests(args.keys, args.value_size)
            cpu = cpu_seconds(proc.pid)
            started = time.perf_counter()
            with grpc.insecure_channel(f"unix://{sock}") as channel:
                reduce = channel.stream_stream(METHOD)  # bytes in, bytes out
                replies = list(reduce(window(requests, datums), metadata=WINDOW))
            elapsed = time.perf_counter() - started
            peak = peak_rss_kib(proc.pid)
            cpu = cpu_seconds(proc.pid) - cpu
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    counts = {}
    for raw in replies:
        for element in DatumResponseList().parse(raw).elements:
            counts[tuple(element.keys)] = int(element.value)
    expected = {(f"key-{k}",): len(range(k, datums, args.keys)) for k in range(args.keys)}
    if counts != expected:
        raise RuntimeError(f"wrong counts: {counts} != {expected}")
    return {"idle": idle / 1024, "peak": peak / 1024, "seconds": elapsed, "cpu": cpu}


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datums", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--handler", choices=["async", "sync"], default="async")
    parser.add_argument("--max-threads", type=int, default=16)
    args = parser.parse_args()
    print(
        f"ReduceFn, one window, {args.keys} keys, {args.value_size}-byte values, "
        f"{args.handler} handler, max_threads={args.max_threads}"
    )
    print(
        f"{'datums':>10} {'idle RSS MiB':>13} {'peak RSS MiB':>13} {'seconds':>8} "
        f"{'datums/s':>9} {'server CPU s':>12}"
    )
    for datums in args.datums:
        r = run_once(args, datums)
        rate = datums / r["seconds"]
        print(
            f"{datums:>10,} {r['idle']:>13.1f} {r['peak']:>13.1f} {r['seconds']:>8.1f} "
            f"{rate:>9,.0f} {r['cpu']:>12.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
