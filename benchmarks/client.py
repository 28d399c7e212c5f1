"""The load client: one process, one HTTP/2 connection (as the platform uses) over the
server's Unix socket.

Started by run.py with a JSON spec; prints one JSON result line. It reads the server's
CPU time from /proc/<pid>/stat over exactly the measured window, and its own CPU time,
so the runner can show whether the client was the bottleneck.

Each workload kind is one `drive_*` function registered in DRIVERS (grpcio; coroutines run
on a grpc.aio channel). The streaming ones also have a driver in H2_DRIVERS, on the lean
h2 client (h2client.py), used unless the spec says `"stream_client": "grpcio"`. Adding a
workload kind means writing its driver(s) and its handler in server_udf.py.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import grpc
import h2client
from google.protobuf.timestamp_pb2 import Timestamp

MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
    # One HTTP/2 connection for every call, as the platform does.
    ("grpc.use_local_subchannel_pool", 1),
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_stubs(stubs_dir: str) -> Tuple[Any, Any, Any, Any]:
    sys.path.insert(0, stubs_dir)
    fn_pb2 = importlib.import_module("function.v1.udfunction_pb2")
    fn_grpc = importlib.import_module("function.v1.udfunction_pb2_grpc")
    sink_pb2 = importlib.import_module("sink.v1.udsink_pb2")
    sink_grpc = importlib.import_module("sink.v1.udsink_pb2_grpc")
    return fn_pb2, fn_grpc, sink_pb2, sink_grpc


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class Window:
    """The measured window: marks, and what the server and the client spent inside it."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.measuring = False
        self.stopping = False
        self.t_start = self.t_stop = self.t_end = 0.0
        self.done_before_stop = 0  # completions (calls or items) in [t_start, t_stop]
        self.done_total = 0  # completions in [t_start, t_end] (after the drain)
        self.items = 0  # output items received in the window (map stream)
        self.latencies: List[float] = []
        self.other_cpu_pct = 0.0
        self.errors: Dict[str, int] = {}
        self.first_error = ""

    def begin(self) -> None:
        self.busy0 = machine_busy()
        self.server_cpu0 = proc_cpu(self.server_pid)
        self.client_cpu0 = self_cpu()
        self.t_start = time.perf_counter()
        self.measuring = True

    def stop(self) -> None:
        self.t_stop = time.perf_counter()
        self.stopping = True

    def end(self) -> None:
        self.t_end = time.perf_counter()
        self.server_cpu = proc_cpu(self.server_pid) - self.server_cpu0
        self.client_cpu = self_cpu() - self.client_cpu0
        busy = machine_busy() - self.busy0
        # CPU the rest of the machine used meanwhile (other processes): noise indicator.
        self.other_cpu_pct = (
            100.0
            * max(0.0, busy - self.server_cpu - self.client_cpu)
            / max(1e-9, self.t_end - self.t_start)
        )

    def empty(self) -> None:
        """Close a window in which nothing could be measured (the RPC was refused)."""
        self.begin()
        self.stop()
        self.end()

    def record(self, started: float, n_items: int = 1) -> None:
        if not self.measuring:
            return
        now = time.perf_counter()
        self.done_total += 1
        self.items += n_items
        if not self.stopping:
            self.done_before_stop += 1
            # Every call completed inside the window, even one started during warm-up:
            # at 500 in flight a call can take longer than the whole window.
            self.latencies.append(now - started)

    def error(self, err: BaseException) -> None:
        if isinstance(err, grpc.RpcError):
            self.fail(err.code().name, err.details())
        else:
            self.fail(type(err).__name__)

    def fail(self, key: str, details: Optional[str] = None) -> None:
        """Count one error under `key` (a gRPC status name or a check's name)."""
        self.errors[key] = self.errors.get(key, 0) + 1
        if details is not None and not self.first_error:
            self.first_error = f"{key}: {details}"

    def result(self, unit: str) -> Dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

        measured = self.t_stop - self.t_start
        return {
            "unit": unit,
            "completed": self.done_total,
            "items": self.items,
            "seconds": measured,
            "throughput": self.done_before_stop / measured if measured else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "server_cpu_s": self.server_cpu,
            "server_cpu_per_unit_us": self.server_cpu / max(1, self.done_total) * 1e6,
            "client_cpu_s": self.client_cpu,
            "client_cpu_pct": 100.0 * self.client_cpu / (self.t_end - self.t_start),
            "errors": self.errors,
            "first_error": self.first_error,
            "other_cpu_pct": self.other_cpu_pct,
        }


async def closed_loop(
    window: Window, inflight: int, warmup: float, duration: float, call: Callable[[], Any]
) -> None:
    """`inflight` workers each calling back to back; warm up, then measure `duration` s."""

    async def worker() -> None:
        while not window.stopping:
            started = time.perf_counter()
            try:
                n_items = await call()
            except grpc.RpcError as err:
                window.error(err)
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    window.stopping = True  # the server does not do this RPC: stop early
                    return
                continue
            window.record(started, n_items)

    tasks = [asyncio.ensure_future(worker()) for _ in range(inflight)]
    try:
        await asyncio.wait(tasks, timeout=warmup)
        if not window.stopping:
            window.begin()
            await asyncio.wait(tasks, timeout=duration)
            window.stop()
        await asyncio.gather(*tasks)
        if window.measuring:
            window.end()
        else:  # stopped during warm-up (UNIMPLEMENTED)
            window.empty()
    finally:
        for task in tasks:
            task.cancel()


def datum_request(fn_pb2: Any, value: bytes, keys: List[str], i: int = 0) -> Any:
    now = time.time()
    return fn_pb2.DatumRequest(
        keys=keys,
        value=value,
        event_time=fn_pb2.EventTime(event_time=timestamp(now)),
        watermark=fn_pb2.Watermark(watermark=timestamp(now - 1)),
        metadata=fn_pb2.Metadata(id=f"id-{i}", num_delivered=1),
    )


async def drive_unary(spec: Dict[str, Any], channel: Any, stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    fn_pb2, fn_grpc, _, _ = stubs
    stub = fn_grpc.UserDefinedFunctionStub(channel)
    method = {"map": stub.MapFn, "mapt": stub.MapTFn}[spec["rpc"]]
    request = datum_request(fn_pb2, b"x" * spec["size"], ["key"])

    async def call() -> int:
        await method(request)
        return 1

    window = Window(spec["server_pid"])
    await closed_loop(window, spec["inflight"], spec["warmup"], spec["duration"], call)
    return window.result("call")


async def drive_map_stream(
    spec: Dict[str, Any], channel: Any, stubs: Tuple[Any, ...]
) -> Dict[str, Any]:
    fn_pb2, fn_grpc, _, _ = stubs
    stub = fn_grpc.UserDefinedFunctionStub(channel)
    request = datum_request(fn_pb2, b"x" * spec["size"], ["key"])

    async def call() -> int:
        n = 0
        async for _ in stub.MapStreamFn(request):
            n += 1
        return n

    window = Window(spec["server_pid"])
    await closed_loop(window, spec["inflight"], spec["warmup"], spec["duration"], call)
    return window.result("call")


REDUCE_METADATA = (
    ("x-numaflow-win-start-time", "60000"),
    ("x-numaflow-win-end-time", "120000"),
)
REDUCE_PATH = "/function.v1.UserDefinedFunction/ReduceFn"
SINK_PATH = "/sink.v1.UserDefinedSink/SinkFn"
MAP_STREAM_PATH = "/function.v1.UserDefinedFunction/MapStreamFn"
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def reduce_requests(fn_pb2: Any, spec: Dict[str, Any], n: int) -> List[Any]:
    """`n` datums over `spec["keys"]` keys, interleaved (datum i has key k{i % keys})."""
    value, nkeys = b"x" * spec["size"], spec["keys"]
    return [datum_request(fn_pb2, value, [f"k{i % nkeys}"], i) for i in range(n)]


def sink_batch(sink_pb2: Any, spec: Dict[str, Any]) -> List[Any]:
    """One SinkFn batch; every call of a cell sends this same batch."""
    now = time.time()
    value = b"x" * spec["size"]
    return [
        sink_pb2.DatumRequest(
            keys=["key"],
            value=value,
            id=f"id-{i}",
            event_time=sink_pb2.EventTime(event_time=timestamp(now)),
            watermark=sink_pb2.Watermark(watermark=timestamp(now - 1)),
        )
        for i in range(spec["batch"])
    ]


def reduce_result(window: Window, spec: Dict[str, Any], responses: List[Any]) -> Dict[str, Any]:
    """The ReduceFn result, checked: one group per key, each counting that key's datums."""
    nkeys, datums = spec["keys"], spec["datums"]
    groups = sum(len(r.elements) > 0 for r in responses)
    counts: Dict[str, int] = {}
    for response in responses:
        for element in response.elements:
            key = element.keys[0] if element.keys else ""
            counts[key] = counts.get(key, 0) + int(element.value)
    expected = {f"k{k}": datums // nkeys + (k < datums % nkeys) for k in range(min(nkeys, datums))}
    window.done_before_stop = window.done_total = datums
    window.items = groups
    result = window.result("datum")
    result["window_s"] = window.latencies[0]
    result["key_groups"] = groups
    if groups != len(expected):
        result["errors"]["WRONG_GROUP_COUNT"] = groups
    wrong = sum(counts.get(key) != n for key, n in expected.items()) + len(counts.keys() - expected)
    if wrong:
        result["errors"]["WRONG_KEY_COUNTS"] = wrong
    return result


def check_sink(response: Any, batch: List[Any]) -> Optional[str]:
    """Why a SinkFn response does not answer `batch` (one success per datum id), or None."""
    if len(response.responses) != len(batch):
        return f"{len(response.responses)} responses for {len(batch)} datums"
    if sorted(r.id for r in response.responses) != sorted(d.id for d in batch):
        return "response ids differ from the datum ids"
    if not all(r.success for r in response.responses):
        return "a datum failed"
    return None


def sink_result(window: Window) -> Dict[str, Any]:
    result = window.result("datum")
    # Units are datums: a batch is one "call" for latency, `batch` datums for the rest.
    result["throughput"] = window.items / result["seconds"]
    result["completed"] = window.items
    result["server_cpu_per_unit_us"] = window.server_cpu / max(1, window.items) * 1e6
    return result


# --- grpcio streaming drivers (--stream-client grpcio) ---------------------------------


def sync_channel(spec: Dict[str, Any]) -> Any:
    """A blocking grpcio channel: its request-iterator streaming runs in grpc's own thread,
    about twice as fast per streamed message as grpc.aio's (measured)."""
    channel = grpc.insecure_channel(f"unix://{spec['sock']}", options=CHANNEL_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel


def drive_reduce(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    """One window of `datums` datums over `keys` keys, interleaved, as one ReduceFn stream."""
    fn_pb2, fn_grpc, _, _ = stubs
    window = Window(spec["server_pid"])
    with sync_channel(spec) as channel:
        stub = fn_grpc.UserDefinedFunctionStub(channel)
        warm = reduce_requests(fn_pb2, spec, min(spec["keys"] * 2, 2000))
        try:  # warm-up window
            list(stub.ReduceFn(iter(warm), metadata=REDUCE_METADATA))
        except grpc.RpcError as err:
            window.error(err)
            window.empty()
            return window.result("datum")
        reqs = reduce_requests(fn_pb2, spec, spec["datums"])
        window.begin()
        started = time.perf_counter()
        responses = list(stub.ReduceFn(iter(reqs), metadata=REDUCE_METADATA))
        window.stop()
        window.end()
    window.latencies.append(time.perf_counter() - started)
    return reduce_result(window, spec, responses)


def drive_sink(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    """`total` datums in client-streamed batches of `batch`, one batch at a time."""
    _, _, sink_pb2, sink_grpc = stubs
    batch = sink_batch(sink_pb2, spec)
    window = Window(spec["server_pid"])
    with sync_channel(spec) as channel:
        stub = sink_grpc.UserDefinedSinkStub(channel)

        def call() -> int:
            response = stub.SinkFn(iter(batch))
            wrong = check_sink(response, batch)
            if wrong:
                raise RuntimeError(wrong)
            return len(batch)

        try:
            for _ in range(3):
                call()  # warm-up
        except grpc.RpcError as err:
            window.error(err)
            window.empty()
            return window.result("datum")
        window.begin()
        for _ in range(spec["total"] // spec["batch"]):
            started = time.perf_counter()
            window.record(started, call())
        window.stop()
        window.end()
    return sink_result(window)


# --- lean h2 streaming drivers (--stream-client h2, the default; see h2client.py) ------


def h2_fail(window: Window, call: h2client.Call) -> None:
    window.fail(STATUS_NAMES.get(call.status or 0, f"STATUS_{call.status}"), call.message)


def framed(requests: List[Any]) -> List[bytes]:
    """Protobuf requests, serialized and gRPC-framed (done before a measured window)."""
    return [h2client.frame(r.SerializeToString()) for r in requests]


def drive_reduce_h2(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    """drive_reduce's window, its requests serialized and framed before the window opens."""
    fn_pb2 = stubs[0]
    warm = framed(reduce_requests(fn_pb2, spec, min(spec["keys"] * 2, 2000)))
    window = Window(spec["server_pid"])
    with h2client.Channel(spec["sock"]) as channel:
        call = channel.call(REDUCE_PATH, warm, REDUCE_METADATA)
        if not call.ok:
            h2_fail(window, call)
            window.empty()
            return window.result("datum")
        reqs = framed(reduce_requests(fn_pb2, spec, spec["datums"]))
        window.begin()
        call = channel.call(REDUCE_PATH, reqs, REDUCE_METADATA)
        window.stop()
        window.end()
    window.latencies.append(call.finished - call.started)
    if not call.ok:
        h2_fail(window, call)
    responses = [fn_pb2.DatumResponseList.FromString(m) for m in call.responses()]
    return reduce_result(window, spec, responses)


def drive_sink_h2(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    """drive_sink's batches, serialized and framed once; responses checked after the window."""
    sink_pb2 = stubs[2]
    batch = sink_batch(sink_pb2, spec)
    requests = framed(batch)
    window = Window(spec["server_pid"])
    with h2client.Channel(spec["sock"]) as channel:
        for _ in range(3):  # warm-up
            call = channel.call(SINK_PATH, requests)
            if not call.ok:
                h2_fail(window, call)
                window.empty()
                return window.result("datum")
        calls = []
        window.begin()
        for _ in range(spec["total"] // spec["batch"]):
            call = channel.call(SINK_PATH, requests)
            calls.append(call)
            if call.ok:
                window.record(call.started, len(batch))
        window.stop()
        window.end()
    for call in calls:
        if not call.ok:
            h2_fail(window, call)
            continue
        messages = call.responses()
        wrong = f"{len(messages)} response messages" if len(messages) != 1 else None
        wrong = wrong or check_sink(sink_pb2.ResponseList.FromString(messages[0]), batch)
        if wrong:
            window.fail("WRONG_SINK_RESPONSE", wrong)
    return sink_result(window)


def drive_map_stream_h2(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    """drive_map_stream's closed loop (`inflight` calls, each 1 request -> `outputs` out)."""
    request = framed([datum_request(stubs[0], b"x" * spec["size"], ["key"])])
    window = Window(spec["server_pid"])
    wrong_counts: List[int] = []
    with h2client.Channel(spec["sock"]) as channel:

        def on_done(call: h2client.Call) -> None:
            if call.ok:
                n = len(call.responses())
                window.record(call.started, n)
                if n != spec["outputs"]:
                    wrong_counts.append(n)
            else:
                h2_fail(window, call)
                if call.status == grpc.StatusCode.UNIMPLEMENTED.value[0]:
                    window.stopping = True  # the server does not do this RPC: stop early
            if not window.stopping and not channel.closed:
                channel.start(MAP_STREAM_PATH, request, on_done=on_done)

        for _ in range(spec["inflight"]):
            channel.start(MAP_STREAM_PATH, request, on_done=on_done)
        warm_end = time.perf_counter() + spec["warmup"]
        channel.run_until(lambda: window.stopping or time.perf_counter() >= warm_end, 0.005)
        if not window.stopping:
            window.begin()
            end = window.t_start + spec["duration"]
            channel.run_until(lambda: time.perf_counter() >= end, 0.005)
            window.stop()
        channel.run_until(lambda: not channel.calls)  # drain
        if window.measuring:
            window.end()
        else:  # stopped during warm-up (UNIMPLEMENTED)
            window.empty()
    for n in wrong_counts:
        window.fail("WRONG_OUTPUT_COUNT", f"{n} outputs, expected {spec['outputs']}")
    return window.result("call")


# --- v1 drivers (Numaflow >= 1.4: one long bidi stream, h2client.RawChannel) -----------

END = "U+005C__END__"
# rpc -> (server-info file, socket, bidi path); map's socket follows MAP_MODE, as the
# platform picks it (spec: wire-protocol-v1.md section 1.2).
V1_SERVICES = {
    "map": ("mapper-server-info", "map.sock", "/map.v1.Map/MapFn"),
    "mapstream": ("mapper-server-info", "mapstream.sock", "/map.v1.Map/MapFn"),
    "mapt": (
        "sourcetransformer-server-info",
        "sourcetransform.sock",
        "/sourcetransformer.v1.SourceTransform/SourceTransformFn",
    ),
    "reduce": ("reducer-server-info", "reduce.sock", "/reduce.v1.Reduce/ReduceFn"),
    "reducestream": (
        "reducestreamer-server-info",
        "reducestream.sock",
        "/reduce.v1.Reduce/ReduceFn",
    ),
    "accumulator": (
        "accumulator-server-info",
        "accumulator.sock",
        "/accumulator.v1.Accumulator/AccumulateFn",
    ),
    "sink": ("sinker-server-info", "sink.sock", "/sink.v1.Sink/SinkFn"),
    "source": ("sourcer-server-info", "source.sock", "/source.v1.Source/ReadFn"),
    "batchmap": ("mapper-server-info", "batchmap.sock", "/map.v1.Map/MapFn"),
}
MAP_MODE_SOCKETS = {
    "unary-map": "map.sock",
    "stream-map": "mapstream.sock",
    "batch-map": "batchmap.sock",
}


def v1_socket(run_dir: str, rpc: str) -> str:
    """The socket the platform dials: the kind's server-info file, for map its MAP_MODE."""
    info_name, sock, _ = V1_SERVICES[rpc]
    text = (Path(run_dir) / info_name).read_text(encoding="utf-8")
    info = json.loads(text[: -len(END)])
    if rpc in ("map", "mapstream", "batchmap"):
        mode = info.get("metadata", {}).get("MAP_MODE") or "unary-map"
        if MAP_MODE_SOCKETS.get(mode) != sock:
            raise RuntimeError(f"{info_name} announces MAP_MODE {mode!r}, not for {rpc}")
    return str(Path(run_dir) / sock)


def load_v1(stubs_dir: str) -> Dict[str, Any]:
    """The v1 message modules generated from protos/ (by run.make_stubs)."""
    if stubs_dir not in sys.path:
        sys.path.insert(0, stubs_dir)
    names = {
        "map": "map.v1.map_pb2",
        "mapt": "sourcetransformer.v1.transform_pb2",
        "reduce": "reduce.v1.reduce_pb2",
        "accumulator": "accumulator.v1.accumulator_pb2",
        "sink": "sink.v1.sink_pb2",
        "source": "source.v1.source_pb2",
    }
    return {rpc: importlib.import_module(name) for rpc, name in names.items()}


class V1Map:
    """Requests and answer checks of map.v1 (unary and stream) and sourcetransformer.v1.

    Every answer is decoded as it arrives: an id answered twice, an unknown id, a wrong
    number of results, a wrong payload, or an id never answered is an error of the cell.
    """

    def __init__(self, spec: Dict[str, Any], pb2: Dict[str, Any]) -> None:
        self.rpc = spec["rpc"]
        self.stream = self.rpc == "mapstream"
        self.outputs = spec["outputs"] if self.stream else 1
        self.value = b"x" * spec["size"]
        now = time.time()
        times = {"event_time": timestamp(now), "watermark": timestamp(now - 1)}
        if self.rpc == "mapt":
            pb = pb2["mapt"]
            self.response = pb.SourceTransformResponse
            self.template = pb.SourceTransformRequest(
                request=pb.SourceTransformRequest.Request(keys=["key"], value=self.value, **times)
            )
            self.template_id = self.template.request
            hello = pb.SourceTransformRequest(handshake=pb.Handshake(sot=True))
        else:
            pb = pb2["map"]
            self.response = pb.MapResponse
            self.template = pb.MapRequest(
                request=pb.MapRequest.Request(keys=["key"], value=self.value, **times)
            )
            self.template_id = self.template
            hello = pb.MapRequest(handshake=pb.Handshake(sot=True))
        self.hello = h2client.frame(hello.SerializeToString())
        self.done_at: Dict[str, float] = {}  # id -> when its answer was complete
        self.results: Dict[str, int] = {}  # id -> results received
        self.handshake = False
        self.errors: Dict[str, int] = {}
        self.first_error = ""

    def requests(self, prefix: str, n: int) -> Tuple[List[str], List[bytes]]:
        """`n` framed requests with ids prefix0.. (serialized before any window opens)."""
        ids, frames = [], []
        for i in range(n):
            rid = f"{prefix}{i}"
            self.template_id.id = rid
            ids.append(rid)
            frames.append(h2client.frame(self.template.SerializeToString()))
        return ids, frames

    def error(self, key: str, details: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1
        self.first_error = self.first_error or f"{key}: {details}"

    def feed(self, messages: List[bytes]) -> int:
        """Check the answers that just arrived; return how many ids are answered."""
        now = time.perf_counter()
        for message in messages:
            r = self.response.FromString(message)
            if r.HasField("handshake"):
                if self.handshake or self.results:
                    self.error("EXTRA_HANDSHAKE", "a handshake answer after the first")
                self.handshake = True
                continue
            if not self.handshake:
                self.error("NO_HANDSHAKE_FIRST", "the first answer is not the handshake")
            rid = r.id
            if rid in self.done_at:
                self.error("DUPLICATE_ANSWER", f"id {rid} answered again")
                continue
            for result in r.results:
                if result.value != self.value:
                    self.error("WRONG_PAYLOAD", f"id {rid}: {result.value[:20]!r}")
                if self.rpc == "mapt" and not result.HasField("event_time"):
                    self.error("NO_EVENT_TIME", f"id {rid}: a result without event_time")
            self.results[rid] = self.results.get(rid, 0) + len(r.results)
            if not self.stream or (r.HasField("status") and r.status.eot):
                self.done_at[rid] = now
        return len(self.done_at)

    def check(self, sent: List[str]) -> None:
        """After the stream: every id sent answered once with its number of results."""
        expected = set(sent)
        for rid in sent:
            if rid not in self.done_at:
                self.error("MISSING_ANSWER", f"id {rid} never answered")
            elif self.results.get(rid, 0) != self.outputs:
                self.error(
                    "WRONG_OUTPUT_COUNT", f"id {rid}: {self.results.get(rid)} != {self.outputs}"
                )
        for rid in self.done_at.keys() - expected:
            self.error("UNKNOWN_ID", f"answer for id {rid} never sent")


def v1_result(window: Window, units: int, errors: Dict[str, int], first: str) -> Dict[str, Any]:
    """Window.result, with `units` (messages, outputs or datums) done in the window."""
    window.done_before_stop = window.done_total = units
    result = window.result("message")
    for key, n in errors.items():
        result["errors"][key] = result["errors"].get(key, 0) + n
    result["first_error"] = result["first_error"] or first
    return result


def drive_map_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """map.v1 (unary or stream) and sourcetransformer.v1 on one long bidi stream.

    The handshake; `warm` requests (not measured); then the measured window: `requests`
    requests sent at once, pre-encoded, while the answers are read; then the paced phase
    (latency): `rate` requests/s for `paced_s` s, each sent when due (the loop wakes at
    least every ms), its latency from that moment to the moment its answer (for map
    stream: its EOT) was read. Then the half-close, and the call must end OK.
    """
    m = V1Map(spec, pb2)
    packed = spec.get("framing", "packed") == "packed"
    warm_ids, warm = m.requests("w", spec["warm"])
    ids, frames = m.requests("t", spec["requests"])
    paced_n = int(spec["rate"] * spec["paced_s"])
    paced_ids, paced = m.requests("p", paced_n)
    window = Window(spec["server_pid"])
    with h2client.RawChannel(v1_socket(spec["run_dir"], spec["rpc"])) as ch:
        call = ch.open(V1_SERVICES[spec["rpc"]][2])

        def feed() -> int:
            return m.feed(call.take())

        ch.send(call, [m.hello], packed)
        ch.run_until(lambda: (feed() >= 0 and m.handshake) or call.done)
        target = len(warm)
        ch.send(call, warm, packed)
        ch.run_until(lambda: feed() >= target or call.done)
        window.begin()
        target += len(frames)
        ch.send(call, frames, packed)
        ch.run_until(lambda: feed() >= target or call.done)
        window.stop()
        window.end()
        sent_at: List[float] = []
        target += paced_n
        t0 = time.perf_counter()

        def step() -> bool:
            now = time.perf_counter()
            due = min(paced_n, int((now - t0) * spec["rate"]) + 1)
            if due > len(sent_at):
                ch.send(call, paced[len(sent_at) : due], packed)
                sent_at.extend([now] * (due - len(sent_at)))
            return (feed() >= target and len(sent_at) == paced_n) or call.done

        if paced_n:
            ch.run_until(step, 0.001)
        ch.end(call)
        ch.run_until(lambda: feed() >= 0 and call.done)
    if not call.ok:
        h2_fail(window, call)
    m.check(warm_ids + ids + paced_ids)
    window.latencies = [
        m.done_at[rid] - t for rid, t in zip(paced_ids, sent_at, strict=False) if rid in m.done_at
    ]
    result = v1_result(window, len(frames) * m.outputs, m.errors, m.first_error)
    result["requests"] = len(frames)
    return result


def drive_sink_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """sink.v1: the handshake, then batches of `batch` datums + EOT, one at a time (the
    platform waits for a batch's EOT before the next); each batch's answer checked (one
    SUCCESS per id, then the EOT); latency per batch."""
    pb = pb2["sink"]
    now = time.time()
    request = pb.SinkRequest(
        request=pb.SinkRequest.Request(
            keys=["key"],
            value=b"x" * spec["size"],
            event_time=timestamp(now),
            watermark=timestamp(now - 1),
        )
    )

    def set_id(rid: str) -> None:
        request.request.id = rid

    def answers(message: bytes) -> Tuple[Any, List[Tuple[str, int]]]:
        r = pb.SinkResponse.FromString(message)
        return r, [(res.id, res.status) for res in r.results]  # SUCCESS is 0

    return _drive_batches(spec, "sink", pb, pb.SinkRequest, request, set_id, answers)


def drive_batch_map_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """map.v1 batch mode: as sink.v1, each id answered once with its value echoed."""
    pb = pb2["map"]
    now = time.time()
    value = b"x" * spec["size"]
    request = pb.MapRequest(
        request=pb.MapRequest.Request(
            keys=["key"], value=value, event_time=timestamp(now), watermark=timestamp(now - 1)
        )
    )

    def set_id(rid: str) -> None:
        request.id = rid

    def answers(message: bytes) -> Tuple[Any, List[Tuple[str, int]]]:
        r = pb.MapResponse.FromString(message)
        if not r.id:
            return r, []
        ok = len(r.results) == 1 and r.results[0].value == value
        return r, [(r.id, 0 if ok else 1)]

    return _drive_batches(spec, "batchmap", pb, pb.MapRequest, request, set_id, answers)


def _drive_batches(
    spec: Dict[str, Any],
    rpc: str,
    pb: Any,
    request_type: Any,
    request: Any,
    set_id: Callable[[str], None],
    answers: Callable[[bytes], Tuple[Any, List[Tuple[str, int]]]],
) -> Dict[str, Any]:
    """The batch conversation sink.v1 and map.v1 batch mode share: the handshake, then
    batches of `batch` requests + EOT, each answered (every id once with outcome 0, then
    the EOT) before the next is sent, as the platform does; latency per batch."""
    packed = spec.get("framing", "packed") == "packed"
    eot = h2client.frame(request_type(status=pb.TransmissionStatus(eot=True)).SerializeToString())
    hello = h2client.frame(request_type(handshake=pb.Handshake(sot=True)).SerializeToString())
    n_batches = spec["total"] // spec["batch"]
    batches: List[Tuple[List[str], List[bytes]]] = []
    for b in range(3 + n_batches):  # 3 warm-up batches first
        ids, frames = [], []
        for i in range(spec["batch"]):
            set_id(rid := f"{b}-{i}")
            ids.append(rid)
            frames.append(h2client.frame(request.SerializeToString()))
        batches.append((ids, [*frames, eot]))
    window = Window(spec["server_pid"])
    got: Dict[str, int] = {}
    state = {"eots": 0, "handshake": 0}

    def feed(call: h2client.RawCall) -> int:
        for message in call.take():
            r, outcomes = answers(message)
            if r.HasField("handshake"):
                state["handshake"] += 1
                continue
            for rid, outcome in outcomes:
                if rid in got:
                    window.fail("WRONG_BATCH_RESPONSE", f"id {rid} answered twice")
                got[rid] = outcome
            if r.HasField("status") and r.status.eot:
                state["eots"] += 1
        return state["eots"]

    with h2client.RawChannel(v1_socket(spec["run_dir"], rpc)) as ch:
        call = ch.open(V1_SERVICES[rpc][2])
        ch.send(call, [hello], packed)
        ch.run_until(lambda: (feed(call) >= 0 and state["handshake"] > 0) or call.done)
        for b, (ids, frames) in enumerate(batches):
            if b == 3:
                window.begin()
            started = time.perf_counter()
            ch.send(call, frames, packed)
            ch.run_until(lambda: feed(call) > b or call.done)  # noqa: B023 - used at once
            if call.done:
                break
            if b >= 3:
                window.latencies.append(time.perf_counter() - started)
            if sorted(got) != sorted(ids) or any(got.values()):
                window.fail("WRONG_BATCH_RESPONSE", f"batch {b}: wrong ids or outcomes")
            got.clear()
        window.stop()
        window.end()
        ch.end(call)
        ch.run_until(lambda: feed(call) >= 0 and call.done)
    if not call.ok:
        h2_fail(window, call)
    if state["handshake"] != 1:
        window.fail("WRONG_HANDSHAKE", f"{state['handshake']} handshake answers")
    return v1_result(window, n_batches * spec["batch"], {}, "")


def one_stream(
    spec: Dict[str, Any], service: str, warm: List[bytes], frames: List[bytes], window: Window
) -> Optional[List[bytes]]:
    """A warm-up stream, then the measured one: each sent whole, half-closed, read to its
    end; the measured stream's messages (None: the warm-up failed, recorded in window)."""
    packed = spec.get("framing", "packed") == "packed"
    with h2client.RawChannel(v1_socket(spec["run_dir"], spec["rpc"])) as ch:
        call = ch.open(service)
        ch.send(call, warm, packed)
        ch.end(call)
        ch.run_until(lambda: call.done)
        call.take()
        if not call.ok:
            h2_fail(window, call)
            window.empty()
            return None
        window.begin()
        call = ch.open(service)
        ch.send(call, frames, packed)
        ch.end(call)
        ch.run_until(lambda: call.done)
        window.stop()
        window.end()
    window.latencies.append(window.t_stop - window.t_start)
    if not call.ok:
        h2_fail(window, call)
    return call.take()  # type: ignore[no-any-return]


def drive_reduce_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """reduce.v1: one stream per window (OPEN, then APPEND), half-closed as the platform
    closes a fixed window; checked: one result per key counting its datums, each with the
    window, then one EOF. The same for reduce stream (its own socket)."""
    pb = pb2["reduce"]
    service = V1_SERVICES[spec["rpc"]][2]
    win = pb.Window(start=timestamp(60), end=timestamp(120), slot="0")
    now = time.time()
    value, nkeys = b"x" * spec["size"], spec["keys"]
    op = pb.ReduceRequest.WindowOperation

    def requests(n: int) -> List[bytes]:
        out = []
        for i in range(n):
            r = pb.ReduceRequest(
                payload=pb.ReduceRequest.Payload(
                    keys=[f"k{i % nkeys}"],
                    value=value,
                    event_time=timestamp(now),
                    watermark=timestamp(now - 1),
                ),
                operation=op(event=op.OPEN if i == 0 else op.APPEND, windows=[win]),
            )
            out.append(h2client.frame(r.SerializeToString()))
        return out

    window = Window(spec["server_pid"])
    messages = one_stream(
        spec, service, requests(min(nkeys * 2, 2000)), requests(spec["datums"]), window
    )
    if messages is None:
        return window.result("datum")
    counts: Dict[str, int] = {}
    responses = [pb.ReduceResponse.FromString(m) for m in messages]
    for r in responses[:-1]:
        if r.EOF or r.window != win:
            window.fail("WRONG_REDUCE_RESPONSE", "an early EOF or a wrong window")
        key = r.result.keys[0] if r.result.keys else ""
        counts[key] = counts.get(key, 0) + int(r.result.value)
    if not responses or not responses[-1].EOF:
        window.fail("WRONG_REDUCE_RESPONSE", "no EOF at the end")
    n = spec["datums"]
    expected = {f"k{k}": n // nkeys + (k < n % nkeys) for k in range(min(nkeys, n))}
    if counts != expected or len(responses) != len(expected) + 1:
        window.fail("WRONG_KEY_COUNTS", f"{len(responses)} responses, counts {counts}")
    return v1_result(window, n, {}, "")


def drive_accumulator_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """accumulator.v1: one stream for all keys (OPEN a key's first datum, APPEND the rest),
    then a CLOSE per key and the half-close; checked: every datum passed on once (its id
    echoed), then one EOF per key echoing its CLOSE's window."""
    pb = pb2["accumulator"]
    now = time.time()
    value, nkeys = b"x" * spec["size"], spec["keys"]
    op = pb.AccumulatorRequest.WindowOperation

    def window(k: int) -> Any:
        return pb.KeyedWindow(start=timestamp(now), end=timestamp(now + 60), keys=[f"k{k}"])

    def requests(n: int) -> List[bytes]:
        out = []
        for i in range(n):
            k = i % nkeys
            r = pb.AccumulatorRequest(
                payload=pb.Payload(
                    keys=[f"k{k}"],
                    value=value,
                    event_time=timestamp(now),
                    watermark=timestamp(now - 1),
                    id=str(i),
                ),
                operation=op(event=op.OPEN if i < nkeys else op.APPEND, keyedWindow=window(k)),
            )
            out.append(h2client.frame(r.SerializeToString()))
        for k in range(min(nkeys, n)):
            close = pb.AccumulatorRequest(operation=op(event=op.CLOSE, keyedWindow=window(k)))
            out.append(h2client.frame(close.SerializeToString()))
        return out

    window_ = Window(spec["server_pid"])
    service = V1_SERVICES["accumulator"][2]
    messages = one_stream(
        spec, service, requests(min(nkeys * 2, 2000)), requests(spec["datums"]), window_
    )
    if messages is None:
        return window_.result("datum")
    n = spec["datums"]
    responses = [pb.AccumulatorResponse.FromString(m) for m in messages]
    ids = sorted(int(r.payload.id) for r in responses if not r.EOF)
    eofs = sorted(tuple(r.window.keys) for r in responses if r.EOF)
    if ids != list(range(n)) or eofs != sorted((f"k{k}",) for k in range(min(nkeys, n))):
        window_.fail("WRONG_ACCUMULATOR_OUTPUT", f"{len(ids)} results, {len(eofs)} EOFs")
    return v1_result(window_, n, {}, "")


def drive_source_v1(spec: Dict[str, Any], pb2: Dict[str, Any]) -> Dict[str, Any]:
    """source.v1 read and ack, as the platform pulls a source: one ReadFn and one AckFn
    stream on one connection, each opened with its handshake; then read requests for
    `batch` messages (timeout 1 s), each read to its EOT, and every batch acked (its
    offsets in one AckRequest) while the next is read. 3 warm-up batches, then `total`
    messages. Checked: the handshake answers first and once, `batch` results per read
    (each with the payload and a new offset), one ack answer per AckRequest."""
    pb = pb2["source"]
    batch = spec["batch"]
    n_batches = spec["total"] // batch
    value = b"x" * spec["size"]
    read = h2client.frame(
        pb.ReadRequest(
            request=pb.ReadRequest.Request(num_records=batch, timeout_in_ms=1000)
        ).SerializeToString()
    )
    hello = pb.Handshake(sot=True)
    window = Window(spec["server_pid"])
    seen: set = set()
    state = {"read_hello": 0, "ack_hello": 0, "acked": 0, "eots": 0}
    results: List[Any] = []  # the offsets of the batch being read

    def take_reads(call: h2client.RawCall) -> int:
        for message in call.take():
            r = pb.ReadResponse.FromString(message)
            if r.HasField("handshake"):
                state["read_hello"] += 1
            elif r.HasField("result"):
                key = (r.result.offset.offset, r.result.offset.partition_id)
                if r.result.payload != value or key in seen:
                    window.fail("WRONG_READ_RESULT", f"offset {key}: wrong payload or twice")
                seen.add(key)
                results.append(r.result.offset)
            elif r.status.eot:
                state["eots"] += 1
        return state["eots"]

    def take_acks(call: h2client.RawCall) -> int:
        for message in call.take():
            r = pb.AckResponse.FromString(message)
            state["ack_hello" if r.HasField("handshake") else "acked"] += 1
        return state["acked"]

    with h2client.RawChannel(v1_socket(spec["run_dir"], "source")) as ch:
        reads = ch.open("/source.v1.Source/ReadFn")
        acks = ch.open("/source.v1.Source/AckFn")
        ch.send(reads, [h2client.frame(pb.ReadRequest(handshake=hello).SerializeToString())])
        ch.send(acks, [h2client.frame(pb.AckRequest(handshake=hello).SerializeToString())])
        ch.run_until(
            lambda: (take_reads(reads) >= 0 and take_acks(acks) >= 0 and state["read_hello"] > 0
                     and state["ack_hello"] > 0) or reads.done or acks.done
        )  # fmt: skip
        to_ack: List[Any] = []
        for b in range(3 + n_batches):
            if b == 3:
                window.begin()
            started = time.perf_counter()
            ch.send(reads, [read])
            if to_ack:
                ack = pb.AckRequest(request=pb.AckRequest.Request(offsets=to_ack))
                ch.send(acks, [h2client.frame(ack.SerializeToString())])
            acked = b if to_ack else 0  # batches 0..b-1 acked once this one is read
            ch.run_until(
                lambda: (take_reads(reads) > b and take_acks(acks) >= acked)  # noqa: B023
                or reads.done or acks.done
            )  # fmt: skip
            if reads.done or acks.done:
                break
            if b >= 3:
                window.latencies.append(time.perf_counter() - started)
            if len(results) != batch:
                window.fail("WRONG_BATCH_SIZE", f"batch {b}: {len(results)} results")
            to_ack, results[:] = list(results), []
        ack = pb.AckRequest(request=pb.AckRequest.Request(offsets=to_ack))
        ch.send(acks, [h2client.frame(ack.SerializeToString())])
        ch.run_until(lambda: take_acks(acks) >= 3 + n_batches or acks.done)
        window.stop()
        window.end()
        for call in (reads, acks):
            ch.end(call)
        ch.run_until(lambda: take_reads(reads) >= 0 and reads.done and acks.done)
    for call in (reads, acks):
        if not call.ok:
            h2_fail(window, call)
    if state["read_hello"] != 1 or state["ack_hello"] != 1:
        window.fail("WRONG_HANDSHAKE", f"{state['read_hello']}/{state['ack_hello']} answers")
    if state["acked"] != 3 + n_batches:
        window.fail("WRONG_ACKS", f"{state['acked']} ack answers")
    return v1_result(window, n_batches * batch, {}, "")


V1_DRIVERS: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = {
    "map": drive_map_v1,
    "mapt": drive_map_v1,
    "mapstream": drive_map_v1,
    "sink": drive_sink_v1,
    "reduce": drive_reduce_v1,
    "reducestream": drive_reduce_v1,
    "accumulator": drive_accumulator_v1,
    "batchmap": drive_batch_map_v1,
    "source": drive_source_v1,
}


DRIVERS: Dict[str, Callable[..., Any]] = {
    "map": drive_unary,
    "mapt": drive_unary,
    "mapstream": drive_map_stream,
    "reduce": drive_reduce,
    "sink": drive_sink,
}
H2_DRIVERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "mapstream": drive_map_stream_h2,
    "reduce": drive_reduce_h2,
    "sink": drive_sink_h2,
}


async def amain(spec: Dict[str, Any], stubs: Tuple[Any, ...]) -> Dict[str, Any]:
    async with grpc.aio.insecure_channel(f"unix://{spec['sock']}", options=CHANNEL_OPTIONS) as ch:
        await asyncio.wait_for(ch.channel_ready(), 10)
        result: Dict[str, Any] = await DRIVERS[spec["rpc"]](spec, ch, stubs)
        return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("protocol") == "v1":
        print(json.dumps(V1_DRIVERS[spec["rpc"]](spec, load_v1(spec["stubs"]))), flush=True)
        return
    stubs = load_stubs(spec["stubs"])
    driver = DRIVERS[spec["rpc"]]
    if spec.get("stream_client", "h2") == "h2":
        driver = H2_DRIVERS.get(spec["rpc"], driver)
    if asyncio.iscoroutinefunction(driver):
        result = asyncio.run(amain(spec, stubs))
    else:
        result = driver(spec, stubs)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
