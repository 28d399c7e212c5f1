"""The modern API answers as pynumaflow 0.14.0 does: one script, served by both, compared.

Each script is written against pynumaflow 0.14.0's API and picks its server class and
handler form (function or handler class, sync or async) from the environment. It runs
unchanged under 0.14.0 itself (the reference virtualenv) and under ours; the 0.14.0
wheel's stubs send both the same requests, and both must give the same answers.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reference_client import ReferenceClient, b64, rfc3339, unb64
from twins import Served, serve_and_converse

pytestmark = [pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
EVENT_TIME = datetime(2022, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
HANDSHAKE = {"handshake": {"sot": True}}
USER_METADATA = {"g": {"key_value": {"k": b64(b"\x00v")}}}
WINDOW_START = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
WINDOW = {
    "start": rfc3339(WINDOW_START),
    "end": rfc3339(WINDOW_START + timedelta(minutes=1)),
    "slot": "slot-0",
}


def request(i: int, value: bytes, event_time: datetime = EVENT_TIME) -> dict[str, Any]:
    return {
        "keys": [f"k{i}"],
        "value": b64(value),
        "event_time": rfc3339(event_time),
        "watermark": rfc3339(datetime(2022, 1, 1, tzinfo=UTC)),
        "headers": {"x-h": f"h{i}"},
        "metadata": {
            "previous_vertex": "in",
            "sys_metadata": {"s": {"key_value": {"k": b64(b"sys")}}},
            "user_metadata": USER_METADATA,
        },
    }


MAP_REQUESTS = [HANDSHAKE] + [
    {"id": f"m{i}", "request": request(i, value)} for i, value in enumerate([b"a,b", b"c", b""])
]
TRANSFORM_REQUESTS = [HANDSHAKE] + [
    {"request": {**request(i, b"v%d" % i, moment), "id": f"t{i}"}}
    for i, moment in enumerate(
        [datetime(2021, 5, 1, tzinfo=UTC), datetime(2022, 5, 1, tzinfo=UTC), EVENT_TIME]
    )
]
REDUCE_REQUESTS = [
    {
        "operation": {"event": event, "windows": [WINDOW]},
        "payload": {k: v for k, v in request(0, value, WINDOW_START).items() if k != "keys"}
        | {"keys": [key]},
    }
    for event, key, value in [("OPEN", "a", b"1"), ("APPEND", "b", b"22"), ("APPEND", "a", b"3")]
]
SINK_REQUESTS = [
    HANDSHAKE,
    *({"request": {**request(i, b"w%d" % i), "id": f"d{i}"}} for i in range(5)),
    {"status": {"eot": True}},
]

PRELUDE = """\
import os
from collections.abc import AsyncIterable, Iterator

SERVER = os.environ["SERVER"]
INVOKE = os.environ["INVOKE"]
"""

MAP_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.mapper import (
    Datum, MapAsyncServer, MapMultiprocServer, MapServer, Mapper, Message, Messages, UserMetadata,
)


def answer(keys: list[str], datum: Datum) -> Messages:
    if datum.value == b"boom":
        raise ValueError("boom")
    if not datum.value:
        return Messages(Message.to_drop())
    extra = UserMetadata()
    extra.add_key("out", "h", datum.headers["x-h"].encode())
    return Messages(
        Message(datum.value, keys=keys, tags=["t"], user_metadata=datum.user_metadata),
        Message(str(datum.event_time).encode(), keys=["time"], user_metadata=extra),
        Message(str(datum.watermark).encode()),
        Message(
            repr((datum.system_metadata.groups(), datum.system_metadata.value("s", "k"))).encode()
        ),
    )


def handler(keys: list[str], datum: Datum) -> Messages:
    return answer(keys, datum)


async def async_handler(keys: list[str], datum: Datum) -> Messages:
    return answer(keys, datum)


class SyncMapper(Mapper):
    def handler(self, keys: list[str], datum: Datum) -> Messages:
        return answer(keys, datum)


class AsyncMapper(Mapper):
    async def handler(self, keys: list[str], datum: Datum) -> Messages:
        return answer(keys, datum)


def stopped(loop: object) -> None:
    print("shutdown callback ran", flush=True)


if SERVER == "MapAsyncServer":
    server = MapAsyncServer(
        AsyncMapper() if INVOKE == "class" else async_handler, shutdown_callback=stopped
    )
elif SERVER == "MapMultiprocServer":
    server = MapMultiprocServer(SyncMapper() if INVOKE == "class" else handler, server_count=1)
else:
    server = MapServer(SyncMapper() if INVOKE == "class" else handler)
server.start()
"""
)

MAP_STREAM_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.mapstreamer import Datum, MapStreamAsyncServer, MapStreamer, Message


async def handler(keys: list[str], datum: Datum) -> AsyncIterable[Message]:
    for part in datum.value.split(b","):
        yield Message(part, keys=keys, tags=[datum.headers["x-h"]])


class Splitter(MapStreamer):
    async def handler(self, keys: list[str], datum: Datum) -> AsyncIterable[Message]:
        async for message in handler(keys, datum):
            yield message


server = MapStreamAsyncServer(Splitter() if INVOKE == "class" else handler)
server.start()
"""
)

TRANSFORM_SCRIPT = (
    PRELUDE
    + """\
from datetime import datetime

from pynumaflow.sourcetransformer import (
    Datum, Message, Messages, SourceTransformAsyncServer, SourceTransformer,
    SourceTransformMultiProcServer, SourceTransformServer,
)

CUT = datetime(2022, 1, 1)


def answer(keys: list[str], datum: Datum) -> Messages:
    if datum.event_time < CUT:
        return Messages(Message.to_drop(datum.event_time))
    return Messages(
        Message(datum.value, datetime(2023, 1, 1), keys=keys, tags=["late"],
                user_metadata=datum.user_metadata),
        Message(datum.headers["x-h"].encode(), datum.event_time),
    )


def handler(keys: list[str], datum: Datum) -> Messages:
    return answer(keys, datum)


async def async_handler(keys: list[str], datum: Datum) -> Messages:
    return answer(keys, datum)


class Transformer(SourceTransformer):
    def handler(self, keys: list[str], datum: Datum) -> Messages:
        return answer(keys, datum)


if SERVER == "SourceTransformAsyncServer":
    server = SourceTransformAsyncServer(async_handler)
elif SERVER == "SourceTransformMultiProcServer":
    server = SourceTransformMultiProcServer(handler, server_count=1)
else:
    server = SourceTransformServer(Transformer() if INVOKE == "class" else handler)
server.start()
"""
)

REDUCE_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.reducer import Datum, Message, Messages, Metadata, ReduceAsyncServer, Reducer


async def handler(keys: list[str], datums: AsyncIterable[Datum], md: Metadata) -> Messages:
    values = [datum.value async for datum in datums]
    window = md.interval_window
    text = f"{b'+'.join(values).decode()} {window.start} {window.end}"
    return Messages(Message(text.encode(), keys=keys, tags=["sum"]))


class Counter(Reducer):
    def __init__(self, start: int, *, step: int = 1) -> None:
        self.count = start
        self.step = step

    async def handler(
        self, keys: list[str], datums: AsyncIterable[Datum], md: Metadata
    ) -> Messages:
        async for _ in datums:
            self.count += self.step
        return Messages(Message(str(self.count).encode(), keys=keys))


if INVOKE == "class":
    server = ReduceAsyncServer(Counter, init_args=(10,), init_kwargs={"step": 2})
else:
    server = ReduceAsyncServer(handler)
server.start()
"""
)

SINK_SCRIPT = (
    PRELUDE
    + """\
from pynumaflow.sinker import (
    Datum, Message, Response, Responses, SinkAsyncServer, SinkServer, Sinker,
)


def answer(datum: Datum) -> Response:
    n = int(datum.value[1:])
    if n == 0:
        return Response.as_success(datum.id)
    if n == 1:
        return Response.as_failure(datum.id, "cannot write " + datum.headers["x-h"])
    if n == 2:
        return Response.as_fallback(datum.id)
    if n == 3:
        return Response.as_on_success(datum.id, None)
    return Response.as_on_success(
        datum.id, Message(datum.value + b"!", ["on"], datum.user_metadata)
    )


def handler(datums: Iterator[Datum]) -> Responses:
    return Responses(*(answer(datum) for datum in datums))


async def async_handler(datums: AsyncIterable[Datum]) -> Responses:
    return Responses(*[answer(datum) async for datum in datums])


class SyncSink(Sinker):
    def handler(self, datums: Iterator[Datum]) -> Responses:
        return handler(datums)


class AsyncSink(Sinker):
    async def handler(self, datums: AsyncIterable[Datum]) -> Responses:
        return await async_handler(datums)


if SERVER == "SinkAsyncServer":
    server = SinkAsyncServer(AsyncSink() if INVOKE == "class" else async_handler)
else:
    server = SinkServer(SyncSink() if INVOKE == "class" else handler)
server.start()
"""
)


def canonical(talk: dict[str, Any]) -> Any:
    """Status and responses; responses in any order (they are answered concurrently)."""
    return talk["code"], sorted(json.dumps(r, sort_keys=True) for r in talk["responses"])


def twins(
    client: ReferenceClient,
    tmp_path: Path,
    script: str,
    kind: str,
    requests: list[dict[str, Any]],
    server: str,
    invoke: str,
    *,
    reference_sock: str | None = None,
) -> tuple[Served, Served]:
    """Serve ``script`` with ours, then with 0.14.0; the same conversation with each."""
    path = tmp_path / "udf.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    env = {"SERVER": server, "INVOKE": invoke}
    first = kind != "reduce"  # reduce has no handshake
    ours = serve_and_converse(
        client, path, kind, requests, tmp_path / "o", reference=False, env=env, await_first=first
    )
    theirs = serve_and_converse(
        client,
        path,
        kind,
        requests,
        tmp_path / "r",
        reference=True,
        env=env,
        await_first=first,
        sock_name=reference_sock,
    )
    return ours, theirs


def assert_same(ours: Served, theirs: Served) -> None:
    assert ours.talk["code"] == "OK", ours.output
    assert ours.talk["ready"] is True
    assert canonical(ours.talk) == canonical(theirs.talk)
    assert ours.exit_code == 0, ours.output  # drained and exited (0.14.0's sync servers: -15)


@pytest.mark.parametrize(
    ("server", "invoke"),
    [
        ("MapServer", "function"),
        ("MapServer", "class"),
        ("MapAsyncServer", "function"),
        ("MapAsyncServer", "class"),
        ("MapMultiprocServer", "class"),
    ],
)
def test_map(reference_client: ReferenceClient, tmp_path: Path, server: str, invoke: str) -> None:
    """Keys, value, tags, drops, times, headers and user metadata in and out, as 0.14.0."""
    ours, theirs = twins(
        reference_client,
        tmp_path,
        MAP_SCRIPT,
        "map",
        MAP_REQUESTS,
        server,
        invoke,
        reference_sock="multiproc0.sock" if server == "MapMultiprocServer" else None,
    )
    assert_same(ours, theirs)
    if server == "MapAsyncServer":
        assert "shutdown callback ran" in ours.output
        assert "shutdown callback ran" in theirs.output
    by_id = {r.get("id"): r for r in ours.talk["responses"]}
    assert by_id["m0"]["results"][0]["metadata"] == {"user_metadata": USER_METADATA}
    assert unb64(by_id["m0"]["results"][3]["value"]) == b"(['s'], b'sys')"
    assert by_id["m0"]["results"][1]["metadata"]["user_metadata"] == {
        "out": {"key_value": {"h": b64(b"h0")}}
    }


@pytest.mark.parametrize("server", ["MapServer", "MapAsyncServer"])
def test_map_handler_error(reference_client: ReferenceClient, tmp_path: Path, server: str) -> None:
    """A raising handler fails the stream with 0.14.0's status; ours then keeps serving.

    (0.14.0 shuts its server down and exits 1 after it: docs/compat.md.)
    """
    path = tmp_path / "udf.py"
    path.write_text(MAP_SCRIPT, encoding="utf-8")
    env = {"SERVER": server, "INVOKE": "function", "NUMAFLOW_UD_CONTAINER_TYPE": "udf"}
    requests = [HANDSHAKE, {"id": "x", "request": request(0, b"boom")}]
    talks = [
        serve_and_converse(
            reference_client, path, "map", requests, tmp_path / side, reference=ref, env=env
        )
        for side, ref in (("o", False), ("r", True))
    ]
    ours, theirs = (served.talk for served in talks)
    assert ours["code"] == theirs["code"] == "INTERNAL"
    assert ours["details"] == theirs["details"] == "UDF_EXECUTION_ERROR(udf): ValueError('boom')"
    assert ours["status_details"]["details"][0]["type_url"].endswith("google.rpc.DebugInfo")
    assert talks[0].exit_code == 0


@pytest.mark.parametrize("invoke", ["function", "class"])
def test_map_stream(reference_client: ReferenceClient, tmp_path: Path, invoke: str) -> None:
    """Each yielded message as its own response, then the end of the request's output."""
    ours, theirs = twins(
        reference_client,
        tmp_path,
        MAP_STREAM_SCRIPT,
        "mapstream",
        MAP_REQUESTS,
        "MapStreamAsyncServer",
        invoke,
    )
    assert_same(ours, theirs)


@pytest.mark.parametrize(
    ("server", "invoke"),
    [
        ("SourceTransformServer", "function"),
        ("SourceTransformServer", "class"),
        ("SourceTransformAsyncServer", "function"),
        ("SourceTransformMultiProcServer", "function"),
    ],
)
def test_source_transform(
    reference_client: ReferenceClient, tmp_path: Path, server: str, invoke: str
) -> None:
    """New event times, drops keeping the event time, the request id, user metadata."""
    ours, theirs = twins(
        reference_client,
        tmp_path,
        TRANSFORM_SCRIPT,
        "sourcetransform",
        TRANSFORM_REQUESTS,
        server,
        invoke,
        reference_sock="multiproc0.sock" if "MultiProc" in server else None,
    )
    assert_same(ours, theirs)


@pytest.mark.parametrize("invoke", ["function", "class"])
def test_reduce(reference_client: ReferenceClient, tmp_path: Path, invoke: str) -> None:
    """A result per key, the window echoed; the class form gets a fresh instance per key."""
    ours, theirs = twins(
        reference_client,
        tmp_path,
        REDUCE_SCRIPT,
        "reduce",
        REDUCE_REQUESTS,
        "ReduceAsyncServer",
        invoke,
    )
    assert_same(ours, theirs)
    if invoke == "class":  # 10 + 2 per datum, counted per key: a: 2 datums, b: 1
        values = sorted(r["result"]["value"] for r in ours.talk["responses"] if "result" in r)
        assert values == sorted([b64(b"14"), b64(b"12")])


@pytest.mark.parametrize(
    ("server", "invoke"),
    [
        ("SinkServer", "function"),
        ("SinkServer", "class"),
        ("SinkAsyncServer", "function"),
        ("SinkAsyncServer", "class"),
    ],
)
def test_sink(reference_client: ReferenceClient, tmp_path: Path, server: str, invoke: str) -> None:
    """Success, failure, fallback and on-success (with and without a message) as 0.14.0."""
    ours, theirs = twins(
        reference_client, tmp_path, SINK_SCRIPT, "sink", SINK_REQUESTS, server, invoke
    )
    assert_same(ours, theirs)
    results = [r for response in ours.talk["responses"] for r in response.get("results", [])]
    assert [r.get("status", "SUCCESS") for r in results] == [
        "SUCCESS",
        "FAILURE",
        "FALLBACK",
        "ON_SUCCESS",
        "ON_SUCCESS",
    ]
