"""Services of the v1 protocols (Numaflow >= 1.4)."""
