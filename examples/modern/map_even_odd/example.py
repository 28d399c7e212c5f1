"""Route numbers by parity, with the modern API (pynumaflow 0.9-0.14 style, Numaflow >= 1.4).

Each number goes out keyed and tagged "even" or "odd"; anything else is dropped. The
request's user metadata travels on, with the parity added to it.
"""

from pynumaflow.mapper import Datum, MapServer, Mapper, Message, Messages


class EvenOdd(Mapper):
    def handler(self, keys: list[str], datum: Datum) -> Messages:
        try:
            number = int(datum.value)
        except ValueError:
            return Messages(Message.to_drop())
        parity = "odd" if number % 2 else "even"
        metadata = datum.user_metadata
        metadata.add_key("parity", "value", parity.encode())
        return Messages(
            Message(datum.value, keys=[parity], tags=[f"{parity}-tag"], user_metadata=metadata)
        )


if __name__ == "__main__":
    MapServer(EvenOdd()).start()
