"""`bank members ...`: members on a running server (list, show, onboard, kyc, group, erase), and
the operator's master key rotation (on the database and the keys folder, like `bank audit`)."""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from bank.client import _call
from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from services.generated.peoplesbank.members.v1 import member_service_pb2_grpc as mpb_grpc

DEFAULT_KEYS_DIR = "var/keys"
LEGAL_FORMS = [name[len("LEGAL_FORM_"):].lower() for name in mpb.LegalForm.keys()[1:]]
KYC_STATUSES = [name[len("KYC_STATUS_"):].lower() for name in mpb.KycStatus.keys()[1:]]


def _members(args: argparse.Namespace, method: str, request: Any) -> Any:
    return _call(args, method, request, mpb_grpc.MemberServiceStub)


def _name(member_id: str) -> str:
    return member_id if member_id.startswith("members/") else f"members/{member_id}"


def _state(m: Any) -> str:
    return "erased" if m.state == mpb.Member.STATE_ERASED else "active"


def _line(m: Any) -> str:
    form = mpb.LegalForm.Name(m.legal_form)[len("LEGAL_FORM_"):].lower()
    kyc = mpb.KycStatus.Name(m.kyc_status)[len("KYC_STATUS_"):].lower()
    group = m.connected_group.removeprefix("connectedGroups/")
    return f"{m.member_id:24} {form:26} {m.council_area:16} kyc {kyc:9} {_state(m):7} {group}"


def cmd_list(args: argparse.Namespace) -> int:
    token, shown = "", 0
    while True:
        request = mpb.ListMembersRequest(page_size=200, page_token=token,
                                         council_area=args.council_area or "")
        if args.kyc:
            request.kyc_status = mpb.KycStatus.Value(f"KYC_STATUS_{args.kyc.upper()}")
        page = _members(args, "ListMembers", request)
        for m in page.members:
            print(_line(m))
        shown += len(page.members)
        token = page.next_page_token
        if not token:
            break
    print(f"{shown} members")
    return 0


def _show(m: Any) -> None:
    print(_line(m))
    print(f"  share account {m.share_account}  deposit account {m.deposit_account or '-'}  "
          f"votes {m.votes}")
    state = mpb.Member.PersonalDataState.Name(m.personal_data_state)
    if m.personal_data_state != mpb.Member.PERSONAL_DATA_STATE_INCLUDED:
        print(f"  personal data: {state[len('PERSONAL_DATA_STATE_'):].lower().replace('_', ' ')}")
        return
    p = m.personal_data
    print(f"  name      {p.display_name}")
    if p.HasField("birth_date"):
        print(f"  born      {p.birth_date.year:04}-{p.birth_date.month:02}-{p.birth_date.day:02}")
    address = ", ".join([*p.address.lines, p.address.locality, p.address.postcode])
    print(f"  address   {address}")
    for label, value in (("email", p.email), ("phone", p.phone), ("notes", p.notes)):
        if value:
            print(f"  {label:9} {value}")


def cmd_show(args: argparse.Namespace) -> int:
    _show(_members(args, "GetMember", mpb.GetMemberRequest(name=_name(args.member_id))))
    return 0


def cmd_onboard(args: argparse.Namespace) -> int:
    from bank.cli import UserError

    data = mpb.PersonalData(display_name=args.display_name, email=args.email or "",
                            phone=args.phone or "", notes=args.notes or "",
                            address=mpb.Address(lines=args.address_line or [],
                                                locality=args.locality or "",
                                                postcode=args.postcode))
    if args.birth_date:
        try:
            born = date.fromisoformat(args.birth_date)
        except ValueError:
            raise UserError(f"--birth-date: not a date (YYYY-MM-DD): {args.birth_date!r}") from None
        data.birth_date.year, data.birth_date.month, data.birth_date.day = (
            born.year, born.month, born.day)
    member = _members(args, "OnboardMember", mpb.OnboardMemberRequest(
        request_id=args.request_id or str(uuid.uuid4()), open_deposit_account=args.deposit,
        member=mpb.Member(member_id=args.member_id, personal_data=data,
                          legal_form=mpb.LegalForm.Value(f"LEGAL_FORM_{args.legal_form.upper()}"))))
    print(f"onboarded {member.name} in {member.council_area}; share account "
          f"{member.share_account}" + (f", deposit account {member.deposit_account}"
                                       if member.deposit_account else ""))
    return 0


def cmd_kyc(args: argparse.Namespace) -> int:
    member = _members(args, "UpdateKycStatus", mpb.UpdateKycStatusRequest(
        request_id=args.request_id or str(uuid.uuid4()), name=_name(args.member_id),
        kyc_status=mpb.KycStatus.Value(f"KYC_STATUS_{args.status.upper()}")))
    print(_line(member))
    return 0


def cmd_group(args: argparse.Namespace) -> int:
    member = _members(args, "SetConnectedGroup", mpb.SetConnectedGroupRequest(
        request_id=args.request_id or str(uuid.uuid4()), name=_name(args.member_id),
        connected_group=f"connectedGroups/{args.group}" if args.group else ""))
    print(_line(member))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    response = _members(args, "EraseMember", mpb.EraseMemberRequest(
        request_id=args.request_id or str(uuid.uuid4()), name=_name(args.member_id)))
    print(f"erasure of {response.member.name} waits for a second approver: {response.approval} "
          f"(an approver runs `bank --as approver-2 approve {response.approval}`)")
    return 0


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    """Server side: a new active master key, then every live data key rewrapped under it."""
    from bank.adapters.clock import SystemClock
    from bank.adapters.member_crypto import MASTER_KEY_DIR, EnvelopeCipher, MasterKeyRing
    from bank.adapters.sql import SqlUnitOfWork
    from bank.app.members import rewrap_member_keys
    from bank.cli import _engine

    ring = MasterKeyRing(Path(args.keys_dir) / MASTER_KEY_DIR)
    key_id = ring.rotate()
    print(f"new active member master key {key_id}; rewrapping data keys...", flush=True)
    with _engine(args) as engine:
        count = rewrap_member_keys(SqlUnitOfWork(engine), SystemClock(), EnvelopeCipher(ring),
                                   f"rewrap-{uuid.uuid4()}")
    print(f"rewrapped {count} data keys under {key_id}. Older master keys in {ring.root} are "
          "still needed by backups taken before now: destroy them only when those backups "
          "have aged out (that also shreds erased members' keys left in old backups).")
    return 0


VERBS = {"list": cmd_list, "show": cmd_show, "onboard": cmd_onboard, "kyc": cmd_kyc,
         "group": cmd_group, "erase": cmd_erase, "rotate-master-key": cmd_rotate_master_key}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "members": lambda a: VERBS[a.members_command](a)}


def add_parsers(sub: Any) -> None:
    members = sub.add_parser("members", help="members: list, show, onboard, KYC, erasure")
    verbs = members.add_subparsers(dest="members_command", required=True)
    list_ = verbs.add_parser("list", help="list members (no personal data)")
    list_.add_argument("--council-area", help="only this council area, e.g. preston")
    list_.add_argument("--kyc", choices=KYC_STATUSES, help="only this KYC status")
    show = verbs.add_parser("show", help="one member, with personal data if your role may")
    show.add_argument("member_id")
    onboard = verbs.add_parser("onboard", help="onboard a member (teller, loan officer)")
    onboard.add_argument("member_id")
    onboard.add_argument("--legal-form", required=True, choices=LEGAL_FORMS)
    onboard.add_argument("--name", dest="display_name", required=True)
    onboard.add_argument("--postcode", required=True, help="a UK postcode in the region")
    onboard.add_argument("--address-line", action="append", help="repeat for each line")
    onboard.add_argument("--locality")
    onboard.add_argument("--birth-date", help="YYYY-MM-DD (individuals and sole traders)")
    onboard.add_argument("--email")
    onboard.add_argument("--phone")
    onboard.add_argument("--notes")
    onboard.add_argument("--deposit", action="store_true", help="also open a deposit account")
    onboard.add_argument("--request-id")
    kyc = verbs.add_parser("kyc", help="set a member's KYC status")
    kyc.add_argument("member_id")
    kyc.add_argument("status", choices=KYC_STATUSES)
    kyc.add_argument("--request-id")
    group = verbs.add_parser("group", help="put a member in a connected-party group")
    group.add_argument("member_id")
    group.add_argument("group", nargs="?", default="", help="group id; omit to leave the group")
    group.add_argument("--request-id")
    erase = verbs.add_parser("erase", help="ask for a member's erasure (needs a 2nd approver)")
    erase.add_argument("member_id")
    erase.add_argument("--request-id")
    rotate = verbs.add_parser("rotate-master-key",
                              help="operator: new member master key, rewrap every data key")
    rotate.add_argument("--keys-dir", default=os.environ.get("BANK_KEYS_DIR", DEFAULT_KEYS_DIR),
                        help=f"keys folder (default {DEFAULT_KEYS_DIR})")
