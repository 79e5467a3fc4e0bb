"""Shared steps for the end-to-end tests: open accounts, post transfers, and take snapshots of
everything a client can see, so a refused request can be shown to have changed nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.helpers import account, item_reason, request_id, transfer

OK = 0
FEED_QUIET_S = 0.06  # how long the feed must stay silent to count as "nothing new"


def code(status_code: grpc.StatusCode) -> int:
    """The integer value of a gRPC status code, as found in a batch item's google.rpc.Status."""
    return int(status_code.value[0])


def open_accounts(ledger: Any, *accounts: pb.Account) -> None:
    response = ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(),
                                                              accounts=list(accounts)))
    assert [(r.status.code, item_reason(r.status)) for r in response.results] == [
        (OK, "")] * len(accounts)


def open_cash_and(ledger: Any, *members: str, no_overdraft: bool = True) -> None:
    """A bank cash account (asset) plus member deposit accounts (liabilities)."""
    open_accounts(ledger, account("cash", "ASSET", owner=("BANK", "bank")),
                  *(account(m, no_overdraft=no_overdraft) for m in members))


def post(ledger: Any, *transfers: pb.TransferInput,
         rid: str | None = None) -> pb.CreateTransfersResponse:
    return ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=rid or request_id(),
                                                            transfers=list(transfers)))


def post_ok(ledger: Any, *transfers: pb.TransferInput) -> pb.CreateTransfersResponse:
    response = post(ledger, *transfers)
    assert [(r.status.code, item_reason(r.status)) for r in response.results] == [
        (OK, "")] * len(transfers), response
    return response


_funding = {"n": 0}


def fund(ledger: Any, member: str, pence: int) -> None:
    """Deposit cash into a member account."""
    _funding["n"] += 1
    post_ok(ledger, transfer(f"fund-{member}-{_funding['n']}", "cash", member, pence))


def get(ledger: Any, account_id: str) -> pb.Account:
    return ledger.GetAccount(pb.GetAccountRequest(name=f"accounts/{account_id}"))


def minor(money: Any, exponent: int = 2) -> int:
    """google.type.Money -> integer minor units (2 decimals unless told)."""
    return int(money.units * 10**exponent + money.nanos // 10 ** (9 - exponent))


def balance(ledger: Any, account_id: str) -> int:
    return minor(get(ledger, account_id).balance)


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    """Run a call that must fail; return its error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 10**9, nanos=ns % 10**9)


def ns_of(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds * 10**9 + ts.nanos)


# -- the change feed ------------------------------------------------------------------------------
def feed_now(ledger: Any, after: int = 0, wait_s: float = FEED_QUIET_S) -> list[int]:
    """Positions in the change feed after `after`, as of now.

    The server sends what it has at once, up to 1,000 per message (a short message means it
    has sent everything), then waits for more: `wait_s` bounds the wait for a first message, so
    an empty answer only means "nothing arrived within `wait_s`".
    """
    call = ledger.WatchEntries(pb.WatchEntriesRequest(after_position=after, page_size=1000),
                               timeout=wait_s)
    positions: list[int] = []
    try:
        for message in call:
            positions += [t.position for t in message.transfers]
            assert message.last_position == positions[-1]
            if len(message.transfers) < 1000:
                break
    except grpc.RpcError as error:
        if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        call.cancel()
    return positions


# -- snapshots ------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    accounts: list[pb.Account]
    trial_balance: pb.TrialBalance
    positions: list[int]


def all_accounts(ledger: Any, **filters: Any) -> list[pb.Account]:
    found: list[pb.Account] = []
    token = ""
    while True:
        page = ledger.ListAccounts(pb.ListAccountsRequest(page_size=1000, page_token=token,
                                                          **filters))
        found += page.accounts
        token = page.next_page_token
        if not token:
            return found


def _moved(money: Any) -> bool:
    return bool(money.units or money.nanos)


def snapshot(ledger: Any) -> Snapshot:
    accounts = all_accounts(ledger)
    positions: list[int] = []
    if accounts:  # with no accounts there can be no transfers
        # Money has moved, so the feed has transfers and answers at once: wait as long as it
        # takes. Otherwise there are probably none: do not wait long for nothing.
        moved = any(_moved(a.debits_posted) or _moved(a.credits_posted) or
                    _moved(a.debits_pending) or _moved(a.credits_pending) for a in accounts)
        positions = feed_now(ledger, wait_s=10.0 if moved else 0.5)
        assert positions or not moved
    return Snapshot(accounts, ledger.GetTrialBalance(pb.GetTrialBalanceRequest()), positions)


def assert_unchanged(ledger: Any, before: Snapshot) -> None:
    """Every account (totals, state), the trial balance and the change feed are as before."""
    assert all_accounts(ledger) == before.accounts
    assert ledger.GetTrialBalance(pb.GetTrialBalanceRequest()) == before.trial_balance
    if not before.accounts:
        return  # still no accounts (checked above), so still no transfers
    last = before.positions[-1] if before.positions else 0
    assert feed_now(ledger, after=last) == [], "a refused request recorded a transfer"
