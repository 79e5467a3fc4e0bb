"""Members: who may bank here, what is kept about them, and the rules that decide eligibility.

A member is a person or an organisation that holds one membership share. The *public record*
(`Member`) holds nothing personal: the member id, the legal form, the council area (derived from
the postcode at onboarding), the KYC status, the connected-party group, the member's accounts
and the dates. Everything personal (`PersonalData`: names, date of birth, address, contact
details, free text) is kept only encrypted, under a key of the member's own, so that erasing
the member is destroying that key (crypto-shredding); see `bank/adapters/member_crypto.py`.

One member, one vote: a member holds exactly one voting share, however much share capital
their share account holds. Votes are counted per member record, never from balances.

Rules, in the order they are checked and reported:

1. input (`validate_personal_data`): field by field, every broken rule reported together;
2. region (`ensure_in_region`): the postcode must lie in a council area of the region
   (FAILED_PRECONDITION `OUTSIDE_REGION`), at onboarding and again whenever lending asks;
3. lending eligibility (`ensure_eligible`): not erased (`MEMBER_ERASED`), in the region
   (`OUTSIDE_REGION`), KYC verified (`KYC_NOT_VERIFIED`).
"""

from __future__ import annotations

import enum
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from bank.domain.errors import FailedPrecondition, ViolationCollector
from bank.domain.postcodes import (
    COUNCIL_AREAS,
    REGION_NAME,
    CouncilArea,
    InvalidPostcode,
    council_area_of,
    district_of,
    normalise_postcode,
)

# Member ids leave room for the account suffixes ("-share", "-deposit") within 64 characters.
MEMBER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}"
GROUP_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
DISPLAY_NAME_LENGTH_MAX = 200
ADDRESS_LINES_MAX = 4
ADDRESS_LINE_LENGTH_MAX = 100
LOCALITY_LENGTH_MAX = 100
EMAIL_LENGTH_MAX = 254
PHONE_LENGTH_MAX = 32
NOTES_LENGTH_MAX = 2_000
BIRTH_DATE_MIN = date(1900, 1, 1)
MEMBER_AGE_MIN_YEARS = 16  # co-operative membership from 16, as in most UK society rules

SHARE_ACCOUNT_SUFFIX = "-share"
DEPOSIT_ACCOUNT_SUFFIX = "-deposit"
SHARE_ACCOUNT_CODE = "3100"  # members' share capital (equity)
DEPOSIT_ACCOUNT_CODE = "2100"  # member deposits (liability), as the demo's accounts
VOTES_PER_MEMBER = 1

_MEMBER_ID = re.compile(MEMBER_ID_PATTERN)
_GROUP_ID = re.compile(GROUP_ID_PATTERN)
_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{5,30}")


class LegalForm(enum.Enum):
    INDIVIDUAL = "individual"
    SOLE_TRADER = "sole_trader"
    PARTNERSHIP = "partnership"
    COMPANY = "company"
    COOPERATIVE = "cooperative"
    COMMUNITY_BENEFIT_SOCIETY = "community_benefit_society"
    CIC = "cic"  # community interest company
    CHARITY = "charity"
    COUNCIL = "council"

    @property
    def is_natural_person(self) -> bool:
        """Individuals and sole traders are people: they have a date of birth."""
        return self in (LegalForm.INDIVIDUAL, LegalForm.SOLE_TRADER)


class KycStatus(enum.Enum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"


# Allowed KYC transitions. A status never "changes" to itself.
KYC_TRANSITIONS: dict[KycStatus, frozenset[KycStatus]] = {
    KycStatus.PENDING: frozenset({KycStatus.VERIFIED, KycStatus.REJECTED}),
    KycStatus.VERIFIED: frozenset({KycStatus.EXPIRED, KycStatus.REJECTED}),
    KycStatus.EXPIRED: frozenset({KycStatus.PENDING, KycStatus.VERIFIED, KycStatus.REJECTED}),
    KycStatus.REJECTED: frozenset({KycStatus.PENDING}),
}


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Everything personal about a member. Only ever stored encrypted."""

    display_name: str
    postcode: str  # normalised
    address_lines: tuple[str, ...] = ()
    locality: str = ""
    birth_date: date | None = None
    email: str = ""
    phone: str = ""
    notes: str = ""

    def to_bytes(self) -> bytes:
        """Canonical JSON (the plaintext that is encrypted)."""
        body: dict[str, Any] = {
            "v": 1, "display_name": self.display_name, "postcode": self.postcode,
            "address_lines": list(self.address_lines), "locality": self.locality,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "email": self.email, "phone": self.phone, "notes": self.notes}
        return json.dumps(body, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    @staticmethod
    def from_bytes(data: bytes) -> PersonalData:
        body = json.loads(data.decode("utf-8"))
        birth = body["birth_date"]
        return PersonalData(body["display_name"], body["postcode"],
                            tuple(body["address_lines"]), body["locality"],
                            date.fromisoformat(birth) if birth else None, body["email"],
                            body["phone"], body["notes"])


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A member's data key, encrypted (wrapped) under the master key `master_key_id`. What it
    wraps is opaque here; `bank.adapters.member_crypto` makes and opens it."""

    master_key_id: str
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class Member:
    """The public (non-personal) record of a member; it outlives erasure."""

    member_id: str
    legal_form: LegalForm
    council_area: str
    kyc_status: KycStatus
    share_account_id: str
    deposit_account_id: str | None
    connected_group: str | None
    created_ns: int
    updated_ns: int
    erased_ns: int | None = None

    @property
    def erased(self) -> bool:
        return self.erased_ns is not None

    @property
    def votes(self) -> int:
        """One member, one vote, whatever the share capital; none once erased (they left)."""
        return 0 if self.erased else VOTES_PER_MEMBER

    def definition(self) -> list[Any]:
        """What identifies the record (for audit digests): nothing personal."""
        return [self.member_id, self.legal_form.value, self.council_area,
                self.share_account_id, self.deposit_account_id, self.created_ns]


def share_account_id(member_id: str) -> str:
    return member_id + SHARE_ACCOUNT_SUFFIX


def deposit_account_id(member_id: str) -> str:
    return member_id + DEPOSIT_ACCOUNT_SUFFIX


def is_member_id(value: str) -> bool:
    return _MEMBER_ID.fullmatch(value) is not None


def is_group_id(value: str) -> bool:
    return _GROUP_ID.fullmatch(value) is not None


def _clean(value: str, field: str, length_max: int, v: ViolationCollector,
           required: bool = False) -> str:
    if required and not value.strip():
        v.add(field, "is required")
    elif len(value) > length_max:
        v.add(field, f"must be at most {length_max} characters")
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value):
        v.add(field, "must not contain control or format characters")
    return value.strip()


def _years_between(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def validate_personal_data(legal_form: LegalForm, data: PersonalData, today: date,
                           path: str, v: ViolationCollector) -> PersonalData:
    """Check every field (adding violations named `path.<field>`), and return the data with
    text trimmed and the postcode normalised. Free text may hold any printable characters;
    `notes` may hold line breaks."""
    name = _clean(data.display_name, f"{path}.display_name", DISPLAY_NAME_LENGTH_MAX, v, True)
    if len(data.address_lines) > ADDRESS_LINES_MAX:
        v.add(f"{path}.address.lines", f"must have at most {ADDRESS_LINES_MAX} lines")
    lines = tuple(_clean(line, f"{path}.address.lines[{i}]", ADDRESS_LINE_LENGTH_MAX, v, True)
                  for i, line in enumerate(data.address_lines[:ADDRESS_LINES_MAX]))
    locality = _clean(data.locality, f"{path}.address.locality", LOCALITY_LENGTH_MAX, v)
    postcode = data.postcode
    if not data.postcode.strip():
        v.add(f"{path}.address.postcode", "is required")
    else:
        try:
            postcode = normalise_postcode(data.postcode)
        except InvalidPostcode as error:
            v.add(f"{path}.address.postcode", str(error))
    if legal_form.is_natural_person:
        if data.birth_date is None:
            v.add(f"{path}.birth_date", f"is required for {legal_form.name}")
        elif not BIRTH_DATE_MIN <= data.birth_date <= today:
            v.add(f"{path}.birth_date", f"must be between {BIRTH_DATE_MIN} and the business date")
        elif _years_between(data.birth_date, today) < MEMBER_AGE_MIN_YEARS:
            v.add(f"{path}.birth_date", f"a member must be at least {MEMBER_AGE_MIN_YEARS} "
                  "years old")
    elif data.birth_date is not None:
        v.add(f"{path}.birth_date", f"must not be set for {legal_form.name} (only people have "
              "one)")
    email = _clean(data.email, f"{path}.email", EMAIL_LENGTH_MAX, v)
    if email and not _EMAIL.fullmatch(email):
        v.add(f"{path}.email", "is not an email address")
    phone = _clean(data.phone, f"{path}.phone", PHONE_LENGTH_MAX, v)
    if phone and not _PHONE.fullmatch(phone):
        v.add(f"{path}.phone", "must be 6-32 characters of digits, spaces, ()- and a leading +")
    notes = data.notes
    if len(notes) > NOTES_LENGTH_MAX:
        v.add(f"{path}.notes", f"must be at most {NOTES_LENGTH_MAX} characters")
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") and ch not in "\n\t"
             for ch in notes):
        v.add(f"{path}.notes", "must not contain control characters other than line breaks")
    return PersonalData(name, postcode, lines, locality, data.birth_date, email, phone, notes)


def ensure_in_region(postcode: str) -> CouncilArea:
    """The council area of a normalised postcode; raises `FailedPrecondition` OUTSIDE_REGION
    naming the postcode district (not the whole postcode) when it is outside the region."""
    area = council_area_of(postcode)
    if area is None:
        district = district_of(postcode)
        raise FailedPrecondition(
            "OUTSIDE_REGION",
            f"postcode district {district} is outside the bank's region ({REGION_NAME}): "
            "members must live or trade in one of its council areas",
            metadata={"postcode_district": district, "region": REGION_NAME})
    return area


def ensure_eligible(member: Member) -> None:
    """The rule lending applies at application and at approval.

    Raises `FailedPrecondition`, checking in this order: MEMBER_ERASED, OUTSIDE_REGION (the
    member's council area is no longer in the region table), KYC_NOT_VERIFIED.
    """
    metadata = {"member": f"members/{member.member_id}"}
    ensure_not_erased(member)
    if member.council_area not in COUNCIL_AREAS:
        raise FailedPrecondition(
            "OUTSIDE_REGION", f"member {member.member_id!r} is not in a council area of the "
            f"bank's region ({REGION_NAME})", metadata={**metadata, "region": REGION_NAME})
    if member.kyc_status is not KycStatus.VERIFIED:
        raise FailedPrecondition(
            "KYC_NOT_VERIFIED", f"member {member.member_id!r} has KYC status "
            f"{member.kyc_status.value}, not verified", metadata=metadata)


def ensure_kyc_transition(member: Member, to: KycStatus) -> None:
    """Raises `FailedPrecondition` MEMBER_ERASED or KYC_TRANSITION_NOT_ALLOWED."""
    metadata = {"member": f"members/{member.member_id}"}
    ensure_not_erased(member)
    if to not in KYC_TRANSITIONS[member.kyc_status]:
        allowed = ", ".join(sorted(s.value for s in KYC_TRANSITIONS[member.kyc_status]))
        raise FailedPrecondition(
            "KYC_TRANSITION_NOT_ALLOWED", f"KYC status cannot go from "
            f"{member.kyc_status.value} to {to.value} (allowed: {allowed})", metadata=metadata)


def ensure_not_erased(member: Member) -> None:
    """Raises `FailedPrecondition` MEMBER_ERASED: nothing changes an erased member."""
    if member.erased:
        raise FailedPrecondition("MEMBER_ERASED", f"member {member.member_id!r} has been "
                                 "erased", metadata={"member": f"members/{member.member_id}"})


def exposure_group(member: Member) -> str:
    """The single-borrower key for concentration limits: a member's connected-party group when
    it has one (its members count as one borrower), otherwise the member alone."""
    if member.connected_group is not None:
        return f"group:{member.connected_group}"
    return f"member:{member.member_id}"
