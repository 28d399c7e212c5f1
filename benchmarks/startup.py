"""Start-to-ready and import time of our servers, side by side with other builds.

    python benchmarks/startup.py --ours new=src --ours old=/work/main/src \\
        --original-python /tmp/orig042/bin/python --echo --rounds 15
    python benchmarks/startup.py --ours new=src --ours old=/work/main/src --importtime

Start-to-ready is what run.py measures for every cell (its Runner starts server_udf.py
with a map handler and polls for the server-info file), here without the load client,
so it can be repeated cheaply. Each `--ours LABEL=DIR` is our package from DIR (put on
PYTHONPATH; "-" for the installed one). Every round runs every build once per API
(Server / AsyncServer), in an order reversed from one round to the next; the machine is
shared, so quote medians and per-round ratios from one run. Bytecode is cached as in an
installed package (PYTHONPYCACHEPREFIX in a temporary folder, filled by one untimed
start per build): compiling our sources afresh at each start roughly doubles the
import. `--importtime` instead runs `python -X importtime -c "from pynumaflow.function
import Server, AsyncServer"` per build and round, and prints the import's median wall
time and the median self and cumulative times of the biggest imports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from client import proc_cpu
from run import Runner, Workload, stop

IMPORT = "from pynumaflow.function import Server, AsyncServer"
MAP = Workload("MapFn", "map")


def p90(values: List[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


class Build:
    """One thing to start: our package from a directory, 0.4.2, or the bare echo."""

    def __init__(self, label: str, impl: str, python: str, src: Optional[str] = None) -> None:
        self.label = label
        self.impl = impl
        self.python = python
        self.src = src

    def env(self, base: Dict[str, str], pycache: Path) -> Dict[str, str]:
        env = dict(base, PYTHONPYCACHEPREFIX=str(pycache))
        for name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        if self.src is not None:
            env["PYTHONPATH"] = str(Path(self.src).resolve())
        return env


def ready_once(runner: Runner, build: Build, api: str, workdir: Path) -> Tuple[float, float]:
    """Seconds from Popen to the server-info file's end marker (run.Runner's clock), and
    the server's CPU seconds by then (in clock ticks: 10 ms steps, but load-independent).
    """
    cell = workdir / f"{build.label}-{api}"
    cell.mkdir(exist_ok=True)
    sock, info, log_path = cell / "function.sock", cell / "server-info", cell / "server.log"
    for path in (sock, info):
        path.unlink(missing_ok=True)
    runner.ours_python = runner.original_python = build.python
    command = runner.command(build.impl, api, MAP, sock, info)
    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=build.env(runner.env(build.impl, MAP, workdir), workdir / "pycache"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            return runner.wait_ready(proc, info, started, log_path), proc_cpu(proc.pid)
        finally:
            stop(proc, graceful=build.impl != "original")


def measure_ready(builds: List[Build], apis: List[str], rounds: int, tmp: Optional[str]) -> None:
    cells = [(b, api) for b in builds for api in (apis if b.impl != "echo" else ["-"])]
    times: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    cpus: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="pnf-startup-", dir=tmp) as workdir:
        runner = Runner("", None, "", Path(workdir), 0.0, 0.0)
        for build, api in cells:  # untimed: fills the bytecode cache
            ready_once(runner, build, api, Path(workdir))
        for rnd in range(rounds):
            for build, api in cells if rnd % 2 == 0 else cells[::-1]:
                wall, cpu = ready_once(runner, build, api, Path(workdir))
                times[(build.label, api)].append(wall)
                cpus[(build.label, api)].append(cpu)
            print(f"round {rnd + 1}/{rounds} done", file=sys.stderr, flush=True)
    # Ratios are taken within a round (the builds ran back to back), then the median.
    base = next((b for b in builds if b.impl == "original"), builds[0])
    print(f"start-to-ready, {rounds} rounds (ms)\n")
    print(
        f"| build | api | median | p90 | min | / {base.label} | CPU median | CPU mean |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for build, api in cells:
        own = times[(build.label, api)]
        ms = [t * 1e3 for t in own]
        cpu = [t * 1e3 for t in cpus[(build.label, api)]]
        ratio = ""
        if build.impl != "echo":
            pairs = zip(own, times[(base.label, api)], strict=True)
            ratio = f"{statistics.median(t / b for t, b in pairs):.2f}"
        print(
            f"| {build.label} | {api} | {statistics.median(ms):.0f} | {p90(ms):.0f} "
            f"| {min(ms):.0f} | {ratio} | {statistics.median(cpu):.0f} "
            f"| {statistics.mean(cpu):.0f} |"
        )


Modules = Dict[str, Tuple[int, int]]  # name -> (self us, cumulative us)


def importtime_once(build: Build, pycache: Path) -> Tuple[float, Modules]:
    """The import's wall ms (in-process) and every module of one `-X importtime` run."""
    probe = f"import time; t = time.perf_counter(); {IMPORT}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [build.python, "-X", "importtime", "-c", probe],
        env=build.env(dict(os.environ), pycache),
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        modules[name.strip()] = (int(own), int(cumulative))
    return float(done.stdout) * 1e3, modules


def measure_importtime(builds: List[Build], rounds: int, top: int, tmp: Optional[str]) -> None:
    runs: Dict[str, List[Tuple[float, Modules]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="pnf-importtime-", dir=tmp) as workdir:
        pycache = Path(workdir) / "pycache"
        for build in builds:  # untimed: fills the bytecode cache
            importtime_once(build, pycache)
        for rnd in range(rounds):
            for build in builds if rnd % 2 == 0 else builds[::-1]:
                runs[build.label].append(importtime_once(build, pycache))
    base = next((b for b in builds if b.impl == "original"), builds[0])
    base_walls = [wall for wall, _ in runs[base.label]]
    for build in builds:
        walls = [wall for wall, _ in runs[build.label]]
        samples = [modules for _, modules in runs[build.label]]
        ratio = statistics.median(w / b for w, b in zip(walls, base_walls, strict=True))
        print(
            f"\n{build.label}: `{IMPORT}` over {rounds} runs: "
            f"{statistics.median(len(run) for run in samples):.0f} modules, "
            f"wall median {statistics.median(walls):.0f} ms (p90 {p90(walls):.0f}, "
            f"min {min(walls):.0f}; / {base.label} per round: {ratio:.2f})\n"
        )
        # A module missing from some runs counts as 0 there (imported earlier by another).
        # Modules imported with importlib.import_module (the lazy server classes) have no
        # line of their own: -X importtime only times import statements.
        names = {name for run in samples for name in run}
        medians = {
            name: [statistics.median(run.get(name, (0, 0))[i] / 1e3 for run in samples)
                   for i in (0, 1)]
            for name in names
        }  # fmt: skip
        print("| module | self ms | cumulative ms |\n|---|---:|---:|")
        for name, (own, cumulative) in sorted(medians.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"| {name} | {own:.1f} | {cumulative:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ours", action="append", default=[], metavar="LABEL=DIR", help="our package from DIR"
    )
    parser.add_argument("--python", default=sys.executable, help="python for --ours builds")
    parser.add_argument("--original-python", help="python of a venv with pynumaflow 0.4.2")
    parser.add_argument("--echo", action="store_true", help="also the bare grpclib echo")
    parser.add_argument("--apis", default="sync,async")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--importtime", action="store_true", help="import time, not ready")
    parser.add_argument("--top", type=int, default=20, help="--importtime: rows per build")
    parser.add_argument("--tmp", default=None, help="where the sockets go (short path)")
    args = parser.parse_args()
    builds = []
    for spec in args.ours or ["ours=-"]:
        label, _, src = spec.partition("=")
        builds.append(Build(label, "ours", args.python, None if src in ("", "-") else src))
    if args.original_python:
        builds.append(Build("0.4.2", "original", args.original_python))
    if args.importtime:
        measure_importtime(builds, args.rounds, args.top, args.tmp)
        return
    if args.echo:
        builds.append(Build("echo", "echo", args.python))
    measure_ready(builds, args.apis.split(","), args.rounds, args.tmp)


if __name__ == "__main__":
    main()
