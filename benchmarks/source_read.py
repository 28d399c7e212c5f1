"""source.v1 read throughput: our SourceAsyncServer against pynumaflow 0.14.0's, same source.

Each server runs the same endless source (every read request gets ``--batch`` messages
of 100 bytes at once) as a script of its own, in its own python: ours with this
interpreter, 0.14.0's with ``--original-python`` (a virtualenv holding pynumaflow
0.14.0, e.g. tests' ``~/.cache/pynumaflow-tests/reference-0.14.0-py3.11/bin/python`` or
``.nox/bench-original-0.14.0/bin/python``). The client is ``h2client.RawChannel`` (HTTP/2
by hand, one long ReadFn stream, as the platform keeps it): the handshake, a warm-up, then
read requests back to back for ``--seconds``, each read to its EOT before the next is
sent (as the platform does without read-ahead). It counts results (messages whose first
field is ``result``) and reports messages/s and the server's CPU per message.

    PYTHONPATH=src python benchmarks/source_read.py --original-python PATH [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import proc_cpu
from h2client import RawChannel, frame

SERVER = """
import sys
from datetime import datetime, timezone
from pynumaflow.sourcer import (
    Message, Offset, PartitionsResponse, PendingResponse, SourceAsyncServer, Sourcer,
)

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
PAYLOAD = b"x" * 100


class Endless(Sourcer):
    def __init__(self):
        self.n = 0

    async def read_handler(self, datum, output):
        for _ in range(datum.num_records):
            self.n += 1
            await output.put(Message(PAYLOAD, Offset(str(self.n).encode(), 0), NOW))

    async def ack_handler(self, ack_request):
        pass

    async def nack_handler(self, nack_request):
        pass

    async def pending_handler(self):
        return PendingResponse(0)

    async def active_partitions_handler(self):
        return PartitionsResponse([0])


SourceAsyncServer(Endless(), sock_path=sys.argv[1], server_info_file=sys.argv[2]).start()
"""

HANDSHAKE = frame(b"\x12\x02\x08\x01")  # ReadRequest{handshake{sot: true}}
EOT_PREFIX = b"\x12\x02\x08\x01"  # ReadResponse{status{eot: true}} (both encode it so)
END = "U+005C__END__"


def read_request(num: int, timeout_ms: int) -> bytes:
    from pynumaflow._codec.wire import varint

    body = b"\x08" + varint(num) + b"\x10" + varint(timeout_ms)
    return frame(b"\x0a" + varint(len(body)) + body)


def read_batches(channel: RawChannel, call: object, request: bytes, count: int) -> int:
    """Send ``count`` read requests one after the other, each read to its EOT; the results."""
    results = 0
    for _ in range(count):
        channel.send(call, [request])  # type: ignore[arg-type]
        done = False

        def eot() -> bool:
            nonlocal results, done
            for message in call.take():  # type: ignore[attr-defined]
                if message[:1] == b"\x0a":
                    results += 1
                elif message.startswith(EOT_PREFIX):
                    done = True
            return done

        channel.run_until(eot)
    return results


def cell(python: str, batch: int, seconds: float) -> Dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pnf-src-") as folder:
        script = Path(folder) / "source.py"
        script.write_text(SERVER, encoding="utf-8")
        sock, info = Path(folder) / "source.sock", Path(folder) / "sourcer-server-info"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        if python == sys.executable:
            env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
        proc = subprocess.Popen([python, str(script), str(sock), str(info)], env=env)
        try:
            deadline = time.monotonic() + 30
            while not (info.exists() and info.read_text(encoding="utf-8").endswith(END)):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not write its server-info")
                time.sleep(0.02)
            request = read_request(batch, 1000)
            with RawChannel(str(sock)) as channel:
                call = channel.open("/source.v1.Source/ReadFn")
                channel.send(call, [HANDSHAKE])
                channel.run_until(lambda: bool(call.take()))
                read_batches(channel, call, request, 20)  # warm-up
                cpu0, start, results, reads = proc_cpu(proc.pid), time.perf_counter(), 0, 0
                while time.perf_counter() - start < seconds:
                    results += read_batches(channel, call, request, 10)
                    reads += 10
                elapsed = time.perf_counter() - start
                cpu = proc_cpu(proc.pid) - cpu0
            if results != reads * batch:
                raise RuntimeError(f"{results} results for {reads} reads of {batch}")
            return {
                "msgs_per_s": results / elapsed,
                "cpu_us_per_msg": cpu / results * 1e6,
                "server_cpu_pct": cpu / elapsed * 100,
            }
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original-python", required=True)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    impls = {"ours": sys.executable, "0.14.0": args.original_python}
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in impls}
    for _ in range(args.rounds):
        for name, python in impls.items():
            runs[name].append(cell(python, args.batch, args.seconds))
    for name, cells in runs.items():
        best = max(cells, key=lambda c: c["msgs_per_s"])
        rates = ", ".join(f"{c['msgs_per_s']:,.0f}" for c in cells)
        print(
            f"{name:7} read batch {args.batch}: best {best['msgs_per_s']:,.0f} msgs/s "
            f"({rates}); {best['cpu_us_per_msg']:.1f} us server CPU per message, "
            f"server {best['server_cpu_pct']:.0f}% of a core"
        )
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
