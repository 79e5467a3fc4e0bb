"""Reliability under load and under faults (issue 7, part 4): real `bank serve` processes on
loopback, on SQLite and PostgreSQL wherever the case applies.

1. The bank invariant under load: writers move money between no-overdraft member accounts
   (CreateTransfers, often more than the balance, some linked, some replayed) while readers
   check that every read sees the money conserved: the trial balance, one ListAccounts page (a
   single query, so one snapshot), and every account's balance as of the record time of an
   acknowledged transfer (record times are handed out under the ledger head lock, so that
   instant is a consistent cut). Afterwards each account's balance equals the sum of its
   statement lines and of its postings in the change feed.
2. The same with three server processes on one PostgreSQL database.
3. `kill -9` of the server mid-load, then a restart: clients retry every call whose outcome they
   did not see with the same request id; every acknowledged transfer is recorded exactly once
   at the position its client was told, none half-applied, history recorded before the kill
   unchanged (positions and record times), replays after the restart return the original
   results, and `bank audit verify` passes, including a checkpoint signed before the kill.
4. PostgreSQL restarted (immediate shutdown, one second down) under load, on a private
   PostgreSQL 15 instance (never the shared one): the same server process recovers by itself
   and no acknowledged write is lost or doubled.
5. Short deadlines: clients whose calls time out retry with the same request id (the original
   may still be running on the server); a duplicate storm: a tenth of the requests replay
   earlier ids, and some requests (new and replayed) are sent at the same instant from three
   threads. Effects are exactly once and every answer to one request id is the original.

Two bugs found on the way have tests of their own: a PostgreSQL outage must be answered with
UNAVAILABLE (not INTERNAL), and servers started at once on an empty database must not race to
migrate it (an advisory lock serialises migrations).

The final ledger checks (balances equal what the recorded transfers imply, one audit leaf and
one request row per distinct request, dense positions, the ledger self-check) are
`check_invariants` from test_concurrency_postgres, which also spawns the server processes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, create_engine, text

from bank.adapters.migrate import upgrade
from bank.adapters.sql import make_engine
from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as audit_pb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as audit_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.helpers import transfer
from tests.integration.test_concurrency_postgres import (
    PRINCIPAL,
    REPO,
    LoadReport,
    Sent,
    ServerProcesses,
    Stub,
    _check_trial_balance,
    _request,
    check_invariants,
    free_port,
    open_and_fund,
    pence,
)

AUDITOR = [("x-bank-principal", "audrey;auditor")]
LONG_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.05
ANSWER_WITHIN_S = 40.0  # a request must get a definite answer within this, retries included
BURST = 3  # copies of one request sent at the same instant
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
INTERNAL = grpc.StatusCode.INTERNAL
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# -- load: writers that retry until they know, replays, bursts ------------------------------------
@dataclass
class Load:
    """Writer threads posting random transfer requests through `channels` for `seconds`.

    Every request ends with a definite answer: a call that fails with a code in `retry_on` (the
    outcome is unknown to the client) is sent again with the same request id, round-robin over
    the servers, until it is answered. With `short_deadlines`, the first two attempts of each
    request get a deadline of 1-40 ms (most time out, some after the server has committed).
    Every `replay_every`-th request replays an earlier request (half of those from `BURST`
    threads at once) and must get the original answer; every `burst_every`-th new request is
    sent from `BURST` threads at the same instant, which must all get the same answer.
    """

    channels: list[grpc.Channel]
    members: list[str]
    funded: int
    seed: int
    retry_on: frozenset[grpc.StatusCode] = frozenset()
    short_deadlines: bool = False
    replay_every: int = 0
    burst_every: int = 0
    report: LoadReport = field(default_factory=LoadReport)
    acked: list[str] = field(default_factory=list)  # applied transfer ids, in answer order
    answered_at: list[float] = field(default_factory=list)  # monotonic time of each answer
    originals: dict[str, tuple[pb.CreateTransfersRequest, pb.CreateTransfersResponse]] = field(
        default_factory=dict)
    # request id -> time_ns when its client first saw no answer (a timeout or a lost call)
    unanswered: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[grpc.StatusCode, float]] = field(default_factory=list)  # retried ones
    retries: int = 0
    timeouts: int = 0
    bursts: int = 0

    def __post_init__(self) -> None:
        self.stubs = [pb_grpc.LedgerServiceStub(ch) for ch in self.channels]
        self.lock = threading.Lock()

    def until_answered(self, request: pb.CreateTransfersRequest, first: int,
                       rng: random.Random) -> pb.CreateTransfersResponse:
        give_up = time.monotonic() + ANSWER_WITHIN_S
        for attempt in itertools.count():
            short = self.short_deadlines and attempt < 2
            timeout = rng.uniform(0.001, 0.04) if short else LONG_TIMEOUT_S
            stub = self.stubs[(first + attempt) % len(self.stubs)]
            try:
                response: pb.CreateTransfersResponse = stub.CreateTransfers(
                    request, metadata=PRINCIPAL, timeout=timeout)
                return response
            except grpc.RpcError as error:
                if short and error.code() is DEADLINE:
                    with self.lock:
                        self.timeouts += 1
                elif error.code() in self.retry_on:
                    with self.lock:
                        self.retries += 1
                        self.errors.append((error.code(), time.monotonic()))
                else:
                    raise
                with self.lock:
                    self.unanswered.setdefault(request.request_id, time.time_ns())
            assert time.monotonic() < give_up, f"no answer to {request.request_id}"
            time.sleep(RETRY_PAUSE_S if not self.short_deadlines else 0)
        raise AssertionError("unreachable")

    def at_once(self, request: pb.CreateTransfersRequest, first: int
                ) -> list[pb.CreateTransfersResponse]:
        """The same request from `BURST` threads (over the servers) released together."""
        barrier = threading.Barrier(BURST)
        answers: list[Any] = [None] * BURST

        def send(k: int) -> None:
            barrier.wait(timeout=10)
            answers[k] = self.until_answered(request, first + k, random.Random(k))

        with ThreadPoolExecutor(max_workers=BURST, thread_name_prefix="burst") as pool:
            for future in [pool.submit(send, k) for k in range(BURST)]:
                future.result(timeout=ANSWER_WITHIN_S + 10)
        with self.lock:
            self.bursts += 1
        return answers

    def writer(self, index: int, stop_at: float) -> list[Sent]:
        rng = random.Random(self.seed * 1_000 + index)
        average = self.funded // len(self.members)
        sent: list[Sent] = []
        for n in itertools.count(1):
            if time.monotonic() >= stop_at:
                return sent
            if self.replay_every and n % self.replay_every == 0 and self.originals:
                with self.lock:
                    request, original = self.originals[rng.choice(sorted(self.originals))]
                answers = (self.at_once(request, index) if rng.random() < 0.5
                           else [self.until_answered(request, index, rng)])
                assert all(a == original for a in answers), "a replay changed the answer"
                with self.lock:
                    self.report.replays += len(answers)
                continue
            request, lines = _request(rng, self.members, average)
            if self.burst_every and n % self.burst_every == 0:
                answers = self.at_once(request, index)
                assert all(a == answers[0] for a in answers), "copies got different answers"
                response = answers[0]
                with self.lock:
                    self.report.races += 1
            else:
                response = self.until_answered(request, index, rng)
            assert len(response.results) == len(lines)
            sent.append(Sent(request.request_id, lines, response))
            with self.lock:
                self.originals[request.request_id] = (request, response)
                self.acked += [line[0] for line, r in zip(lines, response.results, strict=True)
                               if r.status.code == 0]
                self.answered_at.append(time.monotonic())

    def run(self, threads: int, seconds: float) -> LoadReport:
        stop_at = time.monotonic() + seconds
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="writer") as pool:
            for future in [pool.submit(self.writer, i, stop_at) for i in range(threads)]:
                self.report.sent += future.result(timeout=seconds + ANSWER_WITHIN_S + 30)
        return self.report


# -- readers that check every read while the load runs --------------------------------------------
class Readers:
    """Reader threads checking, on every read, that money is conserved (see the module doc).

    Calls failing with a code in `tolerate` (a server or database being down) are counted and
    skipped; any other failure, or a read that breaks the invariant, fails the test on exit.
    """

    def __init__(self, channels: list[grpc.Channel], members: list[str], funded: int,
                 load: Load, tolerate: frozenset[grpc.StatusCode] = frozenset()) -> None:
        self.stubs = [pb_grpc.LedgerServiceStub(ch) for ch in channels]
        self.members = members
        self.funded = funded
        self.load = load
        self.tolerate = tolerate
        self.stop = threading.Event()
        self.counts = {"trial_balance": 0, "accounts": 0, "as_of": 0, "tolerated": 0}
        self.errors: list[tuple[grpc.StatusCode, float]] = []  # the tolerated ones
        self.failures: list[BaseException] = []
        self.threads = [threading.Thread(target=self._loop, args=(check,), daemon=True)
                        for check in (self.trial_balance, self.accounts, self.as_of)]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=LONG_TIMEOUT_S + 5)
        if self.failures and exc[0] is None:
            raise self.failures[0]

    def _loop(self, check: Any) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            try:
                if check(self.stubs[n % len(self.stubs)]):
                    self.counts[check.__name__] += 1
            except grpc.RpcError as error:
                if error.code() not in self.tolerate:
                    self.failures.append(error)
                    return
                self.counts["tolerated"] += 1
                self.errors.append((error.code(), time.monotonic()))
            except BaseException as error:  # reported when the readers stop
                self.failures.append(error)
                return
            self.stop.wait(0.01)

    def trial_balance(self, stub: Any) -> bool:
        _check_trial_balance(stub.GetTrialBalance(pb.GetTrialBalanceRequest(),
                                                  metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S),
                             self.funded)
        return True

    def accounts(self, stub: Any) -> bool:
        page = stub.ListAccounts(pb.ListAccountsRequest(page_size=1000), metadata=PRINCIPAL,
                                 timeout=LONG_TIMEOUT_S)
        assert not page.next_page_token
        held = {a.account_id: pence(a.credits_posted) - pence(a.debits_posted)
                for a in page.accounts}
        cash = held.pop("cash")
        assert sorted(held) == self.members
        assert min(held.values()) >= 0, held
        assert sum(held.values()) == self.funded == -cash, (held, cash)
        return True

    def as_of(self, stub: Any) -> bool:
        if not self.load.acked:
            return False
        transfer_id = self.load.acked[-1]
        cut = stub.GetTransfer(pb.GetTransferRequest(name=f"transfers/{transfer_id}"),
                               metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S).record_time
        held = {}
        for account_id in ["cash", *self.members]:
            balance = stub.GetAccountBalance(pb.GetAccountBalanceRequest(
                account=f"accounts/{account_id}", as_of_time=cut), metadata=PRINCIPAL,
                timeout=LONG_TIMEOUT_S)
            held[account_id] = pence(balance.credits_posted) - pence(balance.debits_posted)
        cash = held.pop("cash")
        assert min(held.values()) >= 0, held
        assert sum(held.values()) == self.funded == -cash, (transfer_id, held, cash)
        return True


# -- checks through the API -----------------------------------------------------------------------
def read_feed(channel: grpc.Channel) -> list[pb.Transfer]:
    """Every transfer in the change feed, in position order."""
    stub = pb_grpc.LedgerServiceStub(channel)
    transfers: list[pb.Transfer] = []
    while True:
        call = stub.WatchEntries(pb.WatchEntriesRequest(
            after_position=transfers[-1].position if transfers else 0, page_size=1000),
            metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S)
        try:
            message = next(call)
        finally:
            call.cancel()
        transfers += message.transfers
        if len(message.transfers) < 1000:
            return transfers


def history(feed: list[pb.Transfer]) -> list[tuple[int, str, int, int]]:
    return [(t.position, t.name, t.record_time.seconds, t.record_time.nanos) for t in feed]


def check_through_api(channel: grpc.Channel, members: list[str], funding: dict[str, int],
                      load: Load) -> list[pb.Transfer]:
    """What a client sees: the change feed holds every applied transfer exactly once, at the
    position its client was told, and nothing else; each account's balance equals the sum of
    its statement lines and of its postings in the feed; the last statement line's running
    balance is the balance."""
    stub = pb_grpc.LedgerServiceStub(channel)
    feed = read_feed(channel)
    names = [t.name for t in feed]
    assert [t.position for t in feed] == list(range(1, len(feed) + 1))
    assert len(set(names)) == len(names), "a transfer was recorded twice"
    assert set(names) == {f"transfers/fund-{m}" for m in members} | {
        f"transfers/{t}" for t in load.acked}, "the feed differs from the acknowledged transfers"
    told = {line[0]: r.position for line, r in load.report.results() if r.status.code == 0}
    assert {t.name.removeprefix("transfers/"): t.position for t in feed
            if not t.name.startswith("transfers/fund-")} == told

    funded = sum(funding.values())
    net: dict[str, int] = {}  # credits minus debits of the acknowledged transfers
    for (_, debited, credited, amount), r in load.report.results():
        if r.status.code == 0:
            net[credited] = net.get(credited, 0) + amount
            net[debited] = net.get(debited, 0) - amount
    from_feed = dict.fromkeys(["cash", *members], 0)
    for t in feed:
        assert t.kind == pb.TRANSFER_KIND_POSTED, t.name
        for p in t.postings:
            sign = 1 if p.side == pb.SIDE_CREDIT else -1
            from_feed[p.account.removeprefix("accounts/")] += sign * pence(p.amount)
    for account_id in ["cash", *members]:
        lines: list[pb.AccountEntry] = []
        token = ""
        while True:
            page = stub.ListAccountEntries(pb.ListAccountEntriesRequest(
                account=f"accounts/{account_id}", page_size=1000, page_token=token),
                metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S)
            lines += page.entries
            token = page.next_page_token
            if not token:
                break
        normal = -1 if account_id == "cash" else 1  # cash is an asset: debit-normal
        summed = sum((1 if e.side == pb.SIDE_CREDIT else -1) * normal * pence(e.amount)
                     for e in lines)
        balance = stub.GetAccountBalance(pb.GetAccountBalanceRequest(
            account=f"accounts/{account_id}"), metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S)
        assert pence(balance.balance) == summed == normal * from_feed[account_id], account_id
        assert pence(lines[-1].balance_after) == summed, account_id
        assert summed == funding.get(account_id, funded) + normal * net.get(account_id, 0), \
            account_id
    return feed


def replays_are_original(channel: grpc.Channel, load: Load) -> int:
    """Every request sent again with its id gets exactly its original answer."""
    stub = pb_grpc.LedgerServiceStub(channel)

    def again(request: pb.CreateTransfersRequest) -> pb.CreateTransfersResponse:
        answer: pb.CreateTransfersResponse = stub.CreateTransfers(
            request, metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S)
        return answer

    requests = list(load.originals.values())
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="replay") as pool:
        answers = list(pool.map(again, [request for request, _ in requests]))
    assert [a == original for a, (_, original) in zip(answers, requests, strict=True)] == [
        True] * len(requests), "a replay did not return the original result"
    return len(answers)


def audit_verify(url: str, keys: Path) -> str:
    """`bank audit verify` on the database; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "bank.cli", "--database-url", url, "audit", "verify",
         "--keys-dir", str(keys)], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "BANK_DATABASE_URL"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit log verified" in done.stdout, done.stdout
    return done.stdout


def checkpoint(channel: grpc.Channel) -> audit_pb.SignedCheckpoint:
    signed: audit_pb.SignedCheckpoint = audit_grpc.AuditServiceStub(channel).GetCheckpoint(
        audit_pb.GetCheckpointRequest(), metadata=AUDITOR, timeout=LONG_TIMEOUT_S)
    return signed


def committed_unanswered(load: Load, stored: dict[str, int]) -> int:
    """Requests whose recording began before their client first saw no answer: a call the
    client had given up on (timed out, or cut off) committed anyway, and the retry with the
    same request id got the stored result rather than applying it again."""
    return sum(1 for rid, at in load.unanswered.items() if stored.get(rid, at) < at)


def stored_requests(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT request_id, recorded_ns FROM requests")).all())


class Laps:
    """Prints how long each phase of a test took (shown with -s or on failure)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        print(f"{phase}: {now - self.last:.1f} s")
        self.last = now


@pytest.fixture
def check_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def settle(servers: ServerProcesses) -> str:
    """Stop the servers with SIGTERM; they must stop cleanly. Their output."""
    codes = servers.terminate()
    output = servers.output()
    assert codes == [0] * len(codes), output
    return output


# -- 1, 2: the bank invariant under load ----------------------------------------------------------
def invariant_under_load(url: str, engine: Engine, tmp_path: Path, servers_count: int,
                         seed: int) -> None:
    servers = ServerProcesses(url, servers_count, tmp_path)
    lap = Laps()
    try:
        stubs = servers.start()
        lap("servers up")
        members, funding = open_and_fund(stubs[0], seed=seed)
        funded = sum(funding.values())
        load = Load(servers.channels, members, funded, seed=seed, replay_every=10,
                    burst_every=9)
        with Readers(servers.channels, members, funded, load) as readers:
            report = load.run(threads=6, seconds=4.0)
        lap("load")
        report.trial_balances = readers.counts["trial_balance"]
        print(f"readers: {readers.counts}")
        assert min(readers.counts[k] for k in ("trial_balance", "accounts", "as_of")) > 0
        check_through_api(servers.channels[-1], members, funding, load)
        lap("checked through the API")
        output = settle(servers)
        lap("servers stopped")
        assert "Traceback" not in output, output
    finally:
        servers.close()
    check_invariants(engine, members, funding, report)
    lap("checked the database")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bank_invariant_holds_for_every_read_under_load(database_url, check_engine, tmp_path):
    invariant_under_load(database_url, check_engine, tmp_path, servers_count=1, seed=11)


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bank_invariant_holds_with_three_server_processes_on_one_postgres(pg_databases,
                                                                          tmp_path):
    url = pg_databases.create()
    engine = make_engine(url)
    # Migrated first, as in deployment (docs/deployment.md): `bank serve` migrates without a
    # lock, so servers started at once on an empty database can race to create the schema and
    # the losers exit with a UniqueViolation.
    upgrade(engine)
    try:
        invariant_under_load(url, engine, tmp_path, servers_count=3, seed=12)
    finally:
        engine.dispose()


@pytest.mark.postgresql
@pytest.mark.timeout(60)
def test_servers_started_at_once_on_an_empty_postgres_database_all_come_up(pg_databases,
                                                                           tmp_path):
    """Three servers started together on a fresh database, up to five times: all must serve.
    (The race is lost in most rounds, so the loop makes its outcome all but certain.)"""
    for round_ in range(5):
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        servers = ServerProcesses(pg_databases.create(), 3, folder)
        try:
            with contextlib.suppress(pytest.fail.Exception):  # a server exited: see below
                servers.start()
            codes = [process.poll() for process in servers.processes]
        finally:
            servers.close()
        assert codes == [None] * 3, f"round {round_}: exit codes {codes}\n{servers.output()}"


# -- 3: kill -9 mid-load, restart ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_kill_9_mid_load_then_restart_loses_and_doubles_nothing(database_url, check_engine,
                                                                tmp_path):
    keys = tmp_path / "keys"
    servers = ServerProcesses(database_url, 1, tmp_path, serve_args=("--keys-dir", str(keys)))
    try:
        stubs = servers.start()
        members, funding = open_and_fund(stubs[0], seed=13)
        funded = sum(funding.values())
        load = Load(servers.channels, members, funded, seed=13,
                    retry_on=frozenset({UNAVAILABLE, grpc.StatusCode.CANCELLED}),
                    replay_every=10)
        before: dict[str, Any] = {}

        def crash() -> None:
            before["checkpoint"] = checkpoint(servers.channels[0])
            before["history"] = history(read_feed(servers.channels[0]))
            servers.processes[0].send_signal(signal.SIGKILL)
            before["code"] = servers.processes[0].wait(timeout=10)
            before["answers"] = len(load.answered_at)
            time.sleep(0.3)
            servers.restart(0)
            before["restarted"] = time.monotonic()

        with Readers(servers.channels, members, funded, load,
                     tolerate=frozenset({UNAVAILABLE, grpc.StatusCode.CANCELLED})) as readers:
            fault = threading.Timer(2.0, crash)
            fault.start()
            try:
                report = load.run(threads=6, seconds=6.0)
            finally:
                fault.join(timeout=40)
        report.trial_balances = readers.counts["trial_balance"]
        print(f"readers: {readers.counts}; {load.retries} retries; before the kill: "
              f"{before.get('answers')} answers, {len(before.get('history', []))} transfers")
        assert before["code"] == -signal.SIGKILL
        assert before["answers"] > 0 and before["history"]
        assert load.retries > 0, "no call saw the server die"
        assert sum(1 for t in load.answered_at if t > before["restarted"]) > 0, \
            "nothing was answered after the restart"
        # History recorded before the kill is there after it, unchanged.
        feed = check_through_api(servers.channels[0], members, funding, load)
        assert history(feed)[:len(before["history"])] == before["history"]
        assert replays_are_original(servers.channels[0], load) == len(report.sent)
        after = checkpoint(servers.channels[0])
        assert after.tree_size > before["checkpoint"].tree_size
        settle(servers)
    finally:
        servers.close()
    check_invariants(check_engine, members, funding, report)
    print(f"{committed_unanswered(load, stored_requests(check_engine))} requests committed "
          "whose client saw no answer (the retry returned the stored result)")
    verified = audit_verify(database_url, keys)
    counted = re.search(r"(\d+) audit leaves, (\d+) checkpoints", verified)
    assert counted is not None, verified
    assert int(counted[1]) == len(stored_requests(check_engine)) == len(report.sent) + 2
    assert int(counted[2]) == 2, verified  # signed before the kill and after the restart


# -- 4: PostgreSQL restarted under load -----------------------------------------------------------
class PrivatePostgres:
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1 and a free port, trust auth, owned by the
    `postgres` OS user (we may run as root). fsync=off: it only has to survive its own restarts
    (an immediate shutdown is a crash of PostgreSQL, not of the machine), not a power cut."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bank-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        try:
            if self.as_postgres:
                shutil.chown(self.root, "postgres")
            self._run(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")
            self.start()
        except BaseException:
            self.destroy()
            raise

    def _run(self, *args: Any) -> None:
        done = subprocess.run([*self.as_postgres, *map(str, args)], capture_output=True,
                              text=True, timeout=60, cwd=self.root)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c full_page_writes=off -c max_connections=100", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL 15 initdb at {PG_BIN}: cannot start a private instance")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run initdb as `postgres`")
    instance = PrivatePostgres()
    try:
        yield instance
    finally:
        instance.destroy()


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_postgres_restarted_under_load_the_server_recovers_by_itself(private_postgres,
                                                                     tmp_path):
    """Clients retry any call that failed while PostgreSQL was down (with the same request id,
    which is always safe). INTERNAL is tolerated only inside the outage: see the next test."""
    url = private_postgres.create_database("bank")
    servers = ServerProcesses(url, 1, tmp_path)
    engine = make_engine(url)
    outage = frozenset({UNAVAILABLE, INTERNAL})
    lap = Laps()
    try:
        stubs = servers.start()
        pid = servers.processes[0].pid
        members, funding = open_and_fund(stubs[0], seed=14)
        funded = sum(funding.values())
        load = Load(servers.channels, members, funded, seed=14, retry_on=outage,
                    replay_every=10)
        times: dict[str, Any] = {}

        def restart_postgres() -> None:
            times["answers"] = len(load.answered_at)
            times["down"] = time.monotonic()
            private_postgres.stop("immediate")
            time.sleep(1.0)
            private_postgres.start()
            times["back"] = time.monotonic()

        lap("server up")
        with Readers(servers.channels, members, funded, load, tolerate=outage) as readers:
            fault = threading.Timer(2.0, restart_postgres)
            fault.start()
            try:
                report = load.run(threads=6, seconds=6.0)
            finally:
                fault.join(timeout=40)
        lap("load")
        report.trial_balances = readers.counts["trial_balance"]
        after = sum(1 for t in load.answered_at if t > times["back"])
        errors = load.errors + readers.errors
        print(f"readers: {readers.counts}; {load.retries} retries; {times['answers']} answers "
              f"before the restart, {after} after it; failed calls by code: "
              f"{ {c.name: sum(1 for e, _ in errors if e is c) for c in outage} }")
        assert times["answers"] > 0 and load.retries > 0
        assert after >= 20, "the server did not recover after PostgreSQL came back"
        assert servers.processes[0].poll() is None and servers.processes[0].pid == pid
        late = [round(t - times["back"], 2) for code, t in errors if code is INTERNAL and not
                times["down"] <= t <= times["back"] + 1.0]
        assert not late, f"INTERNAL errors outside the outage, s after it ended: {late}"
        check_through_api(servers.channels[0], members, funding, load)
        assert replays_are_original(servers.channels[0], load) == len(report.sent)
        lap("checked through the API")
        settle(servers)
        check_invariants(engine, members, funding, report)
        stored = stored_requests(engine)
        print(f"{committed_unanswered(load, stored)} requests committed whose client saw no "
              "answer (the retry returned the stored result)")
    finally:
        servers.close()
        engine.dispose()


@pytest.mark.postgresql
@pytest.mark.timeout(60)
def test_a_postgres_outage_is_unavailable_not_internal(private_postgres, tmp_path):
    url = private_postgres.create_database("bank")
    servers = ServerProcesses(url, 1, tmp_path)
    try:
        servers.start()
        stub = pb_grpc.LedgerServiceStub(servers.channels[0])
        members, _ = open_and_fund(Stub(servers.channels[0]), seed=17)
        request = pb.CreateTransfersRequest(request_id="during-the-outage", transfers=[
            transfer("outage-1", members[0], members[1], 1)])
        private_postgres.stop("immediate")
        codes = []
        for call, message in [("GetTrialBalance", pb.GetTrialBalanceRequest()),
                              ("CreateTransfers", request)]:
            with pytest.raises(grpc.RpcError) as failed:
                getattr(stub, call)(message, metadata=PRINCIPAL, timeout=LONG_TIMEOUT_S)
            codes.append((call, failed.value.code()))
        private_postgres.start()
        # Back by itself: the retry with the same request id is applied once.
        response = until_ok(lambda: stub.CreateTransfers(request, metadata=PRINCIPAL,
                                                         timeout=LONG_TIMEOUT_S))
        assert [r.status.code for r in response.results] == [0]
        assert servers.processes[0].poll() is None
        settle(servers)
    finally:
        servers.close()
    assert codes == [("GetTrialBalance", UNAVAILABLE), ("CreateTransfers", UNAVAILABLE)]


def until_ok(call: Any, within_s: float = 20.0) -> Any:
    """`call()` until it succeeds (PostgreSQL has just been started again)."""
    give_up = time.monotonic() + within_s
    while True:
        try:
            return call()
        except grpc.RpcError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


# -- 5: short deadlines and retries; a duplicate storm ---------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_timed_out_clients_that_retry_never_post_twice(database_url, check_engine, tmp_path):
    servers = ServerProcesses(database_url, 1, tmp_path)
    try:
        stubs = servers.start()
        members, funding = open_and_fund(stubs[0], seed=15)
        load = Load(servers.channels, members, sum(funding.values()), seed=15,
                    short_deadlines=True)
        report = load.run(threads=6, seconds=4.0)
        report.trial_balances = 1  # no concurrent readers here: the writers are the point
        check_through_api(servers.channels[0], members, funding, load)
        assert replays_are_original(servers.channels[0], load) == len(report.sent)
        settle(servers)
    finally:
        servers.close()
    stored = stored_requests(check_engine)
    # A timed-out request recorded before its client saw the timeout: the server committed it
    # anyway, and the retry got the stored result.
    committed = committed_unanswered(load, stored)
    print(f"{len(report.sent)} requests, {load.timeouts} timeouts on {len(load.unanswered)} "
          f"requests, {committed} of them committed by a call whose client had timed out")
    assert len(load.unanswered) >= 20, "too few calls timed out for the test to mean anything"
    assert committed > 0, "no timed-out call committed: the dangerous case never happened"
    check_invariants(check_engine, members, funding, report)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_duplicate_storm_has_exactly_once_effects(database_url, check_engine, tmp_path):
    servers = ServerProcesses(database_url, 1, tmp_path)
    try:
        stubs = servers.start()
        members, funding = open_and_fund(stubs[0], seed=16)
        load = Load(servers.channels, members, sum(funding.values()), seed=16,
                    replay_every=10, burst_every=7)
        report = load.run(threads=6, seconds=4.0)
        report.trial_balances = 1  # the invariant under reads is test 1's
        distinct = len(report.sent)
        print(f"{distinct} distinct requests, {report.replays} replays, {report.races} "
              f"bursts of new requests, {load.bursts} bursts in all")
        assert report.replays >= distinct // 10 and report.races >= distinct // 10
        assert load.bursts > report.races, "no replay was sent from several threads at once"
        check_through_api(servers.channels[0], members, funding, load)
        settle(servers)
    finally:
        servers.close()
    check_invariants(check_engine, members, funding, report)
