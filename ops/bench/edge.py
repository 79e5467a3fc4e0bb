"""The gRPC edge's CPU per single-transfer call, A/B between server revisions.

    python -m ops.bench.edge                              # this tree only
    python -m ops.bench.edge --rev main --rev HEAD        # A/B, rounds interleaved
    python -m ops.bench.edge --rev main --tree . --rounds 5 --duration 5

Each variant (`--rev REV`: `git archive REV`; `--tree PATH`: a source folder; neither: this
checkout) gets its own `bank serve` (the real server, as `ops/bench/run` starts it: SQLite
file, development plaintext, JSON access log at INFO to a file) and its own seeded accounts.
The variants are measured in turn within each round, so the noise of a shared machine falls
on all of them alike, and the report gives the median over rounds of:

- `singles`: 32 closed-loop callers (2 client processes, grpc.aio, as `ops/bench/load.py`)
  sending single-transfer CreateTransfers calls: calls/s and server CPU per call (all threads,
  /proc/<pid>/stat), split into the group-commit writer thread and the rest (the edge: gRPC's
  threads, the RPC workers, interceptors, conversion, submit/wait) by per-thread CPU
  (/proc/<pid>/task/<tid>/stat; the writer's tid found with `py-spy dump` when py-spy is
  installed, else not split).
- `health`: the same callers sending `grpc.health.v1.Health/Check` (no interceptor touches it,
  no database): the floor of this server's gRPC machinery per unary call.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench import harness, load
from ops.bench.harness import (
    TICKS,
    Database,
    Server,
    cpu_s,
    export_tree,
    fresh_database,
    machine_busy,
)
from ops.bench.scenarios import Stub, seed_accounts

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def thread_cpu_s(pid: int, tid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def writer_tid(pid: int) -> int | None:
    """The OS thread id of the group-commit writer, from `py-spy dump` (None without py-spy)."""
    spy = shutil.which("py-spy") or str(Path(harness.python()).parent / "py-spy")
    if not Path(spy).exists():
        return None
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    match = re.search(r"Thread (\d+) \(\w+\): \"group-commit\"", out)
    return int(match.group(1)) if match else None


# -- the health-check load (the CreateTransfers load is ops/bench/load.py) ------------------------
@dataclass
class HealthPhase:
    target: str
    start_at: float
    duration_s: float
    concurrency: int


@dataclass
class HealthOutcome:
    ok: int = 0
    errors: int = 0
    begin: float = 0.0
    end: float = 0.0
    cpu_s: float = 0.0


async def _drive_health(phase: HealthPhase) -> HealthOutcome:
    import grpc
    from grpc_health.v1 import health_pb2

    out = HealthOutcome()
    channels, calls = await load.unary_callers(phase.target, 2, HEALTH_CHECK,
                                               health_pb2.HealthCheckRequest,
                                               health_pb2.HealthCheckResponse)
    request = health_pb2.HealthCheckRequest()
    await asyncio.sleep(max(0.0, phase.start_at - time.time()))
    cpu0 = time.process_time()
    out.begin = time.perf_counter()
    stop_at = out.begin + phase.duration_s
    sent = 0

    async def loop() -> None:
        nonlocal sent
        while time.perf_counter() < stop_at:
            sent += 1
            try:
                await calls[sent % 2](request, timeout=10.0)
                out.ok += 1
            except grpc.aio.AioRpcError:
                out.errors += 1
            out.end = time.perf_counter()

    await asyncio.gather(*(loop() for _ in range(phase.concurrency)))
    out.cpu_s = time.process_time() - cpu0
    for ch in channels:
        await ch.close()
    return out


def run_health(phase: HealthPhase) -> HealthOutcome:
    return asyncio.run(_drive_health(phase))


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Variant:
    label: str
    tree: Path | None  # None: this checkout
    server: Server | None = None
    db: Database | None = None
    writer: int | None = None
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def start(variant: Variant, workdir: Path, accounts: int) -> None:
    folder = workdir / re.sub(r"[^A-Za-z0-9_.-]", "_", variant.label)
    folder.mkdir(parents=True)
    harness.SERVER_TREE[:] = [variant.tree] if variant.tree else []
    variant.db = fresh_database("sqlite", folder)
    variant.server = Server(variant.db, folder).start()
    stub = Stub(variant.server.target)
    seed_accounts(stub, accounts, print)
    stub.close()
    variant.writer = writer_tid(variant.server.pid)


def measure(pool: ProcessPoolExecutor, variant: Variant, what: str, duration_s: float,
            clients: int, accounts: int, procs: int) -> dict[str, float]:
    server = variant.server
    assert server is not None
    start_at = time.time() + 1.0
    share = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    if what == "singles":
        tag = f"e{random.randrange(16**8):08x}"
        futures = [pool.submit(load.run_phase, load.Phase(
            target=server.target, tag=tag, proc=p, procs=procs, mode="closed", kind="uniform",
            accounts=accounts, start_at=start_at, duration_s=duration_s, concurrency=share[p],
            seed=random.randrange(1 << 30))) for p in range(procs)]
    else:
        futures = [pool.submit(run_health, HealthPhase(server.target, start_at, duration_s,
                                                       share[p])) for p in range(procs)]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_s(server.pid)
    writer0 = thread_cpu_s(server.pid, variant.writer) if variant.writer else 0.0
    busy0, total0 = machine_busy()
    wall0 = time.perf_counter()
    outcomes = [f.result() for f in futures]
    wall = time.perf_counter() - wall0
    busy, total = machine_busy()
    cpu = cpu_s(server.pid) - cpu0
    writer = (thread_cpu_s(server.pid, variant.writer) - writer0) if variant.writer else 0.0
    ok = sum(o.ok for o in outcomes)
    errors = sum(o.errors if isinstance(o.errors, int) else sum(o.errors.values())
                 for o in outcomes)
    window = max(o.end for o in outcomes) - min(o.begin for o in outcomes)
    n = max(ok, 1)
    return {"calls_s": ok / window, "cpu_us": cpu / n * 1e6, "server_pct": cpu / wall * 100,
            "writer_us": writer / n * 1e6, "edge_us": (cpu - writer) / n * 1e6,
            "client_pct": sum(o.cpu_s for o in outcomes) / wall * 100,
            "machine_pct": (busy - busy0) / max(total - total0, 1.0) * 100 * (os.cpu_count() or 1),
            "errors": errors}


COLUMNS = ("calls_s", "cpu_us", "edge_us", "writer_us", "server_pct", "client_pct",
           "machine_pct", "errors")


def show(label: str, what: str, row: dict[str, float]) -> str:
    return (f"{label:>14} {what:>8} " + " ".join(f"{row[c]:>10.0f}" for c in COLUMNS))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", action="append", default=[], help="a server revision (repeatable)")
    p.add_argument("--tree", action="append", default=[], help="a server source folder")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--accounts", type=int, default=2_000)
    p.add_argument("--what", action="append", choices=["singles", "health"],
                   help="phases (default: both)")
    p.add_argument("--hold", type=float, default=0.0,
                   help="after starting, print the server pids and wait this many seconds")
    args = p.parse_args(argv)
    whats = args.what or ["singles", "health"]
    workdir = Path(tempfile.mkdtemp(prefix="edge-"))
    variants = [Variant(f"rev:{rev}", export_tree(rev, workdir / f"tree-{i}"))
                for i, rev in enumerate(args.rev)]
    variants += [Variant(f"tree:{tree}", Path(tree).resolve()) for tree in args.tree]
    if not variants:
        variants = [Variant("working tree", None)]
    for variant in variants:
        if variant.label.startswith("rev:"):
            sha = subprocess.run(["git", "rev-parse", "--short", variant.label[4:]],
                                 capture_output=True, text=True, check=False).stdout.strip()
            variant.label = f"{variant.label[4:]}={sha}" if sha else variant.label
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=args.procs, mp_context=context) as pool:
            for f in [pool.submit(load.warm_worker) for _ in range(args.procs * 2)]:
                f.result()
            for variant in variants:
                start(variant, workdir, args.accounts)
                assert variant.server is not None
                print(f"{variant.label}: pid {variant.server.pid}, writer tid {variant.writer}",
                      flush=True)
            if args.hold:
                time.sleep(args.hold)
            print(f"{'variant':>14} {'phase':>8} " + " ".join(f"{c:>10}" for c in COLUMNS))
            for _round in range(args.rounds):
                for variant in variants:
                    for what in whats:
                        row = measure(pool, variant, what, args.duration, args.clients,
                                      args.accounts, args.procs)
                        variant.results.setdefault(what, []).append(row)
                        print(show(variant.label, what, row), flush=True)
            print(f"medians over {args.rounds} rounds of {args.duration:g} s, "
                  f"{args.clients} clients:")
            for variant in variants:
                for what in whats:
                    rows = variant.results[what]
                    median = {c: statistics.median(r[c] for r in rows) for c in COLUMNS}
                    print(show(variant.label, what, median))
    finally:
        for variant in variants:
            if variant.server is not None:
                variant.server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
