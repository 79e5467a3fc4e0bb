"""The gRPC edge: generated code, converters, error mapping, interceptors, server."""
