"""sideinput.v1 wire messages (Numaflow >= 1.4; spec section 17).

``SideInputResponse``: 1 value bytes, 2 no_broadcast bool, 3 metadata (ignored by the
platform, never sent).
"""

from __future__ import annotations

from pynumaflow._codec.wire import varint
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow._types.sideinput import Response

__all__ = ["encode_side_input_response"]


def encode_side_input_response(result: object) -> bytes:
    """``SideInputResponse{value, no_broadcast}`` for what a retriever returned.

    Raises:
        ReturnTypeError: ``result`` is not a Response, or its value not bytes.

    """
    if not isinstance(result, Response):
        raise ReturnTypeError(
            f"retrieve_handler returned {type(result).__name__}; expected sideinput Response"
        )
    value = result.value
    if not isinstance(value, bytes):
        raise ReturnTypeError(f"Response.value must be bytes, found {type(value).__name__}")
    out = b"\x0a" + varint(len(value)) + value if value else b""
    return out + b"\x10\x01" if result.no_broadcast else out
