"""The ``pynumaflow`` command: run a UDF or sink locally, over the real gRPC path."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional, TextIO

from pynumaflow._cli._args import build_parser
from pynumaflow._cli._commands import call_command, run_command
from pynumaflow._cli._errors import CommandError

__all__ = ["main"]


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdin: Optional[TextIO] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run the command; return its exit code.

    Exit codes: 0 all went well; 1 a call failed, or the script crashed, was not ready
    in time, hung or did not exit cleanly; 2 wrong arguments or input; 130 interrupted.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    args.stdin = stdin or sys.stdin
    command = run_command if args.command == "run" else call_command
    try:
        return command(args, out, err)
    except CommandError as error:
        print(f"pynumaflow: error: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        print("pynumaflow: interrupted", file=err)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
