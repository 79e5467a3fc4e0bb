"""The floor of a Python gRPC server per unary call: a bare `Health/Check` server, sync (thread
pool, as services/server.py builds it) or grpc.aio, driven by the same 32 closed-loop callers
as `ops.bench.edge` (2 client processes, grpc.aio). Server CPU per call and calls/s, median
over rounds, the variants measured in turn within each round.

    python -m ops.bench.echo_floor [--rounds 3] [--duration 5]

Nothing else runs in these servers: no interceptors, no database, no writer thread.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from ops.bench.edge import HealthPhase, run_health
from ops.bench.harness import cpu_s, machine_busy

VARIANTS = ("sync32", "sync8", "aio")


def serve(kind: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if kind == "aio":
        from grpc_health.v1 import _async

        async def run() -> None:
            server = grpc.aio.server(maximum_concurrent_rpcs=256)
            servicer = _async.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            await server.start()
            print(f"serving on 127.0.0.1:{port}", flush=True)
            await server.wait_for_termination()

        asyncio.run(run())
        return
    from concurrent import futures

    workers = int(kind.removeprefix("sync"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         maximum_concurrent_rpcs=256)
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.echo_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--variant", action="append", choices=VARIANTS)
    p.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for kind in args.variant or VARIANTS:
            process = subprocess.Popen([sys.executable, "-m", "ops.bench.echo_floor",
                                        "--serve", kind], stdout=subprocess.PIPE, text=True)
            assert process.stdout is not None
            match = re.search(r"serving on (\S+)", process.stdout.readline())
            assert match, f"{kind} did not start"
            servers[kind] = (process, match.group(1))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            for _ in range(args.rounds):
                for kind, (process, target) in servers.items():
                    start_at = time.time() + 1.0
                    futures = [pool.submit(run_health, HealthPhase(
                        target, start_at, args.duration, args.clients // 2 + (
                            args.clients % 2 if i == 0 else 0))) for i in range(2)]
                    time.sleep(max(0.0, start_at - time.time()))
                    cpu0, (busy0, total0) = cpu_s(process.pid), machine_busy()
                    outcomes = [f.result() for f in futures]
                    cpu = cpu_s(process.pid) - cpu0
                    busy, total = machine_busy()
                    ok = sum(o.ok for o in outcomes)
                    window = max(o.end for o in outcomes) - min(o.begin for o in outcomes)
                    row = (ok / window, cpu / max(ok, 1) * 1e6,
                           (busy - busy0) / max(total - total0, 1.0) * 100 * (
                               os.cpu_count() or 1))
                    results.setdefault(kind, []).append(row)
                    print(f"{kind:>8}: {row[0]:8.0f} calls/s {row[1]:7.0f} us CPU/call "
                          f"(machine {row[2]:.0f}%)", flush=True)
        print(f"medians over {args.rounds} rounds of {args.duration:g} s, {args.clients} "
              "callers:")
        for kind, rows in results.items():
            print(f"{kind:>8}: {statistics.median(r[0] for r in rows):8.0f} calls/s "
                  f"{statistics.median(r[1] for r in rows):7.0f} us CPU/call")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
