"""The command line: ``pynumaflow run`` and ``pynumaflow call``."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from datetime import timedelta

from pynumaflow import __version__
from pynumaflow._cli._input import parse_duration
from pynumaflow._cli._kinds import PREFERENCE, Kind, kind_named
from pynumaflow._core.options import LEGACY, V1
from pynumaflow._faces.kinds import EVERY_KIND

__all__ = ["build_parser"]

DEFAULT_TIMEOUT = 30.0
# Start-up may import heavy libraries or load a model; the platform itself waits 120 s.
DEFAULT_START_TIMEOUT = 60.0

_INPUT_HELP = """\
input lines: a JSON object {"value": "text"} or {"value_b64": "..."}, with optional
"keys" (list of strings), "event_time" and "watermark" (RFC 3339, or epoch milliseconds),
"id", and on v1 "headers" ({"name": "text"}) and "user_metadata" ({"group": {"key":
"text"}}); any other line is taken as a text value. One JSON object per output goes to
stdout: keys, value (or value_b64 if not UTF-8), tags, event_time for map, mapt and
map-stream and batch-map (and window_start, window_end for reduce, reduce-stream and
session-reduce), on v1 headers and user_metadata when there are any; for accumulator
also watermark and id; {"eof": true, "keys", "window_start", "window_end"} when an
accumulator key or a session ends; id, success, err for sink, on v1 also status
(fallback, serve, on_success) with serve_response or on_success_msg (keys, value,
user_metadata).
"""


def _kind(value: str) -> Kind:
    try:
        return kind_named(value.replace("_", "-").replace("mapstream", "map-stream"))
    except KeyError:
        names = ", ".join(k.name for k in EVERY_KIND)
        raise argparse.ArgumentTypeError(f"unknown kind {value!r} (one of {names})") from None


def _or(names: Iterable[str]) -> str:
    *first, last = names
    return f"{', '.join(first)} or {last}" if first else last


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _seconds(value: str) -> float:
    return _duration(value).total_seconds()


def _common(parser: argparse.ArgumentParser, protocol_help: str) -> None:
    parser.add_argument(
        "--input",
        "-i",
        default="-",
        metavar="FILE",
        help="the input, one record per line; - (the default) reads stdin",
    )
    parser.add_argument(
        "--kind",
        "-k",
        type=_kind,
        help=f"{_or(k.name for k in EVERY_KIND)} (default: what the server serves; "
        f"{' > '.join(k.name for k in PREFERENCE)} when it serves several)",
    )
    parser.add_argument(
        "--window",
        type=_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="reduce and reduce-stream: the length of the fixed windows inputs are grouped "
        "into by event time, e.g. 60s, 500ms, 5m; accumulator: how long a key's window "
        "lasts; session-reduce: the session gap (default 60s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=500,
        metavar="N",
        help="sink and batch-map: datums per batch; source: records per read (default "
        "500, the platform's read batch size)",
    )
    parser.add_argument(
        "--reads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="source: read requests to send, each batch acked; side-input: retrievals "
        "(default 1). These kinds read no input",
    )
    parser.add_argument(
        "--nack",
        action="store_true",
        help="source: nack each batch read instead of acking it",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="map kinds: calls in flight at once; outputs stay in input order (default 16)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="the longest wait for each call to answer, and for the script to exit after "
        f"SIGTERM (default {DEFAULT_TIMEOUT:g}); e.g. 500ms, 10s or 10",
    )
    parser.add_argument(
        "--start-timeout",
        type=_seconds,
        default=DEFAULT_START_TIMEOUT,
        metavar="SECONDS",
        help="the longest wait for the server to write its server-info and answer IsReady "
        f"(default {DEFAULT_START_TIMEOUT:g})",
    )
    parser.add_argument(
        "--protocol",
        choices=(V1, LEGACY),
        help=protocol_help,
    )
    parser.add_argument(
        "--raw", action="store_true", help="take every input line as a text value, never JSON"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pynumaflow`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pynumaflow",
        description="Run a Numaflow UDF or sink on your machine, over the real gRPC path.",
    )
    parser.add_argument("--version", action="version", version=f"pynumaflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="start a script as the platform would, send it the input, print the outputs",
        description="Start SCRIPT as the Numaflow platform would (its sockets in a "
        "temporary folder given by PYNUMAFLOW_RUN_DIR), wait for its server-info and "
        "IsReady, send the input through the real RPCs, print the outputs as JSON lines, "
        "then stop it with SIGTERM and report how it exited.",
        epilog=_INPUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("script", metavar="SCRIPT", help="the Python script that starts a server")
    _common(
        run,
        "v1: map.v1, sourcetransformer.v1, reduce.v1, sink.v1 (Numaflow >= 1.4; the "
        "default, also for 0.4 scripts, which serve both); legacy: function.v1 and the "
        "UserDefinedSink (Numaflow 0.8-0.9). Without it, a script serving only legacy is "
        "called on legacy",
    )
    run.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="hide the script's own output (it is still shown if the script fails)",
    )
    call = commands.add_parser(
        "call",
        help="send the input to a server that is already running",
        description="Send the input to a UDF or sink server already listening on SOCK "
        "and print the outputs as JSON lines.",
        epilog=_INPUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("--sock", "-s", required=True, help="the server's Unix socket")
    _common(
        call,
        "v1 (Numaflow >= 1.4) or legacy (0.8-0.9); default: from the socket's name "
        "(map.sock, mapstream.sock, batchmap.sock, sourcetransform.sock, reduce.sock, "
        "reducestream.sock, accumulator.sock, sessionreduce.sock, sink.sock: v1; "
        "function.sock, udsink.sock: legacy) or the server-info files beside it",
    )
    return parser
