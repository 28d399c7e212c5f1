"""One module per proto service and protocol generation."""
