"""Concurrent writers through real servers: no overdraft, no lost update, dense history.

(a) two in-process servers, each with its own engine, over one PostgreSQL database;
(b) two `bank serve` processes over one PostgreSQL database;
(c) one in-process server over SQLite (one writer at a time: BEGIN IMMEDIATE, busy timeout).

Client threads move money between no-overdraft member accounts for a few seconds, with amounts
often larger than the balance (so many transfers are refused with EXCEEDS_CREDITS), some linked
pairs, some requests replayed with the same request_id (on the same or the other server, and
sometimes raced on both at once). A reader checks the trial balance throughout. Afterwards:
every balance is non-negative, money is conserved, the balances equal what the acknowledged
transfers imply, the ledger self-check passes, entry positions and audit indices are dense, and
there is exactly one audit leaf per distinct request.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, text

from bank.adapters.clock import SystemClock
from bank.adapters.migrate import upgrade
from bank.adapters.sql import SqlUnitOfWork, make_engine
from bank.app.check import check_ledger
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.server import RunningServer, start_server
from tests.helpers import account, item_reason, transfer

REPO = Path(__file__).resolve().parents[2]
PRINCIPAL = [("x-bank-principal", "tess;teller;branch:preston")]
MEMBERS = 20
LOAD_SECONDS = 5.0
RPC_TIMEOUT_S = 30.0
SETUP_REQUESTS = 2  # one CreateAccounts, one CreateTransfers (the funding)
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def pence(money: Any) -> int:
    assert money.currency_code in ("GBP", "")
    return int(money.units) * 100 + int(money.nanos) // 10_000_000


class Stub:
    """LedgerService calls as a teller, with a bounded deadline."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.LedgerServiceStub(channel)

    def call(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method)(request, metadata=PRINCIPAL, timeout=RPC_TIMEOUT_S)

    def future(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method).future(request, metadata=PRINCIPAL,
                                                  timeout=RPC_TIMEOUT_S)


# -- the ledger under load -----------------------------------------------------------------------
@dataclass
class Sent:
    """One distinct request and its response (None: the outcome is unknown to the client)."""

    request_id: str
    lines: list[tuple[str, str, str, int]]  # transfer id, debited, credited, pence
    response: pb.CreateTransfersResponse | None


@dataclass
class LoadReport:
    sent: list[Sent] = field(default_factory=list)
    replays: int = 0
    races: int = 0
    trial_balances: int = 0

    def results(self) -> Iterator[tuple[tuple[str, str, str, int], pb.TransferResult]]:
        for s in self.sent:
            if s.response is not None:
                yield from zip(s.lines, s.response.results, strict=True)

    @property
    def unknown(self) -> list[Sent]:
        return [s for s in self.sent if s.response is None]


def open_and_fund(stub: Stub, seed: int) -> tuple[list[str], dict[str, int]]:
    """A bank cash account (asset) and member deposit accounts (no overdraft), funded."""
    rng = random.Random(seed)
    members = [f"m{i:02d}" for i in range(MEMBERS)]
    response = stub.call("CreateAccounts", pb.CreateAccountsRequest(
        request_id="setup-accounts",
        accounts=[account("cash", "ASSET", owner=("BANK", "bank"))]
        + [account(m, no_overdraft=True, owner=("MEMBER", m)) for m in members]))
    assert [r.status.code for r in response.results] == [0] * (MEMBERS + 1)
    funding = {m: rng.randint(1_000, 100_000) for m in members}
    response = stub.call("CreateTransfers", pb.CreateTransfersRequest(
        request_id="setup-funding",
        transfers=[transfer(f"fund-{m}", "cash", m, funding[m]) for m in members]))
    assert [r.status.code for r in response.results] == [0] * MEMBERS
    return members, funding


def _request(rng: random.Random, members: list[str], average: int
             ) -> tuple[pb.CreateTransfersRequest, list[tuple[str, str, str, int]]]:
    lines = []
    transfers = []
    count = rng.choice([1, 1, 1, 2, 3])
    for i in range(count):
        debited, credited = rng.sample(members, 2)
        amount = (rng.randint(1, 500) if rng.random() < 0.3
                  else rng.randint(1, 3 * average))  # often more than the balance
        tid = f"t-{uuid.uuid4().hex}"
        t = transfer(tid, debited, credited, amount)
        t.linked = i < count - 1 and rng.random() < 0.3
        transfers.append(t)
        lines.append((tid, debited, credited, amount))
    return pb.CreateTransfersRequest(request_id=str(uuid.uuid4()), transfers=transfers), lines


def _check_trial_balance(trial: pb.TrialBalance, funded: int) -> None:
    for total in trial.totals:
        assert pence(total.debits_posted) == pence(total.credits_posted), total
    net = {row.type: pence(row.debits_posted) - pence(row.credits_posted) for row in trial.rows}
    # Cash (asset, debit-normal) holds what the members (liabilities, credit-normal) hold.
    assert net == {pb.ACCOUNT_TYPE_ASSET: funded, pb.ACCOUNT_TYPE_LIABILITY: -funded}, net


# Codes a client may see from a server that is being killed: the outcome is then unknown.
LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def run_load(stubs: list[Stub], members: list[str], funded: int, threads: int,
             seed: int, seconds: float = LOAD_SECONDS, servers_may_die: bool = False
             ) -> LoadReport:
    """`threads` writers (spread over `stubs`) and one trial-balance reader, for `seconds`.

    With `servers_may_die`, a call that fails with UNAVAILABLE or CANCELLED counts as an
    unknown outcome and that server is avoided from then on; any other failure fails the test.
    """
    report = LoadReport()
    deadline = time.monotonic() + seconds
    average = funded // len(members)
    dead: set[int] = set()

    def alive(preferred: int) -> tuple[int, int]:
        live = [i for i in range(len(stubs)) if i not in dead] or [preferred]
        mine = preferred if preferred in live else live[0]
        return mine, live[(live.index(mine) + 1) % len(live)]

    def lost(index: int, error: grpc.RpcError) -> None:
        if not servers_may_die or error.code() not in LOST:
            raise error
        dead.add(index)

    def writer(index: int) -> tuple[list[Sent], int, int]:
        rng = random.Random(seed * 1_000 + index)
        sent, replays, races = [], 0, 0
        while time.monotonic() < deadline:
            mine, other = alive(index % len(stubs))
            request, lines = _request(rng, members, average)
            response: pb.CreateTransfersResponse | None = None
            roll = rng.random()
            if roll < 0.1:
                # The same request raced on two servers (or twice on one): one effect, and
                # both callers get the same answer.
                futures = [(i, stubs[i].future("CreateTransfers", request)) for i in (mine, other)]
                answers = []
                for i, future in futures:
                    try:
                        answers.append(future.result())
                    except grpc.RpcError as error:
                        lost(i, error)
                assert all(a == answers[0] for a in answers), "racing copies disagree"
                response = answers[0] if answers else None
                races += 1
            else:
                try:
                    response = stubs[mine].call("CreateTransfers", request)
                except grpc.RpcError as error:
                    lost(mine, error)
                if response is not None and roll < 0.3:
                    target = rng.choice([mine, other])
                    try:
                        again = stubs[target].call("CreateTransfers", request)
                    except grpc.RpcError as error:
                        lost(target, error)
                    else:
                        assert again == response, "a replay must return the original response"
                        replays += 1
            assert response is None or len(response.results) == len(lines)
            sent.append(Sent(request.request_id, lines, response))
        return sent, replays, races

    def reader() -> int:
        count = 0
        while time.monotonic() < deadline:
            index, _ = alive(count % len(stubs))
            try:
                trial = stubs[index].call("GetTrialBalance", pb.GetTrialBalanceRequest())
            except grpc.RpcError as error:
                lost(index, error)
            else:
                _check_trial_balance(trial, funded)
                count += 1
            time.sleep(0.005)  # leave the CPU mostly to the writers
        return count

    with ThreadPoolExecutor(max_workers=threads + 1, thread_name_prefix="load") as pool:
        reading = pool.submit(reader)
        writing = [pool.submit(writer, i) for i in range(threads)]
        for future in writing:
            sent, replays, races = future.result(timeout=seconds + 60)
            report.sent += sent
            report.replays += replays
            report.races += races
        report.trial_balances = reading.result(timeout=seconds + 60)
    return report


def check_invariants(engine: Engine, members: list[str], funding: dict[str, int],
                     report: LoadReport) -> None:
    funded = sum(funding.values())
    ok = [(line, r) for line, r in report.results() if r.status.code == 0]
    refused = [(line, r) for line, r in report.results() if r.status.code != 0]
    reasons = {item_reason(r.status) for _, r in refused}
    print(f"load: {len(report.sent)} requests ({len(report.unknown)} unknown), {len(ok)} "
          f"transfers applied, {len(refused)} refused {sorted(reasons)}, {report.replays} "
          f"replays, {report.races} races, {report.trial_balances} trial balances")
    # The load was meaningful: money moved, and overdrafts were attempted and refused.
    assert len(ok) >= 10, f"only {len(ok)} transfers applied"
    assert "EXCEEDS_CREDITS" in reasons
    assert reasons <= {"EXCEEDS_CREDITS", "LINKED_TRANSFER_FAILED"}, reasons
    assert all(r.status.code == FAILED_PRECONDITION for _, r in refused
               if item_reason(r.status) == "EXCEEDS_CREDITS")
    assert all(r.position == 0 for _, r in refused)
    assert report.trial_balances > 0
    lines = {line[0]: line for s in report.sent for line in s.lines}
    assert len(lines) == sum(len(s.lines) for s in report.sent)

    with engine.connect() as conn:
        # Entries: positions dense 1..n and the head agrees.
        head = conn.execute(text("SELECT next_seq, audit_size FROM ledger_head")).one()
        entries = dict(conn.execute(text("SELECT transfer_id, seq FROM entries")).all())
        assert sorted(entries.values()) == list(range(1, len(entries) + 1))
        assert head.next_seq - 1 == len(entries)
        assert sum(1 for t in entries if t.startswith("fund-")) == len(members)
        recorded = {t: seq for t, seq in entries.items() if not t.startswith("fund-")}

        # Every acknowledged transfer is recorded at the position its client was told; the
        # only other recorded transfers belong to requests whose outcome the client never saw,
        # and such a request is all or nothing: recorded with its request row, or not at all.
        applied = {line[0]: r.position for line, r in ok}
        assert {t: recorded.get(t) for t in applied} == applied
        assert not {line[0] for line, _ in refused} & recorded.keys()
        stored = {r for (r,) in conn.execute(text("SELECT request_id FROM requests"))}
        for s in report.unknown:
            if s.request_id not in stored:
                assert not {line[0] for line in s.lines} & recorded.keys(), s.request_id
        assert set(recorded) - set(applied) <= {
            line[0] for s in report.unknown for line in s.lines}

        # Balances: non-negative, conserved, and exactly what the recorded transfers imply.
        expected = dict(funding)
        for tid in recorded:
            _, debited, credited, amount = lines[tid]
            expected[debited] -= amount
            expected[credited] += amount
        rows = conn.execute(text(
            "SELECT account_id, debits_posted, credits_posted, debits_pending, credits_pending "
            "FROM accounts ORDER BY account_id")).all()
        balances = {r.account_id: r.credits_posted - r.debits_posted for r in rows}
        cash = next(r for r in rows if r.account_id == "cash")
        assert all(r.debits_pending == 0 and r.credits_pending == 0 for r in rows)
        assert all(balances[m] >= 0 for m in members), balances
        assert sum(balances[m] for m in members) == funded
        assert cash.debits_posted - cash.credits_posted == funded
        assert {m: balances[m] for m in members} == expected

        # One request row and one audit leaf per distinct request, indices dense from 0.
        audit = [i for (i,) in conn.execute(text("SELECT idx FROM audit_log ORDER BY idx"))]
        known = {s.request_id for s in report.sent if s.response is not None}
        assert len({s.request_id for s in report.sent}) == len(report.sent)
        assert known <= stored
        distinct = len(known) + SETUP_REQUESTS + sum(
            1 for s in report.unknown if s.request_id in stored)
        assert audit == list(range(len(audit)))
        assert len(audit) == len(stored) == distinct == head.audit_size
        # Time flows forwards: recorded times are strictly increasing in position order.
        times = [t for (t,) in conn.execute(text("SELECT recorded_ns FROM entries ORDER BY seq"))]
        assert all(a < b for a, b in itertools.pairwise(times))

    checked = check_ledger(SqlUnitOfWork(engine))
    assert checked.ok, checked.problems
    assert checked.accounts == len(members) + 1


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def pg_url(pg_databases: Any) -> str:
    url: str = pg_databases.create()
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def check_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(channel: grpc.Channel, process: subprocess.Popen[bytes] | None,
                 log: Path | None, timeout_s: float = 30.0) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            output = log.read_text() if log else ""
            pytest.fail(f"the server exited with {process.returncode}:\n{output}")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server was not SERVING within {timeout_s} s")
        time.sleep(0.1)


# -- (a) two in-process servers over one PostgreSQL database -------------------------------------
@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_in_process_servers_on_postgres_keep_the_ledger_consistent(pg_url, check_engine):
    engines = [make_engine(pg_url) for _ in range(2)]
    servers: list[RunningServer] = []
    channels: list[grpc.Channel] = []
    try:
        for engine in engines:
            servers.append(start_server(SqlUnitOfWork(engine), port=0, clock=SystemClock(),
                                        background=False))
        channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in servers]
        stubs = [Stub(ch) for ch in channels]
        members, funding = open_and_fund(stubs[0], seed=1)
        report = run_load(stubs, members, sum(funding.values()), threads=16, seed=1)
    finally:
        for ch in channels:
            ch.close()
        for s in servers:
            s.stop(grace_s=2)
        for engine in engines:
            engine.dispose()
    check_invariants(check_engine, members, funding, report)
    assert report.replays > 0 and report.races > 0


# -- (b) two server processes over one PostgreSQL database ----------------------------------------
# Reconnect to a restarted server within a fraction of a second, not gRPC's default backoff of
# seconds (which would only slow the tests down, not change what they show).
RECONNECT_FAST = [("grpc.initial_reconnect_backoff_ms", 100),
                  ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


class ServerProcesses:
    """`bank serve` processes on free ports; whatever happens, none outlives the test.

    `serve_args` are added to every `bank serve` command line (e.g. `--keys-dir`). A server
    that died (or was killed) can be started again on its port with `restart`; its log goes on.
    """

    def __init__(self, url: str, count: int, log_dir: Path,
                 serve_args: tuple[str, ...] = ()) -> None:
        self.url = url
        self.serve_args = serve_args
        self.logs = [log_dir / f"server-{i}.log" for i in range(count)]
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.channels: list[grpc.Channel] = []

    def _spawn(self, index: int, mode: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("BANK_DATABASE_URL", None)
        with self.logs[index].open(mode) as out:
            return subprocess.Popen(
                [sys.executable, "-m", "bank.cli", "--database-url", self.url,
                 "--plaintext-dev", "serve", "--port", str(self.ports[index]),
                 "--metrics-port", "0", *self.serve_args],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    def start(self) -> list[Stub]:
        self.ports = [free_port() for _ in self.logs]
        self.processes = [self._spawn(i, "wb") for i in range(len(self.logs))]
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=RECONNECT_FAST)
                         for port in self.ports]
        for ch, process, log in zip(self.channels, self.processes, self.logs, strict=True):
            wait_serving(ch, process, log)
        return [Stub(ch) for ch in self.channels]

    def restart(self, index: int) -> None:
        """Start server `index` again on its port (it must have exited); wait until it serves."""
        assert self.processes[index].poll() is not None, "the server is still running"
        self.processes[index] = self._spawn(index, "ab")
        wait_serving(self.channels[index], self.processes[index], self.logs[index])

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def terminate(self) -> list[int]:
        """SIGTERM every live process; their exit codes (-9 for one that was killed)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=20) for process in self.processes]

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_two_server_processes_on_postgres_keep_the_ledger_consistent(pg_url, check_engine,
                                                                     tmp_path):
    servers = ServerProcesses(pg_url, 2, tmp_path)
    try:
        stubs = servers.start()
        members, funding = open_and_fund(stubs[1], seed=2)
        report = run_load(stubs, members, sum(funding.values()), threads=16, seed=2)
        codes = servers.terminate()
        output = servers.output()
        assert codes == [0, 0], output
        assert output.count("stopped.") == 2, output
        assert "Traceback" not in output, output
    finally:
        servers.close()
    check_invariants(check_engine, members, funding, report)
    assert report.replays > 0 and report.races > 0


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_server_process_killed_under_load_leaves_the_ledger_consistent(pg_url, check_engine,
                                                                         tmp_path):
    """SIGKILL one of two servers mid-load: its in-flight transactions roll back whole, the
    survivor carries on, and a client that never got an answer finds its request either fully
    recorded or not at all."""
    servers = ServerProcesses(pg_url, 2, tmp_path)
    try:
        stubs = servers.start()
        members, funding = open_and_fund(stubs[1], seed=4)
        victim = servers.processes[0]
        killer = threading.Timer(LOAD_SECONDS / 2, victim.kill)
        killer.start()
        try:
            report = run_load(stubs, members, sum(funding.values()), threads=16, seed=4,
                              servers_may_die=True)
        finally:
            killer.cancel()
        codes = servers.terminate()
        output = servers.output()
        assert codes == [-signal.SIGKILL, 0], output
        assert "Traceback" not in output, output
    finally:
        servers.close()
    check_invariants(check_engine, members, funding, report)
    assert report.unknown or report.sent, "the load never ran"


# -- (c) one in-process server over SQLite --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_eight_writers_on_sqlite_keep_the_ledger_consistent(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    upgrade(engine)
    server = start_server(SqlUnitOfWork(engine), port=0, clock=SystemClock(), background=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = Stub(channel)
        members, funding = open_and_fund(stub, seed=3)
        report = run_load([stub], members, sum(funding.values()), threads=8, seed=3)
    finally:
        channel.close()
        server.stop(grace_s=2)
    check = make_engine(url)
    try:
        check_invariants(check, members, funding, report)
    finally:
        check.dispose()
        engine.dispose()
    assert report.replays > 0 and report.races > 0
