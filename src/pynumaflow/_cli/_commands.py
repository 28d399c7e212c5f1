"""``pynumaflow run`` and ``pynumaflow call``: what each does, start to end."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

from pynumaflow._cli._calls import Calls, LegacyCalls, V1Calls
from pynumaflow._cli._drive import Options, Tally, drive
from pynumaflow._cli._errors import CommandError, RunError, UsageError
from pynumaflow._cli._kinds import (
    Kind,
    Service,
    choose_kind,
    choose_v1_kind,
    wait_until_ready,
    wait_until_v1_ready,
)
from pynumaflow._cli._progress import Progress
from pynumaflow._cli._pull import pull
from pynumaflow._cli._script import Script
from pynumaflow._cli._served import PULLED, Served, role_for, served_by_socket
from pynumaflow._cli._source import open_input, records_of
from pynumaflow._client.legacy import Connection
from pynumaflow._client.v1 import V1Connection
from pynumaflow._core.options import LEGACY, V1
from pynumaflow._faces.kinds import MAP_MODE_ENV, MAP_MODES

__all__ = ["call_command", "run_command"]


def _options(args: argparse.Namespace) -> Options:
    return Options(concurrency=args.concurrency, window=args.window, batch_size=args.batch_size)


def _summary(tally: Tally, err: TextIO) -> bool:
    for note in tally.notes:
        print(f"pynumaflow: {note}", file=err)
    if tally.failed_calls:
        print(f"pynumaflow: {tally.failed_calls} call(s) failed", file=err)
    return not tally.failed_calls


_GENERATION = {LEGACY: "legacy protocol, Numaflow 0.8-0.9", V1: "v1 protocol, Numaflow >= 1.4"}


@dataclass(frozen=True)
class _Target:
    """The server to send to, and how to tell the user about it."""

    served: Served
    label: str
    deadline: float
    check_alive: Callable[[str], None] = lambda when: None


async def _send(
    args: argparse.Namespace,
    target: _Target,
    calls: Calls,
    kind: Kind,
    sock: Path,
    streams: tuple[TextIO, TextIO, TextIO],
) -> Tally:
    stream, out, err = streams
    generation = _GENERATION[target.served.protocol]
    if target.served.protocol == V1 and kind.v1 is not None:  # e.g. the map mode
        generation += "".join(f", {key}={value}" for key, value in kind.v1.metadata.items())
    print(
        f"pynumaflow: {target.label} ({sock.name}) is ready; sending the input as "
        f"{kind.name} ({generation})",
        file=err,
    )
    typing = stream.isatty()
    if typing:
        print("pynumaflow: type input lines; end with Ctrl-D", file=err)
    return await drive(
        calls,
        kind,
        records_of(stream, raw=args.raw),
        _options(args),
        out=out,
        err=err,
        check_alive=target.check_alive,
        # Typed input shows each answer as it comes: a progress line would only interleave.
        progress=Progress(err, enabled=err.isatty() and not typing),
    )


async def _session(
    args: argparse.Namespace, target: _Target, stream: TextIO, out: TextIO, err: TextIO
) -> Tally:
    served = target.served
    if served.protocol == V1:
        return await _v1_session(args, target, (stream, out, err))
    assert served.sock is not None
    with Connection(str(served.sock), args.timeout) as connection:
        expect: Optional[Service] = None
        if served.sock.name == "udsink.sock":
            expect = "sink"
        elif served.sock.name == "function.sock":
            expect = "function"
        service = await wait_until_ready(connection, target.deadline, expect)
        kind = await choose_kind(connection, service, args.kind, err)
        return await _send(
            args, target, LegacyCalls(connection), kind, served.sock, (stream, out, err)
        )


async def _v1_session(
    args: argparse.Namespace, target: _Target, streams: tuple[TextIO, TextIO, TextIO]
) -> Tally:
    sockets = target.served.sockets
    if len(set(sockets.values())) > 1:  # a run: the server said what it serves
        kind = choose_v1_kind(list(sockets), args.kind, streams[2])
        sockets = {kind: sockets[kind]}
    elif args.kind is not None and args.kind not in sockets:
        choose_v1_kind(list(sockets), args.kind, streams[2])  # raises: not served
    sock = next(iter(sockets.values()))
    pulled = [kind for kind in sockets if kind in PULLED]
    if len(sockets) == 1 and pulled:
        _, out, err = streams
        return await pull(
            pulled[0],
            str(sock),
            reads=args.reads,
            batch_size=args.batch_size,
            nack=args.nack,
            timeout=args.timeout,
            deadline=target.deadline,
            out=out,
            err=err,
        )
    async with V1Connection(str(sock), args.timeout) as connection:
        kind = await wait_until_v1_ready(connection, list(sockets), target.deadline)
        if kind in PULLED:  # found by its IsReady on a socket of another name
            raise UsageError(f"the server on {sock} is a {kind.name}: give --kind {kind.name}")
        return await _send(args, target, V1Calls(connection), kind, sock, streams)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Start the script like the platform, send the input, print the outputs, stop it."""
    script_path = Path(args.script)
    if not script_path.is_file():
        raise UsageError(f"no such script: {script_path}")
    stream = open_input(args.input, args.stdin)
    deadline = time.monotonic() + args.start_timeout
    failure: Optional[CommandError] = None
    tally: Optional[Tally] = None
    protocol = args.protocol or V1
    role = None
    env = {}
    if protocol == V1:
        role = role_for(args.kind, script_path.read_text(encoding="utf-8", errors="replace"))
        # The map mode a server given both map handlers announces: the one asked for.
        for mode, kind in MAP_MODES.items():
            if kind is args.kind:
                env[MAP_MODE_ENV] = mode
    try:
        with Script(script_path, [], quiet=args.quiet, err=err, role=role, env=env) as script:
            try:
                served = script.wait_for_server(
                    deadline, protocol, explicit=args.protocol is not None, kind=args.kind
                )
                if served.protocol != protocol:
                    print(
                        f"pynumaflow: {script_path.name} serves only the "
                        f"{_GENERATION[served.protocol]}: using it",
                        file=err,
                    )
                target = _Target(served, script_path.name, deadline, script.check_alive)
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
        served = served_by_socket(sock, args.protocol, args.kind)
        target = _Target(served, str(sock.parent), time.monotonic() + args.start_timeout)
        tally = asyncio.run(_session(args, target, stream, out, err))
    except RunError as error:
        raise RunError(f"{error} (server on {sock})") from None
    finally:
        if stream is not args.stdin:
            stream.close()
    return 0 if _summary(tally, err) else 1
