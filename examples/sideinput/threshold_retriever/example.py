"""A side-input retriever: broadcasts the current threshold, and nothing when it is unchanged.

The platform's side-input manager calls it at start and then on the side input's
schedule; each broadcast value reaches every vertex listing the side input, as the
file ``/var/numaflow/side-inputs/threshold`` (see the threshold_filter example).
"""

import os
from typing import Optional

from pynumaflow.sideinput import Response, SideInput, SideInputServer


class Threshold(SideInput):
    def __init__(self) -> None:
        self.last: Optional[bytes] = None

    def retrieve_handler(self) -> Response:
        value = os.environ.get("THRESHOLD", "10").encode()
        if value == self.last:
            return Response.no_broadcast_message()
        self.last = value
        return Response.broadcast_message(value)


if __name__ == "__main__":
    SideInputServer(Threshold()).start()
