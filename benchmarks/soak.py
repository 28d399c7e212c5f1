"""Soak: many MapFn calls and reduce windows against one server; RSS and error counts.

Starts one server process (map and reduce handlers, legacy protocol), drives it with a
grpcio client from this process, and prints the server's RSS after warm-up, in the
middle and at the end, the growth after warm-up, and the number of failed calls.

    python benchmarks/soak.py                      # 1,000,000 MapFn calls, 200 windows
    python benchmarks/soak.py --calls 100000 --windows 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from procs import wait_for_server_info  # noqa: E402

SERVER = """
from pynumaflow.function import AsyncServer, Message, Messages

async def echo(keys, datum):
    return Messages(Message(datum.value, keys=keys))

async def count(keys, datums, md):
    n = 0
    async for _ in datums:
        n += 1
    return Messages(Message(str(n).encode(), keys=keys))

if __name__ == "__main__":
    import asyncio
    asyncio.run(AsyncServer(map_handler=echo, reduce_handler=count, protocols=["legacy"]).start())
"""


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def stubs(out: Path) -> tuple[object, object]:
    """grpcio stubs for function.v1, generated from protos/."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "protos"),
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "function/v1/udfunction.proto",
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    from function.v1 import udfunction_pb2, udfunction_pb2_grpc  # type: ignore[import-not-found]

    return udfunction_pb2, udfunction_pb2_grpc


async def run_calls(stub: object, pb2: object, count: int, in_flight: int) -> int:
    """Make `count` MapFn calls, `in_flight` at a time; return how many failed."""
    now = Timestamp()
    now.GetCurrentTime()
    request = pb2.DatumRequest(  # type: ignore[attr-defined]
        keys=["k"],
        value=b"x" * 100,
        event_time=pb2.EventTime(event_time=now),  # type: ignore[attr-defined]
        watermark=pb2.Watermark(watermark=now),  # type: ignore[attr-defined]
    )
    failed = 0
    remaining = count

    async def worker() -> None:
        nonlocal failed, remaining
        while remaining > 0:
            remaining -= 1
            try:
                await stub.MapFn(request)  # type: ignore[attr-defined]
            except grpc.aio.AioRpcError:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return failed


async def run_windows(stub: object, pb2: object, windows: int, datums: int) -> int:
    """Reduce `windows` windows of `datums` datums over 10 keys; return failed windows."""
    failed = 0
    for index in range(windows):
        start = index * 60_000
        headers = (
            ("x-numaflow-win-start-time", str(start)),
            ("x-numaflow-win-end-time", str(start + 60_000)),
        )
        requests = [
            pb2.DatumRequest(keys=[f"k{i % 10}"], value=b"v")  # type: ignore[attr-defined]
            for i in range(datums)
        ]
        try:
            replies = [r async for r in stub.ReduceFn(iter(requests), metadata=headers)]  # type: ignore[attr-defined]
            total = sum(int(e.value) for r in replies for e in r.elements)
            if total != datums:
                failed += 1
        except grpc.aio.AioRpcError:
            failed += 1
    return failed


async def soak(args: argparse.Namespace) -> None:
    """Run the soak and print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pb2, pb2_grpc = stubs(folder / "stubs")
        (folder / "udf.py").write_text(SERVER)
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
            [sys.executable, str(folder / "udf.py")],
            env=dict(os.environ, PYNUMAFLOW_RUN_DIR=str(folder)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_server_info(proc, folder / "server-info")
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(
            f"unix://{folder / 'function.sock'}", options=options
        ) as ch:
            stub = pb2_grpc.UserDefinedFunctionStub(ch)  # type: ignore[attr-defined]
            started = time.monotonic()
            failed = await run_calls(stub, pb2, args.warmup, args.in_flight)
            after_warmup = rss_mib(proc.pid)
            half = args.calls // 2
            failed += await run_calls(stub, pb2, half, args.in_flight)
            failed_windows = await run_windows(stub, pb2, args.windows // 2, args.datums)
            middle = rss_mib(proc.pid)
            failed += await run_calls(stub, pb2, args.calls - half, args.in_flight)
            failed_windows += await run_windows(
                stub, pb2, args.windows - args.windows // 2, args.datums
            )
            end = rss_mib(proc.pid)
            elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    growth = (end - after_warmup) / after_warmup * 100
    print(f"MapFn calls: {args.calls} (+{args.warmup} warm-up), {args.in_flight} in flight")
    print(f"reduce windows: {args.windows} of {args.datums} datums over 10 keys")
    print(f"server RSS MiB: after warm-up {after_warmup:.1f}, middle {middle:.1f}, end {end:.1f}")
    print(f"RSS growth after warm-up: {growth:+.1f}%")
    print(f"failed calls: {failed}, failed windows: {failed_windows}")
    print(f"elapsed: {elapsed:.0f} s; server exit code {proc.returncode}")


def main() -> None:
    """Parse arguments and soak."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--datums", type=int, default=1_000)
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
