"""Services of the legacy protocols (Numaflow 0.8-0.9)."""
