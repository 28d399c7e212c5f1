"""Assign event times at the source: drop what is before 2022, file the rest by year."""

from datetime import datetime

from pynumaflow.sourcetransformer import Datum, Message, Messages, SourceTransformServer

JANUARY_2022 = datetime(2022, 1, 1)
JANUARY_2023 = datetime(2023, 1, 1)


def by_year(keys: list[str], datum: Datum) -> Messages:
    moment = datum.event_time  # naive, UTC
    if moment < JANUARY_2022:
        return Messages(Message.to_drop(moment))
    if moment < JANUARY_2023:
        return Messages(Message(datum.value, JANUARY_2022, keys=keys, tags=["within_2022"]))
    return Messages(Message(datum.value, JANUARY_2023, keys=keys, tags=["after_2022"]))


if __name__ == "__main__":
    SourceTransformServer(by_year).start()
