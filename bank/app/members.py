"""Use cases on members: onboard, read, KYC status, connected-party groups, erasure, and the
rewrapping of data keys after a master key rotation.

Every mutation runs through `run_command` (one audit leaf, idempotent by request id). Nothing
personal ever reaches what outlives an erasure:

- the request fingerprint covers personal data only through a keyed digest (`MemberCipher
  .digest`), never the data or a plain hash of it;
- stored outcomes (`requests.outcome_json`), audit leaves and approval payloads hold member ids,
  legal forms, council areas, statuses and digests of ciphertext, nothing else;
- refusals name the postcode district at most, never a name or an address.

Accounts. Onboarding opens, in the same transaction and through the account-creation path of
`bank.app.accounts`, a membership share account (`<member>-share`: equity, code 3100, may not
go overdrawn) and, if asked, a deposit account (`<member>-deposit`: liability, code 2100, may
not go overdrawn). Both open empty: paying for the share is an ordinary transfer (e.g. £1 from
the deposit account or cash). The share account may hold any amount of share capital, but a
member has exactly one vote (`Member.votes`): votes count members, never balances.

Erasure is maker-checker: `request_erasure` stores an approval, and a different approver's
`ApproveOperation` runs `execute_erasure`, which destroys the member's data key. The ledger is
not touched (entries are history; a member with money still on account cannot be erased:
MEMBER_HAS_BALANCES), so trial balance and audit proofs stay exactly as they were.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from typing import Any

from bank.app.accounts import AccountSpec, insert_accounts, plan_accounts
from bank.app.paging import decode_token, encode_token, page_size, position_str
from bank.app.ports import (
    AccountFilter,
    Clock,
    Head,
    LedgerReader,
    MemberCipher,
    MemberFilter,
    UnitOfWork,
)
from bank.app.queries import Page
from bank.app.unit import Command, Context, request_approval, run_command
from bank.domain.accounts import AccountType, OwnerKind
from bank.domain.entries import canonical_hash
from bank.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from bank.domain.identity import SYSTEM, Principal
from bank.domain.invariants import ensure
from bank.domain.members import (
    DEPOSIT_ACCOUNT_CODE,
    SHARE_ACCOUNT_CODE,
    KycStatus,
    LegalForm,
    Member,
    PersonalData,
    deposit_account_id,
    ensure_in_region,
    ensure_kyc_transition,
    ensure_not_erased,
    share_account_id,
)

ERASE_OPERATION = "EraseMember"
REWRAP_BATCH_MAX = 500
MEMBER_ACCOUNTS_MAX = 100  # accounts one member may own, as far as the erasure check looks


@dataclass(frozen=True, slots=True)
class Application:
    """An onboarding request, already validated at the edge (`validate_personal_data`)."""

    member_id: str
    legal_form: LegalForm
    personal: PersonalData
    open_deposit_account: bool
    currency: str = "GBP"


@dataclass(frozen=True, slots=True)
class MemberRef:
    member_id: str

    def to_json(self) -> dict[str, Any]:
        return {"member_id": self.member_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> MemberRef:
        return MemberRef(data["member_id"])


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    member_id: str
    approval_id: str

    def to_json(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "approval_id": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ErasureRequest:
        return ErasureRequest(data["member_id"], data["approval_id"])


class PersonalDataState(enum.Enum):
    INCLUDED = "included"
    NOT_REQUESTED = "not_requested"  # the basic view was asked for
    WITHHELD = "withheld"  # the caller's role may not see personal data
    ERASED = "erased"  # the data key was destroyed: nobody can read it any more


@dataclass(frozen=True, slots=True)
class MemberView:
    member: Member
    personal: PersonalData | None
    personal_state: PersonalDataState


def _not_found(member_id: str) -> NotFound:
    return NotFound("MEMBER_NOT_FOUND", f"no member {member_id!r}",
                    metadata={"member": f"members/{member_id}"})


def _member(tx: LedgerReader, member_id: str) -> Member:
    member = tx.get_member(member_id)
    if member is None:
        raise _not_found(member_id)
    return member


def account_specs(application: Application) -> list[AccountSpec]:
    """The member's share account, and the deposit account if asked for."""
    member_id, currency = application.member_id, application.currency
    specs = [AccountSpec(share_account_id(member_id), currency, AccountType.EQUITY,
                         SHARE_ACCOUNT_CODE, OwnerKind.MEMBER, member_id,
                         debits_must_not_exceed_credits=True)]
    if application.open_deposit_account:
        specs.append(AccountSpec(deposit_account_id(member_id), currency, AccountType.LIABILITY,
                                 DEPOSIT_ACCOUNT_CODE, OwnerKind.MEMBER, member_id,
                                 debits_must_not_exceed_credits=True))
    return specs


def onboard_member(uow: UnitOfWork, clock: Clock, cipher: MemberCipher, principal: Principal,
                   request_id: str, application: Application,
                   timeout_s: float | None = None) -> MemberRef:
    """Open a member: the public record, the encrypted personal data under a new data key,
    and the member's accounts, in one transaction with one audit leaf.

    The same member id with identical content (under another request id) is a success that
    changes nothing. Raises `FailedPrecondition` OUTSIDE_REGION (before anything is recorded:
    it depends on the input alone), `AlreadyExists` MEMBER_ID_REUSED or ACCOUNT_ID_REUSED, or
    REQUEST_ID_REUSED for a conflicting replay.
    """
    area = ensure_in_region(application.personal.postcode)
    member_id = application.member_id
    plaintext = application.personal.to_bytes()
    specs = account_specs(application)
    command = Command("OnboardMember", request_id, principal, {
        "member_id": member_id, "legal_form": application.legal_form.value,
        "council_area": area.area_id, "accounts": [s.as_body() for s in specs],
        "personal_data_hmac": cipher.digest(member_id, plaintext)})

    def handler(ctx: Context) -> tuple[MemberRef, Head]:
        existing = ctx.tx.get_member(member_id)
        if existing is not None:
            if _same_member(ctx.tx, cipher, existing, application, area.area_id):
                return MemberRef(member_id), ctx.head
            raise AlreadyExists("MEMBER_ID_REUSED", f"member {member_id!r} already exists with "
                                "different details", metadata={"member": f"members/{member_id}"})
        items, new_accounts = plan_accounts(ctx, specs)
        for item in items:
            if item.error is not None:
                raise item.error
        key, ciphertext = cipher.seal_new(member_id, plaintext)
        member = Member(member_id, application.legal_form, area.area_id, KycStatus.PENDING,
                        specs[0].account_id, specs[1].account_id if len(specs) > 1 else None,
                        None, ctx.now_ns, ctx.now_ns)
        insert_accounts(ctx, new_accounts)
        ctx.tx.insert_member(member, key, ciphertext)
        ctx.effects.append(["member", member_id, canonical_hash(member.definition()),
                            hashlib.sha256(ciphertext).hexdigest()])
        ctx.effects.append(["member_key", member_id, key.master_key_id])
        return MemberRef(member_id), ctx.head

    return run_command(uow, clock, command, handler, MemberRef.from_json, timeout_s)


def _same_member(tx: LedgerReader, cipher: MemberCipher, existing: Member,
                 application: Application, area_id: str) -> bool:
    if existing.erased or existing.legal_form is not application.legal_form or (
            existing.council_area != area_id) or (
            (existing.deposit_account_id is not None) != application.open_deposit_account):
        return False
    secret = tx.get_member_secret(existing.member_id)
    ensure(secret is not None and secret[0] is not None,
           f"member {existing.member_id} is not erased but has no data key")
    assert secret is not None and secret[0] is not None
    stored = cipher.open(existing.member_id, secret[0], secret[1])
    return stored == application.personal.to_bytes()


# -- reads ----------------------------------------------------------------------------------------
def _view(tx: LedgerReader, cipher: MemberCipher, member: Member, wanted: bool,
          allowed: bool) -> MemberView:
    if member.erased:
        return MemberView(member, None, PersonalDataState.ERASED)
    if not wanted:
        return MemberView(member, None, PersonalDataState.NOT_REQUESTED)
    if not allowed:
        return MemberView(member, None, PersonalDataState.WITHHELD)
    secret = tx.get_member_secret(member.member_id)
    ensure(secret is not None and secret[0] is not None,
           f"member {member.member_id} is not erased but has no data key")
    assert secret is not None and secret[0] is not None
    personal = PersonalData.from_bytes(cipher.open(member.member_id, secret[0], secret[1]))
    return MemberView(member, personal, PersonalDataState.INCLUDED)


def get_member(uow: UnitOfWork, cipher: MemberCipher, member_id: str, *, wanted: bool = True,
               allowed: bool = True) -> MemberView:
    """A member, with personal data decrypted when `wanted` and `allowed` and not erased.
    Raises `NotFound`."""
    with uow.read() as r:
        return _view(r, cipher, _member(r, member_id), wanted, allowed)


def read_personal_data(uow: UnitOfWork, cipher: MemberCipher, member_id: str) -> PersonalData:
    """A member's personal data in clear. Raises `NotFound`, or `FailedPrecondition`
    MEMBER_ERASED once it has been erased."""
    view = get_member(uow, cipher, member_id)
    if view.personal is None:
        ensure(view.personal_state is PersonalDataState.ERASED, "personal data missing")
        raise FailedPrecondition("MEMBER_ERASED", f"the personal data of member {member_id!r} "
                                 "has been erased", metadata={"member": f"members/{member_id}"})
    return view.personal


def list_members(uow: UnitOfWork, cipher: MemberCipher, flt: MemberFilter, size: int,
                 token: str, *, wanted: bool = False, allowed: bool = True
                 ) -> Page[MemberView]:
    """Members in id order, filtered; raises `InvalidArgument` for a bad size or token."""
    query = {"m": "members", "area": flt.council_area, "form": flt.legal_form,
             "kyc": flt.kyc_status, "group": flt.connected_group}
    limit = page_size(size)
    after = position_str(decode_token(token, query))
    with uow.read() as r:
        rows = r.list_members(after, limit + 1, flt)
        more = len(rows) > limit
        views = [_view(r, cipher, m, wanted, allowed) for m in rows[:limit]]
    return Page(views, encode_token(query, views[-1].member.member_id) if more else "")


def member_council_areas(uow: UnitOfWork, member_ids: list[str]) -> dict[str, str]:
    """Council area of each existing member among `member_ids` (for scope checks)."""
    with uow.read() as r:
        return r.member_council_areas(member_ids)


# -- KYC and connected parties --------------------------------------------------------------------
def update_kyc_status(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                      member_id: str, status: KycStatus,
                      timeout_s: float | None = None) -> MemberRef:
    """Move a member's KYC status along an allowed transition. Raises `NotFound`, or
    `FailedPrecondition` MEMBER_ERASED or KYC_TRANSITION_NOT_ALLOWED."""
    command = Command("UpdateKycStatus", request_id, principal,
                      {"member_id": member_id, "kyc_status": status.value})

    def handler(ctx: Context) -> tuple[MemberRef, Head]:
        member = _member(ctx.tx, member_id)
        ensure_kyc_transition(member, status)
        ctx.tx.save_member_state(replace(member, kyc_status=status, updated_ns=ctx.now_ns))
        ctx.effects.append(["member_kyc", member_id, member.kyc_status.value, status.value])
        return MemberRef(member_id), ctx.head

    return run_command(uow, clock, command, handler, MemberRef.from_json, timeout_s)


def set_connected_group(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                        member_id: str, group_id: str | None,
                        timeout_s: float | None = None) -> MemberRef:
    """Put a member in a connected-party group (made on first use), or take it out (None).
    Setting the group it is already in changes nothing. Raises `NotFound`, or
    `FailedPrecondition` MEMBER_ERASED."""
    command = Command("SetConnectedGroup", request_id, principal,
                      {"member_id": member_id, "connected_group": group_id})

    def handler(ctx: Context) -> tuple[MemberRef, Head]:
        member = _member(ctx.tx, member_id)
        ensure_not_erased(member)
        if member.connected_group == group_id:
            return MemberRef(member_id), ctx.head
        if group_id is not None and not ctx.tx.connected_group_exists(group_id):
            ctx.tx.insert_connected_group(group_id, ctx.now_ns)
            ctx.effects.append(["connected_group", group_id])
        ctx.tx.save_member_state(replace(member, connected_group=group_id,
                                         updated_ns=ctx.now_ns))
        ctx.effects.append(["member_group", member_id, member.connected_group, group_id])
        return MemberRef(member_id), ctx.head

    return run_command(uow, clock, command, handler, MemberRef.from_json, timeout_s)


# -- erasure --------------------------------------------------------------------------------------
def _ensure_no_balances(tx: LedgerReader, member: Member) -> None:
    accounts = tx.list_accounts("", MEMBER_ACCOUNTS_MAX, AccountFilter(
        owner_kind=OwnerKind.MEMBER.value, owner_id=member.member_id))
    busy = sorted(a.account_id for a in accounts if not a.is_zero())
    if busy:
        raise FailedPrecondition(
            "MEMBER_HAS_BALANCES", f"member {member.member_id!r} still has money or holds on "
            f"{', '.join(busy[:5])}: settle and close them before erasure",
            metadata={"member": f"members/{member.member_id}", "accounts": ",".join(busy[:5])})


def request_erasure(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                    member_id: str, timeout_s: float | None = None) -> ErasureRequest:
    """Ask for a member's personal data to be erased: stored as an approval that a different
    approver must approve (`bank.app.approvals.approve` then runs `execute_erasure`).

    Raises `NotFound`, or `FailedPrecondition` MEMBER_ERASED or MEMBER_HAS_BALANCES.
    """
    command = Command(ERASE_OPERATION, request_id, principal, {"member_id": member_id})

    def handler(ctx: Context) -> tuple[ErasureRequest, Head]:
        member = _member(ctx.tx, member_id)
        ensure_not_erased(member)
        _ensure_no_balances(ctx.tx, member)
        approval_id = request_approval(
            ctx, {"member_id": member_id}, f"{ERASE_OPERATION} destroys the personal data of "
            f"members/{member_id} for good: it needs a second approver")
        return ErasureRequest(member_id, approval_id), ctx.head

    return run_command(uow, clock, command, handler, ErasureRequest.from_json, timeout_s)


def execute_erasure(ctx: Context, payload: dict[str, Any]) -> tuple[dict[str, Any], Head]:
    """Run an approved erasure inside the approval's transaction: destroy the member's data
    key and stamp the record erased. Erasing an erased member changes nothing. Raises
    `FailedPrecondition` MEMBER_HAS_BALANCES if money arrived since the request."""
    member_id = payload["member_id"]
    member = ctx.tx.get_member(member_id)
    ensure(member is not None, f"approved erasure of a missing member {member_id!r}")
    assert member is not None
    if member.erased:
        return {"member_id": member_id, "erased_ns": member.erased_ns}, ctx.head
    _ensure_no_balances(ctx.tx, member)
    ctx.tx.destroy_member_key(member_id, ctx.now_ns)
    ctx.tx.save_member_state(replace(member, erased_ns=ctx.now_ns, updated_ns=ctx.now_ns))
    ctx.effects.append(["member_erased", member_id])
    return {"member_id": member_id, "erased_ns": ctx.now_ns}, ctx.head


# -- master key rotation --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RewrapBatch:
    count: int
    last_member_id: str

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "last": self.last_member_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> RewrapBatch:
        return RewrapBatch(data["count"], data["last"])


def rewrap_member_keys(uow: UnitOfWork, clock: Clock, cipher: MemberCipher, run_id: str,
                       principal: Principal = SYSTEM) -> int:
    """Wrap every live data key under the active master key, in audited batches of
    `REWRAP_BATCH_MAX`; returns how many were rewrapped. Run it after `MasterKeyRing.rotate`;
    running it again (or after a crash) picks up what is left."""
    active = cipher.active_master_key_id()
    total, after, batch = 0, "", 0
    while True:
        batch += 1
        command = Command("RewrapMemberKeys", f"{run_id}-{batch}", principal,
                          {"run": run_id, "batch": batch, "after": after, "active": active})

        def handler(ctx: Context, after: str = after) -> tuple[RewrapBatch, Head]:
            keys = ctx.tx.keys_to_rewrap(active, after, REWRAP_BATCH_MAX)
            for member_id, key in keys:
                new = cipher.rewrap(member_id, key)
                ensure(new.master_key_id == active, "rewrapped under a key that is not active")
                ctx.tx.save_wrapped_key(member_id, new)
                ctx.effects.append(["member_key", member_id, new.master_key_id])
            return RewrapBatch(len(keys), keys[-1][0] if keys else after), ctx.head

        result = run_command(uow, clock, command, handler, RewrapBatch.from_json)
        total += result.count
        if result.count < REWRAP_BATCH_MAX:
            return total
        after = result.last_member_id
