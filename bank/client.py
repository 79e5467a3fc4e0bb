"""Client commands of the `bank` CLI: talk to a running server over gRPC."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

TIMEOUT_S = 10.0


class ServerRefused(Exception):
    """The server answered with an error status; the message names code, reason and field."""


def _describe(error: grpc.RpcError) -> str:
    text = f"{error.code().name}: {error.details()}"
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                text += f" [{info.reason}]"
    return text


def channel_for(args: argparse.Namespace) -> tuple[grpc.Channel, list[tuple[str, str]]]:
    """A channel and call metadata for the chosen identity: a client certificate (mTLS), or
    with --plaintext-dev the development header."""
    if args.plaintext_dev:
        return grpc.insecure_channel(args.server), [("x-bank-principal", args.identity)]
    root = Path(args.pki_dir)
    cert, key = root / "clients" / f"{args.identity}.pem", root / "clients" / f"{args.identity}.key"
    if not cert.exists() or not key.exists():
        from bank.cli import UserError

        raise UserError(f"no client certificate {args.identity!r} in {root / 'clients'} "
                        "(issue one with ops/pki.py, or start `bank serve` once to create the "
                        "demo identities)")
    credentials = grpc.ssl_channel_credentials(
        (root / "ca.pem").read_bytes(), key.read_bytes(), cert.read_bytes())
    return grpc.secure_channel(args.server, credentials), []


def _call(args: argparse.Namespace, method: str, request: Any,
          stub_class: Any = pb_grpc.LedgerServiceStub) -> Any:
    channel, metadata = channel_for(args)
    with channel:
        stub = stub_class(channel)
        try:
            return getattr(stub, method)(request, timeout=TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                raise ServerRefused(f"cannot reach the server at {args.server}: is "
                                    "`bank serve` running?") from None
            raise ServerRefused(_describe(error)) from None


def _money(m: Any) -> str:
    from bank.domain.currency import exponent
    from bank.domain.money import format_minor

    minor = m.units * 10 ** exponent(m.currency_code) + m.nanos // 10 ** (
        9 - exponent(m.currency_code))
    return format_minor(minor, m.currency_code)


def cmd_account_list(args: argparse.Namespace) -> int:
    token = ""
    while True:
        page = _call(args, "ListAccounts", pb.ListAccountsRequest(page_size=200, page_token=token))
        for a in page.accounts:
            print(f"{a.account_id:32} {pb.AccountType.Name(a.type)[13:]:10} "
                  f"{pb.Account.State.Name(a.state)[6:]:7} {_money(a.balance):>20}")
        token = page.next_page_token
        if not token:
            return 0


def cmd_account_show(args: argparse.Namespace) -> int:
    a = _call(args, "GetAccount", pb.GetAccountRequest(name=f"accounts/{args.account_id}"))
    print(f"{a.name}  {pb.AccountType.Name(a.type)[13:].lower()}  code {a.code}  "
          f"owner {pb.OwnerKind.Name(a.owner_kind)[11:].lower()}:{a.owner_id}  "
          f"{pb.Account.State.Name(a.state)[6:].lower()}")
    print(f"  balance {_money(a.balance)}  available {_money(a.available_balance)}")
    print(f"  posted   debits {_money(a.debits_posted)}  credits {_money(a.credits_posted)}")
    print(f"  pending  debits {_money(a.debits_pending)}  credits {_money(a.credits_pending)}")
    return 0


def cmd_account_open(args: argparse.Namespace) -> int:
    kind, _, owner = args.owner.partition(":")
    if f"OWNER_KIND_{kind.upper()}" not in pb.OwnerKind.keys() or not kind or not owner:  # noqa: SIM118 (an EnumTypeWrapper is not a dict)
        from bank.cli import UserError

        raise UserError(f"--owner must be kind:id with kind bank, member, council or pool, "
                        f"not {args.owner!r}")
    account = pb.Account(
        account_id=args.account_id, currency_code=args.currency,
        type=pb.AccountType.Value(f"ACCOUNT_TYPE_{args.type.upper()}"), code=args.code,
        owner_kind=pb.OwnerKind.Value(f"OWNER_KIND_{kind.upper()}"), owner_id=owner,
        debits_must_not_exceed_credits=args.no_overdraft)
    response = _call(args, "CreateAccounts", pb.CreateAccountsRequest(
        request_id=args.request_id or str(uuid.uuid4()), accounts=[account]))
    status = response.results[0].status
    if status.code:
        raise ServerRefused(f"not opened: {status.message}")
    print(f"opened {response.results[0].name}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from bank.cli import parse_amount

    units, nanos = parse_amount(args.amount, args.currency)
    amount = {"currency_code": args.currency, "units": units, "nanos": nanos}
    transfer = pb.TransferInput(
        transfer_id=args.transfer_id or f"cli-{uuid.uuid4()}",
        kind=pb.TRANSFER_KIND_PENDING if args.pending else pb.TRANSFER_KIND_POSTED,
        description=args.description, postings=[
            pb.Posting(account=f"accounts/{args.debit}", side=pb.SIDE_DEBIT, amount=amount),
            pb.Posting(account=f"accounts/{args.credit}", side=pb.SIDE_CREDIT, amount=amount)])
    response = _call(args, "CreateTransfers", pb.CreateTransfersRequest(
        request_id=args.request_id or str(uuid.uuid4()), transfers=[transfer]))
    result = response.results[0]
    if response.approval:
        print(f"waiting for a second approver: {response.approval} "
              f"(an approver runs `bank --as approver approve {response.approval}`)")
        return 0
    if result.status.code:
        raise ServerRefused(f"refused: {result.status.message}")
    print(f"recorded {result.name} at position {result.position}")
    return 0


def cmd_statement(args: argparse.Namespace) -> int:
    account = _call(args, "GetAccount", pb.GetAccountRequest(name=f"accounts/{args.account_id}"))
    print(f"Statement of {account.name} ({account.currency_code})")
    token, shown = "", 0
    while shown < args.limit:
        page = _call(args, "ListAccountEntries", pb.ListAccountEntriesRequest(
            account=account.name, page_size=min(200, args.limit - shown), page_token=token))
        for e in page.entries:
            sign = "DR" if e.side == pb.SIDE_DEBIT else "CR"
            when = e.record_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            print(f"{when}  {e.transfer[10:]:28} {sign} {_money(e.amount):>18}  "
                  f"bal {_money(e.balance_after):>18}  {e.description}")
        shown += len(page.entries)
        token = page.next_page_token
        if not token:
            break
    print(f"closing balance {_money(account.balance)}")
    return 0


def cmd_trial_balance(args: argparse.Namespace) -> int:
    tb = _call(args, "GetTrialBalance", pb.GetTrialBalanceRequest())
    for row in tb.rows:
        print(f"{row.currency_code} {pb.AccountType.Name(row.type)[13:]:10} "
              f"DR {_money(row.debits_posted):>20}  CR {_money(row.credits_posted):>20}")
    for total in tb.totals:
        print(f"{total.currency_code} TOTAL      DR {_money(total.debits_posted):>20}  "
              f"CR {_money(total.credits_posted):>20}")
    return 0


def _approval_line(a: Any) -> str:
    state = apb.Approval.State.Name(a.state)[6:].lower()
    amounts = ", ".join(f"{t.transfer_id}" for t in a.transfers[:3])
    more = f" +{len(a.transfers) - 3}" if len(a.transfers) > 3 else ""
    return (f"{a.name:40} {state:9} maker {a.maker.subject:16} "
            f"{a.create_time.ToDatetime():%Y-%m-%d %H:%M}  {amounts}{more}")


def cmd_approvals(args: argparse.Namespace) -> int:
    page = _call(args, "ListApprovals", apb.ListApprovalsRequest(page_size=50),
                 apb_grpc.ApprovalServiceStub)
    for a in page.approvals:
        print(_approval_line(a))
    if not page.approvals:
        print("no approvals")
    return 0


def _decide(args: argparse.Namespace, method: str, request_cls: Any) -> int:
    name = args.name if args.name.startswith("approvals/") else f"approvals/{args.name}"
    a = _call(args, method, request_cls(request_id=args.request_id or str(uuid.uuid4()),
                                        name=name, note=args.note),
              apb_grpc.ApprovalServiceStub)
    print(_approval_line(a))
    for r in a.transfers_result.results:
        print(f"  {r.name}: {'OK' if not r.status.code else r.status.message}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "ApproveOperation", apb.ApproveOperationRequest)


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "RejectOperation", apb.RejectOperationRequest)


ACCOUNT_COMMANDS = {"list": cmd_account_list, "show": cmd_account_show,
                    "open": cmd_account_open}
COMMANDS = {"account": lambda a: ACCOUNT_COMMANDS[a.account_command](a),
            "transfer": cmd_transfer, "statement": cmd_statement,
            "trial-balance": cmd_trial_balance, "approvals": cmd_approvals,
            "approve": cmd_approve, "reject": cmd_reject}


def add_parsers(sub: Any) -> None:
    account = sub.add_parser("account", help="accounts on a running server")
    verbs = account.add_subparsers(dest="account_command", required=True)
    verbs.add_parser("list", help="list accounts with balances")
    show = verbs.add_parser("show", help="one account with its totals")
    show.add_argument("account_id")
    open_ = verbs.add_parser("open", help="open an account")
    open_.add_argument("account_id")
    open_.add_argument("--currency", default="GBP")
    open_.add_argument("--type", required=True,
                       choices=["asset", "liability", "equity", "income", "expense"])
    open_.add_argument("--code", required=True, help="chart-of-accounts code, e.g. 2100")
    open_.add_argument("--owner", required=True, help="kind:id, e.g. member:m-0005 or bank:bank")
    open_.add_argument("--no-overdraft", action="store_true",
                       help="debits may never exceed credits")
    open_.add_argument("--request-id")

    transfer = sub.add_parser("transfer", help="post a transfer: debit one account, credit another")
    transfer.add_argument("debit", help="account id to debit")
    transfer.add_argument("credit", help="account id to credit")
    transfer.add_argument("amount", help="e.g. 12.50")
    transfer.add_argument("--currency", default="GBP")
    transfer.add_argument("--description", default="")
    transfer.add_argument("--pending", action="store_true", help="create a hold instead")
    transfer.add_argument("--transfer-id")
    transfer.add_argument("--request-id")

    statement = sub.add_parser("statement", help="print an account statement")
    statement.add_argument("account_id")
    statement.add_argument("--limit", type=int, default=100)
    sub.add_parser("trial-balance", help="print the trial balance")
    sub.add_parser("approvals", help="list operations waiting for (or decided by) an approver")
    for verb in ("approve", "reject"):
        decide = sub.add_parser(verb, help=f"{verb} an operation (approver role; not the maker)")
        decide.add_argument("name", help="approvals/{id} or the id")
        decide.add_argument("--note", default="")
        decide.add_argument("--request-id")
