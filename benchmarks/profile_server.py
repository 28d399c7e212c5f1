"""Profile our server under the benchmark load with py-spy, and summarise where time goes.

    python benchmarks/profile_server.py --py-spy /path/to/py-spy --api async --rpc map \
        --size 100 --inflight 64 --seconds 8 --out /tmp/prof

    python benchmarks/profile_server.py --py-spy /path/to/py-spy --protocol v1 --rpc map \
        --api async --requests 300000 --seconds 5

Starts our server (server_udf.py, this interpreter), drives it with client.py (v1: one
burst of `--requests` requests on one map.v1 / sourcetransformer.v1 / map stream
(`--rpc mapstream`, 10 outputs each) stream), records `py-spy record --format raw` for the
measured window, then prints own (leaf) samples by layer (our code, codec, grpclib, h2,
asyncio, threads, the handler) and the top functions by own and by inclusive samples, as
percentages of all samples. `--summarise FILE` summarises an earlier raw profile. Without
py-spy, BENCH_PROFILE=cprofile:... on the server script is the fallback (see
_profile_hook.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402 - the runner's helpers (stubs, waiting for server-info)

# Own time by where the code lives (first match of a frame's file path wins).
LAYERS = (
    ("codec (pynumaflow._codec)", "pynumaflow/_codec/"),
    ("datatypes (pynumaflow._types)", "pynumaflow/_types/"),
    ("our engines, invoker, core", "pynumaflow/"),
    ("grpclib", "grpclib/"),
    ("h2, hpack, hyperframe", "h2/"),
    ("h2, hpack, hyperframe", "hpack/"),
    ("h2, hpack, hyperframe", "hyperframe/"),
    ("asyncio, selectors", "asyncio/"),
    ("asyncio, selectors", "selectors.py"),
    ("threads, queues", "threading.py"),
    ("threads, queues", "queue.py"),
    ("the handler (server_udf.py)", "server_udf.py"),
)


def layer_of(frame: str) -> str:
    for name, part in LAYERS:
        if part in frame:
            return name
    return "other"


def summarise(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        total += n
        if frames:
            own[frames[-1]] += n
            layers[layer_of(frames[-1])] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{total} samples\n", "own (leaf) time by layer:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in layers.most_common()]
    lines += ["", "own (leaf) time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--api", default="async", choices=run.APIS)
    parser.add_argument("--rpc", default="map")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keys", type=int, default=10, help="reduce: keys in the window")
    parser.add_argument("--datums", type=int, default=100_000, help="reduce: window size")
    parser.add_argument("--batch", type=int, default=500, help="sink: datums per call")
    parser.add_argument("--total", type=int, default=200_000, help="sink: datums in all")
    parser.add_argument("--protocol", default="legacy", choices=("legacy", "v1"))
    parser.add_argument("--requests", type=int, default=300_000, help="v1: burst size")
    parser.add_argument("--out", default="/tmp/pnf-profile")
    parser.add_argument("--summarise", help="only summarise this earlier raw profile")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="only samples holding the GIL (py-spy --gil): with handler threads, a thread "
        "waiting for the GIL is otherwise sampled at whatever line it waits",
    )
    args = parser.parse_args()
    if args.summarise:
        print(summarise(Path(args.summarise), args.top))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stubs = run.make_stubs(out / "stubs")
    v1 = args.protocol == "v1"
    sock, info = out / "function.sock", out / "server-info"
    if v1:
        info = out / run.V1_INFO_FILES[args.rpc]
    for p in (sock, info, *out.glob("*.sock")):
        p.unlink(missing_ok=True)
    work = run.Workload(
        "profile", args.rpc, args.size, args.inflight,
        keys=args.keys, datums=args.datums, batch=args.batch, total=args.total,
        protocol=args.protocol, requests=args.requests,
    )  # fmt: skip
    runner = run.Runner(sys.executable, None, stubs, out, args.seconds, 1.0)
    log = out / "server.log"
    with open(log, "w") as log_file:
        started = time.perf_counter()
        server = subprocess.Popen(
            runner.command("ours", args.api, work, sock, info),
            env=runner.env("ours", work, out),
            stdout=log_file,
            stderr=log_file,
        )
        try:
            runner.wait_ready(server, info, started, log)
            spec = dict(
                work.spec(), sock=str(sock), stubs=stubs, server_pid=server.pid,
                duration=args.seconds + 1.5, warmup=0.5,
                run_dir=str(out), warm=1000, paced_s=0, framing="packed",
            )  # fmt: skip
            client = subprocess.Popen([sys.executable, str(HERE / "client.py"), json.dumps(spec)],
                                      stdout=subprocess.PIPE, text=True)  # fmt: skip
            time.sleep(1.0)
            raw = out / "profile.txt"
            subprocess.run(
                [
                    args.py_spy, "record", "--pid", str(server.pid), "--duration",
                    str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
                    "-o", str(raw), "--nonblocking", *(["--gil"] if args.gil else []),
                ],
                check=True, capture_output=True,
            )  # fmt: skip
            result = client.communicate(timeout=120)[0]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    print("load:", result.strip())
    print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
