"""SideInputWatcher against real files replaced the way the platform's synchronizer does."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from pathlib import Path

import pytest

from pynumaflow.sideinput import SideInputChange, SideInputWatcher

INTERVAL = 0.02
WAIT = 10.0


def publish(folder: Path, name: str, value: bytes) -> None:
    """What the synchronizer does (spec 17.2): new target, temp link, rename, delete old."""
    link = folder / name
    old = os.readlink(link) if link.is_symlink() else None
    stamp = time.time_ns()
    target = folder / f"{name}_{stamp}"
    target.write_bytes(value)
    temp = folder / f"{name}_temp_{stamp}"
    os.symlink(target, temp)
    os.rename(temp, link)
    if old is not None:
        os.unlink(old)


def test_get_reads_through_the_link_and_none_before_the_first_value(tmp_path: Path) -> None:
    watcher = SideInputWatcher(["model", "rules"], folder=tmp_path)
    assert watcher.get("model") is None
    publish(tmp_path, "model", b"v1")
    publish(tmp_path, "model", b"")  # an empty value is a value
    publish(tmp_path, "rules", b"r\x00\xff")
    assert watcher.get("model") == b""
    assert watcher.values() == {"model": b"", "rules": b"r\x00\xff"}
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("model_")]) == 1  # old gone


def test_an_open_file_keeps_reading_the_old_value_across_a_swap(tmp_path: Path) -> None:
    publish(tmp_path, "model", b"old" * 1000)
    with (tmp_path / "model").open("rb") as before:
        publish(tmp_path, "model", b"new")
        assert before.read() == b"old" * 1000  # the target was unlinked, the fd still reads
    assert SideInputWatcher("model", folder=tmp_path).get("model") == b"new"


def test_changes_yields_the_current_values_then_each_new_one(tmp_path: Path) -> None:
    """Sync form: a blocking iterator, run here in a thread of its own."""
    publish(tmp_path, "model", b"v1")
    watcher = SideInputWatcher(["model", "rules"], folder=tmp_path, interval=INTERVAL)
    seen: queue.Queue[SideInputChange] = queue.Queue()
    stop = threading.Event()

    def consume() -> None:
        changes = watcher.changes()
        for change in changes:
            seen.put(change)
            if stop.is_set():
                break
        changes.close()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert seen.get(timeout=WAIT) == ("model", b"v1")
    publish(tmp_path, "rules", b"r1")
    assert seen.get(timeout=WAIT) == ("rules", b"r1")
    publish(tmp_path, "model", b"v2")
    assert seen.get(timeout=WAIT) == ("model", b"v2")
    stop.set()
    publish(tmp_path, "model", b"v3")
    assert seen.get(timeout=WAIT) == ("model", b"v3")
    thread.join(WAIT)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_achanges_reports_each_change_once(tmp_path: Path) -> None:
    """Async form; a rewrite with an equal value, or a plain file replaced, is handled."""
    watcher = SideInputWatcher("cfg", folder=tmp_path, interval=INTERVAL)
    changes = watcher.achanges()
    first = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(5 * INTERVAL)
    assert not first.done()  # no file yet: nothing to tell
    publish(tmp_path, "cfg", b"a")
    assert await asyncio.wait_for(first, WAIT) == ("cfg", b"a")
    publish(tmp_path, "cfg", b"a")  # same bytes behind a new link: not a change
    publish(tmp_path, "cfg", b"b")
    assert await asyncio.wait_for(anext(changes), WAIT) == ("cfg", b"b")
    # A local run without links: a plain file replaced atomically.
    os.unlink(tmp_path / "cfg")
    (tmp_path / "cfg.tmp").write_bytes(b"plain")
    os.replace(tmp_path / "cfg.tmp", tmp_path / "cfg")
    assert await asyncio.wait_for(anext(changes), WAIT) == ("cfg", b"plain")
    await changes.aclose()


@pytest.mark.parametrize("names", [[], ["a/b"], [".."], [""]])
def test_bad_names_are_refused(names: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name"):
        SideInputWatcher(names, folder=tmp_path)


def test_the_default_folder_is_the_platforms() -> None:
    assert SideInputWatcher("x").path("x") == Path("/var/numaflow/side-inputs/x")
