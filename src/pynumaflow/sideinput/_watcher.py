"""SideInputWatcher: a vertex's side inputs, read from their folder, and news of their changes.

The platform keeps each side input a vertex lists in ``/var/numaflow/side-inputs/<name>``:
a symlink to ``<name>_<unix-nanoseconds>``, a regular file holding the raw value. An
update writes a new target file completely, points a new link ``<name>_temp_<ns>`` at
it and renames that over ``<name>`` (an atomic swap), then deletes the old target. An
equal value is not rewritten; deletes are ignored (the file keeps the last value); every
listed name is present before the vertex's containers start.

So a value is read by opening ``<name>`` (following the link) and reading to EOF: a file
opened before a swap still reads the old, complete value. A change is seen by polling
``lstat``/``readlink`` of ``<name>`` and ``stat`` of what it points to: a few system
calls per name and interval, with no thread and no busy loop (the standard library has
no inotify). The intermediate ``<name>_<digits>`` and ``<name>_temp_<digits>`` entries
are never looked at.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from pynumaflow._types.sideinput import SIDE_INPUT_DIR_PATH

__all__ = ["SideInputChange", "SideInputWatcher"]

# What identifies one version of a side input's file without reading it: the link's
# target (None for a plain file) and the target's inode, change time and size.
_Version = Tuple[Optional[str], int, int, int]


class SideInputChange(NamedTuple):
    """A side input's new value."""

    name: str
    value: bytes


class SideInputWatcher:
    """Reads side inputs from their folder and tells when they change.

    Args:
        names: the side inputs to watch (as the vertex's ``sideInputs`` lists them).
        folder: where they are (default ``/var/numaflow/side-inputs``; another folder
            for tests and local runs, where a value is best replaced atomically:
            write a temporary file, then ``os.replace`` it over ``<name>``).
        interval: seconds between two looks at the files while iterating (default 1).

    Raises:
        ValueError: no name, a name with a path separator, or ``interval`` not positive.

    Example::

        watcher = SideInputWatcher(["model"])
        model = watcher.get("model")            # the value now (None: no file yet)
        for change in watcher.changes():        # blocks; or `async for` on achanges()
            load(change.name, change.value)

    """

    def __init__(
        self,
        names: Union[str, Iterable[str]],
        *,
        folder: Union[str, os.PathLike[str]] = SIDE_INPUT_DIR_PATH,
        interval: float = 1.0,
    ) -> None:
        self.names: Tuple[str, ...] = (names,) if isinstance(names, str) else tuple(names)
        if not self.names:
            raise ValueError("SideInputWatcher needs at least one side input name")
        for name in self.names:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"not a side input name: {name!r}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.folder = Path(folder)
        self.interval = float(interval)

    def path(self, name: str) -> Path:
        """The file (a symlink on the platform) holding side input ``name``."""
        return self.folder / name

    def get(self, name: str) -> Optional[bytes]:
        """The current value of ``name``, or None while it has no file."""
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def values(self) -> Dict[str, bytes]:
        """The current value of every watched side input that has one."""
        found = {name: self.get(name) for name in self.names}
        return {name: value for name, value in found.items() if value is not None}

    def changes(self) -> Iterator[SideInputChange]:
        """Block, yielding each side input's value now, then each new value as it comes.

        It never ends on its own: leave the loop (or close the iterator) to stop. Run it
        in a thread of its own if the program has other work.
        """
        scan = _Scan(self)
        while True:
            for name, version in scan.look():
                value = scan.read(name, version)
                if value is not None:
                    yield SideInputChange(name, value)
            time.sleep(self.interval)

    async def achanges(self) -> AsyncIterator[SideInputChange]:
        """:meth:`changes` for asyncio: ``async for change in watcher.achanges()``.

        The looks are a few system calls on the event loop; a changed value is read in
        a worker thread (it may be a large file).
        """
        scan = _Scan(self)
        while True:
            for name, version in scan.look():
                value = await asyncio.to_thread(scan.read, name, version)
                if value is not None:
                    yield SideInputChange(name, value)
            await asyncio.sleep(self.interval)


class _Scan:
    """One iterator's view: the version and value last reported per name."""

    def __init__(self, watcher: SideInputWatcher) -> None:
        self._watcher = watcher
        self._versions: Dict[str, Optional[_Version]] = dict.fromkeys(watcher.names)
        self._values: Dict[str, bytes] = {}

    def look(self) -> List[Tuple[str, _Version]]:
        """The names whose file is there and differs from the version last seen."""
        changed = []
        for name in self._watcher.names:
            version = _version(self._watcher.path(name))
            if version is not None and version != self._versions[name]:
                changed.append((name, version))
        return changed

    def read(self, name: str, version: _Version) -> Optional[bytes]:
        """The new value of ``name``, or None if it is what was last reported (or vanished)."""
        self._versions[name] = version
        value = self._watcher.get(name)
        if value is None or self._values.get(name) == value:
            return None
        self._values[name] = value
        return value


def _version(path: Path) -> Optional[_Version]:
    try:
        target: Optional[str] = os.readlink(path)
    except OSError:  # a plain file (local runs), or none yet
        target = None
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return target, info.st_ino, info.st_ctime_ns, info.st_size
