"""Answers -> JSON lines: one object per output message or sink response."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Optional, Union

from pynumaflow._client.v1 import Result, UserMetadata
from pynumaflow._types.function import IntervalWindow, Message, MessageT
from pynumaflow._types.sink import Response
from pynumaflow._types.windowed import AccumulatorMessage, KeyedWindow

__all__ = [
    "accumulated_line",
    "bytes_fields",
    "eof_line",
    "format_time",
    "message_line",
    "response_line",
]

UTC = timezone.utc


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: milliseconds, or microseconds when they matter."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    spec = "milliseconds" if aware.microsecond % 1000 == 0 else "microseconds"
    return aware.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def bytes_fields(name: str, value: bytes) -> dict[str, str]:
    """``{name: text}``, or ``{name_b64: base64}`` when the bytes are not UTF-8."""
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(value).decode("ascii")}


def _extras(
    line: dict[str, Any], headers: Optional[Mapping[str, str]], user_metadata: UserMetadata
) -> None:
    if headers:
        line["headers"] = dict(headers)
    if user_metadata:
        line["user_metadata"] = {
            group: {key: value.decode("utf-8", "backslashreplace") for key, value in kv.items()}
            for group, kv in user_metadata.items()
        }


def message_line(
    message: Union[Message, MessageT, Result],
    event_time: Optional[datetime] = None,
    window: Optional[IntervalWindow] = None,
    *,
    headers: Optional[Mapping[str, str]] = None,
) -> str:
    """One output message: ``keys``, ``value`` (or ``value_b64``), ``tags``, and times.

    Args:
        message: the message the handler returned (a v1 result carries its user
            metadata, shown as ``user_metadata``).
        event_time: the event time the platform gives it (a mapt message's own is used
            when this is ``None``).
        window: for reduce, the window it was reduced over.
        headers: the headers the platform gives it (its input's), shown as ``headers``.

    """
    line: dict[str, Any] = {"keys": list(message.keys), **bytes_fields("value", message.value)}
    line["tags"] = list(message.tags)
    own = message.event_time if isinstance(message, (MessageT, Result)) else None
    if event_time is None and isinstance(own, datetime):
        event_time = own
    if event_time is not None:
        line["event_time"] = format_time(event_time)
    if window is not None:
        line["window_start"] = format_time(window.start)
        line["window_end"] = format_time(window.end)
    _extras(line, headers, message.user_metadata if isinstance(message, Result) else {})
    return json.dumps(line, ensure_ascii=False)


def response_line(response: Response, user_metadata: Optional[UserMetadata] = None) -> str:
    """One sink response: ``id``, ``success`` and ``err`` (``null`` on success).

    A Numaflow >= 1.4 response beyond success and failure adds ``status``
    (``fallback``, ``serve`` or ``on_success``), and the ``serve_response`` payload or
    the ``on_success_msg`` (``keys``, ``value`` or ``value_b64``, ``user_metadata``),
    as sink.v1 names them.
    """
    line: dict[str, Any] = {"id": response.id, "success": response.success, "err": response.err}
    if response.status is not None:
        line["status"] = response.status
    if response.value is not None and response.status == "serve":
        line.update(bytes_fields("serve_response", response.value))
    elif response.value is not None:
        message: dict[str, Any] = {"keys": list(response.keys or ())}
        message.update(bytes_fields("value", response.value))
        _extras(message, None, user_metadata or {})
        line["on_success_msg"] = message
    return json.dumps(line, ensure_ascii=False)


def accumulated_line(message: AccumulatorMessage) -> str:
    """One accumulator output: keys, value, tags, its event_time, watermark, id, headers."""
    line: dict[str, Any] = {"keys": list(message.keys), **bytes_fields("value", message.value)}
    line["tags"] = list(message.tags)
    for name, moment in (("event_time", message.event_time), ("watermark", message.watermark)):
        if moment is not None:
            line[name] = format_time(moment)
    line["id"] = message.id
    _extras(line, message.headers, {})
    return json.dumps(line, ensure_ascii=False)


def eof_line(window: KeyedWindow) -> str:
    """The EOF of an accumulator key or a session: ``eof``, its keys and window."""
    line = {"eof": True, "keys": list(window.keys)}
    line["window_start"] = format_time(window.start)
    line["window_end"] = format_time(window.end)
    return json.dumps(line, ensure_ascii=False)
