"""The public datatypes behave as pynumaflow 0.4's, plus the documented additions."""

from __future__ import annotations

from datetime import datetime, time

import pytest

import pynumaflow.function
from pynumaflow.function import (
    DROP,
    Datum,
    DatumMetadata,
    IntervalWindow,
    Message,
    Messages,
    MessageT,
    MessageTs,
    Metadata,
)


def test_public_names_are_exactly_the_documented_ones() -> None:
    """pynumaflow.function exports the 0.4 names and NACK's two, nothing more or missing."""
    assert sorted(pynumaflow.function.__all__) == sorted(
        [
            "AsyncServer",
            "DROP",
            "Datum",
            "DatumMetadata",
            "IntervalWindow",
            "Message",
            "MessageT",
            "MessageTs",
            "Messages",
            "Metadata",
            "MultiProcServer",
            "NACK",
            "NackOptions",
            "Server",
        ]
    )
    public = {n for n in dir(pynumaflow.function) if not n.startswith("_")}
    assert public == set(pynumaflow.function.__all__)


def test_message_defaults_and_drop() -> None:
    """None becomes empty value, keys and tags; to_drop() carries only DROP."""
    message = Message(None)
    assert (message.value, message.keys, message.tags) == (b"", [], [])
    dropped = Message.to_drop()
    assert (dropped.value, dropped.keys, dropped.tags) == (b"", [], [DROP])
    assert DROP == "U+005C__DROP__"
    assert Message(b"v", ["k"], ["t"]) == Message(b"v", ["k"], ["t"])
    assert Message(b"v") != Message(b"w")
    assert repr(Message(b"v", ["k"])) == "Message(value=b'v', keys=['k'], tags=[])"


def test_message_rejects_wrong_types_with_a_hint() -> None:
    """A str value says how to fix it; keys must be a list of str."""
    with pytest.raises(TypeError, match=r"must be bytes, got str; encode it"):
        Message("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be a list of str"):
        Message(b"", keys="k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="found int"):
        Message(b"", tags=[1])  # type: ignore[list-item]


def test_message_t_accepts_both_argument_orders() -> None:
    """MessageT(value, event_time, ...) and the seed README's MessageT(event_time, value, keys)."""
    when = datetime(2024, 1, 2)
    assert MessageT(b"v", when, ["k"]) == MessageT(when, b"v", ["k"])
    assert MessageT(time(), b"v", ["k"]).event_time == time()
    assert MessageT.to_drop().event_time == datetime(1, 1, 1)
    assert MessageT.to_drop().tags == [DROP]
    with pytest.raises(TypeError, match="event_time must be a datetime"):
        MessageT(b"v", b"w")  # type: ignore[arg-type]


def test_messages_list_behaviour() -> None:
    """Messages: *items, append, len, iteration, indexing; slicing raises; items() warns."""
    messages = Messages(Message(b"1"), Message(b"2"))
    messages.append(Message(b"3"))
    assert len(messages) == 3
    assert [m.value for m in messages] == [b"1", b"2", b"3"]
    assert messages[-1].value == b"3"
    with pytest.raises(TypeError, match="does not support slicing"):
        messages[0:1]
    with pytest.deprecated_call():
        assert len(messages.items()) == 3
    assert len(MessageTs(MessageT(b"", datetime(2024, 1, 1)))) == 1


def test_datum_keys_is_a_method_and_a_list() -> None:
    """datum.keys() works as in 0.4 and datum.keys works as a list, as in later versions."""
    datum = Datum(["a", "b"], b"v", datetime(2024, 1, 1), datetime(2024, 1, 1))
    assert datum.keys() == ["a", "b"]
    assert datum.keys == ["a", "b"]
    assert datum.keys[0] == "a"
    assert list(datum.keys) == ["a", "b"]
    assert len(datum.keys) == 2
    assert datum.metadata == DatumMetadata("", 0)


def test_datum_rejects_non_datetime_times() -> None:
    """As in 0.4, event_time and watermark must be datetimes."""
    with pytest.raises(TypeError, match="event_time"):
        Datum([], b"", "yesterday", datetime(2024, 1, 1))  # type: ignore[arg-type]


def test_window_metadata() -> None:
    """IntervalWindow and Metadata expose their fields."""
    window = IntervalWindow(datetime(2024, 1, 1), datetime(2024, 1, 2))
    assert Metadata(window).interval_window.end == datetime(2024, 1, 2)
