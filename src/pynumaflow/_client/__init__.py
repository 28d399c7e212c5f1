"""Clients of the protocols (for the test kit and the command line)."""
