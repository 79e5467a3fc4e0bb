"""The benchmark scenarios. Each starts a fresh database and a fresh server, seeds what it needs
through the public gRPC API, measures, and appends rows to the report."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ops.bench import load
from ops.bench.harness import (
    REPO,
    BenchError,
    Database,
    Meter,
    Server,
    backends_cpu_s,
    bank_command,
    bank_env,
    fresh_database,
    grpc_options,
    python,
    run_measured,
)

FUND_MINOR = load.FUND_MINOR
MEMBERS_PER_CALL = load.MEMBERS_PER_CALL
SEED_SCRIPT = REPO / "ops" / "bench" / "seed.py"


@dataclass
class Sizes:
    duration_s: float = 20.0  # each measured load phase
    accounts: int = 10_000
    clients: int = 32  # concurrent single-transfer callers (closed loop)
    batch_callers: int = 4
    batch_size: int = 1_000
    rates: tuple[str, ...] = ("3000", "auto")  # open-loop offered rates; auto = 70% of closed
    statement_entries: int = 1_000_000
    seed_batch: int = 4_000
    samples: int = 1_000  # statement pages / balance-as-of calls measured
    audit_leaves: int = 1_000_000
    procs: int = 2  # client processes
    seed_via: str = "inprocess"  # statement and audit: "inprocess" (ops/bench/seed.py) or "rpc"
    seed_group: int = 1_000  # in-process audit seeding: single-transfer requests per transaction
    loans: int = 100_000
    loans_per_member: int = 1
    loans_per_transaction: int = 1  # in-process loan seeding: loans' commands per commit


@dataclass
class Row:
    scenario: str
    db: str
    phase: str
    offered: str = ""
    accepted: str = ""
    p50_ms: str = ""
    p99_ms: str = ""
    errors: str = ""
    peak_mb: str = ""
    cpu: str = ""
    note: str = ""


@dataclass
class Bench:
    sizes: Sizes
    pool: ProcessPoolExecutor
    workdir: Path
    say: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.say("  -> " + " | ".join(str(v) for v in row.__dict__.values() if v))


# -- small helpers --------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


def counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def cpu_note(meter: dict[str, float], client_cpu_s: float | None = None) -> str:
    wall = max(meter["wall_s"], 1e-9)
    cores = meter["cores"]
    parts = [f"server {meter['server_cpu_s'] / wall * 100:.0f}%"]
    if meter.get("postgres_cpu_s"):
        parts.append(f"postgres {meter['postgres_cpu_s'] / wall * 100:.0f}%")
    if client_cpu_s is not None:
        parts.append(f"client {client_cpu_s / wall * 100:.0f}%")
    parts.append(f"machine {meter['machine_busy'] * cores * 100:.0f}%/{cores * 100:.0f}%")
    return " ".join(parts)


@contextmanager
def running_server(bench: Bench, scenario: str, kind: str,
                   seed: Callable[[Database, Path], None] | None = None) -> Iterator[Server]:
    """A fresh database, seeded in-process by `seed(db, workdir)` (server not yet running) if
    given, then the real server on it."""
    workdir = bench.workdir / f"{scenario}-{kind}"
    workdir.mkdir(parents=True, exist_ok=True)
    db: Database = fresh_database(kind, workdir)
    server = Server(db, workdir)
    try:
        if seed is not None:
            seed(db, workdir)
        bench.say(f"[{scenario}/{kind}] starting the server")
        server.start()
        yield server
    finally:
        server.stop()
        db.drop()


@dataclass
class Seeded:
    result: dict[str, Any]
    wall_s: float
    peak_mb: float
    cpu: str


def seed_in_process(bench: Bench, db: Database, workdir: Path, what: str,
                    *args: str) -> Seeded:
    """Run `ops/bench/seed.py what ...` on the scratch database (the server is not running),
    relaying its progress; raises BenchError if it fails."""
    command = [python(), str(SEED_SCRIPT), what, "--database-url", db.url, *args]
    bench.say(f"  seeding in-process: {' '.join(command[2:4])} {' '.join(args)}")
    started = time.perf_counter()
    result: dict[str, Any] = {}
    tail: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=workdir, env=bank_env(), text=True)
    meter = Meter(process.pid, db.name).start()
    # The seeder's PostgreSQL backends exit with it: keep their last CPU reading.
    backends: dict[int, float] = {}
    sampled = 0.0
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        if db.name and time.perf_counter() - sampled > 1.0:
            backends.update(backends_cpu_s(db.name))
            sampled = time.perf_counter()
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        else:
            bench.say(line)
            tail = [*tail[-20:], line]
    reading = meter.stop()
    # The process has closed its output; reap it here to read its peak memory.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or not result:
        raise BenchError(f"seeding failed (exit {process.returncode}): " + "\n".join(tail))
    reading["server_cpu_s"] = usage.ru_utime + usage.ru_stime  # the seeder's own CPU
    if db.name:
        reading["postgres_cpu_s"] = sum(v - meter.backends0.get(k, 0.0)
                                        for k, v in backends.items())
    cpu = cpu_note(reading).replace("server", "seeder", 1)
    return Seeded(result, time.perf_counter() - started, usage.ru_maxrss / 1024, cpu)


class Stub:
    """A synchronous client for seeding and single-caller measurements."""

    def __init__(self, target: str, principal: str = load.PRINCIPAL) -> None:
        from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as audit_grpc
        from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
        from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(target, options=grpc_options())
        self.ledger = pb_grpc.LedgerServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)
        self.principal = principal

    def md(self, principal: str | None = None) -> list[tuple[str, str]]:
        return [("x-bank-principal", principal or self.principal)]

    def create_transfers(self, request: Any) -> Any:
        response = self.ledger.CreateTransfers(request, timeout=120, metadata=self.md())
        bad = [r for r in response.results if r.status.code != 0]
        if bad:
            raise RuntimeError(f"{len(bad)} transfers refused while seeding, first: "
                               f"{bad[0].status.message}")
        return response

    def close(self) -> None:
        self.channel.close()


def seed_accounts(stub: Stub, members: int, say: Callable[[str], None]) -> None:
    """`members` funded member deposit accounts (no overdraft), the bank's cash account and one
    hot income account (no limits)."""
    pb = stub.pb
    started = time.perf_counter()
    specs = load.account_protos(pb, members)
    for start in range(0, len(specs), MEMBERS_PER_CALL):
        part = specs[start:start + MEMBERS_PER_CALL]
        response = stub.ledger.CreateAccounts(
            pb.CreateAccountsRequest(request_id=f"seed-accounts-{start}", accounts=part),
            timeout=120, metadata=stub.md())
        assert all(r.status.code == 0 for r in response.results), response.results[0]
    for start in range(0, members, MEMBERS_PER_CALL):
        stub.create_transfers(pb.CreateTransfersRequest(
            request_id=f"seed-fund-{start}",
            transfers=[load.transfer(pb, f"fund-{i}", load.CASH, load.member(i), FUND_MINOR)
                       for i in range(start, min(members, start + MEMBERS_PER_CALL))]))
    say(f"  seeded {members} funded member accounts in {time.perf_counter() - started:.1f} s")


@dataclass
class Merged:
    ok: int
    items: int
    errors: dict[str, int]
    item_failures: dict[str, int]
    dropped: int
    latencies: list[float]
    window_s: float
    client_cpu_s: float
    lag_max_s: float
    sent: int

    @property
    def throughput(self) -> float:
        return self.items / max(self.window_s, 1e-9)


def run_load(bench: Bench, server: Server, *, mode: str, kind: str, concurrency: int = 0,
             rate: float = 0.0, count: int = 0, batch: int = 1,
             duration_s: float | None = None) -> tuple[Merged, dict[str, float], float]:
    """One phase over all client processes; (merged outcome, CPU meter, server peak MB)."""
    sizes = bench.sizes
    procs = sizes.procs
    tag = f"{kind}{mode[0]}{random.randrange(16**6):06x}"
    start_at = time.time() + 1.0
    phases = []
    for p in range(procs):
        share = concurrency // procs + (1 if p < concurrency % procs else 0)
        phases.append(load.Phase(
            target=server.target, tag=tag, proc=p, procs=procs, mode=mode, kind=kind,
            accounts=sizes.accounts, start_at=start_at,
            duration_s=duration_s if duration_s is not None else sizes.duration_s,
            concurrency=max(share, 1) if mode == "closed" else 0,
            count=(count // procs + (1 if p < count % procs else 0)) if count else 0,
            rate=rate / procs, batch=batch, seed=random.randrange(1 << 30)))
    futures = [bench.pool.submit(load.run_phase, phase) for phase in phases]
    groups_before = server.group_commits()  # before the first call of the phase
    time.sleep(max(0.0, start_at - time.time()))
    server.reset_peak()
    meter = Meter(server.pid, server.db.name).start()
    outcomes = [f.result() for f in futures]
    reading = meter.stop()
    peak = server.peak_mb()
    groups_after = server.group_commits()
    if groups_before is not None and groups_after is not None:  # else say nothing of them
        reading["groups"] = groups_after[0] - groups_before[0]
        reading["grouped_requests"] = groups_after[1] - groups_before[1]
    errors: dict[str, int] = {}
    failures: dict[str, int] = {}
    seen_details: dict[str, str] = {}
    for o in outcomes:
        for k, v in o.errors.items():
            errors[k] = errors.get(k, 0) + v
        for k, v in o.item_failures.items():
            failures[k] = failures.get(k, 0) + v
        for k, text in o.details.items():
            if k not in seen_details:
                seen_details[k] = text
                bench.say(f"    first {k}: {text}")
    merged = Merged(
        ok=sum(o.ok for o in outcomes), items=sum(o.items for o in outcomes), errors=errors,
        item_failures=failures, dropped=sum(o.dropped for o in outcomes),
        latencies=[x for o in outcomes for x in o.latencies],
        # Offset each process's perf_counter window by nothing: one machine, one clock.
        window_s=max(o.end for o in outcomes) - min(o.begin for o in outcomes),
        client_cpu_s=sum(o.cpu_s for o in outcomes),
        lag_max_s=max(o.lag_max_s for o in outcomes), sent=sum(o.sent for o in outcomes))
    return merged, reading, peak


def load_row(scenario: str, db: str, phase: str, m: Merged, meter: dict[str, float],
             peak: float, offered: str = "", unit: str = "/s") -> Row:
    errors = dict(m.errors)
    for k, v in m.item_failures.items():
        errors[f"item {k}"] = v
    if m.dropped:
        errors["client-dropped"] = m.dropped
    note = f"{m.ok} calls"
    if meter.get("groups", 0) > 0:
        per_group = meter["grouped_requests"] / meter["groups"]
        note += f"; {meter['groups']:,.0f} commits of {per_group:.1f} requests"
    if m.lag_max_s > 0.05:
        note += f"; client fell {m.lag_max_s * 1000:.0f} ms behind schedule"
    return Row(scenario, db, phase, offered=offered, accepted=f"{m.throughput:,.0f}{unit}",
               p50_ms=ms(pct(m.latencies, 50)), p99_ms=ms(pct(m.latencies, 99)),
               errors=counts(errors), peak_mb=f"{peak:.0f}",
               cpu=cpu_note(meter, m.client_cpu_s), note=note)


# -- scenarios ------------------------------------------------------------------------------------
def batched(bench: Bench, kind: str) -> None:
    s = bench.sizes
    with running_server(bench, "batched", kind) as server:
        stub = Stub(server.target)
        seed_accounts(stub, s.accounts, bench.say)
        stub.close()
        bench.say(f"  closed loop: {s.batch_callers} callers x {s.batch_size} transfers/call, "
                  f"{s.duration_s:g} s")
        m, meter, peak = run_load(bench, server, mode="closed", kind="batch",
                                  concurrency=s.batch_callers, batch=s.batch_size)
        bench.add(load_row("batched", kind, f"closed {s.batch_callers} callers x "
                           f"{s.batch_size}/call", m, meter, peak, unit=" transfers/s"))


def singles(bench: Bench, kind: str) -> None:
    s = bench.sizes
    with running_server(bench, "singles", kind) as server:
        stub = Stub(server.target)
        seed_accounts(stub, s.accounts, bench.say)
        stub.close()
        for shape in ("uniform", "hot"):
            label = (f"uniform over {s.accounts:,}" if shape == "uniform"
                     else "one hot account")
            bench.say(f"  closed loop, {s.clients} clients, {label}, {s.duration_s:g} s")
            m, meter, peak = run_load(bench, server, mode="closed", kind=shape,
                                      concurrency=s.clients)
            bench.add(load_row(f"single {shape}", kind, f"closed {s.clients} clients", m,
                               meter, peak))
            closed = m.throughput
            for spec in s.rates:
                rate = (0.7 * closed if spec == "auto" else float(spec))
                rate = max(rate, 10.0)
                bench.say(f"  open loop, {label}, offered {rate:,.0f}/s, {s.duration_s:g} s")
                m, meter, peak = run_load(bench, server, mode="open", kind=shape, rate=rate)
                bench.add(load_row(f"single {shape}", kind, "open" + (
                    " (70% of closed)" if spec == "auto" else ""), m, meter, peak,
                    offered=f"{rate:,.0f}/s"))


def seed_statement_rpc(bench: Bench, server: Server, stub: Stub, kind: str, account: str,
                       source: str) -> tuple[int, int]:
    """Seed the statement through batched CreateTransfers calls; (first, last) time_ns."""
    s = bench.sizes
    n = s.statement_entries
    pb = stub.pb
    before_ns = time.time_ns()
    bench.say(f"  seeding {n:,} entries on accounts/{account} "
              f"({s.seed_batch} transfers per CreateTransfers, 2 callers)")
    started = time.perf_counter()
    meter = Meter(server.pid, server.db.name).start()
    done = 0
    next_report = 0.0

    def batch(first: int) -> int:
        last = min(n, first + s.seed_batch)
        stub.create_transfers(pb.CreateTransfersRequest(
            request_id=f"stmt-seed-{first}",
            transfers=[load.transfer(pb, f"st-{i}", source, account)
                       for i in range(first, last)]))
        return last - first

    with ThreadPoolExecutor(2) as seeders:
        for count in seeders.map(batch, range(0, n, s.seed_batch)):
            done += count
            if done / n >= next_report or done == n:
                elapsed = time.perf_counter() - started
                bench.say(f"    {done:>9,} / {n:,} entries, {done / elapsed:,.0f}/s, "
                          f"server RSS {server.rss_mb():.0f} MB")
                next_report += 0.1
    seeded = meter.stop()
    after_ns = time.time_ns()
    elapsed = time.perf_counter() - started
    bench.add(Row("statement seed", kind, f"{n:,} entries, {s.seed_batch}/call, via RPC",
                  accepted=f"{n / elapsed:,.0f} transfers/s", peak_mb=f"{server.peak_mb():.0f}",
                  cpu=cpu_note(seeded), note=f"{elapsed:.1f} s"))
    return before_ns, after_ns


def statement(bench: Bench, kind: str) -> None:
    s = bench.sizes
    n = s.statement_entries
    account = load.HOT  # no funding transfer: exactly the seeded entries
    source = load.CASH
    window: dict[str, int] = {}
    inprocess = s.seed_via == "inprocess"

    def seed(db: Database, workdir: Path) -> None:
        seeded = seed_in_process(bench, db, workdir, "statement", "--entries", str(n),
                                 "--batch", str(s.seed_batch))
        window.update(before_ns=seeded.result["began_ns"], after_ns=seeded.result["ended_ns"])
        bench.add(Row("statement seed", kind, f"{n:,} entries, {s.seed_batch}/request, "
                      "in-process", accepted=f"{n / seeded.result['seconds']:,.0f} transfers/s",
                      peak_mb=f"{seeded.peak_mb:.0f} (seeder)", cpu=seeded.cpu,
                      note=f"{seeded.result['seconds']:.1f} s; create_transfers_group, one "
                      "request per transaction, server stopped"))

    with running_server(bench, "statement", kind, seed if inprocess else None) as server:
        stub = Stub(server.target)
        pb = stub.pb
        if inprocess:
            before_ns, after_ns = window["before_ns"], window["after_ns"]
        else:
            seed_accounts(stub, 2, bench.say)
            before_ns, after_ns = seed_statement_rpc(bench, server, stub, kind, account,
                                                     source)
        name = f"accounts/{account}"
        md = stub.md()

        def timed(call: Callable[[], Any], samples: int) -> tuple[list[float], float]:
            latencies = []
            t0 = time.perf_counter()
            for _ in range(samples):
                began = time.perf_counter()
                call()
                latencies.append(time.perf_counter() - began)
            return latencies, time.perf_counter() - t0

        def page(token: str = "", size: int = 100) -> Any:
            return stub.ledger.ListAccountEntries(pb.ListAccountEntriesRequest(
                account=name, page_size=size, page_token=token), timeout=30, metadata=md)

        def measure(phase: str, call: Callable[[], Any], samples: int, note: str = "") -> None:
            server.reset_peak()
            meter = Meter(server.pid, server.db.name).start()
            latencies, wall = timed(call, samples)
            reading = meter.stop()
            bench.add(Row("statement", kind, phase, accepted=f"{samples / wall:,.0f} calls/s",
                          p50_ms=ms(pct(latencies, 50)), p99_ms=ms(pct(latencies, 99)),
                          peak_mb=f"{server.peak_mb():.0f}", cpu=cpu_note(reading),
                          note=note or f"{samples} calls, 1 caller"))

        measure("first page (100 lines)", page, s.samples)
        # Walk the whole statement once, 1,000 lines a page, keeping every page token.
        bench.say(f"  walking the whole statement ({n:,} lines, 1,000 a page)")
        server.reset_peak()
        meter = Meter(server.pid, server.db.name).start()
        tokens: list[str] = []
        token, lines, walk = "", 0, time.perf_counter()
        walk_latencies = []
        while True:
            began = time.perf_counter()
            response = page(token, 1_000)
            walk_latencies.append(time.perf_counter() - began)
            lines += len(response.entries)
            token = response.next_page_token
            if not token:
                break
            tokens.append(token)
        walk = time.perf_counter() - walk
        reading = meter.stop()
        bench.add(Row("statement", kind, "full walk (1,000 lines/page)",
                      accepted=f"{lines / walk:,.0f} lines/s",
                      p50_ms=ms(pct(walk_latencies, 50)), p99_ms=ms(pct(walk_latencies, 99)),
                      peak_mb=f"{server.peak_mb():.0f}", cpu=cpu_note(reading),
                      note=f"{lines:,} lines in {walk:.1f} s"))
        if lines != n:
            bench.add(Row("statement", kind, "CHECK", note=f"walk saw {lines} lines, seeded {n}"))
        deep = tokens[len(tokens) // 2:] or [""]
        rng = random.Random(7)
        measure("deep page (100 lines, 2nd half)", lambda: page(rng.choice(deep)), s.samples)
        from google.protobuf.timestamp_pb2 import Timestamp

        def balance_as_of() -> Any:
            at = Timestamp()
            at.FromNanoseconds(rng.randrange(before_ns, after_ns))
            return stub.ledger.GetAccountBalance(pb.GetAccountBalanceRequest(
                account=name, as_of_time=at), timeout=30, metadata=md)

        measure("balance as of a random time", balance_as_of, s.samples)
        stub.close()


def audit(bench: Bench, kind: str) -> None:
    s = bench.sizes
    inprocess = s.seed_via == "inprocess"

    def seed(db: Database, workdir: Path) -> None:
        seeded = seed_in_process(bench, db, workdir, "transfers", "--accounts",
                                 str(s.accounts), "--leaves", str(s.audit_leaves),
                                 "--group", str(s.seed_group))
        r = seeded.result
        bench.add(Row("audit seed", kind, f"{r['requests']:,} single transfers, in-process",
                      accepted=f"{r['requests'] / r['seconds']:,.0f} requests/s",
                      peak_mb=f"{seeded.peak_mb:.0f} (seeder)", cpu=seeded.cpu,
                      note=f"{r['seconds']:.0f} s ({r['total_seconds']:.0f} s with the "
                      f"{s.accounts:,} accounts); create_transfers_group, {s.seed_group:,} "
                      f"requests (one leaf each) per transaction, server stopped"))

    with running_server(bench, "audit", kind, seed if inprocess else None) as server:
        stub = Stub(server.target)
        from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as apb

        def tree_size() -> int:
            return int(stub.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=3600,
                                                metadata=stub.md("bench;operator")).tree_size)

        if not inprocess:
            seed_accounts(stub, s.accounts, bench.say)
            have = tree_size()
            want = max(s.audit_leaves - have, 0)
            bench.say(f"  the log has {have} leaves; adding {want:,} (one per single-transfer "
                      f"command, {s.clients} clients, closed loop, via RPC)")
            if want:
                m, seeded, peak = run_load(bench, server, mode="closed", kind="uniform",
                                           concurrency=s.clients, count=want, duration_s=0)
                bench.add(load_row("audit seed", kind, f"{want:,} single transfers, via RPC",
                                   m, seeded, peak))
        server.reset_peak()
        meter = Meter(server.pid, server.db.name).start()
        size = tree_size()
        reading = meter.stop()
        bench.add(Row("audit", kind, f"GetCheckpoint ({size:,} leaves)",
                      accepted=f"{size / reading['wall_s']:,.0f} leaves/s",
                      peak_mb=f"{server.peak_mb():.0f}", cpu=cpu_note(reading),
                      note=f"{reading['wall_s']:.1f} s: signs, rehashing every leaf"))
        # Export over gRPC (the regulator's path), written to disk for the offline verifier.
        bundle = server.workdir / "bundle"
        server.reset_peak()
        meter = Meter(server.pid, server.db.name).start()
        written: set[str] = set()
        total = 0
        handle: Any = None
        current = ""
        try:
            stream = stub.audit.ExportBundle(apb.ExportBundleRequest(), timeout=3600,
                                             metadata=stub.md("bench;auditor"))
            for chunk in stream:
                if chunk.path != current:  # one file open at a time (10,000+ statements)
                    if handle is not None:
                        handle.close()
                    target = bundle / chunk.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handle = target.open("ab" if chunk.path in written else "wb")
                    current = chunk.path
                    written.add(current)
                handle.write(chunk.data)
                total += len(chunk.data)
            error = ""
        except grpc.RpcError as failure:
            error = f"{failure.code().name}: {failure.details()}"[:120]
        finally:
            if handle is not None:
                handle.close()
        reading = meter.stop()
        peak = server.peak_mb()
        bench.add(Row("audit", kind, f"ExportBundle ({size:,} leaves)",
                      accepted=f"{size / reading['wall_s']:,.0f} leaves/s",
                      errors=error, peak_mb=f"{peak:.0f}", cpu=cpu_note(reading),
                      note=f"{reading['wall_s']:.1f} s, {total / 2**20:,.0f} MiB, "
                      f"{len(written)} files; target <= 300 MB"))
        stub.close()
        # `bank audit verify`: the operator's self-check, run by the CLI on the database.
        code, wall, peak_cli, tail = run_measured(
            [*bank_command(), "--database-url", server.db.url, "audit", "verify",
             "--keys-dir", str(server.keys_dir)], server.workdir)
        bench.add(Row("audit", kind, "bank audit verify (CLI)",
                      accepted=f"{size / wall:,.0f} leaves/s",
                      errors="" if code == 0 else f"exit {code}: {tail.strip()[-100:]}",
                      peak_mb=f"{peak_cli:.0f} (CLI)",
                      note=f"{wall:.1f} s; reads the database directly"))
        if not error:
            keys = server.workdir / "pinned-keys.txt"
            keys.write_text(subprocess.run(
                [*bank_command(), "audit", "keys", "--keys-dir", str(server.keys_dir)],
                capture_output=True, text=True, check=True, env=bank_env()).stdout)
            code, wall, peak_v, tail = run_measured(
                [python(), "-m", "bank.offline.verify", str(bundle), "--key", str(keys)],
                server.workdir)
            bench.add(Row("audit", kind, "offline verify of the bundle",
                          accepted=f"{size / wall:,.0f} leaves/s",
                          errors="" if code == 0 else f"exit {code}: {tail.strip()[-100:]}",
                          peak_mb=f"{peak_v:.0f} (verifier)",
                          note=f"{wall:.1f} s; python -m bank.offline.verify"))


def close_of_business(bench: Bench, kind: str) -> None:
    """A disbursed loan book seeded in-process through the lending use cases, then close of
    business over gRPC: the business date, the same date again, and the next day."""
    s = bench.sizes
    seeded: dict[str, Any] = {}

    def seed(db: Database, workdir: Path) -> None:
        run = seed_in_process(bench, db, workdir, "loans", "--loans", str(s.loans),
                              "--loans-per-member", str(s.loans_per_member),
                              "--per-transaction", str(s.loans_per_transaction),
                              "--keys-dir", str(workdir / "keys"))
        r = run.result
        seeded.update(r)
        per = (f"{s.loans_per_transaction} loans' commands per transaction"
               if s.loans_per_transaction > 1 else "one transaction per command, as the server")
        bench.add(Row("cob seed", kind, f"{r['loans']:,} loans, {r['members']:,} members, "
                      "in-process", accepted=f"{r['loans'] / r['seconds']:,.1f} loans/s",
                      peak_mb=f"{run.peak_mb:.0f} (seeder)", cpu=run.cpu,
                      note=f"{r['seconds']:.0f} s; {r['commands']:,} commands (onboard, KYC, "
                      f"apply, decide, disburse): {r['commands'] / r['seconds']:,.0f}/s; {per}"))

    with running_server(bench, "cob", kind, seed) as server:
        from google.type import date_pb2

        from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
        from services.generated.peoplesbank.lending.v1 import loan_service_pb2_grpc as lpb_grpc

        channel = grpc.insecure_channel(server.target, options=grpc_options())
        loans = lpb_grpc.LoanServiceStub(channel)
        md = [("x-bank-principal", "bench-ops;operator")]
        today = loans.GetBusinessDate(lpb.GetBusinessDateRequest(), timeout=60,
                                      metadata=md).business_date
        iso = f"{today.year:04d}-{today.month:02d}-{today.day:02d}"

        def close(phase: str, request_id: str, on: Any = None) -> None:
            request = lpb.RunCloseOfBusinessRequest(request_id=request_id)
            if on is not None:
                request.business_date.CopyFrom(on)
            bench.say(f"  RunCloseOfBusiness: {phase}")
            server.reset_peak()
            meter = Meter(server.pid, server.db.name).start()
            error = ""
            try:
                reply = loans.RunCloseOfBusiness(request, timeout=7200, metadata=md)
            except grpc.RpcError as failure:
                error = f"{failure.code().name}: {failure.details()}"[:160]
                reply = lpb.RunCloseOfBusinessResponse()
            reading = meter.stop()
            wall = reading["wall_s"]
            d = reply.business_date
            note = (f"{wall:.1f} s; {reply.days} day(s), {reply.entries:,} entries posted; "
                    f"business date now {d.year:04d}-{d.month:02d}-{d.day:02d}")
            if reply.already_closed:
                note = f"{wall * 1000:.1f} ms; already closed, nothing written"
            elif error:
                note = f"{wall * 1000:.1f} ms"
            bench.add(Row("close of business", kind, phase,
                          accepted=(f"{reply.loans / wall:,.0f} loans/s" if reply.loans
                                    else f"{reply.loans} loans"),
                          p50_ms="", p99_ms="", errors=error,
                          peak_mb=f"{server.peak_mb():.0f}", cpu=cpu_note(reading), note=note))

        n = seeded["loans"]
        close(f"day 1 ({iso}), {n:,} loans", "bench-cob-day-1")
        close(f"day 1 again ({iso}, new request id)", "bench-cob-day-1-again",
              date_pb2.Date(year=today.year, month=today.month, day=today.day))
        close("day 1 again (same request id)", "bench-cob-day-1")
        close(f"day 2, {n:,} loans", "bench-cob-day-2")
        channel.close()


SCENARIOS: dict[str, Callable[[Bench, str], None]] = {
    "batched": batched,
    "singles": singles,
    "statement": statement,
    "audit": audit,
    "cob": close_of_business,
}
