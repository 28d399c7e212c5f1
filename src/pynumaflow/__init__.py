"""pynumaflow: write Numaflow user-defined functions and sinks as plain Python functions."""

# The one place the version is written: pyproject.toml reads it ([tool.hatch.version]).
# A literal, not importlib.metadata: that import alone costs ~100 ms of start-up.
__version__ = "1.0.0"

__all__ = ["__version__"]
