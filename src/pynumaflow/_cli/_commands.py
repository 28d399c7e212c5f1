"""``pynumaflow run`` and ``pynumaflow call``: what each does, start to end."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

from pynumaflow._cli._drive import Options, Tally, drive
from pynumaflow._cli._errors import CommandError, RunError, UsageError
from pynumaflow._cli._kinds import Service, choose_kind, wait_until_ready
from pynumaflow._cli._progress import Progress
from pynumaflow._cli._pull import PULLED, pull
from pynumaflow._cli._script import Script
from pynumaflow._cli._source import open_input, records_of
from pynumaflow._client.legacy import Connection

__all__ = ["call_command", "run_command"]


def _options(args: argparse.Namespace) -> Options:
    return Options(concurrency=args.concurrency, window=args.window, batch_size=args.batch_size)


def _summary(tally: Tally, err: TextIO) -> bool:
    for note in tally.notes:
        print(f"pynumaflow: {note}", file=err)
    if tally.failed_calls:
        print(f"pynumaflow: {tally.failed_calls} call(s) failed", file=err)
    return not tally.failed_calls


@dataclass(frozen=True)
class _Target:
    """The server to send to, and how to tell the user about it."""

    sock: Path
    label: str
    deadline: float
    expect: Optional[Service] = None
    check_alive: Callable[[str], None] = lambda when: None


async def _session(
    args: argparse.Namespace, target: _Target, stream: TextIO, out: TextIO, err: TextIO
) -> Tally:
    if args.kind in PULLED:
        return await pull(
            args.kind,
            str(target.sock),
            reads=args.reads,
            batch_size=args.batch_size,
            nack=args.nack,
            timeout=args.timeout,
            deadline=target.deadline,
            out=out,
            err=err,
        )
    with Connection(str(target.sock), args.timeout) as connection:
        service = await wait_until_ready(connection, target.deadline, target.expect)
        kind = await choose_kind(connection, service, args.kind, err)
        print(f"pynumaflow: {target.label} is ready; sending the input as {kind.name}", file=err)
        typing = stream.isatty()
        if typing:
            print("pynumaflow: type input lines; end with Ctrl-D", file=err)
        return await drive(
            connection,
            kind,
            records_of(stream, raw=args.raw),
            _options(args),
            out=out,
            err=err,
            check_alive=target.check_alive,
            # Typed input shows each answer as it comes: a progress line would only interleave.
            progress=Progress(err, enabled=err.isatty() and not typing),
        )


def _wait_for_server(script: Script, args: argparse.Namespace, deadline: float) -> Path:
    """The script's socket once it is ready; a source or side input is told by its file."""
    if args.kind in PULLED:
        return script.wait_for_v1(args.kind, deadline)
    try:
        return script.wait_for_socket(deadline)[0]
    except RunError:
        pulled = script.pulled_kind()
        if args.kind is not None or pulled is None:
            raise
    args.kind = pulled
    return script.wait_for_v1(pulled, deadline)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Start the script like the platform, send the input, print the outputs, stop it."""
    script_path = Path(args.script)
    if not script_path.is_file():
        raise UsageError(f"no such script: {script_path}")
    stream = open_input(args.input, args.stdin)
    deadline = time.monotonic() + args.start_timeout
    failure: Optional[CommandError] = None
    tally: Optional[Tally] = None
    try:
        with Script(script_path, [], quiet=args.quiet, err=err) as script:
            try:
                sock = _wait_for_server(script, args, deadline)
                target = _Target(
                    sock,
                    f"{script_path.name} ({sock.name})",
                    deadline,
                    "sink" if sock.name == "udsink.sock" else "function",
                    script.check_alive,
                )
                tally = asyncio.run(_session(args, target, stream, out, err))
            except CommandError as error:
                failure = error
            if failure is not None:
                print(f"pynumaflow: error: {failure}", file=err)
            ending = script.stop(args.timeout)
            print(f"pynumaflow: {ending.message}", file=err)
    finally:
        if stream is not args.stdin:
            stream.close()
    if failure is not None:
        return failure.exit_code
    assert tally is not None
    ok = _summary(tally, err)
    return 0 if ok and ending.ok else 1


def call_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Send the input to a server that is already running on ``--sock``."""
    sock = Path(args.sock)
    if not sock.exists():
        raise UsageError(f"no such socket: {sock}")
    stream = open_input(args.input, args.stdin)
    try:
        target = _Target(sock, str(sock), time.monotonic() + args.start_timeout)
        tally = asyncio.run(_session(args, target, stream, out, err))
    except RunError as error:
        raise RunError(f"{error} (server on {sock})") from None
    finally:
        if stream is not args.stdin:
            stream.close()
    return 0 if _summary(tally, err) else 1
