"""Load generation: client processes (multiprocessing, spawn) each driving grpc.aio.

A worker runs one phase and returns what it saw: successes, failures by code, per-call latency,
and its own CPU time, so the report can show whether the client or the server was the limit.

Closed loop: `concurrency` tasks per process, each sending its next call when the previous one
answers, for `duration_s` or until `count` calls were sent (across this process).
Open loop: calls are scheduled at fixed intervals (`rate` per second per process, the processes
interleaved) whatever the server does; latency is measured from the *scheduled* send time, so a
stalled server is charged for the queue it causes (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PRINCIPAL = "bench;teller"
CREATE_TRANSFERS = "/peoplesbank.ledger.v1.LedgerService/CreateTransfers"
CALL_TIMEOUT_S = 10.0
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024),
                   ("grpc.max_send_message_length", 16 * 1024 * 1024)]
IN_FLIGHT_MAX = 2_000  # per process, open loop: past this the client drops (counted) calls

# Accounts the benchmarks create (see `account_protos`).
CASH = "bench-cash"
HOT = "bench-hot"
FUND_MINOR = 5_000  # £50 per member: far more than any run moves out of one account
MEMBERS_PER_CALL = 1_000


def member(i: int) -> str:
    return f"m{i:06d}"


def account_protos(pb: Any, members: int) -> list[Any]:
    """`members` member deposit accounts (no overdraft), the bank's cash account and one hot
    income account (no limits), as `CreateAccounts` takes them (RPC and in-process seeding)."""

    def account(account_id: str, kind: int, code: str, owner_kind: int, owner: str,
                no_overdraft: bool) -> Any:
        return pb.Account(account_id=account_id, currency_code="GBP", type=kind, code=code,
                          owner_kind=owner_kind, owner_id=owner,
                          debits_must_not_exceed_credits=no_overdraft)

    specs = [account(CASH, pb.ACCOUNT_TYPE_ASSET, "1000", pb.OWNER_KIND_BANK, "bank", False),
             account(HOT, pb.ACCOUNT_TYPE_INCOME, "4000", pb.OWNER_KIND_BANK, "bank", False)]
    specs += [account(member(i), pb.ACCOUNT_TYPE_LIABILITY, "2100", pb.OWNER_KIND_MEMBER,
                      f"member:{i}", True) for i in range(members)]
    return specs


def transfer(pb: Any, transfer_id: str, debit: str, credit: str, minor: int = 1) -> Any:
    """A posted GBP transfer of `minor` pence from `debit` to `credit`."""
    return pb.TransferInput(
        transfer_id=transfer_id, kind=pb.TRANSFER_KIND_POSTED,
        postings=[
            pb.Posting(account=f"accounts/{debit}", side=pb.SIDE_DEBIT,
                       amount={"currency_code": "GBP", "units": minor // 100,
                               "nanos": (minor % 100) * 10_000_000}),
            pb.Posting(account=f"accounts/{credit}", side=pb.SIDE_CREDIT,
                       amount={"currency_code": "GBP", "units": minor // 100,
                               "nanos": (minor % 100) * 10_000_000})])


@dataclass
class Phase:
    """What one worker process does in one phase."""

    target: str
    tag: str  # unique per phase; prefixes request and transfer ids
    proc: int
    procs: int
    mode: str  # "closed" | "open"
    kind: str  # "uniform" | "hot" | "batch"
    accounts: int
    start_at: float  # time.time() at which every process starts
    duration_s: float = 5.0
    concurrency: int = 16  # closed loop, per process
    count: int = 0  # closed loop: stop after this many calls in this process (0: by time)
    rate: float = 0.0  # open loop: calls per second offered by this process
    batch: int = 1_000  # transfers per call for kind "batch"
    channels: int = 2
    seed: int = 0


@dataclass
class Outcome:
    ok: int = 0
    items: int = 0  # transfers applied (OK results)
    item_failures: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)  # first message per error code
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls
    begin: float = 0.0  # perf_counter of the first send (scheduled, for open loop)
    end: float = 0.0  # perf_counter of the last answer
    cpu_s: float = 0.0
    lag_max_s: float = 0.0  # open loop: worst lateness of a send behind its schedule
    sent: int = 0


def _request(pb: Any, phase: Phase, n: int, rng: random.Random) -> Any:
    prefix = f"{phase.tag}-{phase.proc}-{n}"
    accounts = phase.accounts
    if phase.kind == "batch":
        items = []
        for j in range(phase.batch):
            a = rng.randrange(accounts)
            b = (a + 1 + rng.randrange(accounts - 1)) % accounts
            items.append(transfer(pb, f"{prefix}.{j}", member(a), member(b)))
        return pb.CreateTransfersRequest(request_id=prefix, transfers=items)
    a = rng.randrange(accounts)
    if phase.kind == "hot":
        credit = HOT
    else:
        credit = member((a + 1 + rng.randrange(accounts - 1)) % accounts)
    return pb.CreateTransfersRequest(request_id=prefix,
                                     transfers=[transfer(pb, prefix, member(a), credit)])


async def unary_callers(target: str, count: int, method: str, request_type: Any,
                        response_type: Any, options: Sequence[tuple[str, Any]] = ()
                        ) -> tuple[list[Any], list[Any]]:
    """`count` separate grpc.aio channels to `target`, ready, and a unary caller of `method`
    on each (separate channels: one HTTP/2 connection each, as several clients would have)."""
    import grpc

    channels = [grpc.aio.insecure_channel(target, options=[*options, ("grpc.channel_id", i)])
                for i in range(count)]
    calls = [ch.unary_unary(method, request_serializer=request_type.SerializeToString,
                            response_deserializer=response_type.FromString)
             for ch in channels]
    for ch in channels:
        await ch.channel_ready()
    return channels, calls


async def _drive(phase: Phase) -> Outcome:
    import grpc

    from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

    rng = random.Random(phase.seed * 1_000 + phase.proc)
    out = Outcome()
    channels, calls = await unary_callers(phase.target, phase.channels, CREATE_TRANSFERS,
                                          pb.CreateTransfersRequest, pb.CreateTransfersResponse,
                                          CHANNEL_OPTIONS)
    metadata = (("x-bank-principal", PRINCIPAL),)
    counter = iter(range(1 << 62))

    async def one(request: Any, began: float) -> None:
        try:
            response = await calls[out.sent % len(calls)](
                request, timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            name = error.code().name
            out.errors[name] = out.errors.get(name, 0) + 1
            out.details.setdefault(name, str(error.details())[:200])
            out.end = max(out.end, time.perf_counter())
            return
        now = time.perf_counter()
        out.end = max(out.end, now)
        out.ok += 1
        out.latencies.append(now - began)
        for result in response.results:
            if result.status.code == 0:
                out.items += 1
            else:
                reason = result.status.message.split(":")[0][:40] or str(result.status.code)
                out.item_failures[reason] = out.item_failures.get(reason, 0) + 1

    # Wait for the common start (every process has imported and connected by then).
    await asyncio.sleep(max(0.0, phase.start_at - time.time()))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    out.begin = t0
    if phase.mode == "closed":
        stop_at = t0 + phase.duration_s

        async def loop() -> None:
            while True:
                if phase.count and out.sent >= phase.count:
                    return
                if not phase.count and time.perf_counter() >= stop_at:
                    return
                out.sent += 1
                request = _request(pb, phase, next(counter), rng)
                await one(request, time.perf_counter())

        await asyncio.gather(*(loop() for _ in range(phase.concurrency)))
    else:
        interval = 1.0 / phase.rate
        # Interleave the processes' schedules evenly.
        first = t0 + interval * phase.proc / phase.procs
        total = int(phase.rate * phase.duration_s)
        tasks: set[asyncio.Task[None]] = set()
        for n in range(total):
            scheduled = first + n * interval
            request = _request(pb, phase, n, rng)  # built before its slot: not charged
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            out.lag_max_s = max(out.lag_max_s, time.perf_counter() - scheduled)
            if len(tasks) >= IN_FLIGHT_MAX:
                out.dropped += 1
                continue
            out.sent += 1
            task = asyncio.create_task(one(request, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    out.cpu_s = time.process_time() - cpu0
    out.end = max(out.end, out.begin)
    for ch in channels:
        await ch.close()
    return out


def run_phase(phase: Phase) -> Outcome:
    """Entry point in a worker process."""
    return asyncio.run(_drive(phase))


def warm_worker() -> int:
    """Import what the workers need (run once per pool process before timing anything)."""
    import grpc  # noqa: F401

    from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2  # noqa: F401

    time.sleep(0.5)  # hold this process so the pool starts all of its processes now
    return 0
