"""A map UDF that keeps numbers at or above a threshold the side input ``threshold`` sets.

``SideInputWatcher`` reads the value the platform keeps in
``/var/numaflow/side-inputs/threshold`` (``$SIDE_INPUT_DIR`` for local runs) and, in
a thread of its own, is told of each new value; the handler reads the latest.
Without the file (a local run), the threshold is 10.
"""

import os
import threading

from pynumaflow.function import Datum, Message, Messages, Server
from pynumaflow.sideinput import SIDE_INPUT_DIR_PATH, SideInputWatcher

watcher = SideInputWatcher(
    ["threshold"], folder=os.environ.get("SIDE_INPUT_DIR", SIDE_INPUT_DIR_PATH)
)
threshold = int(watcher.get("threshold") or b"10")


def follow() -> None:
    global threshold
    for change in watcher.changes():  # blocks: the current value, then each new one
        threshold = int(change.value or b"10")


def keep_large(keys: list[str], datum: Datum) -> Messages:
    try:
        number = int(datum.value)
    except ValueError:
        return Messages(Message.to_drop())
    if number >= threshold:
        return Messages(Message(datum.value, keys=keys))
    return Messages(Message.to_drop())


if __name__ == "__main__":
    threading.Thread(target=follow, daemon=True).start()
    Server(map_handler=keep_large).start()
