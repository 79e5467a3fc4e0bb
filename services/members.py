"""MemberService: protos in, use cases called, protos out. No rules live here.

Every field is validated at the edge (all broken rules of a request reported together, named
by their path); the member rules themselves are `bank.domain.members`. Personal data is
decrypted only for roles in `services.policy.PERSONAL_DATA_READERS`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import grpc
from google.type import date_pb2

from bank.adapters.keys import KeyRing
from bank.adapters.member_crypto import MASTER_KEY_DIR, EnvelopeCipher, MasterKeyRing
from bank.app import members as cases
from bank.app.members import Application, MemberView, PersonalDataState
from bank.app.ports import Clock, MemberCipher, MemberFilter, UnitOfWork
from bank.domain.errors import ViolationCollector
from bank.domain.members import (
    KycStatus,
    LegalForm,
    PersonalData,
    is_group_id,
    is_member_id,
    validate_personal_data,
)
from bank.domain.postcodes import COUNCIL_AREAS
from services import convert as cv
from services.auth import current_principal
from services.errors import guarded
from services.generated.peoplesbank.members.v1 import member_service_pb2 as pb
from services.generated.peoplesbank.members.v1 import member_service_pb2_grpc as pb_grpc
from services.ledger import remaining
from services.policy import PERSONAL_DATA_READERS

DEFAULT_KEYS_DIR = "var/keys"
GROUPS = "connectedGroups"

LEGAL_FORMS = {LegalForm.INDIVIDUAL: pb.LEGAL_FORM_INDIVIDUAL,
               LegalForm.SOLE_TRADER: pb.LEGAL_FORM_SOLE_TRADER,
               LegalForm.PARTNERSHIP: pb.LEGAL_FORM_PARTNERSHIP,
               LegalForm.COMPANY: pb.LEGAL_FORM_COMPANY,
               LegalForm.COOPERATIVE: pb.LEGAL_FORM_COOPERATIVE,
               LegalForm.COMMUNITY_BENEFIT_SOCIETY: pb.LEGAL_FORM_COMMUNITY_BENEFIT_SOCIETY,
               LegalForm.CIC: pb.LEGAL_FORM_CIC, LegalForm.CHARITY: pb.LEGAL_FORM_CHARITY,
               LegalForm.COUNCIL: pb.LEGAL_FORM_COUNCIL}
KYC = {KycStatus.PENDING: pb.KYC_STATUS_PENDING, KycStatus.VERIFIED: pb.KYC_STATUS_VERIFIED,
       KycStatus.REJECTED: pb.KYC_STATUS_REJECTED, KycStatus.EXPIRED: pb.KYC_STATUS_EXPIRED}
STATES = {PersonalDataState.INCLUDED: pb.Member.PERSONAL_DATA_STATE_INCLUDED,
          PersonalDataState.NOT_REQUESTED: pb.Member.PERSONAL_DATA_STATE_NOT_REQUESTED,
          PersonalDataState.WITHHELD: pb.Member.PERSONAL_DATA_STATE_WITHHELD,
          PersonalDataState.ERASED: pb.Member.PERSONAL_DATA_STATE_ERASED}
_LEGAL_FORM_IN = {v: k for k, v in LEGAL_FORMS.items()}
_KYC_IN = {v: k for k, v in KYC.items()}
_OUTPUT_ONLY = ("name", "personal_data_state", "council_area", "kyc_status", "connected_group",
                "state", "share_account", "deposit_account", "votes", "create_time",
                "update_time", "erase_time")
_FORMS_TEXT = ", ".join(f.name for f in LegalForm)
# PersonalData's fields in proto order (violations are reported in this order).
_PERSONAL_ORDER = ["display_name", "birth_date", "address", "email", "phone", "notes"]


def member_cipher(keys: KeyRing | None) -> EnvelopeCipher:
    """The cipher over the member master keys, kept beside the checkpoint keys
    (`<keys_dir>/member-master`); created on first use on a fresh machine."""
    root = keys.root if keys is not None else Path(DEFAULT_KEYS_DIR)
    return EnvelopeCipher(MasterKeyRing(root / MASTER_KEY_DIR))


# -- in -------------------------------------------------------------------------------------------
def _birth_date(d: date_pb2.Date, field: str, v: ViolationCollector) -> date | None:
    try:
        return date(d.year, d.month, d.day)
    except ValueError:
        v.add(field, "must be a full, valid calendar date (year, month and day)")
        return None


def application_in(request: pb.OnboardMemberRequest, v: ViolationCollector,
                   today: date) -> Application | None:
    """The validated application, or None (with violations added)."""
    before = len(v.violations)
    if not request.HasField("member"):
        v.add("member", "is required")
        return None
    m, path = request.member, "member"
    if not m.member_id:
        v.add(f"{path}.member_id", "is required")
    elif not is_member_id(m.member_id):
        v.add(f"{path}.member_id", "must be 1-48 characters of [A-Za-z0-9_.-], starting with "
              "a letter or digit")
    form = _LEGAL_FORM_IN.get(m.legal_form)
    if form is None:
        v.add(f"{path}.legal_form", f"is required: one of {_FORMS_TEXT}")
    present = {descriptor.name for descriptor, _ in m.ListFields()}
    for name in _OUTPUT_ONLY:
        if name in present:
            v.add(f"{path}.{name}", "is output only and must not be set")
    if not m.HasField("personal_data"):
        v.add(f"{path}.personal_data", "is required")
        return None
    p, pp = m.personal_data, f"{path}.personal_data"
    w = ViolationCollector()  # the personal data's own violations, put in field order below
    birth = _birth_date(p.birth_date, f"{pp}.birth_date", w) if p.HasField("birth_date") else None
    if not p.HasField("address"):
        w.add(f"{pp}.address", "is required (at least the postcode)")
    data = PersonalData(p.display_name, p.address.postcode, tuple(p.address.lines),
                        p.address.locality, birth, p.email, p.phone, p.notes)
    if form is not None:
        calendar = list(w.violations)
        data = validate_personal_data(form, data, today, pp, w)
        if p.HasField("birth_date") and birth is None:  # keep only "not a calendar date"
            w.violations = calendar + [x for x in w.violations[len(calendar):]
                                       if x.field != f"{pp}.birth_date"]
    v.violations += sorted(w.violations, key=lambda x: _PERSONAL_ORDER.index(
        x.field.removeprefix(pp + ".").split(".")[0].split("[")[0]))
    if len(v.violations) > before or form is None:
        return None
    return Application(m.member_id, form, data, request.open_deposit_account)


def _view_wanted(view: int, default_full: bool) -> bool:
    if view == pb.MEMBER_VIEW_UNSPECIFIED:
        return default_full
    return bool(view == pb.MEMBER_VIEW_FULL)


def _check_view(view: int, v: ViolationCollector) -> None:
    if view not in (pb.MEMBER_VIEW_UNSPECIFIED, pb.MEMBER_VIEW_BASIC, pb.MEMBER_VIEW_FULL):
        v.add("view", "must be BASIC or FULL")


def _member_name(value: str, field: str, v: ViolationCollector) -> str:
    member_id = cv.parse_name(value, "members", field, v)
    if member_id and not is_member_id(member_id):
        v.add(field, "must be members/{member_id} with a member id of 1-48 characters of "
              "[A-Za-z0-9_.-]")
        return ""
    return member_id


def _group_name(value: str, field: str, v: ViolationCollector) -> str:
    group_id = value.removeprefix(f"{GROUPS}/")
    if not value.startswith(f"{GROUPS}/") or not is_group_id(group_id):
        v.add(field, f"must be {GROUPS}/{{group_id}} with a group id of 1-64 characters of "
              "[A-Za-z0-9_.-]")
        return ""
    return group_id


# -- out ------------------------------------------------------------------------------------------
def _date_out(d: date) -> date_pb2.Date:
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


def _personal_out(p: PersonalData) -> pb.PersonalData:
    message = pb.PersonalData(
        display_name=p.display_name, email=p.email, phone=p.phone, notes=p.notes,
        address=pb.Address(lines=list(p.address_lines), locality=p.locality,
                           postcode=p.postcode))
    if p.birth_date is not None:
        message.birth_date.CopyFrom(_date_out(p.birth_date))
    return message


def member_out(view: MemberView) -> pb.Member:
    m = view.member
    message = pb.Member(
        name=f"members/{m.member_id}", member_id=m.member_id, legal_form=LEGAL_FORMS[m.legal_form],
        personal_data_state=STATES[view.personal_state], council_area=m.council_area,
        kyc_status=KYC[m.kyc_status],
        connected_group=f"{GROUPS}/{m.connected_group}" if m.connected_group else "",
        state=pb.Member.STATE_ERASED if m.erased else pb.Member.STATE_ACTIVE,
        share_account=f"accounts/{m.share_account_id}",
        deposit_account=f"accounts/{m.deposit_account_id}" if m.deposit_account_id else "",
        votes=m.votes, create_time=cv.timestamp_out(m.created_ns),
        update_time=cv.timestamp_out(m.updated_ns))
    if view.personal is not None:
        message.personal_data.CopyFrom(_personal_out(view.personal))
    if m.erased_ns is not None:
        message.erase_time.CopyFrom(cv.timestamp_out(m.erased_ns))
    return message


def _may_read_personal_data() -> bool:
    return current_principal().role in PERSONAL_DATA_READERS


class MemberServicer(pb_grpc.MemberServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock, cipher: MemberCipher) -> None:
        self.uow = uow
        self.clock = clock
        self.cipher = cipher

    def _get(self, member_id: str, wanted: bool = True) -> pb.Member:
        return member_out(cases.get_member(self.uow, self.cipher, member_id, wanted=wanted,
                                           allowed=_may_read_personal_data()))

    @guarded
    def OnboardMember(self, request: pb.OnboardMemberRequest,
                      context: grpc.ServicerContext) -> pb.Member:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        application = application_in(request, v, self.clock.business_date())
        v.raise_if_any()
        assert application is not None
        ref = cases.onboard_member(self.uow, self.clock, self.cipher, current_principal(),
                                   request.request_id, application, remaining(context))
        return self._get(ref.member_id)

    @guarded
    def GetMember(self, request: pb.GetMemberRequest,
                  context: grpc.ServicerContext) -> pb.Member:
        v = ViolationCollector()
        member_id = _member_name(request.name, "name", v)
        _check_view(request.view, v)
        v.raise_if_any()
        return self._get(member_id, _view_wanted(request.view, default_full=True))

    @guarded
    def ListMembers(self, request: pb.ListMembersRequest,
                    context: grpc.ServicerContext) -> pb.ListMembersResponse:
        v = ViolationCollector()
        if request.council_area and request.council_area not in COUNCIL_AREAS:
            v.add("council_area", "is not a council area of the bank's region: one of "
                  + ", ".join(COUNCIL_AREAS))
        form = _LEGAL_FORM_IN.get(request.legal_form)
        if request.legal_form and form is None:
            v.add("legal_form", "is not a known legal form")
        kyc = _KYC_IN.get(request.kyc_status)
        if request.kyc_status and kyc is None:
            v.add("kyc_status", "is not a known KYC status")
        group = (_group_name(request.connected_group, "connected_group", v)
                 if request.connected_group else None)
        _check_view(request.view, v)
        v.raise_if_any()
        flt = MemberFilter(request.council_area or None, form.value if form else None,
                           kyc.value if kyc else None, group or None)
        page = cases.list_members(self.uow, self.cipher, flt, request.page_size,
                                  request.page_token,
                                  wanted=_view_wanted(request.view, default_full=False),
                                  allowed=_may_read_personal_data())
        return pb.ListMembersResponse(members=[member_out(view) for view in page.items],
                                      next_page_token=page.next_page_token)

    @guarded
    def UpdateKycStatus(self, request: pb.UpdateKycStatusRequest,
                        context: grpc.ServicerContext) -> pb.Member:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        member_id = _member_name(request.name, "name", v)
        status = _KYC_IN.get(request.kyc_status)
        if status is None:
            v.add("kyc_status", "is required: PENDING, VERIFIED, REJECTED or EXPIRED")
        v.raise_if_any()
        assert status is not None
        cases.update_kyc_status(self.uow, self.clock, current_principal(), request.request_id,
                                member_id, status, remaining(context))
        return self._get(member_id)

    @guarded
    def SetConnectedGroup(self, request: pb.SetConnectedGroupRequest,
                          context: grpc.ServicerContext) -> pb.Member:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        member_id = _member_name(request.name, "name", v)
        group = (_group_name(request.connected_group, "connected_group", v)
                 if request.connected_group else None)
        v.raise_if_any()
        cases.set_connected_group(self.uow, self.clock, current_principal(), request.request_id,
                                  member_id, group or None, remaining(context))
        return self._get(member_id)

    @guarded
    def EraseMember(self, request: pb.EraseMemberRequest,
                    context: grpc.ServicerContext) -> pb.EraseMemberResponse:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        member_id = _member_name(request.name, "name", v)
        v.raise_if_any()
        result = cases.request_erasure(self.uow, self.clock, current_principal(),
                                       request.request_id, member_id, remaining(context))
        return pb.EraseMemberResponse(approval=f"approvals/{result.approval_id}",
                                      member=self._get(member_id))
