from typing import Iterator
from pynumaflow.sink import Datum, Responses, Response, Sink


def my_handler(datums: Iterator[Datum]) -> Responses:
    responses = Responses()
    for msg in datums:
        print("User Defined Sink", msg.value.decode("utf-8"))
        responses.append(Response.as_success(msg.id))
    return responses


if __name__ == "__main__":
    grpc_server = Sink(my_handler)
    grpc_server.start()
