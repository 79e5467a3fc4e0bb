"""LedgerService: protos in, use cases called, protos out. No rules live here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc

from bank.app import accounts as account_cases
from bank.app import queries
from bank.app import transfers as transfer_cases
from bank.app.accounts import BatchResult
from bank.app.group_commit import GroupCommitter, TransferRequest
from bank.app.ports import AccountFilter, Clock, UnitOfWork
from bank.domain import limits
from bank.domain.currency import is_known
from bank.domain.errors import DeadlineExceeded, ViolationCollector, invalid
from services import convert as cv
from services.auth import current_principal
from services.errors import guarded, guarded_stream
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

WATCH_POLL_S = 0.5  # how often a watcher looks for entries written by other processes


class CommitSignal:
    """Wakes change-feed watchers when this process commits; other processes are polled."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout_s: float) -> None:
        with self._condition:
            generation = self._generation
            self._condition.wait_for(lambda: self._generation != generation, timeout_s)


def remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining deadline in seconds, refusing work whose deadline has passed."""
    left = context.time_remaining()
    if left is None:
        return None
    if left <= 0:
        raise DeadlineExceeded("DEADLINE_EXCEEDED", "the deadline passed before the work started")
    return float(min(left, limits.RPC_DEADLINE_SECONDS_DEFAULT * 10))


class LedgerServicer(pb_grpc.LedgerServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock, signal: CommitSignal,
                 stopping: threading.Event, committer: GroupCommitter | None = None) -> None:
        self.uow = uow
        self.clock = clock
        self.signal = signal
        self.stopping = stopping
        self.committer = committer  # None: each call commits on its own

    # -- mutations ------------------------------------------------------------------------------
    @guarded
    def CreateAccounts(self, request: pb.CreateAccountsRequest,
                       context: grpc.ServicerContext) -> pb.CreateAccountsResponse:
        cv.batch_size(len(request.accounts), "accounts", limits.ACCOUNTS_PER_BATCH_MAX)
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        if not request.accounts:
            v.add("accounts", "must contain at least one account")
        specs = [cv.account_spec_in(a, f"accounts[{i}]", v)
                 for i, a in enumerate(request.accounts)]
        v.raise_if_any()
        result = account_cases.create_accounts(
            self.uow, self.clock, current_principal(), request.request_id,
            [s for s in specs if s is not None], remaining(context))
        self.signal.notify()
        return pb.CreateAccountsResponse(results=[
            pb.AccountResult(name=f"accounts/{item.entity_id}", status=cv.item_status(item.error))
            for item in result.items])

    @guarded
    def CreateTransfers(self, request: pb.CreateTransfersRequest,
                        context: grpc.ServicerContext) -> pb.CreateTransfersResponse:
        cv.batch_size(len(request.transfers), "transfers", limits.TRANSFERS_PER_BATCH_MAX)
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        today = self.clock.business_date()
        specs = [cv.transfer_spec_in(t, f"transfers[{i}]", v, today)
                 for i, t in enumerate(request.transfers)]
        v.raise_if_any()
        valid = [s for s in specs if s is not None]
        left = remaining(context)
        if self.committer is not None:  # shares a transaction with concurrent calls
            result = self.committer.submit(TransferRequest(
                current_principal(), request.request_id, valid,
                None if left is None else time.monotonic() + left))
        else:
            result = transfer_cases.create_transfers(
                self.uow, self.clock, current_principal(), request.request_id, valid, left)
        self.signal.notify()
        return transfers_response(result)

    @guarded
    def CloseAccount(self, request: pb.CloseAccountRequest,
                     context: grpc.ServicerContext) -> pb.Account:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        account_id = cv.parse_name(request.name, "accounts", "name", v)
        v.raise_if_any()
        account_cases.close_account(self.uow, self.clock, current_principal(),
                                    request.request_id, account_id, remaining(context))
        return cv.account_out(queries.get_account(self.uow, account_id))

    # -- reads ----------------------------------------------------------------------------------
    @guarded
    def GetAccount(self, request: pb.GetAccountRequest,
                   context: grpc.ServicerContext) -> pb.Account:
        account_id = cv.name_or_raise(request.name, "accounts", "name")
        return cv.account_out(queries.get_account(self.uow, account_id))

    @guarded
    def ListAccounts(self, request: pb.ListAccountsRequest,
                     context: grpc.ServicerContext) -> pb.ListAccountsResponse:
        v = ViolationCollector()
        owner_kind = None
        if request.owner_kind:
            kind = {k: o for o, k in cv.OWNER_KINDS.items()}.get(request.owner_kind)
            if kind is None:
                v.add("owner_kind", "is not a known owner kind")
            owner_kind = kind.value if kind else None
        if request.owner_id and not cv.OWNER_RE.fullmatch(request.owner_id):
            v.add("owner_id", "must be 1-128 characters of [A-Za-z0-9_.:-]")
        if request.currency_code and not is_known(request.currency_code):
            v.add("currency_code", "must be a known ISO 4217 currency code")
        v.raise_if_any()
        flt = AccountFilter(owner_kind, request.owner_id or None, request.currency_code or None)
        page = queries.list_accounts(self.uow, flt, request.page_size, request.page_token)
        return pb.ListAccountsResponse(accounts=[cv.account_out(a) for a in page.items],
                                       next_page_token=page.next_page_token)

    @guarded
    def GetTransfer(self, request: pb.GetTransferRequest,
                    context: grpc.ServicerContext) -> pb.Transfer:
        transfer_id = cv.name_or_raise(request.name, "transfers", "name")
        return cv.transfer_out(queries.get_transfer(self.uow, transfer_id))

    @guarded
    def ListAccountEntries(self, request: pb.ListAccountEntriesRequest,
                           context: grpc.ServicerContext) -> pb.ListAccountEntriesResponse:
        v = ViolationCollector()
        account_id = cv.parse_name(request.account, "accounts", "account", v)
        start = (cv.timestamp_in(request.start_time, "start_time", v)
                 if request.HasField("start_time") else None)
        end = (cv.timestamp_in(request.end_time, "end_time", v)
               if request.HasField("end_time") else None)
        v.raise_if_any()
        account, page = queries.statement(self.uow, account_id, request.page_size,
                                          request.page_token, start, end)
        return pb.ListAccountEntriesResponse(
            entries=[cv.statement_line_out(line, account.currency) for line in page.items],
            next_page_token=page.next_page_token)

    @guarded
    def GetAccountBalance(self, request: pb.GetAccountBalanceRequest,
                          context: grpc.ServicerContext) -> pb.AccountBalance:
        v = ViolationCollector()
        account_id = cv.parse_name(request.account, "accounts", "account", v)
        as_of = (cv.timestamp_in(request.as_of_time, "as_of_time", v)
                 if request.HasField("as_of_time") else None)
        v.raise_if_any()
        now = self.clock.now_ns()
        if as_of is not None and as_of > now:
            raise invalid("as_of_time", "must not be in the future")
        account, totals = queries.balance_as_of(self.uow, account_id, as_of)
        return cv.balance_out(account, totals, as_of if as_of is not None else now)

    @guarded
    def GetTrialBalance(self, request: pb.GetTrialBalanceRequest,
                        context: grpc.ServicerContext) -> pb.TrialBalance:
        return cv.trial_balance_out(queries.trial_balance(self.uow))

    @guarded_stream
    def WatchEntries(self, request: pb.WatchEntriesRequest,
                     context: grpc.ServicerContext) -> Iterator[pb.WatchEntriesResponse]:
        if not 0 <= request.page_size <= limits.WATCH_PAGE_SIZE_MAX:
            raise invalid("page_size", f"must be between 0 and {limits.WATCH_PAGE_SIZE_MAX}")
        cursor = request.after_position
        while context.is_active() and not self.stopping.is_set():
            entries = queries.entries_after(self.uow, cursor, request.page_size)
            if not entries:
                self.signal.wait(WATCH_POLL_S)
                continue
            cursor = entries[-1].seq
            yield pb.WatchEntriesResponse(transfers=[cv.entry_out(e) for e in entries],
                                          last_position=cursor)


def transfers_response(result: BatchResult) -> pb.CreateTransfersResponse:
    return pb.CreateTransfersResponse(
        results=[pb.TransferResult(name=f"transfers/{item.entity_id}",
                                   status=cv.item_status(item.error), position=item.position)
                 for item in result.items],
        approval=f"approvals/{result.approval_id}" if result.approval_id else "")
