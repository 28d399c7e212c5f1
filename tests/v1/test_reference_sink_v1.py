"""sink.v1 Sink against the pynumaflow 0.14.0 wheel's own stubs, an independent client.

The client is tests/reference_client.py (and the ``reference_client`` fixture of
conftest.py); until that harness is on this branch the module skips, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pynumaflow._engines.batch import OMITTED
from pynumaflow.sink import AsyncSink, Datum, Response, Responses

reference = pytest.importorskip(
    "reference_client", reason="tests/reference_client.py (the 0.14.0 reference client) is absent"
)
ReferenceClient = reference.ReferenceClient
b64 = reference.b64
rfc3339 = reference.rfc3339

pytestmark = pytest.mark.anyio
EVENT_TIME = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
USER_METADATA = {"g": {"key_value": {"x": b64(b"\xff1")}}}


def eot() -> dict[str, object]:
    return {"status": {"eot": True}}


def datum(msg_id: str, value: bytes) -> dict[str, object]:
    return {
        "request": {
            "id": msg_id,
            "value": b64(value),
            "keys": ["k"],
            "event_time": rfc3339(EVENT_TIME),
            "watermark": rfc3339(EVENT_TIME),
            "headers": {"h": "v"},
            "metadata": {
                "previous_vertex": "in",
                "user_metadata": USER_METADATA,
                "sys_metadata": {"sink": {"key_value": {"retry_count": b64(b"0")}}},
            },
        }
    }


async def test_sink_conversation_through_the_reference_client(
    reference_client: ReferenceClient, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handshake, two batches and a bare EOT: every status as the real SDK's stubs read it."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    seen: list[tuple[str, bytes, str, datetime]] = []

    def route(datums: Iterator[Datum]) -> Responses:
        answers = {
            "a-0": Response.as_success,
            "a-1": lambda i: Response.as_failure(i, "cannot write"),
            "a-2": Response.as_fallback,
            "b-0": lambda i: Response.as_serve(i, b"served"),
            "b-1": lambda i: Response.as_on_success(i, b"new", ["k2"]),
        }
        responses = Responses()
        for d in datums:
            seen.append((d.id, d.value, d.headers["h"], d.event_time))
            if d.id in answers:
                responses.append(answers[d.id](d.id))
        return responses

    requests = [
        {"handshake": {"sot": True}},
        datum("a-0", b"\xff\x00"),
        datum("a-1", b"1"),
        datum("a-2", b"2"),
        eot(),
        datum("b-0", b"3"),
        datum("b-1", b"4"),
        datum("b-2", b"5"),  # the handler gives no answer
        eot(),
        eot(),  # a bare EOT
    ]
    server = AsyncSink(
        route,
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "server-info"),
    )
    async with server.running():
        talk = await reference_client.converse("sink", sock_dir / "sink.sock", requests)
    assert (talk["ready"], talk["code"]) == (True, "OK")
    end = {"status": {"eot": True}}
    assert talk["responses"] == [
        {"handshake": {"sot": True}},
        {
            "results": [
                {"id": "a-0"},  # SUCCESS is the enum's default: proto JSON leaves it out
                {"id": "a-1", "status": "FAILURE", "err_msg": "cannot write"},
                {"id": "a-2", "status": "FALLBACK"},
            ]
        },
        end,
        {
            "results": [
                {"id": "b-0", "status": "SERVE", "serve_response": b64(b"served")},
                {
                    "id": "b-1",
                    "status": "ON_SUCCESS",
                    "on_success_msg": {
                        "value": b64(b"new"),
                        "keys": ["k2"],
                        "metadata": {"user_metadata": USER_METADATA},
                    },
                },
                {"id": "b-2", "status": "FAILURE", "err_msg": OMITTED},
            ]
        },
        end,
        end,
    ]
    naive = EVENT_TIME.replace(tzinfo=None)
    assert seen[0] == ("a-0", b"\xff\x00", "v", naive)
    assert [s[0] for s in seen] == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]


async def test_missing_handshake_through_the_reference_client(
    reference_client: ReferenceClient, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that opens with a request instead of the handshake: INVALID_ARGUMENT."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    server = AsyncSink(
        lambda datums: Responses(),
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "server-info"),
    )
    async with server.running():
        talk = await reference_client.converse(
            "sink", sock_dir / "sink.sock", [datum("a", b""), eot()]
        )
    assert talk["code"] == "INVALID_ARGUMENT"
    assert "handshake" in talk["details"]
    assert talk["responses"] == []
