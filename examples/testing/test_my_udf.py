"""Testing handlers with pynumaflow.testing: a real server, real gRPC, no cluster.

Each test starts the server on a temporary socket and calls it as the platform would.
Plain tests use the `_sync` helpers; async tests need an async pytest plugin, e.g.
anyio's (it comes with pynumaflow's dependency anyio): mark them `@pytest.mark.anyio`.
In your own project, copy this file and my_udf.py beside each other and run `pytest`.
In a clone of this repository, whose pytest settings use the test extra's plugins
(pytest-timeout), first `pip install -e '.[test]'`, then `pytest examples/testing`.
"""

from datetime import datetime, timezone

import pytest

from pynumaflow import testing
from pynumaflow.function import DROP, IntervalWindow, Message, Messages
from pynumaflow.sink import Response, Responses

from my_udf import count_words, reject_blank, shout

UTC = timezone.utc


def test_shout_upper_cases_and_keeps_keys() -> None:
    """A plain (sync) test: the map handler's message comes back as the platform gets it."""
    with testing.serve_function_sync(map_handler=shout) as udf:
        assert udf.map(b"hello", keys=["k"]) == Messages(Message(b"HELLO", keys=["k"]))


def test_shout_drops_blank_input() -> None:
    """Blank input becomes a message tagged DROP, which the platform drops."""
    with testing.serve_function_sync(map_handler=shout) as udf:
        assert list(udf.map(b"   ")[0].tags) == [DROP]


def test_shout_in_two_worker_processes() -> None:
    """As MultiProcServer and MapMultiprocServer serve it: one stream over 2 workers.

    The workers import the handler by name: it lives at the top level of my_udf.py.
    """
    with testing.serve_function_sync(map_handler=shout, processes=2) as udf:
        assert [udf.map(word)[0].value for word in ("one", "two", "three")] == [
            b"ONE",
            b"TWO",
            b"THREE",
        ]


@pytest.mark.anyio
async def test_shout_tags_long_text() -> None:
    """An async test: same server, awaited calls."""
    async with testing.serve_function(map_handler=shout) as udf:
        messages = await udf.map("a long sentence")
    assert [(m.value, m.tags) for m in messages] == [(b"A LONG SENTENCE", ["long"])]


@pytest.mark.anyio
async def test_shout_fails_the_call_on_bytes_that_are_not_text() -> None:
    """A handler that raises fails its call as on Numaflow >= 1.4.

    The status is INTERNAL, with the error and the handler's traceback.
    """
    async with testing.serve_function(map_handler=shout) as udf:
        with pytest.raises(testing.CallError) as failure:
            await udf.map(b"\xff")
    assert failure.value.status == "INTERNAL"
    assert failure.value.details.startswith("UDF_EXECUTION_ERROR(udf): UnicodeDecodeError")
    assert failure.value.traceback is not None
    assert "in shout" in failure.value.traceback


@pytest.mark.anyio
async def test_shout_sees_headers_and_keeps_user_metadata() -> None:
    """Numaflow >= 1.4 carries headers and user metadata: the kit sends both."""
    async with testing.serve_function(map_handler=shout) as udf:
        (message,) = await udf.map(
            "hi", headers={"lang": "en"}, user_metadata={"trace": {"id": b"42"}}
        )
    assert message.value == b"HI"
    # On v1 the kit returns ResultMessage: a Message with the result's user metadata.
    assert isinstance(message, testing.ResultMessage)
    assert message.user_metadata == {"trace": {"id": b"42"}}


@pytest.mark.anyio
async def test_count_words_per_key_in_a_window() -> None:
    """Reduce: datums are grouped by keys, one answer per key for the window."""
    start = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
    window = IntervalWindow(start, start.replace(minute=1))
    datums = [
        testing.make_datum("one two", keys=["a"], event_time=start),
        testing.make_datum("three", keys=["b"], event_time=start),
        testing.make_datum("four five six", keys=["a"], event_time=start),
    ]
    async with testing.serve_function(reduce_handler=count_words) as udf:
        messages = await udf.reduce(datums, window=window)
    assert sorted((m.keys[0], m.value) for m in messages) == [("a", b"5"), ("b", b"1")]


def test_reject_blank_answers_every_datum() -> None:
    """Sink: one response per datum, ids "1", "2"... for datums given as values."""
    with testing.serve_sink_sync(reject_blank) as sink:
        responses = sink.sink([b"kept", b"  "])
    assert responses == Responses(Response.as_success("1"), Response.as_failure("2", "blank"))
