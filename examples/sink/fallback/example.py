"""A sink with a fallback sink: two containers of one image (Numaflow >= 1.4).

The primary sink (NUMAFLOW_UD_CONTAINER_TYPE=udsink) writes JSON objects and sends
everything else to the fallback sink; the fallback container (fb-udsink), running this
same script, keeps what it gets as a dead letter. Each container binds only its own
socket (sink.sock, fb-sink.sock) in the folder the pod's containers share.
"""

import json
import os
from typing import Iterator

from pynumaflow.sink import Datum, Response, Responses, Sink

FALLBACK = os.environ.get("NUMAFLOW_UD_CONTAINER_TYPE") == "fb-udsink"


def primary(datums: Iterator[Datum]) -> Responses:
    responses = Responses()
    for datum in datums:
        try:
            record = json.loads(datum.value)
        except ValueError:
            record = None
        if isinstance(record, dict):
            print("stored", record)
            responses.append(Response.as_success(datum.id))
        else:
            responses.append(Response.as_fallback(datum.id))
    return responses


def dead_letters(datums: Iterator[Datum]) -> Responses:
    responses = Responses()
    for datum in datums:
        print("dead letter", datum.value)
        responses.append(Response.as_success(datum.id))
    return responses


if __name__ == "__main__":
    Sink(dead_letters if FALLBACK else primary).start()
