"""Input lines -> records: JSON envelopes or plain text values; times and durations.

A line that is a JSON object with a ``value`` or ``value_b64`` field and only the
fields below is an envelope; any other line (JSON payloads included) is the value
itself, as UTF-8 text. Blank lines are skipped.

Envelope fields: ``value`` (text) or ``value_b64`` (base64 bytes), ``keys`` (list of
strings), ``event_time`` and ``watermark`` (RFC 3339, or epoch milliseconds as a
number or a string of digits), ``id`` (the message id; default: the line number),
``headers`` (an object of strings) and ``user_metadata`` (an object of groups, each
an object of strings, sent as UTF-8 bytes): the last two exist on Numaflow >= 1.4
only (user metadata from 1.7).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from pynumaflow._cli._errors import UsageError

__all__ = ["Record", "parse_duration", "parse_time", "read_records"]

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = frozenset(
    {"value", "value_b64", "keys", "event_time", "watermark", "id", "headers", "user_metadata"}
)
_MILLIS = re.compile(r"-?[0-9]+")
_FRACTION = re.compile(r"(?<=[0-9]{2}:[0-9]{2}:[0-9]{2})\.([0-9]+)")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Record:
    """One input: what the platform would send, and the line it came from."""

    line: int
    value: bytes
    keys: tuple[str, ...]
    event_time: datetime
    watermark: datetime
    id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    user_metadata: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)


def parse_time(raw: object) -> datetime:
    """An RFC 3339 time (no offset means UTC) or epoch milliseconds, as an aware datetime.

    Raises:
        ValueError: the value is neither.

    """
    if isinstance(raw, bool):
        raise ValueError(f"not a time: {raw!r}")
    if isinstance(raw, (int, float)):
        return _EPOCH + timedelta(milliseconds=raw)
    if not isinstance(raw, str):
        raise ValueError(f"not a time: {raw!r}")
    text = raw.strip()
    if _MILLIS.fullmatch(text):
        return _EPOCH + timedelta(milliseconds=int(text))
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"  # fromisoformat takes "Z" only from Python 3.11
    # ... and fractions of other than 3 or 6 digits too: microseconds, then, as RFC 3339
    # allows any number of digits.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "00000")[:6], text, count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {raw!r} (use RFC 3339, e.g. 2024-05-06T07:08:09Z, or epoch milliseconds)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_duration(raw: str) -> timedelta:
    """``500ms``, ``60s``, ``5m``, ``1h`` or a number of seconds, as a positive timedelta.

    Raises:
        ValueError: not a duration, or not positive.

    """
    match = _DURATION.fullmatch(raw.strip())
    if not match:
        raise ValueError(f"not a duration: {raw!r} (e.g. 60s, 500ms, 5m, 1h)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {raw!r}")
    return timedelta(seconds=seconds)


def _envelope(text: str) -> Optional[dict[str, Any]]:
    if not text.startswith("{"):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    if (
        isinstance(parsed, dict)
        and parsed.keys() <= _FIELDS
        and ("value" in parsed or "value_b64" in parsed)
    ):
        return parsed
    return None


def _value(fields: dict[str, Any]) -> bytes:
    if "value" in fields and "value_b64" in fields:
        raise ValueError("give value or value_b64, not both")
    if "value_b64" in fields:
        raw = fields["value_b64"]
        if not isinstance(raw, str):
            raise ValueError("value_b64 must be a base64 string")
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error as err:
            raise ValueError(f"value_b64 is not base64: {err}") from None
    value = fields["value"]
    if not isinstance(value, str):
        raise ValueError("value must be a string (use value_b64 for bytes)")
    return value.encode("utf-8")


def _keys(fields: dict[str, Any]) -> tuple[str, ...]:
    keys = fields.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("keys must be a list of strings")
    return tuple(keys)


def _strings(what: str, raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError(f"{what} must be an object of strings")
    return raw


def _user_metadata(raw: object) -> dict[str, Mapping[str, bytes]]:
    if not isinstance(raw, dict):
        raise ValueError("user_metadata must be an object of groups")
    return {
        group: {k: v.encode("utf-8") for k, v in _strings(f"user_metadata[{group!r}]", kv).items()}
        for group, kv in raw.items()
    }


def _record(line: int, text: str, raw: bool, now: datetime) -> Record:
    fields = None if raw else _envelope(text)
    if fields is None:
        return Record(line, text.encode("utf-8"), (), now, now, str(line))
    event_time = parse_time(fields["event_time"]) if "event_time" in fields else now
    watermark = parse_time(fields["watermark"]) if "watermark" in fields else event_time
    msg_id = fields.get("id", str(line))
    if not isinstance(msg_id, str):
        raise ValueError("id must be a string")
    return Record(
        line,
        _value(fields),
        _keys(fields),
        event_time,
        watermark,
        msg_id,
        _strings("headers", fields.get("headers", {})),
        _user_metadata(fields.get("user_metadata", {})),
    )


def read_records(lines: Iterable[str], *, raw: bool = False) -> Iterator[Record]:
    """Parse input lines lazily; records without an event time get the time they are read.

    Args:
        lines: the input, one record per line.
        raw: take every line as a value, never as a JSON envelope.

    Raises:
        UsageError: a line is a malformed envelope (naming the line).

    """
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            yield _record(number, text, raw, datetime.now(UTC))
        except ValueError as err:
            raise UsageError(f"input line {number}: {err}") from None
