"""Who may call what: the one policy table, and the scope rules for council integrations.

Every RPC is checked here by the auth interceptor before its handler runs; a method missing
from `POLICY` is refused for everyone. A role listed in `Rule.scoped` may call the method only
on resources inside its scope: a council integration (scope `council:<name>`) sees only the
accounts whose owner id is its scope, and transfers touching them. Refusals never reveal whether
an out-of-scope resource exists.

                                  teller  loan    approver council regulator auditor operator
                                          officer
CreateAccounts, CreateTransfers   yes     yes
CloseAccount                      yes
GetAccount, ListAccountEntries,   yes     yes     yes      own     yes       yes     yes
  GetAccountBalance, GetTransfer
ListAccounts                      yes     yes     yes      own**   yes       yes     yes
GetTrialBalance                   yes     yes     yes              yes       yes     yes
WatchEntries                      yes                              yes       yes     yes
ListApprovals, GetApproval        yes     yes     yes              yes       yes
ApproveOperation, RejectOperation                 yes***
GetCheckpoint                                                      yes       yes     yes
ExportBundle                                                       yes       yes
OnboardMember, UpdateKycStatus    yes     yes
GetMember                         yes     yes     yes      own     yes       yes     yes
ListMembers                       yes     yes     yes      own**** yes       yes     yes
SetConnectedGroup                         yes     yes
EraseMember                                       yes*****                           yes*****
CreatePool, ClosePeriod******                     yes
GetPool                           yes     yes     yes      own+    yes       yes     yes
CommitCapital, CallCapital,       yes     yes
  Subscribe, Redeem, Distribute,
  PayServicingFee
RecordLoanEvent                           yes
ListPositions                     yes     yes     yes      own**   yes       yes     yes
GetStatement, ExportStatement     yes     yes     yes      own     yes       yes     yes
WatchCouncilEntries               yes                      own     yes       yes     yes
CreateProduct                             yes     yes
GetProduct, GetLoan, ListLoans,   yes     yes     yes               yes       yes     yes
  GetPayoffQuote
ApplyForLoan, DisburseLoan,       yes     yes
  RecordRepayment, RecordRecovery
DecideLoan, ChargeOffLoan                         yes+++
RescheduleLoan                            yes     yes
WriteOffLoan,                             yes     yes++++
  TransferParticipation
ListParticipationLines            yes     yes     yes               yes       yes     yes
RunCloseOfBusiness                                                                   yes
GetBusinessDate                   yes     yes     yes      yes     yes       yes     yes
GetLoanBookReport,                yes     yes     yes      own**** yes       yes     yes
  GetArrearsReport, GetProvisionReport, GetSocialValueReport

*  own: only resources of the council named by the certificate's scope.
** a council must filter ListAccounts by its own owner_id.
*** never the maker of the operation (checked in the use case: `bank.app.approvals`).
**** a council must filter ListMembers by its own council area (`council:<area>` scope).
***** makes an approval: a second approver (never the maker) approves the erasure itself.
+++ DecideLoan: never the principal who made the application (`bank.app.loans`).
++++ makes an approval: a second approver (never the maker) runs the write-off or the
     participation transfer.
****** ClosePeriod makes an approval: a second approver (never the maker) runs the close.
+ a council may read the pools it takes part in; ListPositions, GetStatement, ExportStatement
  and WatchCouncilEntries only for itself (participant / council = its own council area).

Members' personal data is decrypted only for `PERSONAL_DATA_READERS` (branch staff); every other
role allowed to read a member gets it without (`personal_data_state` WITHHELD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from bank.domain.errors import PermissionDenied
from bank.domain.identity import Principal, Role
from bank.domain.postcodes import council_scope

LEDGER = "/peoplesbank.ledger.v1.LedgerService/"
APPROVALS = "/peoplesbank.approvals.v1.ApprovalService/"
AUDIT = "/peoplesbank.audit.v1.AuditService/"
MEMBERS = "/peoplesbank.members.v1.MemberService/"
LOANS = "/peoplesbank.lending.v1.LoanService/"
POOLS = "/peoplesbank.pools.v1.PoolService/"


class Directory(Protocol):
    """What scope checks may look up (read-only)."""

    def account_owners(self, account_ids: Iterable[str]) -> dict[str, str]: ...

    def transfer_accounts(self, transfer_id: str) -> set[str]: ...

    def member_council_areas(self, member_ids: list[str]) -> dict[str, str]: ...

    def pool_participants(self, pool_id: str) -> set[str]: ...


ScopeRule = Callable[[Principal, Any, Directory], bool]


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]
    # Roles allowed only within their scope, each with the rule that decides it.
    scoped: tuple[tuple[Role, ScopeRule], ...] = ()

    def allows(self, principal: Principal, request: Any, directory: Directory) -> bool:
        if principal.role in self.roles:
            return True
        for role, rule in self.scoped:
            if principal.role is role:
                return bool(principal.scope) and rule(principal, request, directory)
        return False


def _account_id(name: str) -> str:
    return name.removeprefix("accounts/")


def _owns(principal: Principal, account_ids: Iterable[str], directory: Directory) -> bool:
    ids = set(account_ids)
    owners = directory.account_owners(ids)
    return bool(ids) and all(owners.get(i) == principal.scope for i in ids)


def own_account_by_name(principal: Principal, request: Any, directory: Directory) -> bool:
    return _owns(principal, [_account_id(request.name)], directory)


def own_account_by_account(principal: Principal, request: Any, directory: Directory) -> bool:
    return _owns(principal, [_account_id(request.account)], directory)


def own_owner_filter(principal: Principal, request: Any, directory: Directory) -> bool:
    return bool(request.owner_id == principal.scope)


def touches_own_account(principal: Principal, request: Any, directory: Directory) -> bool:
    accounts = directory.transfer_accounts(request.name.removeprefix("transfers/"))
    owners = directory.account_owners(accounts)
    return any(owner == principal.scope for owner in owners.values())


def own_member_by_name(principal: Principal, request: Any, directory: Directory) -> bool:
    member_id = request.name.removeprefix("members/")
    area = directory.member_council_areas([member_id]).get(member_id)
    return area is not None and council_scope(area) == principal.scope


def own_council_area_filter(principal: Principal, request: Any, directory: Directory) -> bool:
    return bool(request.council_area) and council_scope(request.council_area) == principal.scope


def _council_area(principal: Principal) -> str:
    return principal.scope.removeprefix("council:") if principal.scope.startswith(
        "council:") else ""


def own_pool_by_name(principal: Principal, request: Any, directory: Directory) -> bool:
    pool_id = request.name.removeprefix("pools/")
    area = _council_area(principal)
    return bool(area) and area in directory.pool_participants(pool_id)


def own_participant_filter(principal: Principal, request: Any, directory: Directory) -> bool:
    return bool(request.participant) and council_scope(request.participant) == principal.scope


def own_statement_by_name(principal: Principal, request: Any, directory: Directory) -> bool:
    participant = request.name.rsplit("/statements/", 1)[-1] if "/statements/" in (
        request.name) else ""
    return bool(participant) and council_scope(participant) == principal.scope


def own_council_feed(principal: Principal, request: Any, directory: Directory) -> bool:
    area = request.council.removeprefix("councils/")
    return request.council.startswith("councils/") and council_scope(area) == principal.scope


STAFF_READERS = frozenset({Role.TELLER, Role.LOAN_OFFICER, Role.APPROVER, Role.REGULATOR,
                           Role.AUDITOR, Role.OPERATOR})
MONEY_MOVERS = frozenset({Role.TELLER, Role.LOAN_OFFICER})
COUNCIL = Role.COUNCIL
PERSONAL_DATA_READERS = frozenset({Role.TELLER, Role.LOAN_OFFICER, Role.APPROVER})

POLICY: dict[str, Rule] = {
    LEDGER + "CreateAccounts": Rule(MONEY_MOVERS),
    LEDGER + "CloseAccount": Rule(frozenset({Role.TELLER})),
    LEDGER + "CreateTransfers": Rule(MONEY_MOVERS),
    LEDGER + "GetAccount": Rule(STAFF_READERS, ((COUNCIL, own_account_by_name),)),
    LEDGER + "ListAccounts": Rule(STAFF_READERS, ((COUNCIL, own_owner_filter),)),
    LEDGER + "GetTransfer": Rule(STAFF_READERS, ((COUNCIL, touches_own_account),)),
    LEDGER + "ListAccountEntries": Rule(STAFF_READERS, ((COUNCIL, own_account_by_account),)),
    LEDGER + "GetAccountBalance": Rule(STAFF_READERS, ((COUNCIL, own_account_by_account),)),
    LEDGER + "GetTrialBalance": Rule(STAFF_READERS),
    LEDGER + "WatchEntries": Rule(frozenset({Role.TELLER, Role.REGULATOR, Role.AUDITOR,
                                             Role.OPERATOR})),
    APPROVALS + "ListApprovals": Rule(frozenset({Role.TELLER, Role.LOAN_OFFICER, Role.APPROVER,
                                                 Role.REGULATOR, Role.AUDITOR})),
    APPROVALS + "GetApproval": Rule(frozenset({Role.TELLER, Role.LOAN_OFFICER, Role.APPROVER,
                                               Role.REGULATOR, Role.AUDITOR})),
    APPROVALS + "ApproveOperation": Rule(frozenset({Role.APPROVER})),
    AUDIT + "GetCheckpoint": Rule(frozenset({Role.REGULATOR, Role.AUDITOR, Role.OPERATOR})),
    AUDIT + "ExportBundle": Rule(frozenset({Role.REGULATOR, Role.AUDITOR})),
    APPROVALS + "RejectOperation": Rule(frozenset({Role.APPROVER})),
    MEMBERS + "OnboardMember": Rule(MONEY_MOVERS),
    MEMBERS + "GetMember": Rule(STAFF_READERS, ((COUNCIL, own_member_by_name),)),
    MEMBERS + "ListMembers": Rule(STAFF_READERS, ((COUNCIL, own_council_area_filter),)),
    MEMBERS + "UpdateKycStatus": Rule(MONEY_MOVERS),
    MEMBERS + "SetConnectedGroup": Rule(frozenset({Role.LOAN_OFFICER, Role.APPROVER})),
    MEMBERS + "EraseMember": Rule(frozenset({Role.APPROVER, Role.OPERATOR})),
    LOANS + "CreateProduct": Rule(frozenset({Role.LOAN_OFFICER, Role.APPROVER})),
    LOANS + "GetProduct": Rule(STAFF_READERS),
    LOANS + "ApplyForLoan": Rule(MONEY_MOVERS),
    LOANS + "DecideLoan": Rule(frozenset({Role.APPROVER})),
    LOANS + "DisburseLoan": Rule(MONEY_MOVERS),
    LOANS + "RecordRepayment": Rule(MONEY_MOVERS),
    LOANS + "GetLoan": Rule(STAFF_READERS),
    LOANS + "ListLoans": Rule(STAFF_READERS),
    LOANS + "GetPayoffQuote": Rule(STAFF_READERS),
    LOANS + "RescheduleLoan": Rule(frozenset({Role.LOAN_OFFICER, Role.APPROVER})),
    LOANS + "ChargeOffLoan": Rule(frozenset({Role.APPROVER})),
    LOANS + "WriteOffLoan": Rule(frozenset({Role.LOAN_OFFICER, Role.APPROVER})),
    LOANS + "RecordRecovery": Rule(MONEY_MOVERS),
    LOANS + "TransferParticipation": Rule(frozenset({Role.LOAN_OFFICER, Role.APPROVER})),
    LOANS + "ListParticipationLines": Rule(STAFF_READERS),
    LOANS + "RunCloseOfBusiness": Rule(frozenset({Role.OPERATOR})),
    LOANS + "GetBusinessDate": Rule(STAFF_READERS | {COUNCIL}),
    LOANS + "GetLoanBookReport": Rule(STAFF_READERS, ((COUNCIL, own_council_area_filter),)),
    LOANS + "GetArrearsReport": Rule(STAFF_READERS, ((COUNCIL, own_council_area_filter),)),
    LOANS + "GetProvisionReport": Rule(STAFF_READERS, ((COUNCIL, own_council_area_filter),)),
    LOANS + "GetSocialValueReport": Rule(STAFF_READERS, ((COUNCIL, own_council_area_filter),)),
    POOLS + "CreatePool": Rule(frozenset({Role.APPROVER})),
    POOLS + "GetPool": Rule(STAFF_READERS, ((COUNCIL, own_pool_by_name),)),
    POOLS + "CommitCapital": Rule(MONEY_MOVERS),
    POOLS + "CallCapital": Rule(MONEY_MOVERS),
    POOLS + "Subscribe": Rule(MONEY_MOVERS),
    POOLS + "Redeem": Rule(MONEY_MOVERS),
    POOLS + "Distribute": Rule(MONEY_MOVERS),
    POOLS + "PayServicingFee": Rule(MONEY_MOVERS),
    POOLS + "RecordLoanEvent": Rule(frozenset({Role.LOAN_OFFICER})),
    POOLS + "ClosePeriod": Rule(frozenset({Role.APPROVER})),
    POOLS + "ListPositions": Rule(STAFF_READERS, ((COUNCIL, own_participant_filter),)),
    POOLS + "GetStatement": Rule(STAFF_READERS, ((COUNCIL, own_statement_by_name),)),
    POOLS + "ExportStatement": Rule(STAFF_READERS, ((COUNCIL, own_statement_by_name),)),
    POOLS + "WatchCouncilEntries": Rule(frozenset({Role.TELLER, Role.REGULATOR, Role.AUDITOR,
                                                   Role.OPERATOR}),
                                        ((COUNCIL, own_council_feed),)),
}


def authorise(method: str, principal: Principal, request: Any, directory: Directory) -> None:
    """Raise `PermissionDenied` unless the policy lets `principal` make this call."""
    rule = POLICY.get(method)
    if rule is None or not rule.allows(principal, request, directory):
        short = method.rsplit("/", 1)[-1]
        in_scope = rule is not None and any(principal.role is r for r, _ in rule.scoped)
        raise PermissionDenied(
            "OUT_OF_SCOPE" if in_scope else "ROLE_NOT_ALLOWED",
            f"{principal.role.value} {principal.subject!r} may not call {short}"
            + (f" outside its scope {principal.scope!r}" if in_scope else ""),
            metadata={"role": principal.role.value, "method": short})
