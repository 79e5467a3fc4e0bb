"""MemberService end to end, on a real server over SQLite and PostgreSQL: onboarding with its
accounts, replays, refusals that change nothing, roles and council scope, KYC and connected
groups, paging, and erasure that leaves ledger and audit intact and personal data unreadable."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.type import date_pb2
from sqlalchemy import select, text

from bank.adapters import tables as t
from bank.adapters.member_crypto import MASTER_KEY_DIR, MasterKeyRing
from bank.app.audit import sign_checkpoint, verify_audit
from bank.app.check import check_ledger
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from tests.e2e.member_support import MemberClient, onboard_request
from tests.e2e.support import balance, get, open_accounts, post_ok, refused
from tests.helpers import account, error_info, field_violations, request_id, transfer

# Everything personal the tests onboard: none of it may ever be found in the database.
PLAINTEXT = ["Ada Lovelace", "Lovelace", "Fishergate", "ada@example.org", "1772 000000",
             "PR1 2HE", "prefers letters", "1990-05-17"]


@pytest.fixture
def members(channel: grpc.Channel) -> MemberClient:
    return MemberClient(channel)


@pytest.fixture
def as_member_role(channel: grpc.Channel) -> Any:
    return lambda role, scope="", subject="someone": MemberClient(
        channel, f"{subject};{role};{scope}")


def _db(engine: Any, include_audit: bool = True) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                for name, table in t.metadata.tables.items()
                if include_audit or name not in ("audit_log", "ledger_head")}


def _state(engine: Any) -> dict[str, list[Any]]:
    """Everything but the records of requests (a refused business request is recorded, and
    audited, as a refusal: it changes nothing else)."""
    return {k: v for k, v in _db(engine).items()
            if k not in ("audit_log", "ledger_head", "requests")}


def _audit_size(engine: Any) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(t.audit_log.c.idx)).all())


def _plaintext_found(engine: Any) -> list[str]:
    """Personal data in clear anywhere in the database: every column of every row of every
    table, text and bytes alike."""
    found = []
    for name, rows in _db(engine).items():
        for row in rows:
            for value in row:
                blob = (bytes(value).decode("utf-8", "replace")
                        if isinstance(value, bytes | memoryview) else str(value))
                found += [f"{name}: {p}" for p in PLAINTEXT if p.lower() in blob.lower()]
    return found


def test_onboarding_opens_the_member_with_a_share_and_a_deposit_account(engine, members,
                                                                         ledger):
    member = members.OnboardMember(onboard_request("m-ada"))
    assert member.name == "members/m-ada" and member.state == mpb.Member.STATE_ACTIVE
    assert member.council_area == "preston" and member.kyc_status == mpb.KYC_STATUS_PENDING
    assert member.legal_form == mpb.LEGAL_FORM_INDIVIDUAL and member.votes == 1
    assert member.personal_data_state == mpb.Member.PERSONAL_DATA_STATE_INCLUDED
    assert member.personal_data.display_name == "Ada Lovelace"
    assert member.personal_data.address.postcode == "PR1 2HE"
    assert member.personal_data.birth_date == date_pb2.Date(year=1990, month=5, day=17)
    assert (member.share_account, member.deposit_account) == ("accounts/m-ada-share",
                                                              "accounts/m-ada-deposit")
    share, deposit = get(ledger, "m-ada-share"), get(ledger, "m-ada-deposit")
    assert (share.type, share.code, share.owner_kind, share.owner_id) == (
        pb.ACCOUNT_TYPE_EQUITY, "3100", pb.OWNER_KIND_MEMBER, "m-ada")
    assert (deposit.type, deposit.code, deposit.owner_id) == (pb.ACCOUNT_TYPE_LIABILITY,
                                                              "2100", "m-ada")
    assert share.debits_must_not_exceed_credits and deposit.debits_must_not_exceed_credits
    assert balance(ledger, "m-ada-share") == 0 and balance(ledger, "m-ada-deposit") == 0
    assert _plaintext_found(engine) == []  # stored only encrypted, logged nowhere
    with engine.connect() as conn:
        leaf = conn.execute(select(t.audit_log.c.leaf).order_by(t.audit_log.c.idx.desc())
                            .limit(1)).scalar_one()
    assert b'"member","m-ada"' in bytes(leaf) and b'"account","m-ada-share"' in bytes(leaf)
    company = members.OnboardMember(onboard_request("m-coop", "COOPERATIVE", deposit=False,
                                                    name="Moor Lane Cycles", postcode="bb11 2dd"))
    assert company.council_area == "burnley" and company.deposit_account == ""
    assert not company.personal_data.HasField("birth_date")


def test_a_replay_returns_the_member_and_changes_nothing(engine, members):
    rid = request_id()
    first = members.OnboardMember(onboard_request("m-ada", rid=rid))
    before, audit_before = _db(engine), _audit_size(engine)
    assert members.OnboardMember(onboard_request("m-ada", rid=rid)) == first
    # The same member under a new request id: identical content is a success...
    assert members.OnboardMember(onboard_request("m-ada")) == first
    assert {k: v for k, v in before.items() if k not in ("audit_log", "ledger_head",
                                                         "requests")} == _state(engine)
    assert len(_db(engine)["requests"]) == len(before["requests"]) + 1
    assert _audit_size(engine) == audit_before + 1  # the new request is audited, nothing else
    # ...different content is MEMBER_ID_REUSED, and the same request id with it REQUEST_ID_REUSED.
    error = refused(lambda: members.OnboardMember(onboard_request("m-ada", name="Ada King")))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                                        "MEMBER_ID_REUSED")
    error = refused(lambda: members.OnboardMember(onboard_request("m-ada", rid=rid,
                                                                  name="Ada King")))
    assert error_info(error).reason == "REQUEST_ID_REUSED"
    assert _db(engine)["members"] == before["members"]


def _bad(**changes: Any) -> mpb.OnboardMemberRequest:
    request = onboard_request("m-bad")
    for path, value in changes.items():
        target: Any = request
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        if value is None:
            target.ClearField(leaf)
        elif isinstance(value, list):
            del getattr(target, leaf)[:]
            getattr(target, leaf).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)
    return request


BAD_INPUT = [
    ("request_id", _bad(request_id=""), "request_id"),
    ("member", _bad(member=None), "member"),
    ("member_id", _bad(**{"member.member_id": "has space"}), "member.member_id"),
    ("member_id length", _bad(**{"member.member_id": "m" * 49}), "member.member_id"),
    ("legal form", _bad(**{"member.legal_form": 0}), "member.legal_form"),
    ("output only", _bad(**{"member.council_area": "preston"}), "member.council_area"),
    ("output only kyc", _bad(**{"member.kyc_status": mpb.KYC_STATUS_VERIFIED}),
     "member.kyc_status"),
    ("personal data", _bad(**{"member.personal_data": None}), "member.personal_data"),
    ("name", _bad(**{"member.personal_data.display_name": "  "}),
     "member.personal_data.display_name"),
    ("name length", _bad(**{"member.personal_data.display_name": "x" * 201}),
     "member.personal_data.display_name"),
    ("no address", _bad(**{"member.personal_data.address": None}),
     "member.personal_data.address"),
    ("postcode", _bad(**{"member.personal_data.address.postcode": "PR1 2XXX"}),
     "member.personal_data.address.postcode"),
    ("lines", _bad(**{"member.personal_data.address.lines": ["a", "b", "c", "d", "e"]}),
     "member.personal_data.address.lines"),
    ("birth date missing", _bad(**{"member.personal_data.birth_date": None}),
     "member.personal_data.birth_date"),
    ("too young", _bad(**{"member.personal_data.birth_date": date_pb2.Date(
        year=2020, month=1, day=1)}), "member.personal_data.birth_date"),
    ("not a date", _bad(**{"member.personal_data.birth_date": date_pb2.Date(
        year=1990, month=2, day=30)}), "member.personal_data.birth_date"),
    ("company born", _bad(**{"member.legal_form": mpb.LEGAL_FORM_COMPANY}),
     "member.personal_data.birth_date"),
    ("email", _bad(**{"member.personal_data.email": "ada at example"}),
     "member.personal_data.email"),
    ("phone", _bad(**{"member.personal_data.phone": "ring me"}), "member.personal_data.phone"),
    ("notes", _bad(**{"member.personal_data.notes": "n" * 2001}), "member.personal_data.notes"),
    ("control", _bad(**{"member.personal_data.display_name": "Ada\x07"}),
     "member.personal_data.display_name"),
]


def test_bad_input_of_every_kind_is_refused_naming_the_field_and_changes_nothing(engine,
                                                                                 members):
    members.OnboardMember(onboard_request("m-ada"))
    before = _db(engine)
    for label, request, field in BAD_INPUT:
        error = refused(lambda request=request: members.OnboardMember(request))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, label
        assert field_violations(error)[0] == field, (label, field_violations(error))
        assert _db(engine) == before, label
    # Several broken rules are all reported, in field order.
    error = refused(lambda: members.OnboardMember(_bad(**{
        "member.member_id": "", "member.personal_data.display_name": "",
        "member.personal_data.address.postcode": "nowhere"})))
    assert field_violations(error) == ["member.member_id", "member.personal_data.display_name",
                                       "member.personal_data.address.postcode"]
    # Outside the region: a business refusal, naming only the postcode district.
    for postcode in ("PR8 1AA", "M1 1AE", "LA9 4AA"):
        error = refused(lambda p=postcode: members.OnboardMember(onboard_request(
            "m-out", postcode=p)))
        assert (error.code(), error_info(error).reason) == (
            grpc.StatusCode.FAILED_PRECONDITION, "OUTSIDE_REGION")
        assert error_info(error).metadata["postcode_district"] == postcode.split()[0]
        assert postcode not in error.details()
    assert _db(engine) == before


def test_an_account_id_taken_by_another_account_refuses_onboarding_whole(engine, members,
                                                                          ledger):
    open_accounts(ledger, account("m-x-share", owner=("MEMBER", "someone-else")))
    before = _state(engine)
    error = refused(lambda: members.OnboardMember(onboard_request("m-x")))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                                        "ACCOUNT_ID_REUSED")
    assert _state(engine) == before  # no member, no deposit account
    assert refused(lambda: members.GetMember(mpb.GetMemberRequest(
        name="members/m-x"))).code() is grpc.StatusCode.NOT_FOUND


def test_kyc_status_moves_only_along_allowed_transitions(engine, members):
    members.OnboardMember(onboard_request("m-ada"))

    def kyc(status: int) -> mpb.Member:
        return members.UpdateKycStatus(mpb.UpdateKycStatusRequest(
            request_id=request_id(), name="members/m-ada", kyc_status=status))

    assert kyc(mpb.KYC_STATUS_VERIFIED).kyc_status == mpb.KYC_STATUS_VERIFIED
    before = _state(engine)
    error = refused(lambda: kyc(mpb.KYC_STATUS_PENDING))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                        "KYC_TRANSITION_NOT_ALLOWED")
    assert field_violations(refused(lambda: kyc(0))) == ["kyc_status"]
    assert _state(engine) == before
    assert kyc(mpb.KYC_STATUS_EXPIRED).kyc_status == mpb.KYC_STATUS_EXPIRED
    assert refused(lambda: members.UpdateKycStatus(mpb.UpdateKycStatusRequest(
        request_id=request_id(), name="members/nobody",
        kyc_status=mpb.KYC_STATUS_VERIFIED))).code() is grpc.StatusCode.NOT_FOUND


def test_connected_groups_gather_members_and_can_be_left(members, as_member_role):
    officer = as_member_role("loan_officer", "branch:preston")
    for member_id in ("m-1", "m-2", "m-3"):
        members.OnboardMember(onboard_request(member_id, "COMPANY", name=f"Firm {member_id}"))
    for member_id in ("m-1", "m-2"):
        joined = officer.SetConnectedGroup(mpb.SetConnectedGroupRequest(
            request_id=request_id(), name=f"members/{member_id}",
            connected_group="connectedGroups/patel-family"))
        assert joined.connected_group == "connectedGroups/patel-family"
    group = officer.ListMembers(mpb.ListMembersRequest(
        connected_group="connectedGroups/patel-family"))
    assert [m.member_id for m in group.members] == ["m-1", "m-2"]
    left = officer.SetConnectedGroup(mpb.SetConnectedGroupRequest(
        request_id=request_id(), name="members/m-1", connected_group=""))
    assert left.connected_group == ""
    assert [m.member_id for m in officer.ListMembers(mpb.ListMembersRequest(
        connected_group="connectedGroups/patel-family")).members] == ["m-2"]
    error = refused(lambda: officer.SetConnectedGroup(mpb.SetConnectedGroupRequest(
        request_id=request_id(), name="members/m-3", connected_group="groups/x")))
    assert field_violations(error) == ["connected_group"]


def test_lists_page_by_token_bound_to_their_filters(members):
    postcodes = ["PR1 1AA", "LA1 1AA", "PR2 2AA", "FY1 1AA", "PR7 1DP", "BB1 7DJ"]
    for i, postcode in enumerate(postcodes):
        members.OnboardMember(onboard_request(f"m-{i}", "CHARITY", postcode=postcode))
    seen, token = [], ""
    while True:
        page = members.ListMembers(mpb.ListMembersRequest(page_size=2, page_token=token))
        assert len(page.members) <= 2
        assert all(m.personal_data_state == mpb.Member.PERSONAL_DATA_STATE_NOT_REQUESTED
                   and not m.HasField("personal_data") for m in page.members)
        seen += [m.member_id for m in page.members]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"m-{i}" for i in range(6)]
    preston = members.ListMembers(mpb.ListMembersRequest(council_area="preston", page_size=1,
                                                         view=mpb.MEMBER_VIEW_FULL))
    assert [m.member_id for m in preston.members] == ["m-0"]
    assert preston.members[0].personal_data.address.postcode == "PR1 1AA"
    error = refused(lambda: members.ListMembers(mpb.ListMembersRequest(
        council_area="lancaster", page_token=preston.next_page_token)))
    assert field_violations(error) == ["page_token"]
    for bad, field in [({"page_size": -1}, "page_size"), ({"council_area": "manchester"},
                       "council_area"), ({"kyc_status": 99}, "kyc_status"),
                       ({"view": 7}, "view")]:
        assert field_violations(refused(lambda bad=bad: members.ListMembers(
            mpb.ListMembersRequest(**bad)))) == [field]


def test_roles_and_council_scope_decide_who_sees_what(engine, members, as_member_role):
    members.OnboardMember(onboard_request("m-pr"))
    members.OnboardMember(onboard_request("m-la", postcode="LA1 1AA"))
    before = _db(engine, include_audit=False)
    # Who may not onboard: every role but tellers and loan officers.
    for role, scope in [("regulator", ""), ("auditor", ""), ("council", "council:preston"),
                        ("operator", ""), ("approver", "branch:preston")]:
        error = refused(lambda r=role, s=scope: as_member_role(r, s).OnboardMember(
            onboard_request("m-new")))
        assert (error.code(), error_info(error).reason) == (
            grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED"), role
    teller_erase = refused(lambda: members.EraseMember(mpb.EraseMemberRequest(
        request_id=request_id(), name="members/m-pr")))
    assert teller_erase.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _db(engine, include_audit=False) == before
    # Readers outside branch staff get members without personal data.
    for role in ("regulator", "auditor", "operator"):
        seen = as_member_role(role).GetMember(mpb.GetMemberRequest(name="members/m-pr"))
        assert seen.personal_data_state == mpb.Member.PERSONAL_DATA_STATE_WITHHELD, role
        assert not seen.HasField("personal_data") and seen.council_area == "preston"
    # A council sees only members of its own area, and never learns whether others exist.
    preston = as_member_role("council", "council:preston")
    own = preston.GetMember(mpb.GetMemberRequest(name="members/m-pr"))
    assert own.personal_data_state == mpb.Member.PERSONAL_DATA_STATE_WITHHELD
    assert [m.member_id for m in preston.ListMembers(mpb.ListMembersRequest(
        council_area="preston")).members] == ["m-pr"]
    for request, call in [(mpb.GetMemberRequest(name="members/m-la"), "GetMember"),
                          (mpb.GetMemberRequest(name="members/nobody"), "GetMember"),
                          (mpb.ListMembersRequest(council_area="lancaster"), "ListMembers"),
                          (mpb.ListMembersRequest(), "ListMembers")]:
        error = refused(lambda r=request, c=call: getattr(preston, c)(r))
        assert (error.code(), error_info(error).reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                            "OUT_OF_SCOPE"), request
    lancaster = as_member_role("council", "council:lancaster")
    assert lancaster.GetMember(mpb.GetMemberRequest(name="members/m-la")).member_id == "m-la"


def _approvals(channel: grpc.Channel, principal: str) -> Any:
    stub = apb_grpc.ApprovalServiceStub(channel)

    def call(method: str, request: Any) -> Any:
        return getattr(stub, method)(request, timeout=15,
                                     metadata=[("x-bank-principal", principal)])

    return call


def test_erasure_keeps_ledger_and_audit_intact_and_makes_personal_data_unreadable(
        engine, uow, clock, keys, channel, members, ledger, as_member_role):
    """The issue's acceptance test: after erasing a member the ledger balances, the audit log
    verifies, and the personal data is unreadable, through the API and in the database."""
    members.OnboardMember(onboard_request("m-ada"))
    members.OnboardMember(onboard_request("m-bob", name="Bob Other", postcode="LA1 1AA"))
    open_accounts(ledger, account("cash", "ASSET", owner=("BANK", "bank")))
    # The member pays in, buys the one share, later has it refunded and withdraws everything.
    post_ok(ledger, transfer("in", "cash", "m-ada-deposit", 10_000))
    post_ok(ledger, transfer("share", "m-ada-deposit", "m-ada-share", 100))
    maker = as_member_role("approver", "branch:preston", subject="amy")
    error = refused(lambda: maker.EraseMember(mpb.EraseMemberRequest(
        request_id=request_id(), name="members/m-ada")))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                        "MEMBER_HAS_BALANCES")
    post_ok(ledger, transfer("refund", "m-ada-share", "m-ada-deposit", 100))
    post_ok(ledger, transfer("out", "m-ada-deposit", "cash", 10_000))
    with engine.connect() as conn:
        ciphertext = bytes(conn.execute(select(t.members.c.personal_data).where(
            t.members.c.member_id == "m-ada")).scalar_one())

    # Maker-checker: the erasure waits for a second approver; the maker cannot approve it.
    asked = maker.EraseMember(mpb.EraseMemberRequest(request_id=request_id(),
                                                     name="members/m-ada"))
    assert asked.approval.startswith("approvals/") and asked.member.state == \
        mpb.Member.STATE_ACTIVE
    assert members.GetMember(mpb.GetMemberRequest(name="members/m-ada")).personal_data \
        .display_name == "Ada Lovelace"
    own = refused(lambda: _approvals(channel, "amy;approver;branch:preston")(
        "ApproveOperation", apb.ApproveOperationRequest(request_id=request_id(),
                                                        name=asked.approval)))
    assert error_info(own).reason == "SELF_APPROVAL"
    approved = _approvals(channel, "abe;approver;branch:lancaster")(
        "ApproveOperation", apb.ApproveOperationRequest(request_id=request_id(),
                                                        name=asked.approval))
    assert approved.state == apb.Approval.STATE_EXECUTED and approved.operation == "EraseMember"

    # Through the API: the public record stays, the personal data is gone.
    erased = members.GetMember(mpb.GetMemberRequest(name="members/m-ada"))
    assert erased.state == mpb.Member.STATE_ERASED and erased.HasField("erase_time")
    assert erased.personal_data_state == mpb.Member.PERSONAL_DATA_STATE_ERASED
    assert not erased.HasField("personal_data") and erased.votes == 0
    assert (erased.legal_form, erased.council_area, erased.share_account) == (
        mpb.LEGAL_FORM_INDIVIDUAL, "preston", "accounts/m-ada-share")
    listed = members.ListMembers(mpb.ListMembersRequest(view=mpb.MEMBER_VIEW_FULL)).members
    assert [(m.member_id, m.personal_data_state) for m in listed] == [
        ("m-ada", mpb.Member.PERSONAL_DATA_STATE_ERASED),
        ("m-bob", mpb.Member.PERSONAL_DATA_STATE_INCLUDED)]
    assert listed[1].personal_data.display_name == "Bob Other"  # others are untouched
    for call in (lambda: members.UpdateKycStatus(mpb.UpdateKycStatusRequest(
                     request_id=request_id(), name="members/m-ada",
                     kyc_status=mpb.KYC_STATUS_VERIFIED)),
                 lambda: maker.EraseMember(mpb.EraseMemberRequest(
                     request_id=request_id(), name="members/m-ada"))):
        error = refused(call)
        assert (error.code(), error_info(error).reason) == (
            grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_ERASED")
    # An identical onboarding under a new request id cannot bring the member back.
    assert error_info(refused(lambda: members.OnboardMember(onboard_request(
        "m-ada")))).reason == "MEMBER_ID_REUSED"

    # The ledger is balanced and consistent, its history intact; the audit log verifies.
    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    assert [(x.debits_posted, x.credits_posted) for x in trial.totals] == [
        (x.credits_posted, x.debits_posted) for x in trial.totals]
    assert len(ledger.ListAccountEntries(pb.ListAccountEntriesRequest(
        account="accounts/m-ada-deposit")).entries) == 4
    assert check_ledger(uow).ok
    sign_checkpoint(uow, clock, keys.ensure())
    report = verify_audit(uow, keys.verifiers())
    assert report.ok, report.problems
    assert report.checkpoints == 1 and report.entries == 4

    # In the database: the wrapped data key is gone, the ciphertext stays and opens with no
    # key the bank still holds; no personal data in clear anywhere (audit log included).
    with engine.connect() as conn:
        key_row = conn.execute(select(t.member_keys).where(
            t.member_keys.c.member_id == "m-ada")).one()
        stored = bytes(conn.execute(select(t.members.c.personal_data).where(
            t.members.c.member_id == "m-ada")).scalar_one())
        approval_payload = conn.execute(select(t.approvals.c.payload_json)).scalar_one()
    assert key_row.wrapped_key is None and key_row.destroyed_ns is not None
    assert stored == ciphertext
    assert approval_payload == '{"member_id":"m-ada"}'
    ring = MasterKeyRing(keys.root / MASTER_KEY_DIR)
    nonce, body = stored[1:13], stored[13:]
    for key_id in ring.key_ids():
        with pytest.raises(InvalidTag):
            AESGCM(ring.key(key_id)).decrypt(nonce, body, None)
    assert [p for p in _plaintext_found(engine) if "Bob" not in p] == []


def test_the_database_keeps_a_destroyed_key_destroyed_and_an_erased_member_unchanged(
        engine, members, channel, as_member_role):
    members.OnboardMember(onboard_request("m-ada"))
    # Before erasure: a member cannot be marked erased while its data key lives.
    with engine.connect() as conn, pytest.raises(Exception, match="member"):
        conn.execute(text("UPDATE members SET erased_ns = updated_ns "
                          "WHERE member_id = 'm-ada'"))
    asked = as_member_role("operator").EraseMember(mpb.EraseMemberRequest(
        request_id=request_id(), name="members/m-ada"))
    _approvals(channel, "abe;approver;branch:preston")(
        "ApproveOperation", apb.ApproveOperationRequest(request_id=request_id(),
                                                        name=asked.approval))
    for statement in ("UPDATE member_keys SET wrapped_key = X'00', destroyed_ns = NULL",
                      "UPDATE members SET erased_ns = NULL",
                      "UPDATE members SET kyc_status = 'verified'",
                      "UPDATE members SET council_area = 'lancaster'",
                      "DELETE FROM member_keys", "DELETE FROM members"):
        if engine.dialect.name == "postgresql":
            statement = statement.replace("X'00'", "'\\x00'::bytea")
        with engine.connect() as conn, pytest.raises(Exception, match=r"member|destroyed"):
            conn.execute(text(statement + " WHERE member_id = 'm-ada'"))
