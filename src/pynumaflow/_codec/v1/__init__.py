"""The v1 codecs (map.v1, sourcetransformer.v1, reduce.v1, sink.v1: Numaflow >= 1.4)."""
