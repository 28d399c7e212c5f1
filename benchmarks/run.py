"""Benchmark our SDK against pynumaflow 0.4.2 and a bare grpclib echo, side by side.

    nox -s bench                                  # the default run (~8 minutes)
    nox -s bench -- --rounds 5 --only MapFn       # more rounds, some workloads
    python benchmarks/run.py --original-venv /tmp/orig042 --quick   # without nox

Every measurement starts a fresh server process (ours / 0.4.2 / echo) on a
temporary Unix socket, waits for its server-info file (start-to-ready), runs the
load client (client.py) in its own process, reads the server's peak RSS (VmHWM),
then stops it. Rounds run every cell once; within a round the implementations of
a cell run back to back, and which goes first alternates from round to round.
Tables show medians over the rounds and ratios ours/0.4.2 computed per round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
END = "U+005C__END__"
KiB = 1024


# --- workloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One load shape. `rpc` picks the client driver (client.DRIVERS) and the handler."""

    name: str
    rpc: str
    size: int = 100
    inflight: int = 1
    outputs: int = 10  # map stream: messages per request
    keys: int = 0  # reduce: distinct keys in the window
    datums: int = 0  # reduce: datums in the window
    batch: int = 0  # sink: datums per SinkFn call
    total: int = 0  # sink: datums in all
    echo: bool = False  # also run the bare grpclib echo (MapFn only)
    unary: bool = True  # p50/p99 per call are meaningful and targeted
    protocol: str = "legacy"  # or "v1" (Numaflow >= 1.4, against pynumaflow 0.14.0)
    requests: int = 0  # v1 map/transformer/map stream: requests in the measured burst
    rate: float = 0  # v1 map kinds: requests/s of the paced (latency) phase
    sleep_ms: int = 0  # the map handler sleeps this long (the concurrency check)
    apis: Tuple[str, ...] = ("sync", "async")

    @property
    def streaming(self) -> bool:
        """One long stream per cell (reduce, sink): ~15-25 s each here, so fewer rounds."""
        return self.protocol == "legacy" and self.rpc in ("reduce", "sink")

    @property
    def unit(self) -> str:
        if self.protocol == "v1":
            return {
                "reduce": "datum",
                "reducestream": "datum",
                "accumulator": "datum",
                "sink": "datum",
                "batchmap": "datum",
                "mapstream": "output",
            }.get(self.rpc, "message")
        return "datum" if self.rpc in ("reduce", "sink") else "call"

    def spec(self) -> Dict[str, Any]:
        return {
            "rpc": self.rpc,
            "size": self.size,
            "inflight": self.inflight,
            "outputs": self.outputs,
            "keys": self.keys,
            "datums": self.datums,
            "batch": self.batch,
            "total": self.total,
            "protocol": self.protocol,
            "requests": self.requests,
            "rate": self.rate,
        }


def _size(n: int) -> str:
    return f"{n // KiB}KB" if n >= KiB else f"{n}B"


def default_workloads(stream_datums: int = 100_000) -> List[Workload]:
    """Every workload; `stream_datums` sizes the ReduceFn window and the SinkFn total."""
    out = []
    for size in (100, 10 * KiB):
        for inflight in (1, 64, 500):
            out.append(
                Workload(f"MapFn {_size(size)} x{inflight}", "map", size, inflight, echo=True)
            )
    out.append(Workload("MapTFn 100B x64", "mapt", 100, 64))
    out.append(Workload("MapStreamFn 100B x64 (10 out)", "mapstream", 100, 64, unary=False))
    n = stream_datums
    count = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    for keys in (10, 10_000):
        out.append(
            Workload(
                f"ReduceFn {count} datums/{keys} keys",
                "reduce",
                keys=keys,
                datums=n,
                unary=False,
            )
        )
    out.append(
        Workload(f"SinkFn {count} datums, batches of 500", "sink", batch=500, total=n, unary=False)
    )
    return out


def v1_workloads(requests: int = 20_000, stream_datums: int = 100_000) -> List[Workload]:
    """The Numaflow >= 1.4 workloads, each one long bidi stream (client.V1_DRIVERS)."""
    n = stream_datums
    count = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    v1 = "v1"
    return [
        Workload("map.v1 100B", "map", requests=requests, rate=1000, protocol=v1),
        Workload("sourcetransformer.v1 100B", "mapt", requests=requests, rate=1000, protocol=v1),
        Workload(
            "map.v1 stream 100B (10 out)",
            "mapstream",
            requests=requests // 10,
            rate=100,
            protocol=v1,
        ),
        Workload(
            f"sink.v1 {count} datums, batches of 500", "sink", batch=500, total=n, protocol=v1
        ),
        Workload(
            f"reduce.v1 {count} datums/10 keys", "reduce", keys=10, datums=n, unary=False,
            protocol=v1,
        ),
        Workload(
            f"map.v1 batch {count} datums, batches of 500", "batchmap", batch=500, total=n,
            protocol=v1, apis=("async",),
        ),
        Workload(
            "map.v1 500 requests, handler sleeps 50 ms", "map", requests=500, sleep_ms=50,
            protocol=v1, apis=("async",),
        ),
        Workload(
            f"reduce stream {count} datums/10 keys", "reducestream", keys=10, datums=n,
            unary=False, protocol=v1, apis=("async",),
        ),
        Workload(
            f"accumulator {count} datums/10 keys", "accumulator", keys=10, datums=n,
            unary=False, protocol=v1, apis=("async",),
        ),
        Workload(
            f"source read {count} messages, batches of 500", "source", batch=500, total=n,
            protocol=v1, apis=("async",),
        ),
    ]  # fmt: skip


# 0.14.0 serves map stream and reduce only with async handlers (MapStreamAsyncServer,
# ReduceAsyncServer): our sync cells of these are compared with those.
V014_SYNC_MISSING = ("mapstream", "reduce")
V1_INFO_FILES = {
    "map": "mapper-server-info",
    "mapstream": "mapper-server-info",
    "mapt": "sourcetransformer-server-info",
    "reduce": "reducer-server-info",
    "sink": "sinker-server-info",
    "reducestream": "reducestreamer-server-info",
    "accumulator": "accumulator-server-info",
    "batchmap": "mapper-server-info",
    "source": "sourcer-server-info",
}
WINDOWED = ("reduce", "reducestream", "accumulator")  # one window/stream: no latency
CONTAINER_TYPES = {"sink": "udsink", "mapt": "transformer", "source": "udsource"}  # else "udf"


STREAM_CLIENTS = {
    "h2": "the lean h2 client (benchmarks/h2client.py: one DATA frame per message)",
    "grpcio": "grpcio (blocking stub for ReduceFn and SinkFn, aio for MapStreamFn)",
}
APIS = ("sync", "async")
IMPLS = ("ours", "original")
API_LABEL = {
    ("ours", "sync"): "Server, sync handler",
    ("ours", "async"): "AsyncServer, async handler",
    ("original", "sync"): "0.4.2 Server (grpcio)",
    ("original", "async"): "0.4.2 AsyncServer (grpc.aio)",
}


# --- running one cell --------------------------------------------------------------------


@dataclass
class Runner:
    ours_python: str
    original_python: Optional[str]
    stubs: str
    workdir: Path
    duration: float
    warmup: float
    stream_client: str = "h2"
    paced_s: float = 2.0  # v1: seconds of the paced (latency) phase
    framing: str = "packed"  # v1: DATA frames packed with messages, or one per message
    verbose: bool = False
    logs: List[str] = field(default_factory=list)

    def command(self, impl: str, api: str, work: Workload, sock: Path, info: Path) -> List[str]:
        if impl == "echo":
            script = HERE / "server_echo.py"
            return [self.ours_python, str(script), "--sock", str(sock), "--info", str(info)]
        python = self.ours_python if impl == "ours" else self.original_python
        assert python is not None
        if work.protocol == "v1":
            return [
                python, str(HERE / "server_udf.py"), "--impl", impl, "--api", api,
                "--rpc", work.rpc, "--protocol", "v1", "--run-dir", str(sock.parent),
                "--outputs", str(work.outputs), "--sleep-ms", str(work.sleep_ms),
            ]  # fmt: skip
        return [
            python, str(HERE / "server_udf.py"), "--impl", impl, "--api", api,
            "--rpc", work.rpc, "--sock", str(sock), "--info", str(info),
            "--outputs", str(work.outputs),
        ]  # fmt: skip

    def env(self, impl: str, work: Workload, cell: Path) -> Dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if work.protocol == "v1":
            # As in a pod: the container type; ours finds its v1 sockets in the run dir.
            env["NUMAFLOW_UD_CONTAINER_TYPE"] = CONTAINER_TYPES.get(work.rpc, "udf")
            if impl == "ours":
                env.update(PYNUMAFLOW_RUN_DIR=str(cell), PYNUMAFLOW_PROTOCOLS="v1")
        if impl == "original":
            # Never let our package (PYTHONPATH=src for quick runs) leak into 0.4.2's process.
            env.pop("PYTHONPATH", None)
            for name in ("BENCH_PROFILE", "BENCH_COALESCE", "BENCH_LOOP"):
                env.pop(name, None)  # experiment hooks for our server only
        return env

    def run(self, impl: str, api: str, work: Workload) -> Dict[str, Any]:
        cell = self.workdir / f"{impl}-{api}-{work.rpc}"
        cell.mkdir(parents=True, exist_ok=True)
        if work.protocol == "v1":  # the client finds the socket from the server-info
            info = cell / V1_INFO_FILES[work.rpc]
            sock = cell / "v1.sock"  # not used: only its folder is
        else:
            sock = cell / ("udsink.sock" if work.rpc == "sink" else "function.sock")
            info = cell / "server-info"
        for path in cell.iterdir():
            path.unlink()
        log_path = cell / "server.log"
        with open(log_path, "w") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                self.command(impl, api, work, sock, info),
                env=self.env(impl, work, cell),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                ready_s = self.wait_ready(proc, info, started, log_path)
                spec = dict(
                    work.spec(),
                    sock=str(sock),
                    stubs=self.stubs,
                    server_pid=proc.pid,
                    duration=self.duration,
                    warmup=self.warmup,
                    stream_client=self.stream_client,
                    run_dir=str(cell),
                    warm=min(1000, work.requests),
                    paced_s=self.paced_s if work.rate and not work.sleep_ms else 0,
                    framing=self.framing,
                )
                client_started = time.perf_counter()
                client = subprocess.run(
                    [self.ours_python, str(HERE / "client.py"), json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if client.returncode != 0:
                    raise RuntimeError(f"client failed:\n{client.stderr[-3000:]}")
                result: Dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
                result["rss_mib"] = peak_rss_kib(proc.pid) / KiB
                result["ready_s"] = ready_s
                result["client_wall_s"] = time.perf_counter() - client_started
                result["server_cpu_pct"] = (
                    100 * result["server_cpu_s"] / max(result["seconds"], 1e-9)
                )
            finally:
                stopping = time.perf_counter()
                # 0.4.2's AsyncServer under aiorun does not exit on SIGTERM (its shutdown
                # coroutine is never awaited) and its sync Server has no drain: kill it.
                stop(proc, graceful=impl != "original")
        result["stop_s"] = time.perf_counter() - stopping
        result["cell_s"] = time.perf_counter() - started
        if result["errors"] and not result["completed"]:
            # The RPC was refused outright (0.4.2 answers UNIMPLEMENTED for some): n/a.
            code = result["first_error"].split(":", 1)[0] or next(iter(result["errors"]))
            result["na"] = code
            result["refused"] = True
        elif result["errors"]:
            result["na"] = f"errors {result['errors']} {result['first_error'][:100]}"
        return result

    @staticmethod
    def wait_ready(
        proc: subprocess.Popen[bytes], info: Path, started: float, log_path: Path
    ) -> float:
        deadline = started + 60
        while time.perf_counter() < deadline:
            try:
                if info.read_text(encoding="utf-8").endswith(END):
                    return time.perf_counter() - started
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.002)
        raise RuntimeError("server-info was not written within 60 s")


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def stop(proc: subprocess.Popen[bytes], graceful: bool = True) -> None:
    if proc.poll() is None and not graceful:
        proc.kill()
        proc.wait()
    elif proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the run -----------------------------------------------------------------------------


Key = Tuple[str, str, str]  # workload name, api, impl


def make_stubs(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos"),
            f"--python_out={out}", f"--grpc_python_out={out}",
            "function/v1/udfunction.proto", "sink/v1/udsink.proto",
            "sink/v1/sink.proto", "map/v1/map.proto", "sourcetransformer/v1/transform.proto",
            "reduce/v1/reduce.proto", "common/metadata.proto", "common/nack_options.proto",
            "accumulator/v1/accumulator.proto", "source/v1/source.proto",
        ],
        check=True,
    )  # fmt: skip
    return str(out)


def ours_has_sink(python: str) -> bool:
    env = dict(os.environ)
    probe = "import pynumaflow.sink as s; s.Sink; s.AsyncSink"
    return subprocess.run([python, "-c", probe], env=env, capture_output=True).returncode == 0


def run_all(args: argparse.Namespace, workloads: List[Workload]) -> Dict[str, Any]:
    records: List[Dict[str, Any]] = []
    na: Dict[Key, str] = {}
    with tempfile.TemporaryDirectory(prefix="pnf-bench-", dir=args.tmp) as tmp:
        runner = Runner(
            ours_python=args.ours_python,
            original_python=args.original_python,
            stubs=make_stubs(Path(tmp) / "stubs"),
            workdir=Path(tmp),
            duration=args.duration,
            warmup=args.warmup,
            stream_client=args.stream_client,
            paced_s=args.paced_s,
            framing=args.framing,
        )
        sink_ok = ours_has_sink(args.ours_python)
        impls = [i for i in IMPLS if i != "original" or args.original_python]
        t0 = time.perf_counter()
        for rnd in range(args.rounds):
            order = impls if rnd % 2 == 0 else impls[::-1]
            for work in workloads:
                if work.streaming and rnd >= args.stream_rounds:
                    continue
                cells: List[Tuple[str, str]] = []
                for api in work.apis:
                    cells += [(impl, api) for impl in order]
                if work.echo:
                    cells.insert(0 if rnd % 2 else len(cells), ("echo", "-"))
                for impl, api in cells:
                    key = (work.name, api, impl)
                    if key in na:
                        continue
                    if impl == "ours" and work.rpc == "sink" and not sink_ok:
                        na[key] = "not in this build"
                        continue
                    if (
                        work.protocol == "v1"
                        and impl == "original"
                        and api == "sync"
                        and work.rpc in V014_SYNC_MISSING
                    ):
                        na[key] = "0.14.0 has no sync server"
                        continue
                    try:
                        result = runner.run(impl, api, work)
                    except Exception as err:  # a failed cell is reported, not fatal
                        result = {"na": f"failed: {str(err).strip().splitlines()[-1][:120]}"}
                        print(f"  ! {key}: {err}", file=sys.stderr)
                    if result.get("refused") or (
                        str(result.get("na", "")).startswith("failed") and rnd == 0
                    ):
                        na[key] = result["na"]  # not retried in later rounds
                    records.append(dict(result, round=rnd, workload=work.name, api=api, impl=impl))
                    print(progress(rnd, work, impl, api, result), flush=True)
        elapsed = time.perf_counter() - t0
    return {"records": records, "na": {"|".join(k): v for k, v in na.items()}, "elapsed": elapsed}


def progress(rnd: int, work: Workload, impl: str, api: str, r: Dict[str, Any]) -> str:
    head = f"[round {rnd + 1}] {work.name:<36} {impl:<8} {api:<5}"
    if "throughput" not in r or r.get("na"):
        return f"{head} n/a ({r.get('na')})"
    return (
        f"{head} {r['throughput']:9.0f} {work.unit}/s  p50 {r['p50_ms']:8.2f} ms  "
        f"p99 {r['p99_ms']:8.2f} ms  cpu {r['server_cpu_per_unit_us']:7.1f} us/{work.unit}  "
        f"srv {r['server_cpu_pct']:4.0f}%  cli {r['client_cpu_pct']:4.0f}%  "
        f"rss {r['rss_mib']:6.1f} MiB  ready {r['ready_s'] * 1e3:5.0f} ms  "
        f"other {r['other_cpu_pct']:4.0f}%"
    )


# --- summarising -------------------------------------------------------------------------


def _ok(records: List[Dict[str, Any]], work: str, api: str, impl: str) -> List[Dict[str, Any]]:
    return [
        r
        for r in records
        if r["workload"] == work and r["api"] == api and r["impl"] == impl and not r.get("na")
    ]


def median_of(rows: List[Dict[str, Any]], metric: str) -> Optional[float]:
    values = [r[metric] for r in rows if metric in r and r[metric] == r[metric]]  # no NaN
    return statistics.median(values) if values else None


def paired_ratio(a: List[Dict[str, Any]], b: List[Dict[str, Any]], metric: str) -> Optional[float]:
    """Median over rounds of a/b, pairing each round's runs (both ran back to back)."""
    by_round = {r["round"]: r[metric] for r in b if metric in r}
    ratios = [
        r[metric] / by_round[r["round"]]
        for r in a
        if by_round.get(r["round"]) and r[metric] == r[metric]  # skip NaN (no sample)
    ]
    return statistics.median(ratios) if ratios else None


def fmt(value: Optional[float], digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


@dataclass
class Check:
    what: str
    ratio: Optional[float]
    limit: float
    higher_is_better: bool
    unit: str = "x"  # "x": a ratio; else an absolute value in this unit

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        ok = self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        digits = 2 if self.unit == "x" else 1
        return (
            f"| {self.what} | {fmt(self.ratio, digits, self.unit)} | {op} {self.limit:g}"
            f"{self.unit} | {self.verdict} |"
        )


def summarise(data: Dict[str, Any], workloads: List[Workload], meta: Dict[str, str]) -> str:
    recs = data["records"]
    na = {tuple(k.split("|")): v for k, v in data["na"].items()}
    rounds = 1 + max((r["round"] for r in recs), default=0)
    out: List[str] = []
    out.append("# Benchmark results: ours vs pynumaflow 0.4.2\n")
    out.append(
        f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}, "
        f"{meta['date']}. {rounds} rounds ({meta.get('stream_rounds', '?')} for ReduceFn and "
        f"SinkFn), {meta['duration']} s measured per cell after "
        f"{meta['warmup']} s warm-up; medians over rounds, ratios are medians of per-round "
        f"ratios (ours/0.4.2, each pair ran back to back). Whole run: "
        f"{data['elapsed'] / 60:.1f} min. Command: `{meta['command']}`.\n"
    )
    out.append(
        "Ours: `Server` with sync handlers, `AsyncServer` with async handlers (one core "
        "underneath). 0.4.2: its `Server` (grpcio, thread pool) with the same sync handlers, "
        "its `AsyncServer` (grpc.aio) with the same async handlers. Echo: bare grpclib MapFn, "
        "no SDK (the transport's floor). Load: one client process, one HTTP/2 connection; "
        "MapFn and MapTFn: grpcio (aio), N calls in flight, closed loop; MapStreamFn, "
        f"ReduceFn, SinkFn: {STREAM_CLIENTS[meta.get('stream_client', 'grpcio')]}.\n"
    )

    def cell(work: str, api: str, impl: str) -> List[Dict[str, Any]]:
        return _ok(recs, work, api, impl)

    def na_text(work: str, api: str, impl: str) -> str:
        reason = na.get((work, api, impl))
        return f"n/a ({reason})" if reason else "n/a"

    # Table 1: throughput and latency.
    out.append("## Throughput and latency\n")
    out.append(
        "| workload | handlers | ours /s | 0.4.2 /s | ratio | ours p50 ms | 0.4.2 p50 ms "
        "| ours p99 ms | 0.4.2 p99 ms | p99 ratio | rounds |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in workloads:
        for api in APIS:
            o, g = cell(w.name, api, "ours"), cell(w.name, api, "original")
            if not o and not g:
                if (w.name, api, "ours") in na or (w.name, api, "original") in na:
                    out.append(
                        f"| {w.name} | {api} | {na_text(w.name, api, 'ours')} | "
                        f"{na_text(w.name, api, 'original')} | | | | | | | |"
                    )
                continue
            lat = w.unary or w.rpc == "sink"
            p = "p50_ms" if lat else None
            out.append(
                f"| {w.name} ({w.unit}s) | {api} "
                f"| {fmt(median_of(o, 'throughput')) if o else na_text(w.name, api, 'ours')} "
                f"| {fmt(median_of(g, 'throughput')) if g else na_text(w.name, api, 'original')} "
                f"| {fmt(paired_ratio(o, g, 'throughput'), 2, 'x')} "
                f"| {fmt(median_of(o, p), 2) if p else '-'} "
                f"| {fmt(median_of(g, p), 2) if p else '-'} "
                f"| {fmt(median_of(o, 'p99_ms'), 2) if lat else '-'} "
                f"| {fmt(median_of(g, 'p99_ms'), 2) if lat else '-'} "
                f"| {fmt(paired_ratio(o, g, 'p99_ms'), 2, 'x') if lat else '-'} "
                f"| {len(o)}/{len(g)} |"
            )
    out.append(
        "\nReduceFn throughput is datums/s over the whole window (one stream); SinkFn's "
        "latency columns are per batch of 500. `rounds` = measured rounds ours/0.4.2 "
        "(ReduceFn and SinkFn run `--stream-rounds` rounds, 1 by default, to keep the "
        "default run under 10 minutes).\n"
    )

    # Table 2: server cost.
    out.append("## Server cost\n")
    out.append(
        "| workload | handlers | ours CPU µs/unit | 0.4.2 CPU µs/unit | ours/0.4.2 "
        "| echo CPU µs/call | ours/echo | ours peak RSS MiB | 0.4.2 peak RSS MiB "
        "| ours srv CPU % | client CPU % (max) | other load % |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in workloads:
        e = cell(w.name, "-", "echo") if w.echo else []
        for api in APIS:
            o, g = cell(w.name, api, "ours"), cell(w.name, api, "original")
            if not o and not g:
                continue
            clients = [r["client_cpu_pct"] for r in o + g + e]
            out.append(
                f"| {w.name} | {api} "
                f"| {fmt(median_of(o, 'server_cpu_per_unit_us'))} "
                f"| {fmt(median_of(g, 'server_cpu_per_unit_us'))} "
                f"| {fmt(paired_ratio(o, g, 'server_cpu_per_unit_us'), 2, 'x')} "
                f"| {fmt(median_of(e, 'server_cpu_per_unit_us')) if e else '-'} "
                f"| {fmt(paired_ratio(o, e, 'server_cpu_per_unit_us'), 2, 'x') if e else '-'} "
                f"| {fmt(median_of(o, 'rss_mib'), 1)} | {fmt(median_of(g, 'rss_mib'), 1)} "
                f"| {fmt(median_of(o, 'server_cpu_pct'))} "
                f"| {fmt(max(clients) if clients else None)} "
                f"| {fmt(median_of(o + g + e, 'other_cpu_pct'))} |"
            )
    out.append(
        "\nCPU = server utime+stime (/proc/<pid>/stat) over the measured window / units "
        "completed in it; a unit is a call (MapStreamFn: a call of 10 outputs) or a datum "
        "(ReduceFn, SinkFn). Peak RSS = VmHWM of a fresh server process after the cell. "
        "`srv CPU %` near 100 means the server's event loop was saturated; client CPU % "
        "is of one core. `other load %` is the median CPU (of one core) that other processes "
        "on the machine used during the cell's window: this machine is shared and noisy.\n"
    )

    # Table 3: start-to-ready.
    out.append("## Start to ready (process start -> server-info written)\n")
    out.append("| server | ours ms | 0.4.2 ms | ratio | starts |")
    out.append("|---|---:|---:|---:|---:|")
    ready: Dict[Tuple[str, str], float] = {}
    for api in APIS:
        row = []
        for impl in IMPLS:
            vals = [
                r["ready_s"]
                for r in recs
                if r["api"] == api and r["impl"] == impl and "ready_s" in r
            ]
            ready[(api, impl)] = statistics.median(vals) * 1e3 if vals else float("nan")
            row.append(len(vals))
        ratio = (
            ready[(api, "ours")] / ready[(api, "original")] if ready[(api, "original")] else None
        )
        out.append(
            f"| {api} | {ready[(api, 'ours')]:.0f} | {ready[(api, 'original')]:.0f} "
            f"| {fmt(ratio, 2, 'x')} | {row[0]} / {row[1]} |"
        )
    echo_ready = [r["ready_s"] for r in recs if r["impl"] == "echo" and "ready_s" in r]
    if echo_ready:
        out.append(
            f"| bare grpclib echo | {statistics.median(echo_ready) * 1e3:.0f} | | | "
            f"{len(echo_ready)} |"
        )

    # Targets.
    out.append("\n## Targets (ratios ours/0.4.2 unless said)\n")
    out.append("| target | measured | limit | verdict |")
    out.append("|---|---:|---:|---|")
    checks = targets(recs, workloads, ready)
    out.extend(c.line() for c in checks)
    out.append(
        "\nContext, not targets: the bare grpclib echo (no SDK at all) against 0.4.2, same "
        "cells. Where the echo itself is below a throughput target, no SDK change on "
        "grpclib as it is can meet that target.\n"
    )
    out.append(
        "| cell | echo/0.4.2 Server | echo/0.4.2 AsyncServer | echo/ours sync | echo/ours async |"
    )
    out.append("|---|---:|---:|---:|---:|")
    for w in workloads:
        e = _ok(recs, w.name, "-", "echo")
        if not e:
            continue
        cols = [
            fmt(paired_ratio(e, _ok(recs, w.name, api, impl), "throughput"), 2, "x")
            for impl, api in (
                ("original", "sync"),
                ("original", "async"),
                ("ours", "sync"),
                ("ours", "async"),
            )
        ]
        out.append(f"| {w.name} throughput | " + " | ".join(cols) + " |")
    misses = [c for c in checks if c.verdict == "MISS"]
    out.append(
        f"\n{len(checks) - len(misses)} of {len(checks)} checks pass"
        + (f"; missed: {', '.join(c.what for c in misses)}." if misses else ".")
    )
    out.append(
        "\nWhere the time goes (py-spy profiles) and suggested changes: `FINDINGS.md` "
        "(written by hand from profiles of the same build; not regenerated by this script)."
    )
    return "\n".join(out) + "\n"


def targets(
    recs: List[Dict[str, Any]], workloads: List[Workload], ready: Dict[Tuple[str, str], float]
) -> List[Check]:
    checks: List[Check] = []
    maps = [w for w in workloads if w.rpc == "map"]
    for w in maps:
        if w.inflight != 64:
            continue
        for ours_api in APIS:
            o = _ok(recs, w.name, ours_api, "ours")
            for orig_api, limit in (("sync", 0.7), ("async", 1.2)):
                g = _ok(recs, w.name, orig_api, "original")
                checks.append(Check(
                    f"{w.name} throughput, ours {ours_api} handlers vs 0.4.2 "
                    f"{'Server' if orig_api == 'sync' else 'AsyncServer'}",
                    paired_ratio(o, g, "throughput"), limit, True,
                ))  # fmt: skip
    for w in workloads:
        if not w.streaming:
            continue
        for api in APIS:
            o, g = _ok(recs, w.name, api, "ours"), _ok(recs, w.name, api, "original")
            if o and g:
                checks.append(Check(
                    f"{w.name} throughput, {api}", paired_ratio(o, g, "throughput"), 2.5, True
                ))  # fmt: skip
    for w in workloads:
        if not w.unary:
            continue
        for api in APIS:
            o, g = _ok(recs, w.name, api, "ours"), _ok(recs, w.name, api, "original")
            if o and g:
                checks.append(
                    Check(f"{w.name} p99, {api}", paired_ratio(o, g, "p99_ms"), 1.0, False)
                )
    for w in maps:
        e = _ok(recs, w.name, "-", "echo")
        for api in APIS:
            o = _ok(recs, w.name, api, "ours")
            if o and e:
                checks.append(
                    Check(
                        f"{w.name} CPU/call vs bare grpclib echo, {api}",
                        paired_ratio(o, e, "server_cpu_per_unit_us"),
                        1.15,
                        False,
                    )
                )
    for w in workloads:
        for api in APIS:
            o, g = _ok(recs, w.name, api, "ours"), _ok(recs, w.name, api, "original")
            if o and g:
                checks.append(
                    Check(f"{w.name} peak RSS, {api}", paired_ratio(o, g, "rss_mib"), 1.0, False)
                )
    for api in APIS:
        if ready.get((api, "original")):
            checks.append(
                Check(
                    f"start-to-ready, {api}",
                    ready[(api, "ours")] / ready[(api, "original")],
                    1.0,
                    False,
                )
            )
    return checks


# --- the v1 suite (Numaflow >= 1.4 protocols, against pynumaflow 0.14.0) ----------------

V1_CLASSES = {  # rpc -> (ours sync, ours async, 0.14.0 sync, 0.14.0 async)
    "map": ("Server", "AsyncServer", "MapServer", "MapAsyncServer"),
    "mapt": ("Server", "AsyncServer", "SourceTransformServer", "SourceTransformAsyncServer"),
    "mapstream": ("Server", "AsyncServer", "-", "MapStreamAsyncServer"),
    "reduce": ("Server", "AsyncServer", "-", "ReduceAsyncServer"),
    "sink": ("Sink", "AsyncSink", "SinkServer", "SinkAsyncServer"),
    "reducestream": ("-", "ReduceStreamAsyncServer", "-", "ReduceStreamAsyncServer"),
    "accumulator": ("-", "AccumulatorAsyncServer", "-", "AccumulatorAsyncServer"),
    "batchmap": ("-", "BatchMapAsyncServer", "-", "BatchMapAsyncServer"),
    "source": ("-", "SourceAsyncServer", "-", "SourceAsyncServer"),
}
V1_CPU_LIMIT_US = 20.0  # issue 18: server CPU per echoed message (map kinds)
V1_SLEEP_LIMIT_S = 0.5  # issue 18: "well under a second" for 500 x 50 ms


def v1_reference(recs: List[Dict[str, Any]], w: Workload, api: str) -> List[Dict[str, Any]]:
    """0.14.0's records to compare our `api` cell with: its server of the same kind of
    handlers, or its async one where it has no sync server (map stream, reduce)."""
    if api == "sync" and w.rpc in V014_SYNC_MISSING:
        api = "async"
    return _ok(recs, w.name, api, "original")


def v1_classes(w: Workload, api: str) -> str:
    ours_sync, ours_async, ref_sync, ref_async = V1_CLASSES[w.rpc]
    ref = ref_sync if api == "sync" and ref_sync != "-" else ref_async
    return f"{ours_sync if api == 'sync' else ours_async} vs {ref}"


def summarise_v1(data: Dict[str, Any], workloads: List[Workload], meta: Dict[str, str]) -> str:
    recs = data["records"]
    na = {tuple(k.split("|")): v for k, v in data["na"].items()}
    rounds = 1 + max((r["round"] for r in recs), default=0)
    loads = [r["other_cpu_pct"] for r in recs if "other_cpu_pct" in r]
    out: List[str] = []
    out.append("## v1 (Numaflow >= 1.4): ours vs pynumaflow 0.14.0\n")
    out.append(
        f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}, "
        f"{meta['date']}. {rounds} round(s); the two servers of a cell ran back to back, "
        f"which went first alternating per round; medians over rounds, ratios are medians of "
        f"per-round ratios (ours/0.14.0). Other load on the machine during the measured "
        f"windows: median {fmt(statistics.median(loads) if loads else None)}%, max "
        f"{fmt(max(loads) if loads else None)}% of one core (`other load %` below: CPU "
        f"that processes other than the server and the client used). Whole run: "
        f"{data['elapsed'] / 60:.1f} min. Command: `{meta['command']}`.\n"
    )
    out.append(
        "Ours serves only v1 (`PYNUMAFLOW_PROTOCOLS=v1`, sockets in `PYNUMAFLOW_RUN_DIR`); "
        "0.14.0 runs its own servers in its own virtualenv (its async ones under aiorun with "
        "uvloop, as it starts them; ours under aiorun without). The client reads the "
        "kind's server-info file, dials the socket it names, opens one bidi stream, sends "
        "the handshake and then the pre-encoded requests packed into DATA frames as large "
        f"as the server allows (`--framing {meta.get('framing', 'packed')}`; "
        "`benchmarks/README.md`). map kinds: the measured window is a burst of N requests "
        "sent at once (throughput, CPU); p50/p99 come from the paced phase after it on the "
        f"same stream ({meta.get('paced_s', '?')} s at the workload's rate, see below). "
        "Sink and batch map: batches of 500 + EOT, each answered before the next (p50/p99 "
        "per batch). Source read: read requests for 500 messages, each read to its EOT, "
        "every batch acked on the AckFn stream while the next is read (p50/p99 per batch). "
        "Reduce: one window, one stream.\n"
    )
    out.append(
        "| workload | ours vs 0.14.0 | ours /s | 0.14.0 /s | ratio | ours CPU µs/unit "
        "| 0.14.0 CPU µs/unit | CPU ratio 0.14.0/ours | ours p50 ms | 0.14.0 p50 ms "
        "| ours p99 ms | 0.14.0 p99 ms "
        "| p99 ratio | ours RSS MiB | 0.14.0 RSS MiB | client CPU % (max) | other load % "
        "| rounds |"
    )
    out.append(
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for w in workloads:
        for api in w.apis:
            o, g = _ok(recs, w.name, api, "ours"), v1_reference(recs, w, api)
            if not o and not g:
                reason = na.get((w.name, api, "ours")) or "no result"
                out.append(f"| {w.name} | {api}: n/a ({reason}) |" + " |" * 16)
                continue
            lat = w.rpc not in WINDOWED
            clients = [r["client_cpu_pct"] for r in o + g]
            unit = f"{w.unit}s" if not w.sleep_ms else "requests"
            out.append(
                f"| {w.name} ({unit}) | {v1_classes(w, api)} "
                f"| {fmt(median_of(o, 'throughput'))} | {fmt(median_of(g, 'throughput'))} "
                f"| {fmt(paired_ratio(o, g, 'throughput'), 2, 'x')} "
                f"| {fmt(median_of(o, 'server_cpu_per_unit_us'), 1)} "
                f"| {fmt(median_of(g, 'server_cpu_per_unit_us'), 1)} "
                f"| {fmt(paired_ratio(g, o, 'server_cpu_per_unit_us'), 2, 'x')} "
                f"| {fmt(median_of(o, 'p50_ms'), 2) if lat else '-'} "
                f"| {fmt(median_of(g, 'p50_ms'), 2) if lat else '-'} "
                f"| {fmt(median_of(o, 'p99_ms'), 2) if lat else '-'} "
                f"| {fmt(median_of(g, 'p99_ms'), 2) if lat else '-'} "
                f"| {fmt(paired_ratio(o, g, 'p99_ms'), 2, 'x') if lat else '-'} "
                f"| {fmt(median_of(o, 'rss_mib'), 1)} | {fmt(median_of(g, 'rss_mib'), 1)} "
                f"| {fmt(max(clients) if clients else None)} "
                f"| {fmt(median_of(o + g, 'other_cpu_pct'))} | {len(o)}/{len(g)} |"
            )
    paced = ", ".join(f"{w.name} {w.rate:g}/s" for w in workloads if w.rate and not w.sleep_ms)
    out.append(
        "\nUnits: map.v1 and sourcetransformer.v1 count requests (= echoed messages), map "
        "stream counts output messages (10 per request), source read the messages read, "
        "sink, batch map and reduce datums. "
        "CPU = the server's utime+stime (/proc/<pid>/stat) over the measured window / units. "
        "Latency of a request = from when the client queued it to when its answer (map stream: its "
        f"EOT) had been read, in the paced phase ({paced}); for the sink and batch map, per "
        "batch of 500. "
        "Peak RSS = VmHWM after the cell. Where 0.14.0 has no sync server (map stream, "
        "reduce) our sync cell is compared with its async one. The CPU ratio depends less on "
        "how much of the second core other work left free than the throughput ratio does "
        "(ours runs on one core; 0.14.0's grpcio threads use both when they can). The "
        "sleeping cell's CPU is 1-4 clock ticks (10 ms each): not a measurement.\n"
    )
    sleepers = [w for w in workloads if w.sleep_ms]
    for w in sleepers:
        for api in w.apis:
            o, g = _ok(recs, w.name, api, "ours"), v1_reference(recs, w, api)
            out.append(
                f"Concurrency ({w.name}, {api} handlers, all sent at once): ours "
                f"{fmt(median_of(o, 'seconds') and median_of(o, 'seconds') * 1e3)} ms, 0.14.0 "
                f"{fmt(median_of(g, 'seconds') and median_of(g, 'seconds') * 1e3)} ms.\n"
            )
    out.append("### v1 targets (issue 18)\n")
    out.append("| target | measured | limit | verdict |")
    out.append("|---|---:|---:|---|")
    checks = targets_v1(recs, workloads)
    out.extend(c.line() for c in checks)
    misses = [c for c in checks if c.verdict == "MISS"]
    out.append(
        f"\n{sum(c.verdict == 'PASS' for c in checks)} of {len(checks)} targets met"
        + (f"; missed: {', '.join(c.what for c in misses)}." if misses else ".")
    )
    return "\n".join(out) + "\n"


def targets_v1(recs: List[Dict[str, Any]], workloads: List[Workload]) -> List[Check]:
    checks: List[Check] = []
    for w in workloads:
        for api in w.apis:
            o, g = _ok(recs, w.name, api, "ours"), v1_reference(recs, w, api)
            label = f"{w.name}, {v1_classes(w, api)}"
            if w.sleep_ms:
                took = median_of(o, "seconds")
                checks.append(Check(
                    f"{label}: 500 requests done in", took and took * 1e3,
                    V1_SLEEP_LIMIT_S * 1e3, False, " ms",
                ))  # fmt: skip
                continue
            limit = 5.0 if w.rpc in ("sink", "reduce") else 3.0
            checks.append(
                Check(f"{label}: throughput", paired_ratio(o, g, "throughput"), limit, True)
            )
            if w.rpc in ("map", "mapt", "mapstream"):
                checks.append(Check(
                    f"{label}: server CPU per {w.unit}", median_of(o, "server_cpu_per_unit_us"),
                    V1_CPU_LIMIT_US, False, " µs",
                ))  # fmt: skip
                checks.append(
                    Check(
                        f"{label}: p99 at the paced load", paired_ratio(o, g, "p99_ms"), 1.0, False
                    )
                )
    return checks


def machine(args: argparse.Namespace) -> Dict[str, str]:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration": f"{args.duration:g}",
        "warmup": f"{args.warmup:g}",
        "stream_rounds": str(min(args.stream_rounds, args.rounds)),
        "command": args.command_label
        if args.suite == "legacy" or args.command_label != "nox -s bench"
        else "nox -s bench-v1",
        "stream_client": args.stream_client,
        "stream_datums": str(args.stream_datums),
        "suite": args.suite,
        "framing": args.framing,
        "paced_s": f"{args.paced_s:g}",
        "v1_requests": str(args.v1_requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.0, help="measured s per cell")
    parser.add_argument("--warmup", type=float, default=0.4)
    parser.add_argument(
        "--stream-rounds",
        type=int,
        default=1,
        help="rounds for ReduceFn/SinkFn (one 100k-datum stream is 15-25 s per cell here; "
        "3 rounds of them alone take ~10 minutes)",
    )
    parser.add_argument(
        "--stream-client",
        choices=("h2", "grpcio"),
        default="h2",
        help="client for MapStreamFn, ReduceFn and SinkFn: the lean h2 one (h2client.py) "
        "or grpcio's (which itself needs about a core on these workloads)",
    )
    parser.add_argument(
        "--stream-datums",
        type=int,
        default=100_000,
        help="datums per ReduceFn window and per SinkFn cell (smaller for a quick check)",
    )
    parser.add_argument(
        "--suite",
        choices=("legacy", "v1"),
        default="legacy",
        help="legacy: Numaflow 0.8-0.9 protocols vs pynumaflow 0.4.2; v1: Numaflow >= 1.4 "
        "protocols vs pynumaflow 0.14.0 (its own section of --results)",
    )
    parser.add_argument(
        "--v1-requests", type=int, default=20_000, help="v1 map kinds: requests per burst"
    )
    parser.add_argument("--paced-s", type=float, default=2.0, help="v1: paced phase, seconds")
    parser.add_argument(
        "--framing",
        choices=("packed", "per-message"),
        default="packed",
        help="v1: messages packed into large DATA frames (as Numaflow's Rust client) or one "
        "DATA frame per message (as grpc-go)",
    )
    parser.add_argument("--only", help="regex on workload names")
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument(
        "--original-python", help="python of a venv with pynumaflow 0.4.2 (v1: 0.14.0)"
    )
    parser.add_argument("--original-venv", help="create/reuse that venv here")
    parser.add_argument("--no-original", action="store_true")
    parser.add_argument("--results", help="write the markdown tables here")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--from-json", help="only summarise an earlier --json file")
    parser.add_argument("--tmp", default=None, help="where the sockets go (short path)")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s cells: a smoke run")
    parser.add_argument("--command-label", default="nox -s bench")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        meta = data["meta"]
        # The workload names of that run carry its stream size.
        args.stream_datums = int(meta.get("stream_datums", 100_000))
        args.suite = meta.get("suite", "legacy")
        args.v1_requests = int(meta.get("v1_requests", 20_000))
    if args.suite == "v1":
        workloads = v1_workloads(args.v1_requests, args.stream_datums)
    else:
        workloads = default_workloads(args.stream_datums)
    if args.only:
        workloads = [w for w in workloads if re.search(args.only, w.name)]
    if not args.from_json:
        if args.no_original:
            args.original_python = None
        elif not args.original_python:
            if not args.original_venv:
                parser.error("give --original-venv DIR, --original-python PATH or --no-original")
            sys.path.insert(0, str(HERE))
            import original_env

            args.original_python = original_env.ensure(
                Path(args.original_venv).resolve(), REFERENCE[args.suite]
            )
        meta = machine(args)
        print(
            f"ours: {args.ours_python}\n{REFERENCE[args.suite]}: {args.original_python}\n"
            f"{meta['nproc']} CPUs, {meta['cpu']}, Python {meta['python']}",
            flush=True,
        )
        data = run_all(args, workloads)
        data["meta"] = meta
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1))
    summary = summarise_v1 if args.suite == "v1" else summarise
    report = summary(data, workloads, meta)
    print("\n" + report)
    if args.results:
        write_results(Path(args.results), report, args.suite)


REFERENCE = {"legacy": "0.4.2", "v1": "0.14.0"}
V1_BEGIN = "<!-- v1 section: written by `run.py --suite v1`, kept by the legacy suite -->"
V1_END = "<!-- end of the v1 section -->"


def write_results(path: Path, report: str, suite: str) -> None:
    """The legacy suite writes the file, the v1 suite its own section; each keeps the other's."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head, v1 = text, ""
    if V1_BEGIN in text:
        head, rest = text.split(V1_BEGIN, 1)
        v1 = rest.split(V1_END, 1)[0].strip("\n")
    if suite == "v1":
        v1 = report.strip("\n")
    else:
        head = report
    text = head.rstrip("\n") + "\n"
    if v1:
        text += f"\n{V1_BEGIN}\n\n{v1}\n\n{V1_END}\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
