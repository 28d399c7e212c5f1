"""Memory probe inside the soak's server process (benchmark only; src/ knows nothing of it).

On each SIGUSR1 the server appends one JSON line of memory figures to ``$SOAK_STATS``:
RSS split into anonymous and file-backed pages, glibc's heap (``mallinfo2``), Python's
own allocator (obmalloc arenas, blocks in use), objects, threads and tasks. With
``$SOAK_TRACEMALLOC`` set to a path, tracemalloc runs from start-up and each checkpoint
also appends the top allocation differences, by traceback, against the second checkpoint
(the soak takes it after warm-up) and against the previous one. Under tracemalloc the
obmalloc figures are missing (Python reports them only for its own allocator) and RSS
includes tracemalloc's own memory: read ``traced`` and the differences instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Optional

_TOP = 20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> Dict[str, int]:
    """glibc's heap: sbrk/arena bytes, mmapped bytes, bytes in use and free (all arenas)."""
    try:
        func = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    func.restype = _Mallinfo2
    info = func()
    return {
        "heap": info.arena,
        "mmap": info.hblkhd,
        "in_use": info.uordblks,
        "free": info.fordblks,
    }


def _proc_status() -> Dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM (KiB) and Threads of this process."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            out[name] = int(value.split()[0])
    return out


def _obmalloc() -> Dict[str, int]:
    """Arenas and bytes of Python's small-object allocator (from sys._debugmallocstats)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode()
    fields = {
        "arenas": r"# arenas allocated current\s*=\s*([\d,]+)",
        "arenas_highwater": r"# arenas highwater mark\s*=\s*([\d,]+)",
        "allocated_bytes": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
        "available_bytes": r"# bytes in available blocks\s*=\s*([\d,]+)",
    }
    out = {}
    for name, pattern in fields.items():
        match = re.search(pattern, text)
        if match:
            out[name] = int(match.group(1).replace(",", ""))
    return out


def _top(
    snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot, key: str
) -> List[Dict[str, Any]]:
    rows = []
    for stat in snapshot.compare_to(base, key)[:_TOP]:
        rows.append(
            {
                "size_diff": stat.size_diff,
                "count_diff": stat.count_diff,
                "size": stat.size,
                "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback],
            }
        )
    return rows


class _Probe:
    def __init__(self, stats: Path, trace: Optional[Path]) -> None:
        self._stats = stats
        self._trace = trace
        self._baseline: Optional[tracemalloc.Snapshot] = None
        self._previous: Optional[tracemalloc.Snapshot] = None
        self._count = 0

    def checkpoint(self) -> None:
        gc.collect()
        from pynumaflow._codec import wire as _wire

        record: Dict[str, Any] = {
            "checkpoint": self._count,
            "proc": _proc_status(),
            "malloc": _mallinfo(),
            "obmalloc": _obmalloc(),
            "blocks": sys.getallocatedblocks(),
            "objects": len(gc.get_objects()),
            "threads": threading.active_count(),
            "tasks": len(asyncio.all_tasks()),
            "time_cache": _wire.naive_utc.cache_info().currsize,
        }
        if self._trace is not None:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                (
                    tracemalloc.Filter(False, tracemalloc.__file__),
                    tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
                )
            )
            record["traced"] = tracemalloc.get_traced_memory()[0]
            diffs = {"checkpoint": self._count}
            if self._baseline is not None and self._previous is not None:
                diffs["since_warmup"] = _top(snapshot, self._baseline, "traceback")
                diffs["since_previous"] = _top(snapshot, self._previous, "traceback")
            with self._trace.open("a") as out:
                out.write(json.dumps(diffs) + "\n")
            if self._count == 1:
                self._baseline = snapshot
            self._previous = snapshot
        with self._stats.open("a") as out:
            out.write(json.dumps(record) + "\n")
        self._count += 1


def install() -> None:
    """Start tracemalloc if asked; answer SIGUSR1 with a checkpoint (call on the loop)."""
    stats = os.environ.get("SOAK_STATS")
    if not stats:
        return
    trace = os.environ.get("SOAK_TRACEMALLOC")
    if trace:
        tracemalloc.start(int(os.environ.get("SOAK_TRACE_FRAMES", "10")))
    probe = _Probe(Path(stats), Path(trace) if trace else None)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, probe.checkpoint)
