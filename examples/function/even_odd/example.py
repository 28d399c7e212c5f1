"""Map with tags: route even numbers to one sink and odd numbers to another.

Each message gets a key ("even" or "odd") and a tag ("even-tag" or "odd-tag"); the
pipeline's edges forward a message only where their conditions name one of its tags.
Inputs that are not integers are dropped.
"""

from pynumaflow.function import Datum, Message, Messages, Server


def even_odd(keys: list[str], datum: Datum) -> Messages:
    try:
        number = int(datum.value.decode("utf-8"))
    except ValueError:  # also raised for bytes that are not UTF-8
        return Messages(Message.to_drop())
    if number % 2 == 0:
        return Messages(Message(datum.value, keys=["even"], tags=["even-tag"]))
    return Messages(Message(datum.value, keys=["odd"], tags=["odd-tag"]))


if __name__ == "__main__":
    Server(map_handler=even_odd).start()
