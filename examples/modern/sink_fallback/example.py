"""Write JSON lines to the log; send the rest to the fallback sink, and confirmations on.

Each written datum goes on to the on-success sink as a short confirmation carrying the
datum's user metadata; what is not JSON goes to the fallback sink.
"""

import json
import logging
from collections.abc import Iterator

from pynumaflow.sinker import Datum, Message, Response, Responses, SinkServer

logging.basicConfig(level=logging.INFO)
_LOGGER = logging.getLogger("sink")


def write(datums: Iterator[Datum]) -> Responses:
    responses = Responses()
    for datum in datums:
        try:
            record = json.loads(datum.value)
        except ValueError:
            responses.append(Response.as_fallback(datum.id))
            continue
        _LOGGER.info("wrote %s", record)
        confirmation = Message(b"written", ["confirmations"], datum.user_metadata)
        responses.append(Response.as_on_success(datum.id, confirmation))
    return responses


if __name__ == "__main__":
    SinkServer(write).start()
