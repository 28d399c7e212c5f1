"""Codecs of the legacy protocols (function.v1, the UserDefinedSink sink.v1: Numaflow 0.8-0.9)."""
