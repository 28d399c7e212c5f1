"""The datatypes of a side-input retriever (the pynumaflow 0.14.0 ``pynumaflow.sideinput`` API)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["SIDE_INPUT_DIR_PATH", "Response", "SideInput"]

SIDE_INPUT_DIR_PATH = "/var/numaflow/side-inputs"
"""Where the platform puts the side inputs a vertex lists, one file (a symlink) per name."""


@dataclass
class Response:
    """What a retriever answers: a value to broadcast, or nothing new.

    Build it with :meth:`broadcast_message` or :meth:`no_broadcast_message`.
    """

    __slots__ = ("no_broadcast", "value")

    value: bytes
    no_broadcast: bool

    @classmethod
    def broadcast_message(cls, value: bytes) -> Response:
        """Store ``value`` as the side input's new value; every vertex using it gets it."""
        return cls(value=value, no_broadcast=False)

    @classmethod
    def no_broadcast_message(cls) -> Response:
        """Store nothing: the previous value stays."""
        return cls(value=b"", no_broadcast=True)


class SideInput(metaclass=ABCMeta):
    """A side-input retriever: :meth:`retrieve_handler` returns the current value.

    An instance is callable, so a plain function ``() -> Response`` serves as well.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call :meth:`retrieve_handler`."""
        return self.retrieve_handler(*args, **kwargs)

    @abstractmethod
    def retrieve_handler(self) -> Response:
        """The side input's value now (sync: it runs in the handler pool)."""
