"""Optional in-process profiler for the benchmark servers (stdlib only; yappi if present).

BENCH_PROFILE=cprofile:/tmp/out.pstats   cProfile of the main (event loop) thread
BENCH_PROFILE=yappi:/tmp/out.pstats      yappi, CPU clock, every thread

The profile is written at interpreter exit (our servers exit normally on SIGTERM).
Read it with `python -m pstats /tmp/out.pstats` or benchmarks/profile_report.py.
"""

from __future__ import annotations

import atexit
import os


def install() -> None:
    spec = os.environ.get("BENCH_PROFILE")
    if not spec:
        return
    kind, _, path = spec.partition(":")
    if kind == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(path)

    elif kind == "yappi":
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start(builtins=True)

        def dump() -> None:
            yappi.stop()
            yappi.get_func_stats().save(path, type="pstat")

    else:
        raise SystemExit(f"BENCH_PROFILE: unknown profiler {kind!r} (cprofile or yappi)")
    atexit.register(dump)
