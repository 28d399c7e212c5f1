import datetime
from pynumaflow.function import MessageTs, MessageT, Datum, Server
from typing import List


def mapt_handler(keys: List[str], datum: Datum) -> MessageTs:
    val = datum.value
    new_event_time = datetime.time()
    _ = datum.watermark
    message_t_s = MessageTs(MessageT(new_event_time, val, keys))
    return message_t_s


if __name__ == "__main__":
    grpc_server = Server(mapt_handler=mapt_handler)
    grpc_server.start()
