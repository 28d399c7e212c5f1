"""Source transformer (mapt): event time from the payload, and early filtering.

Each input is a JSON object with a "time" field (RFC 3339). The message's event time
becomes that time, so windows and watermarks follow when things happened rather than
when they were read. Events from before 2022, and inputs without a valid time, are
dropped at the source, before the pipeline spends anything on them.
"""

import json
from datetime import datetime, timezone

from pynumaflow.function import Datum, MessageT, MessageTs, Server

CUTOFF = datetime(2022, 1, 1, tzinfo=timezone.utc)


def event_time_of(payload: bytes) -> datetime:
    """The payload's "time" as an aware datetime; ValueError if there is none."""
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("time"), str):
        raise ValueError("no time field")
    moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def filter_by_event_time(keys: list[str], datum: Datum) -> MessageTs:
    try:
        moment = event_time_of(datum.value)
    except ValueError:
        return MessageTs(MessageT.to_drop())
    if moment < CUTOFF:
        return MessageTs(MessageT.to_drop())
    return MessageTs(MessageT(datum.value, moment, keys=keys))


if __name__ == "__main__":
    Server(mapt_handler=filter_by_event_time).start()
