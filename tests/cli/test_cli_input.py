"""The command's input and output formats: envelopes, times, durations, JSON lines."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from pynumaflow._cli._errors import UsageError
from pynumaflow._cli._input import parse_duration, parse_time, read_records
from pynumaflow._cli._output import format_time, message_line, response_line
from pynumaflow._cli._progress import Progress
from pynumaflow.function import Message, MessageT
from pynumaflow.sink import Response

UTC = timezone.utc


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T07:08:09.5z", datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        # any number of fraction digits (Python 3.10's fromisoformat takes only 3 or 6)
        ("2024-05-06T07:08:09.12Z", datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=UTC)),
        ("2024-05-06T09:08:09.123456789+02:00", datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)),
        ("2024-05-06 07:08:09", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        (1714979289000, datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("1714979289001", datetime(2024, 5, 6, 7, 8, 9, 1000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_takes_rfc3339_and_epoch_millis(raw: object, expected: datetime) -> None:
    """RFC 3339 (offset or not, Z or z) and epoch milliseconds give the same aware UTC time."""
    assert parse_time(raw) == expected
    assert parse_time(raw).tzinfo == UTC


@pytest.mark.parametrize("raw", ["yesterday", "", True, None, [1]])
def test_parse_time_rejects_other_values(raw: object) -> None:
    """Anything else is a ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match="not a time"):
        parse_time(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("60s", 60), ("500ms", 0.5), ("5m", 300), ("1h", 3600), ("2.5", 2.5)]
)
def test_parse_duration(raw: str, seconds: float) -> None:
    """Durations take ms, s, m, h or bare seconds."""
    assert parse_duration(raw) == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["0s", "-1s", "1d", "soon"])
def test_parse_duration_rejects_bad_values(raw: str) -> None:
    """Zero, negative, unknown units and words are refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


def test_envelope_fields_and_plain_lines() -> None:
    """Envelopes give every field; other lines (JSON payloads too) are text values."""
    lines = [
        '{"value": "v", "keys": ["a", "b"], "event_time": 1000, "watermark": 500, "id": "x"}\n',
        '{"value_b64": "/w=="}\n',
        "plain text\n",
        "\n",
        '{"user": 1}\n',
        '{"value": "v", "extra": 1}\n',
    ]
    records = list(read_records(lines))
    first = records[0]
    assert (first.line, first.value, first.keys, first.id) == (1, b"v", ("a", "b"), "x")
    assert first.event_time == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert first.watermark == datetime(1970, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert records[1].value == b"\xff"
    assert records[1].watermark == records[1].event_time  # the watermark defaults to it
    assert [(r.line, r.value, r.id) for r in records[2:]] == [
        (3, b"plain text", "3"),
        (5, b'{"user": 1}', "5"),
        (6, b'{"value": "v", "extra": 1}', "6"),
    ]


def test_raw_takes_envelopes_as_text() -> None:
    """--raw sends every line as it is."""
    (record,) = read_records(['{"value": "v"}'], raw=True)
    assert record.value == b'{"value": "v"}'


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"value": 1}', "value must be a string"),
        ('{"value": "a", "value_b64": "YQ=="}', "not both"),
        ('{"value_b64": "***"}', "not base64"),
        ('{"value": "a", "keys": "k"}', "keys must be a list"),
        ('{"value": "a", "event_time": "noon"}', "not a time"),
        ('{"value": "a", "id": 7}', "id must be a string"),
    ],
)
def test_malformed_envelopes_name_their_line(line: str, problem: str) -> None:
    """A bad envelope is a usage error that names the line and the problem."""
    with pytest.raises(UsageError, match=f"input line 2: .*{problem}"):
        list(read_records(["ok", line]))


def test_output_lines() -> None:
    """Messages print keys, value or value_b64, tags and times; responses id, success, err."""
    moment = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert json.loads(message_line(Message(b"v", ["k"], ["t"]), moment)) == {
        "keys": ["k"],
        "value": "v",
        "tags": ["t"],
        "event_time": "2024-05-06T07:08:09.123Z",
    }
    assert json.loads(message_line(MessageT(b"\xff", moment))) == {
        "keys": [],
        "value_b64": "/w==",
        "tags": [],
        "event_time": "2024-05-06T07:08:09.123Z",
    }
    assert json.loads(response_line(Response.as_failure("1", "no"))) == {
        "id": "1",
        "success": False,
        "err": "no",
    }
    assert format_time(datetime(2024, 1, 1, 0, 0, 0, 1)) == "2024-01-01T00:00:00.000001Z"


def test_progress_line_only_on_long_runs() -> None:
    """The progress line appears after a second, with the count and the rate, then ends."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, enabled=True, clock=lambda: now[0])
    progress.advance(10)
    assert stream.getvalue() == ""
    now[0] = 2.0
    progress.advance(10)
    progress.finish()
    assert stream.getvalue() == "\rpynumaflow: 20 inputs, 10/s \rpynumaflow: 20 inputs, 10/s \n"


def test_progress_is_off_when_stderr_is_not_a_terminal() -> None:
    """Redirected stderr gets no progress line."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, clock=lambda: now[0])
    now[0] = 5.0
    progress.advance()
    progress.finish()
    assert stream.getvalue() == ""
