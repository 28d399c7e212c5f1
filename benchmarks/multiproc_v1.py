"""MultiProcServer on Numaflow >= 1.4: one map.v1 stream over N processes, against Server.

    python benchmarks/multiproc_v1.py [--processes 1 2] [--repeat 3] [--requests 3000]
                                      [--trivial-requests 30000] [--in-flight 500]
                                      [--reference PYTHON] [--handlers cpu trivial]

Every cell starts a fresh server script as a pod's map container
(``NUMAFLOW_UD_CONTAINER_TYPE=udf``), waits for mapper-server-info, then drives ONE
map.v1 MapFn stream the way the platform does (handshake first, then requests with up
to --in-flight outstanding, each in a DATA frame of its own) with the lean hand-written
HTTP/2 client of h2client.py, checks that every id is answered exactly once, and
measures the requests answered per second and the CPU of the server's processes.

Two handlers: ``cpu`` does ~1 ms of pure-Python work (calibrated here first), holding
the GIL; ``trivial`` returns at once (the per-message cost of the path itself). Servers:
``Server`` (one process), ``MultiProcServer`` with NUM_CPU_MULTIPROC = each of
--processes, and with --reference (the python of a virtualenv holding pynumaflow
0.14.0, e.g. ``python benchmarks/original_env.py DIR 0.14.0``) 0.14.0's
``MapMultiprocServer``, which binds ``multiproc<i>.sock`` per process and announces
MULTIPROC in its server-info: the current (Rust) platform refuses that, so it is driven
as Numaflow 1.4-1.5's Go data plane did, one stream per socket, requests split evenly.
Its socket folder is a hard-coded constant; the script sets it to the cell's folder.
No cell has a warm-up stream: 0.14.0's sync map server shuts its thread pool down when
a stream ends, so a second stream on a process fails (UDF_EXECUTION_ERROR
RuntimeError('cannot schedule new futures after shutdown')).

Cells run interleaved, --repeat times; medians are printed. Other load is the busy CPU
of the whole machine in the measured window minus the server's and this client's, in %
of all cores (the machine is shared: a high figure lowers ours).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import h2client
from client import machine_busy
from multiproc import calibrate, family, family_cpu, wait_for_info
from run import make_stubs

ROOT = Path(__file__).resolve().parent.parent
PATH = "/map.v1.Map/MapFn"

OURS = """
import logging, os
from pynumaflow.function import Message, Messages, MultiProcServer, Server

LOOPS = int(os.environ["BENCH_LOOPS"])

def work(keys, datum):
    total = 0
    for i in range(LOOPS):  # pure Python, holding the GIL throughout
        total += i * i
    return Messages(Message(datum.value, keys=keys))

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    server = MultiProcServer if os.environ["BENCH_SERVER"] == "multi" else Server
    threads = os.environ.get("BENCH_THREADS")  # default: the server's own
    server(map_handler=work, **({"max_threads": int(threads)} if threads else {})).start()
"""

REFERENCE = """
import os
import pynumaflow.shared.server as shared
from pynumaflow.mapper import MapMultiprocServer, Message, Messages

shared.MULTIPROC_MAP_SOCK_ADDR = os.environ["BENCH_DIR"] + "/multiproc"  # not an option
LOOPS = int(os.environ["BENCH_LOOPS"])

def work(keys, datum):
    total = 0
    for i in range(LOOPS):
        total += i * i
    return Messages(Message(datum.value, keys=keys))

if __name__ == "__main__":
    MapMultiprocServer(
        work,
        server_count=int(os.environ["NUM_CPU_MULTIPROC"]),
        server_info_file=os.environ["BENCH_DIR"] + "/mapper-server-info",
        max_threads=4,
    ).start()
"""


class Feed:
    """One MapFn stream on its own connection: requests topped up, answers checked."""

    def __init__(self, sock: str, pb2: Any, frames: List[bytes]) -> None:
        self.channel = h2client.RawChannel(sock, timeout=600)
        self.call = self.channel.open(PATH)
        self.pb2 = pb2
        self.frames = frames
        self.sent = 0
        self.answers: collections.Counter[str] = collections.Counter()
        hello = pb2.MapRequest(handshake=pb2.Handshake(sot=True)).SerializeToString()
        self.channel.send(self.call, [h2client.frame(hello)], packed=False)
        self.channel.run_until(lambda: bool(self.call.body) or self.call.done)
        first = self.call.take()
        if not first or not pb2.MapResponse.FromString(first[0]).handshake.sot:
            raise SystemExit(f"no handshake answer: {self.call.status} {self.call.message}")

    @property
    def done(self) -> bool:
        return sum(self.answers.values()) >= len(self.frames) or self.call.done

    def step(self, in_flight: int) -> None:
        for message in self.call.take():
            self.answers[self.pb2.MapResponse.FromString(message).id] += 1
        want = min(len(self.frames), sum(self.answers.values()) + in_flight)
        if want > self.sent:
            self.channel.send(self.call, self.frames[self.sent : want], packed=False)
            self.sent = want
        self.channel._queue_frames()


def drive(socks: List[str], pb2: Any, count: int, in_flight: int, prefix: str) -> List[Feed]:
    """``count`` requests over one stream per socket; return once all are answered."""
    template = pb2.MapRequest(request=pb2.MapRequest.Request(keys=["k"], value=b"x" * 100))
    frames: List[List[bytes]] = [[] for _ in socks]
    for i in range(count):
        template.id = f"{prefix}{i}"
        frames[i % len(socks)].append(h2client.frame(template.SerializeToString()))
    feeds = [Feed(sock, pb2, f) for sock, f in zip(socks, frames, strict=True)]
    share = max(1, in_flight // len(feeds))
    deadline = time.monotonic() + 600
    while not all(f.done for f in feeds):
        if time.monotonic() > deadline:
            raise SystemExit("no answers within 600 s")
        for feed in feeds:
            feed.step(share)
        # Wait for a socket (never spin: the client must not take a core from the server).
        channels = [f.channel for f in feeds]
        readable, writable, _ = select.select(
            [c.sock for c in channels], [c.sock for c in channels if c.out], [], 0.05
        )
        for channel in channels:
            if channel.sock in readable or channel.sock in writable:
                channel._io(0)
    failed = [f"{f.call.status} {f.call.message}" for f in feeds if f.call.done and not f.call.ok]
    if failed:
        print(f"  stream(s) failed: {'; '.join(failed)}", flush=True)
    return feeds


def measure(
    server: str, processes: int, loops: int, count: int, args: argparse.Namespace
) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mp") as tmp:
        reference = server == "0.14.0"
        script = Path(tmp) / "udf.py"
        script.write_text(REFERENCE if reference else OURS)
        env = dict(
            os.environ,
            NUMAFLOW_UD_CONTAINER_TYPE="udf",
            PYNUMAFLOW_RUN_DIR=tmp,
            PYNUMAFLOW_PROTOCOLS="v1",
            NUM_CPU_MULTIPROC=str(processes),
            BENCH_LOOPS=str(loops),
            BENCH_SERVER=server,
            BENCH_DIR=tmp,
        )
        if not reference:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        python = args.reference if reference else sys.executable
        proc = subprocess.Popen(
            [python, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            info = wait_for_info(proc, Path(tmp) / "mapper-server-info")
            socks = (
                [f"{tmp}/multiproc{i}.sock" for i in range(int(info["metadata"]["MULTIPROC"]))]
                if reference
                else [f"{tmp}/map.sock"]
            )
            time.sleep(0.5 if reference else 0)  # 0.14.0 writes server-info before binding
            pids = family(proc.pid)
            server0, busy0, started = family_cpu(pids), machine_busy(), time.perf_counter()
            mine0 = resource.getrusage(resource.RUSAGE_SELF)
            feeds = drive(socks, args.pb2, count, args.in_flight, "id")
            elapsed = time.perf_counter() - started
            mine1 = resource.getrusage(resource.RUSAGE_SELF)
            server_cpu = family_cpu(pids) - server0
            client_cpu = (mine1.ru_utime - mine0.ru_utime) + (mine1.ru_stime - mine0.ru_stime)
            other = machine_busy() - busy0 - server_cpu - client_cpu
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    answers: collections.Counter[str] = collections.Counter()
    for feed in feeds:
        answers.update(feed.answers)
    wrong = sum(1 for n in answers.values() if n != 1) + (count - len(answers))
    return {
        "per_s": count / elapsed,
        "server_us": server_cpu / count * 1e6,
        "server_cores": server_cpu / elapsed,
        "client_cores": client_cpu / elapsed,
        "other_pct": max(0.0, other) / elapsed / (os.cpu_count() or 1) * 100,
        "wrong": wrong,
        "streams": len(feeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per cell, cpu handler")
    parser.add_argument("--trivial-requests", type=int, default=30000)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--reference", help="python of a venv with pynumaflow 0.14.0")
    parser.add_argument(
        "--handlers", nargs="+", choices=["cpu", "trivial"], default=["cpu", "trivial"]
    )
    args = parser.parse_args()
    loops = calibrate()
    print(f"cpu handler: {loops} loop iterations = ~1 ms here; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as stubs:
        sys.path.insert(0, make_stubs(Path(stubs)))
        from map.v1 import map_pb2

        args.pb2 = map_pb2
        cells: List[Tuple[str, str, int]] = []
        for handler in args.handlers:
            cells += [(handler, "single", 1)] + [(handler, "multi", n) for n in args.processes]
            if args.reference:
                cells += [(handler, "0.14.0", n) for n in args.processes]
        runs: Dict[Tuple[str, str, int], List[Dict[str, Any]]] = collections.defaultdict(list)
        for attempt in range(1, args.repeat + 1):
            for handler, server, n in cells:
                count = args.requests if handler == "cpu" else args.trivial_requests
                r = measure(server, n, loops if handler == "cpu" else 0, count, args)
                runs[handler, server, n].append(r)
                print(
                    f"run {attempt} {handler:7} {server:6} {n} proc: {r['per_s']:7.0f} req/s  "
                    f"server {r['server_us']:6.0f} us CPU/req, {r['server_cores']:.2f} cores  "
                    f"client {r['client_cores']:.2f} "
                    f"cores  other load {r['other_pct']:3.0f}%  streams {r['streams']}  "
                    f"wrong {r['wrong']}",
                    flush=True,
                )
    print("medians:")
    summary = {}
    for (handler, server, n), rs in runs.items():
        keys = ("per_s", "server_us", "server_cores", "other_pct")
        med = {k: statistics.median(r[k] for r in rs) for k in keys}
        base = statistics.median(r["per_s"] for r in runs[handler, "single", 1])
        summary[f"{handler} {server} {n}"] = med
        print(
            f"  {handler:7} {server:6} {n} proc: {med['per_s']:7.0f} req/s "
            f"(x{med['per_s'] / base:.2f} of Server)  server {med['server_us']:6.0f} us CPU/req, "
            f"{med['server_cores']:.2f} cores  "
            f"other load {med['other_pct']:.0f}%  wrong {sum(r['wrong'] for r in rs)}"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
