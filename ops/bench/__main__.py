"""Run the benchmarks and print one table.

    .venv/bin/python -m ops.bench                       # every scenario, SQLite and PostgreSQL
    .venv/bin/python -m ops.bench --quick --db sqlite   # a smoke run (about a minute per database)
    .venv/bin/python -m ops.bench --scenario singles --db postgresql --duration 30

See ops/bench/README.md for what each scenario measures and the targets of issue 7.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

from ops.bench import harness, load
from ops.bench.harness import BenchError
from ops.bench.scenarios import SCENARIOS, Bench, Row, Sizes

QUICK = Sizes(duration_s=2.0, accounts=2_000, statement_entries=20_000, samples=100,
              audit_leaves=5_000, loans=500)
HEADERS = {"scenario": "scenario", "db": "db", "phase": "phase", "offered": "offered",
           "accepted": "accepted", "p50_ms": "p50 ms", "p99_ms": "p99 ms", "errors": "errors",
           "peak_mb": "server peak MB", "cpu": "CPU (of 1 core each)", "note": "note"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    full = Sizes()
    p = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                   help="run only these (repeatable); default: all")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run; explicit size flags still win")
    p.add_argument("--duration", type=float, help=f"seconds per load phase ({full.duration_s:g})")
    p.add_argument("--accounts", type=int, help=f"member accounts ({full.accounts:,})")
    p.add_argument("--clients", type=int,
                   help=f"concurrent single-transfer callers, closed loop ({full.clients})")
    p.add_argument("--batch-callers", type=int,
                   help=f"concurrent batched callers ({full.batch_callers})")
    p.add_argument("--batch-size", type=int, help=f"transfers per batched call "
                   f"({full.batch_size:,})")
    p.add_argument("--rates", help="open-loop offered rates, calls/s, comma-separated; 'auto' "
                   f"is 70%% of the closed-loop figure ({','.join(full.rates)})")
    p.add_argument("--statement-entries", type=int,
                   help=f"entries on the statement account ({full.statement_entries:,})")
    p.add_argument("--seed-batch", type=int,
                   help=f"transfers per call while seeding the statement ({full.seed_batch:,})")
    p.add_argument("--samples", type=int,
                   help=f"calls per statement/balance measurement ({full.samples:,})")
    p.add_argument("--audit-leaves", type=int,
                   help=f"audit leaves to verify and export ({full.audit_leaves:,})")
    p.add_argument("--procs", type=int, help=f"client processes ({full.procs})")
    p.add_argument("--seed-via", choices=["inprocess", "rpc"],
                   help="how statement and audit are seeded: the server's use cases on the "
                   "database before the server starts, or through the running server's RPCs "
                   f"(single transfers from {full.clients} clients for audit) ({full.seed_via})")
    p.add_argument("--seed-group", type=int, help="in-process audit seeding: single-transfer "
                   f"requests per transaction ({full.seed_group:,})")
    p.add_argument("--loans", type=int, help=f"loans for close of business ({full.loans:,})")
    p.add_argument("--loans-per-member", type=int,
                   help=f"loans per member in the loan book ({full.loans_per_member})")
    p.add_argument("--loans-per-transaction", type=int,
                   help="in-process loan seeding: loans whose commands share one commit "
                   f"({full.loans_per_transaction}: every command commits alone, as the server)")
    p.add_argument("--server-rev", metavar="REV",
                   help="run the server (and the bank CLI) from `git archive REV` instead of "
                   "this checkout's working tree, e.g. HEAD to leave uncommitted work out")
    p.add_argument("--keep", action="store_true", help="keep the work folder (server logs, "
                   "SQLite files, the export bundle)")
    p.add_argument("--markdown", type=Path, help="also write the table as Markdown to FILE")
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    overrides = {
        "duration_s": args.duration, "accounts": args.accounts, "clients": args.clients,
        "batch_callers": args.batch_callers, "batch_size": args.batch_size,
        "rates": tuple(r.strip() for r in args.rates.split(",")) if args.rates else None,
        "statement_entries": args.statement_entries, "seed_batch": args.seed_batch,
        "samples": args.samples, "audit_leaves": args.audit_leaves, "procs": args.procs,
        "seed_via": args.seed_via, "seed_group": args.seed_group, "loans": args.loans,
        "loans_per_member": args.loans_per_member,
        "loans_per_transaction": args.loans_per_transaction}
    for name, value in overrides.items():
        if value is not None:
            setattr(sizes, name, value)
    return sizes


def table(rows: list[Row], markdown: bool = False) -> str:
    names = [f.name for f in fields(Row)]
    cells = [[HEADERS[n] for n in names]] + [[str(getattr(r, n)) for n in names] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(names))]
    out = []
    for k, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                      if line.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    load1, load5, _ = os.getloadavg()
    return (f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
            f"load average {load1:.1f}/{load5:.1f} at start")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    chosen = args.scenario or list(SCENARIOS)
    command = "python -m ops.bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}")
    say(f"client: {sizes.procs} processes (multiprocessing, spawn) x grpc.aio, "
        f"{2} channels each; requests built outside the timed call; server: `bank serve` "
        "subprocess, plaintext loopback, audit on, JSON INFO logs to a file")
    via = ("in-process (ops/bench/seed.py, server stopped)" if sizes.seed_via == "inprocess"
           else "via RPC")
    say(f"seeding: statement and audit {via}; loans in-process; member accounts of "
        "batched/singles via RPC")
    workdir = Path(tempfile.mkdtemp(prefix="bank-bench-"))
    if args.server_rev:
        harness.SERVER_TREE[:] = [harness.export_tree(args.server_rev, workdir / "tree")]
        rev = subprocess.run(["git", "-C", str(harness.REPO), "rev-parse", "--short",
                              args.server_rev], capture_output=True, text=True, check=False)
        say(f"server code: git archive {args.server_rev} ({rev.stdout.strip()})")
    else:
        dirty = subprocess.run(["git", "-C", str(harness.REPO), "status", "--porcelain",
                                "bank", "services", "migrations"], capture_output=True,
                               text=True, check=False).stdout
        say("server code: this working tree" + (" (with uncommitted changes in bank/, "
                                                "services/ or migrations/)" if dirty else ""))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=sizes.procs, mp_context=context) as pool:
        for future in [pool.submit(load.warm_worker) for _ in range(sizes.procs * 2)]:
            future.result()
        bench = Bench(sizes, pool, workdir, say)
        try:
            for kind in kinds:
                for name in chosen:
                    SCENARIOS[name](bench, kind)
        except BenchError as error:
            print(f"bench: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            say("interrupted; the table so far:")
        finally:
            if not args.keep:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
            else:
                say(f"work folder kept: {workdir}")
    say("")
    say(table(bench.rows))
    load1, load5, load15 = os.getloadavg()
    say(f"\n{command}  ({time.perf_counter() - started:.0f} s in all; load average at the end "
        f"{load1:.2f}/{load5:.2f}/{load15:.2f})")
    if args.markdown:
        args.markdown.write_text(table(bench.rows, markdown=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
