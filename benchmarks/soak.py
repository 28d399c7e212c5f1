"""Soak: many MapFn calls and reduce windows against one server; RSS and error counts.

Starts one server process (async map and reduce handlers, or sync ones with --handlers
sync; legacy protocol) and drives it with a grpcio client from this process. The warm-up
runs both workloads (map calls and reduce windows) before the baseline is taken, so that
one-time costs (code paths run for the first time, caches filling, allocator high-water
marks) are in the baseline. The run is then split into segments; each runs its share of
map calls and reduce windows at the same time, so every part of the run has both. The
server's RSS is read after every segment; it prints RSS at the baseline and at
25/50/75/100%, the growth, the failed calls and windows, error lines in the server's
log, and the wall time.

Map requests carry 10,000 distinct event times (1 ms apart) and one watermark, reduce
datums event times within their window, as the platform sends them.

    python benchmarks/soak.py                      # 1,000,000 MapFn calls, 200 windows
    python benchmarks/soak.py --calls 200000 --windows 40 --series /tmp/series.json
    python benchmarks/soak.py --calls 0 --windows 40 --warmup 0   # reduce windows only

Exits 1 if anything failed or RSS grew more than ``--max-growth`` (10%) after warm-up.
``--stats FILE`` makes the server append memory figures (glibc heap, obmalloc arenas,
objects, threads) at every sample, ``--tracemalloc FILE`` also the top-20 allocation
differences (see ``_soak_probe.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from procs import wait_for_server_info  # noqa: E402

SERVER = """
import asyncio, sys
sys.path.insert(0, {bench!r})
import _soak_probe
import pynumaflow
from pynumaflow.function import AsyncServer, Message, Messages

print("pynumaflow from", pynumaflow.__file__, flush=True)
{handlers}
async def main():
    _soak_probe.install()
    await AsyncServer(map_handler=echo, reduce_handler=count, protocols=["legacy"]).start()

if __name__ == "__main__":
    asyncio.run(main())
"""

HANDLERS = {
    "async": """
async def echo(keys, datum):
    return Messages(Message(datum.value, keys=keys))

async def count(keys, datums, md):
    n = 0
    async for _ in datums:
        n += 1
    return Messages(Message(str(n).encode(), keys=keys))
""",
    "sync": """
def echo(keys, datum):
    return Messages(Message(datum.value, keys=keys))

def count(keys, datums, md):
    return Messages(Message(str(sum(1 for _ in datums)).encode(), keys=keys))
""",
}

KEYS = 10
EVENT_TIMES = 10_000
VALUE = b"x" * 100


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def stubs(out: Path) -> tuple[Any, Any]:
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


def millis(ms: int) -> Any:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


class Driver:
    """The client side: map calls and reduce windows over one channel, failures counted."""

    def __init__(self, stub: Any, pb2: Any, in_flight: int, datums: int) -> None:
        self.stub = stub
        self.pb2 = pb2
        self.in_flight = in_flight
        self.datums = datums
        self.failed_calls = 0
        self.failed_windows = 0
        self.windows_done = 0
        base = int(time.time() * 1000)
        watermark = pb2.Watermark(watermark=millis(base))
        self.requests = [
            pb2.DatumRequest(
                keys=["k"],
                value=VALUE,
                event_time=pb2.EventTime(event_time=millis(base + i)),
                watermark=watermark,
            )
            for i in range(EVENT_TIMES)
        ]
        self.sent = 0

    async def calls(self, count: int) -> None:
        """Make `count` MapFn calls, `in_flight` at a time."""
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                request = self.requests[self.sent % EVENT_TIMES]
                self.sent += 1
                try:
                    reply = await self.stub.MapFn(request)
                except grpc.aio.AioRpcError:
                    self.failed_calls += 1
                    continue
                if len(reply.elements) != 1 or reply.elements[0].value != VALUE:
                    self.failed_calls += 1

        await asyncio.gather(*(worker() for _ in range(self.in_flight)))

    async def windows(self, count: int) -> None:
        """Reduce `count` windows of `datums` datums over KEYS keys, one after another."""
        for _ in range(count):
            start = self.windows_done * 60_000
            self.windows_done += 1
            headers = (
                ("x-numaflow-win-start-time", str(start)),
                ("x-numaflow-win-end-time", str(start + 60_000)),
            )
            watermark = self.pb2.Watermark(watermark=millis(start))
            requests = [
                self.pb2.DatumRequest(
                    keys=[f"k{i % KEYS}"],
                    value=b"v",
                    event_time=self.pb2.EventTime(event_time=millis(start + i)),
                    watermark=watermark,
                )
                for i in range(self.datums)
            ]
            try:
                replies = [r async for r in self.stub.ReduceFn(iter(requests), metadata=headers)]
                total = sum(int(e.value) for r in replies for e in r.elements)
                if total != self.datums:
                    self.failed_windows += 1
            except grpc.aio.AioRpcError:
                self.failed_windows += 1

    async def both(self, calls: int, windows: int) -> None:
        await asyncio.gather(self.calls(calls), self.windows(windows))


def shares(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal integers."""
    return [total * (i + 1) // parts - total * i // parts for i in range(parts)]


class Sampler:
    """RSS of the server after each segment, and the server's own figures if asked."""

    def __init__(self, pid: int, stats: Path | None) -> None:
        self.pid = pid
        self.stats = stats
        self.rows: list[dict[str, Any]] = []

    async def sample(self, label: str, calls: int, windows: int, elapsed: float) -> float:
        rss = rss_mib(self.pid)
        row: dict[str, Any] = {
            "label": label,
            "calls": calls,
            "windows": windows,
            "elapsed": round(elapsed, 1),
            "rss_mib": round(rss, 2),
        }
        if self.stats is not None:
            row["server"] = await self._server_figures()
        self.rows.append(row)
        return rss

    async def _server_figures(self) -> dict[str, Any]:
        assert self.stats is not None
        before = self._lines()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while len(lines := self._lines()) == len(before):
            if time.monotonic() > deadline:
                raise RuntimeError("the server wrote no stats line")
            await asyncio.sleep(0.05)
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def _lines(self) -> list[str]:
        try:
            return [x for x in self.stats.read_text().splitlines() if x]  # type: ignore[union-attr]
        except FileNotFoundError:
            return []


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; return the samples and counts."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pb2, pb2_grpc = stubs(folder / "stubs")
        server = SERVER.format(bench=str(Path(__file__).parent), handlers=HANDLERS[args.handlers])
        (folder / "udf.py").write_text(server)
        env = dict(os.environ, PYNUMAFLOW_RUN_DIR=str(folder))
        if args.stats:
            env["SOAK_STATS"] = args.stats
        if args.tracemalloc:
            env["SOAK_TRACEMALLOC"] = args.tracemalloc
        log = folder / "server.log"
        with log.open("w") as log_file:
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
                [sys.executable, str(folder / "udf.py")],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_for_server_info(proc, folder / "server-info")
        sampler = Sampler(proc.pid, Path(args.stats) if args.stats else None)
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(
            f"unix://{folder / 'function.sock'}", options=options
        ) as ch:
            driver = Driver(pb2_grpc.UserDefinedFunctionStub(ch), pb2, args.in_flight, args.datums)
            started = time.monotonic()
            await sampler.sample("start", 0, 0, 0.0)
            for calls, windows in zip(
                shares(args.warmup, args.segments // 10 or 1),
                shares(args.warmup_windows, args.segments // 10 or 1),
                strict=True,
            ):
                await driver.both(calls, windows)
            await sampler.sample("warm-up", 0, 0, time.monotonic() - started)
            done_calls = done_windows = 0
            for calls, windows in zip(
                shares(args.calls, args.segments), shares(args.windows, args.segments), strict=True
            ):
                await driver.both(calls, windows)
                done_calls += calls
                done_windows += windows
                await sampler.sample(
                    f"{len(sampler.rows) - 1}/{args.segments}",
                    done_calls,
                    done_windows,
                    time.monotonic() - started,
                )
            elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        output = log.read_text()
    error_lines = [x for x in output.splitlines() if "Traceback" in x or "ERROR" in x]
    origin = [x for x in output.splitlines() if x.startswith("pynumaflow from")]
    return {
        "args": vars(args),
        "samples": sampler.rows,
        "failed_calls": driver.failed_calls,
        "failed_windows": driver.failed_windows,
        "server_error_lines": len(error_lines),
        "server_exit_code": proc.returncode,
        "server_package": origin[0].split(" ", 2)[2] if origin else "?",
        "elapsed": elapsed,
    }


def report(result: dict[str, Any]) -> None:
    """Print the figures of one run."""
    args = result["args"]
    rows = result["samples"]
    base = rows[1]["rss_mib"]
    run = rows[2:]
    print(
        f"MapFn calls: {args['calls']:,} (+{args['warmup']:,} warm-up), "
        f"{args['in_flight']} in flight"
    )
    print(
        f"reduce windows: {args['windows']} (+{args['warmup_windows']} warm-up) of "
        f"{args['datums']:,} datums over {KEYS} keys; {args['segments']} segments, "
        "each with its share of both"
    )
    print(f"server RSS MiB: at start-up {rows[0]['rss_mib']:.1f}, after warm-up {base:.1f}")
    for quarter in (1, 2, 3, 4):
        row = run[len(run) * quarter // 4 - 1]
        growth = (row["rss_mib"] - base) / base * 100
        print(
            f"  {quarter * 25:3d}%: {row['rss_mib']:.1f} MiB ({growth:+.1f}%) after "
            f"{row['calls']:,} calls, {row['windows']} windows, {row['elapsed']:.0f} s"
        )
    peak = max(run, key=lambda r: r["rss_mib"])
    print(
        f"RSS growth after warm-up: end {(run[-1]['rss_mib'] - base) / base * 100:+.1f}%, "
        f"highest {(peak['rss_mib'] - base) / base * 100:+.1f}% (at {peak['label']})"
    )
    print(
        f"errors: failed calls {result['failed_calls']}, failed windows "
        f"{result['failed_windows']}, server log error lines {result['server_error_lines']}"
    )
    print(
        f"wall time (warm-up included): {result['elapsed']:.0f} s; server exit code "
        f"{result['server_exit_code']}; pynumaflow from {result['server_package']}"
    )


def main() -> None:
    """Parse arguments, soak, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20_000, help="MapFn calls")
    parser.add_argument("--warmup-windows", type=int, default=10)
    parser.add_argument("--segments", type=int, default=100, help="RSS samples in the run")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--datums", type=int, default=1_000, help="per window")
    parser.add_argument(
        "--handlers", choices=sorted(HANDLERS), default="async", help="the server's handlers"
    )
    parser.add_argument("--max-growth", type=float, default=10.0, help="%% (exit 1 above it)")
    parser.add_argument("--series", help="write every sample as JSON to this file")
    parser.add_argument("--stats", help="server memory figures at every sample (JSON lines)")
    parser.add_argument("--tracemalloc", help="top-20 allocation diffs per sample (JSON lines)")
    args = parser.parse_args()
    if args.tracemalloc and not args.stats:
        parser.error("--tracemalloc needs --stats")
    for name in ("stats", "tracemalloc"):
        if getattr(args, name):
            path = Path(getattr(args, name)).resolve()
            path.unlink(missing_ok=True)
            setattr(args, name, str(path))
    result = asyncio.run(soak(args))
    if args.series:
        Path(args.series).write_text(json.dumps(result, indent=1))
    report(result)
    base, end = result["samples"][1]["rss_mib"], result["samples"][-1]["rss_mib"]
    failed = result["failed_calls"] + result["failed_windows"] + result["server_error_lines"]
    if failed or result["server_exit_code"] != 0 or (end - base) / base * 100 > args.max_growth:
        sys.exit(1)


if __name__ == "__main__":
    main()
