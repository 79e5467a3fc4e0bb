"""The edge's own Python per CreateTransfers call, in-process and single-threaded: the
interceptors (metrics, access log, auth), the request conversion, the response, with the
committer replaced by one that answers at once (no gRPC transport, no thread handoff, no
database). A JSON access-log line per call is formatted and written to /dev/null, as the
server writes it to its log file.

    python -m ops.bench.edge_inproc [--calls 4000] [--repeat 15] [--chain oa]

Prints the CPU microseconds per call (min, 25th percentile and median over the repeats: on a
shared machine the min is the least disturbed) for the full chain (`oa`: observability and
auth) and for parts of it (`-`: servicer only, `a`, `o`), to see what each layer costs.
To compare revisions, run it once per tree: `PYTHONPATH=<tree> python -m ops.bench.edge_inproc`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from bank.app.accounts import BatchResult, ItemResult
from bank.domain.identity import Principal, Role
from ops.bench import load
from services import auth
from services.auth import AuthInterceptor, dev_header_resolver
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import CommitSignal, LedgerServicer
from services.observability import JsonFormatter, Metrics, ObservabilityInterceptor

METHOD = "/peoplesbank.ledger.v1.LedgerService/CreateTransfers"


class FakeContext:
    def __init__(self) -> None:
        self._metadata = (("x-bank-principal", load.PRINCIPAL), ("user-agent", "grpc-python"))

    def invocation_metadata(self) -> Any:
        return self._metadata

    def time_remaining(self) -> float:
        return 10.0

    def code(self) -> Any:
        return None

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(status)


class InstantCommitter:
    def submit(self, request: Any) -> BatchResult:
        return BatchResult(tuple(ItemResult(i, s.transfer_id, None, position=7)
                                 for i, s in enumerate(request.specs)))


class Clock:
    def now_ns(self) -> int:
        return time.time_ns()

    def business_date(self) -> Any:
        import datetime

        return datetime.date.today()


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Directory:
    def account_owners(self, ids: Any) -> dict[str, str]:
        return {}

    def transfer_accounts(self, transfer_id: str) -> set[str]:
        return set()

    def member_council_areas(self, member_ids: list[str]) -> dict[str, str]:
        return {}

    def pool_participants(self, pool_id: str) -> set[str]:
        return set()


def handler_chain(metrics: Metrics, interceptors: str) -> Any:
    """The method handler gRPC would run for CreateTransfers, through the interceptors."""
    servicer = LedgerServicer(None, Clock(), CommitSignal(), None,  # type: ignore[arg-type]
                              InstantCommitter())  # type: ignore[arg-type]
    handlers: dict[str, Any] = {}

    class Collect:
        def add_generic_rpc_handlers(self, generic: Any) -> None:
            for h in generic:
                handlers.update(h._method_handlers)

        def add_registered_method_handlers(self, service: str, methods: dict[str, Any]) -> None:
            for name, h in methods.items():
                handlers[f"/{service}/{name}"] = h

    pb_grpc.add_LedgerServiceServicer_to_server(servicer, Collect())
    base = handlers[METHOD]
    chain: list[Any] = []
    if "o" in interceptors:
        chain.append(ObservabilityInterceptor(metrics))
    if "a" in interceptors:
        chain.append(AuthInterceptor(dev_header_resolver, Directory()))

    def build(i: int, details: Details) -> Any:
        if i == len(chain):
            return base
        return chain[i].intercept_service(lambda d: build(i + 1, d), details)

    return build(0, Details(METHOD))


def measure(interceptors: str, calls: int, metrics: Metrics) -> float:
    handler = handler_chain(metrics, interceptors)
    if "a" not in interceptors:  # the handler reads the principal the auth interceptor sets
        auth._principal.set(Principal("bench", Role.TELLER))
    context = FakeContext()
    data = [load.transfer(pb, f"t{n}", load.member(n % 100), load.member(n % 100 + 1))
            for n in range(calls)]
    raw = [pb.CreateTransfersRequest(request_id=f"r{n}", transfers=[t]).SerializeToString()
           for n, t in enumerate(data)]
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    behaviour = handler.unary_unary
    started = time.process_time()
    for body in raw:
        serialize(behaviour(deserialize(body), context))
    return (time.process_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.edge_inproc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=4_000)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--chain", action="append", choices=["-", "a", "o", "oa"],
                   help="which chains (repeatable; default: all)")
    args = p.parse_args(argv)
    handler = logging.FileHandler("/dev/null")
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    metrics = Metrics()
    try:
        labels = {"-": "servicer only", "a": "+ auth", "o": "+ observability",
                  "oa": "full chain"}
        for chain in args.chain or list(labels):
            runs = sorted(measure(chain.strip("-"), args.calls, metrics)
                          for _ in range(args.repeat))
            print(f"{labels[chain]:>16}: min {runs[0]:6.1f}  p25 {runs[len(runs) // 4]:6.1f}  "
                  f"median {statistics.median(runs):6.1f} us/call", flush=True)
    finally:
        metrics.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
