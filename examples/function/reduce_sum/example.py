"""Reduce with a sync handler: the sum of the numbers in each window, per key.

A sync reduce handler gets a plain iterator over its key's datums (it runs in the
server's thread pool); an async one gets an async iterator (see reduce_counter).
Inputs that are not integers are skipped.
"""

import json
from collections.abc import Iterator

from pynumaflow.function import Datum, Message, Messages, Metadata, Server


def sum_numbers(keys: list[str], datums: Iterator[Datum], md: Metadata) -> Messages:
    total = 0
    for datum in datums:
        try:
            total += int(datum.value)
        except ValueError:
            continue
    window = md.interval_window
    result = {"sum": total, "start": window.start.isoformat(), "end": window.end.isoformat()}
    return Messages(Message(json.dumps(result).encode(), keys=keys))


if __name__ == "__main__":
    Server(reduce_handler=sum_numbers).start()
