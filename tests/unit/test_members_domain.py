"""Members' domain rules: postcodes, council areas, the region, legal forms, KYC, eligibility."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from bank.domain.errors import FailedPrecondition, ViolationCollector
from bank.domain.members import (
    KYC_TRANSITIONS,
    KycStatus,
    LegalForm,
    Member,
    PersonalData,
    ensure_eligible,
    ensure_in_region,
    ensure_kyc_transition,
    exposure_group,
    validate_personal_data,
)
from bank.domain.postcodes import (
    COUNCIL_AREAS,
    DISTRICTS,
    InvalidPostcode,
    council_area_of,
    normalise_postcode,
)

TODAY = date(2026, 11, 2)


@pytest.mark.parametrize(("given", "expected"), [
    ("PR1 2HE", "PR1 2HE"), ("pr12he", "PR1 2HE"), ("  bb10  3ab ", "BB10 3AB"),
    ("FY8 1AB", "FY8 1AB"), ("ec1a1bb", "EC1A 1BB"), ("w1a 0ax", "W1A 0AX"),
    ("GIR 0AA", "GIR 0AA"), ("la1\t1aa", "LA1 1AA")])
def test_postcodes_are_normalised_to_upper_case_with_one_space(given, expected):
    assert normalise_postcode(given) == expected


@pytest.mark.parametrize("bad", [
    "", "PR1", "2HE", "PR1 2H", "PR1 2HEE", "PRR1 2HE", "1PR 2HE", "PR1 2CE", "PR1 2HI",
    "PR1-2HE", "PR1 2HE!", "\uff30\uff321 2HE", "PR1 2HE PR1 2HE"])
def test_malformed_postcodes_are_refused(bad):
    with pytest.raises(InvalidPostcode):
        normalise_postcode(bad)


@pytest.mark.parametrize(("postcode", "area"), [
    ("PR1 2HE", "preston"), ("PR2 9XY", "preston"), ("PR25 1AB", "south-ribble"),
    ("PR7 1DP", "chorley"), ("LA1 1AA", "lancaster"), ("LA4 5QA", "lancaster"),
    ("BB1 7DJ", "blackburn"), ("BB2 1LE", "blackburn"), ("BB3 1AA", "blackburn"),
    ("BB10 1AA", "burnley"), ("BB11 2DD", "burnley"), ("BB12 8AA", "burnley"),
    ("FY1 1AA", "blackpool"), ("FY8 1AB", "fylde"), ("FY7 6AA", "wyre"),
    ("BB7 2AA", "ribble-valley"), ("BB9 7AA", "pendle"), ("L39 2AA", "west-lancashire")])
def test_the_council_area_comes_from_the_postcode_district(postcode, area):
    found = council_area_of(postcode)
    assert found is not None and found.area_id == area


def test_bb1_is_not_mistaken_for_bb10_or_bb11():
    assert council_area_of("BB1 1AA").area_id == "blackburn"  # type: ignore[union-attr]
    assert council_area_of("BB11 1AA").area_id == "burnley"  # type: ignore[union-attr]


@pytest.mark.parametrize("postcode", ["PR8 1AA", "PR9 0AA", "LA6 2AA", "LA9 4AA", "M1 1AA",
                                      "EC1A 1BB", "OL12 6AA", "BD23 1AA", "GIR 0AA"])
def test_postcodes_outside_the_region_have_no_council_area(postcode):
    assert council_area_of(postcode) is None
    with pytest.raises(FailedPrecondition) as caught:
        ensure_in_region(postcode)
    assert caught.value.reason == "OUTSIDE_REGION"
    assert caught.value.metadata["postcode_district"] == postcode.split()[0]
    assert postcode not in caught.value.message  # only the district is named


def test_every_district_maps_to_a_known_council_area_and_every_area_has_a_district():
    assert set(DISTRICTS.values()) == set(COUNCIL_AREAS)
    for district in DISTRICTS:
        assert normalise_postcode(f"{district} 1AA").startswith(district + " ")


def _data(**changes: object) -> PersonalData:
    base = PersonalData("Ada Lovelace", "pr1 2he", ("1 Fishergate",), "Preston",
                        date(1990, 5, 17), "ada@example.org", "+44 1772 000000", "met at branch")
    return replace(base, **changes)  # type: ignore[arg-type]


def _violations(form: LegalForm, data: PersonalData) -> list[str]:
    v = ViolationCollector()
    validate_personal_data(form, data, TODAY, "member.personal_data", v)
    return [f"{x.field}: {x.description}" for x in v.violations]


def test_valid_personal_data_is_trimmed_and_its_postcode_normalised():
    v = ViolationCollector()
    clean = validate_personal_data(LegalForm.INDIVIDUAL, _data(display_name="  Ada  "), TODAY,
                                   "p", v)
    assert v.violations == []
    assert clean.display_name == "Ada" and clean.postcode == "PR1 2HE"


@pytest.mark.parametrize("form", [LegalForm.INDIVIDUAL, LegalForm.SOLE_TRADER])
def test_people_need_a_date_of_birth_and_must_be_at_least_sixteen(form):
    assert _violations(form, _data(birth_date=None)) == [
        f"member.personal_data.birth_date: is required for {form.name}"]
    assert _violations(form, _data(birth_date=date(2010, 11, 3))) == [
        "member.personal_data.birth_date: a member must be at least 16 years old"]
    assert _violations(form, _data(birth_date=date(2010, 11, 2))) == []
    assert "birth_date" in _violations(form, _data(birth_date=date(2027, 1, 1)))[0]


@pytest.mark.parametrize("form", [f for f in LegalForm if not f.is_natural_person])
def test_organisations_have_no_date_of_birth(form):
    assert _violations(form, _data(birth_date=None)) == []
    assert _violations(form, _data())[0].startswith("member.personal_data.birth_date: must "
                                                    "not be set")


def test_every_broken_field_is_reported_in_field_order():
    fields = [x.split(":")[0] for x in _violations(LegalForm.INDIVIDUAL, _data(
        display_name=" ", address_lines=("", "x" * 101), postcode="nowhere",
        birth_date=None, email="not-an-email", phone="call me", notes="a\x00b"))]
    assert fields == ["member.personal_data.display_name",
                      "member.personal_data.address.lines[0]",
                      "member.personal_data.address.lines[1]",
                      "member.personal_data.address.postcode",
                      "member.personal_data.birth_date", "member.personal_data.email",
                      "member.personal_data.phone", "member.personal_data.notes"]


def test_names_and_lines_refuse_control_characters_but_notes_keep_line_breaks():
    assert _violations(LegalForm.COMPANY, _data(birth_date=None, display_name="A\u202eB")) != []
    assert _violations(LegalForm.COMPANY, _data(birth_date=None, notes="line 1\nline 2")) == []


def test_personal_data_round_trips_through_its_canonical_bytes():
    data = _data(postcode="PR1 2HE", display_name="Zoë Ó Briain")
    assert PersonalData.from_bytes(data.to_bytes()) == data
    assert data.to_bytes() == PersonalData.from_bytes(data.to_bytes()).to_bytes()


def _member(**changes: object) -> Member:
    base = Member("m-1", LegalForm.COOPERATIVE, "preston", KycStatus.VERIFIED, "m-1-share",
                  None, None, 1, 1)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_verified_member_in_the_region_is_eligible_to_borrow():
    ensure_eligible(_member())


@pytest.mark.parametrize(("changes", "reason"), [
    ({"erased_ns": 5}, "MEMBER_ERASED"),
    ({"council_area": "manchester"}, "OUTSIDE_REGION"),
    ({"kyc_status": KycStatus.PENDING}, "KYC_NOT_VERIFIED"),
    ({"kyc_status": KycStatus.EXPIRED}, "KYC_NOT_VERIFIED"),
    ({"erased_ns": 5, "council_area": "manchester", "kyc_status": KycStatus.REJECTED},
     "MEMBER_ERASED")])
def test_eligibility_refusals_come_in_a_fixed_order(changes, reason):
    with pytest.raises(FailedPrecondition) as caught:
        ensure_eligible(_member(**changes))
    assert caught.value.reason == reason
    assert caught.value.metadata["member"] == "members/m-1"


def test_kyc_moves_only_along_allowed_transitions():
    for start in KycStatus:
        for to in KycStatus:
            member = _member(kyc_status=start)
            if to in KYC_TRANSITIONS[start]:
                ensure_kyc_transition(member, to)
            else:
                with pytest.raises(FailedPrecondition) as caught:
                    ensure_kyc_transition(member, to)
                assert caught.value.reason == "KYC_TRANSITION_NOT_ALLOWED"
    assert KycStatus.VERIFIED in KYC_TRANSITIONS[KycStatus.PENDING]
    assert KycStatus.PENDING not in KYC_TRANSITIONS[KycStatus.VERIFIED]


def test_one_member_one_vote_and_connected_parties_count_as_one_borrower():
    assert _member().votes == 1
    assert _member(erased_ns=9).votes == 0
    assert exposure_group(_member()) == "member:m-1"
    assert exposure_group(_member(connected_group="smith-family")) == "group:smith-family"
    assert len(list(LegalForm)) == 9
