"""pynumaflow.errors: the errors a user can meet, in one public module, as raised."""

from __future__ import annotations

import pytest

import pynumaflow.errors
from pynumaflow._core import files, multiproc
from pynumaflow._engines import feed
from pynumaflow.function import Server


def test_exports_exactly_the_public_errors() -> None:
    assert sorted(pynumaflow.errors.__all__) == [
        "FeedAborted",
        "SocketPathError",
        "WorkerExitedError",
        "persist_critical_error",
    ]
    assert issubclass(pynumaflow.errors.SocketPathError, OSError)
    assert issubclass(pynumaflow.errors.WorkerExitedError, RuntimeError)


def test_they_are_the_classes_the_package_raises() -> None:
    """Catching the public name catches what the core and the engines raise."""
    assert files.SocketPathError is pynumaflow.errors.SocketPathError
    assert multiproc.WorkerExitedError is pynumaflow.errors.WorkerExitedError
    assert feed.FeedAborted is pynumaflow.errors.FeedAborted


def test_a_bad_socket_path_raises_the_public_socket_path_error(tmp_path: object) -> None:
    """A socket path that is a regular file is refused with SocketPathError."""
    path = tmp_path / "not-a-socket"  # type: ignore[operator]
    path.write_text("x")
    server = Server(map_handler=lambda keys, datum: [], sock_path=str(path), protocols=["legacy"])
    with pytest.raises(pynumaflow.errors.SocketPathError, match="is not a socket"):
        server.start()
