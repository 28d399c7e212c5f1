"""pynumaflow: write Numaflow user-defined functions and sinks as plain Python functions."""

from __future__ import annotations

import typing as _typing

if _typing.TYPE_CHECKING:
    import logging

# The one place the version is written: pyproject.toml reads it ([tool.hatch.version]).
# A literal, not importlib.metadata: that import alone costs ~100 ms of start-up.
__version__ = "1.0.0"

__all__ = ["__version__", "setup_logging"]


def setup_logging(name: str) -> logging.Logger:
    """The logger ``name``, logging INFO to WARNING to stdout, ERROR and above to stderr.

    As pynumaflow 0.14.0's (whose examples call it); each call adds two handlers.
    """
    import logging
    import sys

    formatter = logging.Formatter(
        fmt="%(asctime)s %(levelname)-8s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
    )
    logger = logging.getLogger(name)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(formatter)
    stdout.addFilter(lambda record: record.levelno < logging.ERROR)
    stdout.setLevel(logging.INFO)
    logger.addHandler(stdout)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    stderr.setLevel(logging.ERROR)
    logger.addHandler(stderr)
    return logger
