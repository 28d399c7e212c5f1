"""pynumaflow: write Numaflow user-defined functions and sinks as plain Python functions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pynumaflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
