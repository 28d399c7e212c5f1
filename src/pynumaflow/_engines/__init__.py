"""Protocol-free conversations the services share: streams, windows, batches, feeds, drain."""
