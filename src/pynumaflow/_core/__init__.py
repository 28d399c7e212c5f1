"""The server core: sockets, grpclib, lifecycle, signals, drain, files, options. Knows no kind."""
