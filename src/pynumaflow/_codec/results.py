"""What handlers return, checked and encoded: the message layout every generation shares.

A result message of every protocol starts with ``1 keys, 2 value``; where the rest goes
differs (function.v1 and the transformer carry times, tags sit at 3, 4 or 5), so
:func:`response_body` takes the tags' tag. A handler's return value is checked the same
way in every protocol.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime, time
from typing import Any, Callable, List, Optional, Set, Tuple

from pynumaflow._codec.fields import encode_user_metadata
from pynumaflow._codec.wire import varint
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow._types.function import Message, MessageT
from pynumaflow._types.modern import MetadataResponse, UserMetadata
from pynumaflow._types.nack import NackOptions
from pynumaflow._types.sink import NackResponse, Response, check_response_extras

__all__ = [
    "MESSAGES",
    "MESSAGE_TS",
    "NACK_NOT_IN_REDUCE",
    "NACK_NOT_ON_LEGACY",
    "check_yielded",
    "checked_iter",
    "encode_list",
    "encode_nack_options",
    "encode_strings",
    "message_event_time",
    "message_fields",
    "own_metadata_field",
    "read_batch_answers",
    "read_responses",
    "refuse_nack",
    "response_body",
    "set_metadata_field",
]

# What map and mapt handlers must return, for error messages.
MESSAGES = "Messages (an iterable of Message)"
MESSAGE_TS = "MessageTs (an iterable of MessageT)"
_RESPONSES = "Responses (an iterable of Response)"
_KEPT_RESPONSES = (Response, MetadataResponse, NackResponse)
_BATCH_RESPONSES = "BatchResponses (an iterable of BatchResponse)"
_SHOWN_IDS = 5


def encode_strings(tag: bytes, items: Iterable[str], out: List[bytes], what: str) -> None:
    """Append ``items`` to ``out`` as repeated string field ``tag``, checking each."""
    for item in items:
        if not isinstance(item, str):
            raise ReturnTypeError(f"message {what} must be str, found {type(item).__name__}")
        try:
            raw = item.encode()
        except UnicodeEncodeError as err:
            raise ReturnTypeError(f"message {what} is not encodable as UTF-8: {err}") from None
        out.append(tag)
        out.append(varint(len(raw)))
        out.append(raw)


def message_fields(message: Any) -> Tuple[Iterable[str], bytes, Iterable[str]]:
    """The keys, value and tags of a handler's output message, checked where not typed."""
    if type(message) is Message or type(message) is MessageT:
        return message._keys, message._value, message._tags
    try:
        keys, value, tags = message.keys, message.value, message.tags
    except AttributeError:
        raise ReturnTypeError(f"expected Message objects, found {type(message).__name__}") from None
    if not isinstance(value, bytes):
        raise ReturnTypeError(f"message value must be bytes, found {type(value).__name__}")
    return keys, value, tags


def response_body(
    message: Any,
    event_time: Optional[bytes] = None,
    watermark: Optional[bytes] = None,
    tags_tag: bytes = b"\x2a",
) -> bytes:
    """Encode one result message (without its own tag and length).

    Fields: keys 1, value 2, ``event_time`` 3 and ``watermark`` 4 (encoded bodies, left
    out when None), tags with ``tags_tag`` (field 5 in function.v1's DatumResponse).
    The v1 results share the layout up to their tags: map.v1 ``Result`` has tags at 3,
    the transformer's at 4.
    """
    keys, value, tags = message_fields(message)
    out: List[bytes] = []
    encode_strings(b"\x0a", keys, out, "keys")
    if value:
        out.append(b"\x12")
        out.append(varint(len(value)))
        out.append(value)
    if event_time is not None:
        out.append(b"\x1a")
        out.append(varint(len(event_time)))
        out.append(event_time)
    if watermark is not None:
        out.append(b"\x22")
        out.append(varint(len(watermark)))
        out.append(watermark)
    encode_strings(tags_tag, tags, out, "tags")
    return b"".join(out)


def own_metadata_field(tag: bytes, message: Any) -> bytes:
    """A modern API message's own user metadata as its ``metadata`` field (with ``tag``).

    As pynumaflow 0.14.0 sends it: present (maybe empty) when the message has a
    ``UserMetadata``, absent when it has none (``None``).
    """
    metadata = getattr(message, "user_metadata", None)
    if metadata is None:
        return b""
    if not isinstance(metadata, UserMetadata):
        raise ReturnTypeError(
            f"message user_metadata must be UserMetadata, found {type(metadata).__name__}"
        )
    body = encode_user_metadata(metadata._data)
    return tag + varint(len(body)) + body


def set_metadata_field(tag: bytes, message: Any) -> bytes:
    """:func:`own_metadata_field`, left out when the message's user metadata is empty.

    For the windowed kinds' results (reduce, reduce stream, session reduce,
    accumulator), which pynumaflow 0.14.0 sends without metadata: the same bytes unless a
    handler set some.
    """
    if not getattr(message, "user_metadata", None):
        return b""
    return own_metadata_field(tag, message)


def checked_iter(result: object, expected: str) -> Iterable[Any]:
    """Iterate what a handler returned, refusing what is plainly not ``expected``."""
    if result is None or isinstance(result, (str, bytes, bytearray, dict)):
        raise ReturnTypeError(f"handler returned {type(result).__name__}; expected {expected}")
    try:
        return iter(result)  # type: ignore[call-overload, no-any-return]
    except TypeError:
        raise ReturnTypeError(
            f"handler returned {type(result).__name__}; expected {expected}"
        ) from None


def encode_list(result: object, expected: str, body: Callable[[Any], bytes]) -> bytes:
    """Encode what a handler returned as repeated field 1, each item by ``body``.

    ``expected`` names what the handler should have returned, for the error message.
    """
    out: List[bytes] = []
    for message in checked_iter(result, expected):
        encoded = body(message)
        out.append(b"\x0a")
        out.append(varint(len(encoded)))
        out.append(encoded)
    return b"".join(out)


def check_yielded(message: object) -> None:
    """Reject what a streaming handler yields (or puts) that is plainly not a Message.

    Raises:
        ReturnTypeError: ``message`` is None, a str or bytes.

    """
    if isinstance(message, (str, bytes)) or message is None:
        raise ReturnTypeError(f"stream handler yielded {type(message).__name__}; expected Message")


def message_event_time(message: Any, request_date: date) -> datetime:
    """The event time a mapt handler's MessageT assigned, as a datetime (naive means UTC).

    A bare ``datetime.time`` is that time of day on ``request_date``, the UTC date of
    the request's event time (keeping the time's tzinfo, if any).

    Raises:
        ReturnTypeError: ``message`` has no ``event_time``, or it is not a time.

    """
    try:
        moment = message.event_time
    except AttributeError:
        raise ReturnTypeError(
            f"expected MessageT objects, found {type(message).__name__}"
        ) from None
    if isinstance(moment, time) and not isinstance(moment, datetime):
        resolved = datetime.combine(request_date, moment.replace(tzinfo=None))
        return resolved if moment.tzinfo is None else resolved.replace(tzinfo=moment.tzinfo)
    if not isinstance(moment, datetime):
        raise ReturnTypeError(
            f"MessageT event_time must be a datetime, found {type(moment).__name__}"
        )
    return moment


def read_responses(result: object) -> List[Response]:
    """Check what a sink handler returned and list its responses.

    Objects with ``id`` (str), ``success`` (bool) and ``err`` (str or None) attributes
    count as responses, like :class:`~pynumaflow.sink.Response` itself; only a Response
    (or subclass) carries a v1 ``status``, ``value`` and ``keys``.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of such objects.

    """
    responses: List[Response] = []
    for item in checked_iter(result, _RESPONSES):
        try:
            msg_id, success, err = item.id, item.success, item.err
        except AttributeError:
            raise ReturnTypeError(
                f"expected Response objects, found {type(item).__name__}"
            ) from None
        if not isinstance(msg_id, str):
            raise ReturnTypeError(f"Response id must be str, found {type(msg_id).__name__}")
        if not isinstance(success, bool):
            raise ReturnTypeError(f"Response success must be bool, found {type(success).__name__}")
        if err is not None and not isinstance(err, str):
            raise ReturnTypeError(f"Response err must be str or None, found {type(err).__name__}")
        if not isinstance(item, Response):
            responses.append(Response(msg_id, success, err))
            continue
        if item.status is not None or item.value is not None or item.keys is not None:
            check_response_extras(item)
        if type(item) not in _KEPT_RESPONSES:
            item = Response(msg_id, success, err, item.status, item.value, item.keys)
        responses.append(item)
    return responses


def read_batch_answers(result: object, ids: Collection[str]) -> List[Tuple[str, Any]]:
    """Check what a batch map handler returned for the batch of ``ids``: one answer per id.

    Objects with ``id`` (str) and ``messages`` attributes count as answers, like
    :class:`~pynumaflow.batchmapper.BatchResponse`. Returns ``(id, messages)`` in the
    handler's order; the messages are checked when they are encoded.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of such objects, or it answers an
            id not in the batch, an id twice, or not every id of the batch.

    """
    answers: List[Tuple[str, Any]] = []
    seen: Set[str] = set()
    unknown: List[str] = []
    repeated: List[str] = []
    for item in checked_iter(result, _BATCH_RESPONSES):
        try:
            msg_id, messages = item.id, item.messages
        except AttributeError:
            raise ReturnTypeError(
                f"expected BatchResponse objects, found {type(item).__name__}"
            ) from None
        if not isinstance(msg_id, str):
            raise ReturnTypeError(f"BatchResponse id must be str, found {type(msg_id).__name__}")
        if msg_id not in ids:
            unknown.append(msg_id)
        elif msg_id in seen:
            repeated.append(msg_id)
        seen.add(msg_id)
        answers.append((msg_id, messages))
    missing = [msg_id for msg_id in ids if msg_id not in seen]
    problems = [
        _ids("answers ids that are not in the batch", unknown),
        _ids("answers ids more than once", repeated),
        _ids(f"has no BatchResponse for {len(missing)} of the batch's {len(ids)} ids", missing),
    ]
    if any(problems):
        raise ReturnTypeError("BatchResponses " + "; ".join(p for p in problems if p))
    return answers


def _ids(what: str, ids: List[str]) -> str:
    if not ids:
        return ""
    shown = ", ".join(map(repr, ids[:_SHOWN_IDS]))
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return f"{what}: {shown}{more}"


def encode_nack_options(options: NackOptions) -> bytes:
    """A ``common.NackOptions`` body: reason 1, max_deliveries 2, delay 3, nack_map 4.

    The first three are ``optional``: each is sent when set, even to its default value.
    """
    out: List[bytes] = []
    if options.reason is not None:
        raw = options.reason.encode()
        out += (b"\x0a", varint(len(raw)), raw)
    if options.max_deliveries is not None:
        out += (b"\x10", varint(options.max_deliveries))
    delay = options.delay_ms
    if delay is not None:
        out += (b"\x18", varint(delay))
    for key, value in options.nack_map.items():
        entry = _string_field(b"\x0a", key) + _string_field(b"\x12", value)  # both always
        out += (b"\x22", varint(len(entry)), entry)
    return b"".join(out)


def _string_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + varint(len(raw)) + raw


NACK_NOT_ON_LEGACY = (
    "a NACK result (to_nack()) needs Numaflow >= 1.8.2; on the 0.8-0.9 "
    "protocol it fails the request, so that the platform retries the input"
)
NACK_NOT_IN_REDUCE = "a NACK result (Message.to_nack()) has no input to nack in a reduce result"


def refuse_nack(message: Any, why: str) -> None:
    """Refuse a NACK result where it cannot be sent.

    Raises:
        ReturnTypeError: ``message`` is a NACK result, saying ``why``.

    """
    if getattr(message, "_nack", None) is not None:
        raise ReturnTypeError(why)
