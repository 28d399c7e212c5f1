"""The two ways the command fails: a mistake in what it was given, or a failed run."""

from __future__ import annotations

__all__ = ["CommandError", "RunError", "UsageError"]


class CommandError(Exception):
    """Ends the command with this message on stderr and :attr:`exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    """The arguments or the input are wrong (exit code 2, like argparse)."""

    exit_code = 2


class RunError(CommandError):
    """The script or the server failed: crashed, never ready, hung (exit code 1)."""
