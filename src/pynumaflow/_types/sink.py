"""The datatypes user-defined sinks receive and return (pynumaflow 0.4 API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import List, Literal, Optional

from pynumaflow._types.collections import ItemList
from pynumaflow._types.errors import ReturnTypeError
from pynumaflow._types.function import NO_HEADERS
from pynumaflow._types.nack import NackOptions

__all__ = [
    "Datum",
    "NackResponse",
    "Response",
    "ResponseStatus",
    "Responses",
    "check_response_extras",
]


def _check_time(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"Wrong data type: {type(value)} for Datum.{name}")
    return value


class Datum:
    """One datum of the batch a sink handler receives.

    Times are naive ``datetime`` objects in UTC, microsecond exact, as in pynumaflow 0.4.
    ``str()`` and ``repr()`` never raise, whatever bytes the value holds.

    ``headers`` are the message headers Numaflow >= 1.4 sends (empty on 0.8-0.9).

    Args:
        keys: the keys of the datum; ``None`` means none.
        sink_msg_id: the id the response for this datum must carry.
        value: the payload; ``None`` means empty.
        event_time: the event time.
        watermark: the watermark.
        headers: the message headers.

    Raises:
        TypeError: a time is not a ``datetime``.

    """

    __slots__ = (
        "_event_time",
        "_headers",
        "_id",
        "_keys",
        "_user_metadata",
        "_value",
        "_watermark",
    )

    def __init__(
        self,
        keys: Optional[List[str]],
        sink_msg_id: str,
        value: Optional[bytes],
        event_time: datetime,
        watermark: datetime,
        *,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._keys = keys if keys is not None else []
        self._id = sink_msg_id or ""
        self._value = value or b""
        self._event_time = _check_time("event_time", event_time)
        self._watermark = _check_time("watermark", watermark)
        self._headers = MappingProxyType(dict(headers)) if headers else NO_HEADERS
        # Encoded common.Metadata holding the request's user metadata (Numaflow >= 1.7),
        # echoed into an on-success replacement message so that it is not lost.
        self._user_metadata = b""

    @property
    def headers(self) -> Mapping[str, str]:
        """The message headers (read-only; Numaflow >= 1.4, else empty)."""
        return self._headers

    @property
    def id(self) -> str:
        """The datum's id: answer it with ``Response.as_success(id)`` or ``as_failure``."""
        return self._id

    @property
    def keys(self) -> List[str]:
        """The keys of the datum (a property, as in pynumaflow 0.4's sink)."""
        return self._keys

    @property
    def value(self) -> bytes:
        """The payload."""
        return self._value

    @property
    def event_time(self) -> datetime:
        """The event time (naive, UTC)."""
        return self._event_time

    @property
    def watermark(self) -> datetime:
        """The watermark (naive, UTC)."""
        return self._watermark

    def __str__(self) -> str:
        # 0.4's format; bytes that are not UTF-8 show as escapes instead of raising.
        value = self._value.decode("utf-8", "backslashreplace")
        return (
            f"id: {self._id}, value: {value}, "
            f"event_time: {self._event_time}, watermark: {self._watermark}"
        )

    def __repr__(self) -> str:
        return (
            f"Datum(keys={self._keys!r}, sink_msg_id={self._id!r}, value={self._value!r}, "
            f"event_time={self._event_time!r}, watermark={self._watermark!r})"
        )


ResponseStatus = Literal["fallback", "serve", "on_success", "nack"]
"""What a :class:`Response` asks of Numaflow >= 1.4 beyond plain success or failure."""

_STATUS_SUCCESS = {"fallback": False, "serve": True, "on_success": True, "nack": False}


@dataclass(slots=True, repr=False)
class Response:
    """The outcome of writing one datum: the platform retries the failed ones.

    A plain (mutable) dataclass as in pynumaflow 0.4, whose ``id``, ``success`` and
    ``err`` keep their meaning. Numaflow >= 1.4 (the sink.v1 ``Sink`` protocol) knows more
    outcomes than success and failure; :meth:`as_fallback`, :meth:`as_serve` and
    :meth:`as_on_success` ask for them, and record in ``success`` what the legacy
    protocol of Numaflow 0.8-0.9, which has only success and failure, reports instead.

    Attributes:
        id: the id of the datum this answers.
        success: whether the datum was written (what the legacy protocol sends).
        err: why it was not (``None`` on success).
        status: ``None`` for a plain success or failure (``success`` decides), else
            ``"fallback"``, ``"serve"`` or ``"on_success"``; ``success`` must then be
            False, True and True respectively.
        value: with ``"serve"``, what a serving pipeline stores; with ``"on_success"``,
            the value of the message the on-success sink gets instead of the datum's.
        keys: with ``"on_success"``, the keys of that message.

    """

    id: str
    success: bool
    err: Optional[str] = None
    status: Optional[ResponseStatus] = None
    value: Optional[bytes] = None
    keys: Optional[List[str]] = None

    @classmethod
    def as_success(cls, id_: str) -> Response:
        """Return a response saying the datum with this id was written."""
        return cls(id_, True, None)

    @classmethod
    def as_failure(cls, id_: str, err_msg: str) -> Response:
        """Return a response saying the datum with this id failed, and why.

        The platform records ``err_msg`` and retries the datum; on Numaflow >= 1.4 its
        ``onFailure`` strategy decides what happens after the configured retries.
        """
        return cls(id_, False, err_msg)

    @classmethod
    def as_fallback(cls, id_: str) -> Response:
        """Return a response sending the datum with this id to the fallback sink.

        Needs Numaflow >= 1.4 with a fallback sink configured on the vertex (without one
        the platform treats the answer as an error). The legacy protocol (Numaflow
        0.8-0.9) has no fallback sink: there it is a failure, and the platform retries
        the datum, so that nothing is lost.
        """
        return cls(id_, False, None, "fallback")

    @classmethod
    def as_serve(cls, id_: str, payload: Optional[bytes] = None) -> Response:
        """Return a response storing ``payload`` as the serving pipeline's answer for the datum.

        Needs Numaflow >= 1.5 and a serving pipeline; without ``payload`` the datum's own
        value is stored. Numaflow 1.4 reads the status as a success, and so does the
        legacy protocol (Numaflow 0.8-0.9): the datum counts as written.

        Raises:
            TypeError: ``payload`` is not bytes.

        """
        response = cls(id_, True, None, "serve", payload)
        check_response_extras(response)
        return response

    @classmethod
    def as_on_success(
        cls, id_: str, value: Optional[bytes] = None, keys: Optional[List[str]] = None
    ) -> Response:
        """Return a response saying the datum was written and goes on to the on-success sink.

        Needs Numaflow >= 1.8.0 with an on-success sink configured on the vertex (without
        one the platform treats the answer as an error). Without ``value`` the on-success
        sink gets the datum itself; with it, a message of this value and ``keys``
        (default none) instead, carrying the datum's user metadata. Numaflow 1.4-1.7 read
        the status as a plain success, and so does the legacy protocol (Numaflow
        0.8-0.9): the datum counts as written and goes nowhere else.

        Raises:
            TypeError: ``value`` is not bytes, ``keys`` not a list of str, or ``keys``
                is given without ``value`` (the message replaces both).

        """
        response = cls(id_, True, None, "on_success", value, keys)
        check_response_extras(response)
        return response

    @classmethod
    def as_nack(cls, id_: str, options: Optional[NackOptions] = None) -> Response:
        """Return a response asking the platform to redeliver the datum later (a NACK).

        Honoured by Numaflow >= 1.8.2 on v1, and sent as such only when
        ``PYNUMAFLOW_NACK=1`` says the platform is that new; elsewhere (and on the
        legacy protocol) it is a failure with the options' reason as its error, which
        the platform retries.
        """
        options = options if options is not None else NackOptions()
        return NackResponse(id_, False, options.reason or "nack", "nack", nack_options=options)

    def __repr__(self) -> str:
        # pynumaflow 0.4's repr for the responses it knew.
        text = f"Response(id={self.id!r}, success={self.success!r}, err={self.err!r}"
        if self.status is not None:
            text += f", status={self.status!r}"
        if self.value is not None:
            text += f", value={self.value!r}"
        if self.keys is not None:
            text += f", keys={self.keys!r}"
        return text + ")"


@dataclass(slots=True, repr=False)
class NackResponse(Response):
    """A :meth:`Response.as_nack` answer, with its options."""

    nack_options: NackOptions = field(default_factory=NackOptions)


def check_response_extras(response: Response) -> None:
    """Check ``status``, ``value`` and ``keys`` of a response (and agreement with ``success``).

    Raises:
        ReturnTypeError: one of them is wrong, saying which and why.

    """
    status, value, keys = response.status, response.value, response.keys
    if status is None:
        if value is not None or keys is not None:
            raise ReturnTypeError(
                "Response value and keys are only sent with status 'serve' or 'on_success'"
            )
        return
    if not isinstance(status, str) or status not in _STATUS_SUCCESS:
        raise ReturnTypeError(
            "Response status must be None, 'fallback', 'serve', 'on_success' or 'nack', "
            f"found {status!r}"
        )
    expected = _STATUS_SUCCESS[status]
    if response.success is not expected:
        raise ReturnTypeError(f"Response status {status!r} needs success={expected}")
    if value is not None and status in ("fallback", "nack"):
        raise ReturnTypeError("Response value is only sent with status 'serve' or 'on_success'")
    if value is not None and not isinstance(value, bytes):
        raise ReturnTypeError(f"Response value must be bytes, found {type(value).__name__}")
    if keys is None:
        return
    if status != "on_success":
        raise ReturnTypeError("Response keys are only sent with status 'on_success'")
    if value is None:
        raise ReturnTypeError(
            "Response keys need a value too: the on-success message replaces both"
        )
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ReturnTypeError("Response keys must be a list of str")
    for key in keys:
        try:
            key.encode()
        except UnicodeEncodeError as err:
            raise ReturnTypeError(f"Response keys must be encodable as UTF-8: {err}") from None


class Responses(ItemList[Response]):
    """What a sink handler returns, one :class:`Response` per datum: ``Responses(*items)``."""

    __slots__ = ()
