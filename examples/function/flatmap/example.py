"""Flat map: one input, any number of outputs.

An input "a,b,c" becomes three messages "a", "b" and "c" with the input's keys; an
empty input becomes none (returning no messages forwards nothing).
"""

from pynumaflow.function import Datum, Message, Messages, Server


def flatmap(keys: list[str], datum: Datum) -> Messages:
    messages = Messages()
    for part in datum.value.split(b","):
        if part.strip():
            messages.append(Message(part.strip(), keys=keys))
    return messages


if __name__ == "__main__":
    Server(map_handler=flatmap).start()
