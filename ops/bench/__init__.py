"""Benchmarks of the ledger through the real gRPC server: `python -m ops.bench --help`."""
