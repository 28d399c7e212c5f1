"""Exceptions shared by the codec, the invoker and the services."""

from __future__ import annotations

__all__ = ["CodecError", "ReturnTypeError"]


class CodecError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


class ReturnTypeError(TypeError):
    """A handler returned something that cannot be sent (wrong type or content)."""
