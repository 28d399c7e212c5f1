"""Batch map: one call to an external service per batch instead of one per message.

The handler gets the datums of a batch (up to the vertex's ``readBatchSize``), looks
all their words up in a single request to a (here simulated) translation service, and
answers every datum by its id: one output per word, or no output for an empty input
(answered all the same, so the platform acknowledges it).
"""

from collections.abc import AsyncIterable

from pynumaflow.batchmapper import (
    BatchMapAsyncServer,
    BatchResponse,
    BatchResponses,
    Datum,
    Message,
)

DICTIONARY = {b"apple": b"pomme", b"cherry": b"cerise", b"carrot": b"carotte"}


async def translate_all(words: list[bytes]) -> list[bytes]:
    """Stand-in for a service that translates many words per request."""
    return [DICTIONARY.get(word, word) for word in words]


async def enrich(datums: AsyncIterable[Datum]) -> BatchResponses:
    batch = [(datum, datum.value.split()) for datum in [d async for d in datums]]
    translated = iter(await translate_all([word for _, words in batch for word in words]))
    responses = BatchResponses()
    for datum, words in batch:
        outputs = [Message(next(translated), keys=datum.keys) for _ in words]
        responses.append(BatchResponse.with_msgs(datum.id, outputs))
    return responses


if __name__ == "__main__":
    BatchMapAsyncServer(enrich).start()
