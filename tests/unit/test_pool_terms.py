"""Pool terms, the register's commitment query, and how pool events become ledger entries."""

from __future__ import annotations

from datetime import date

from bank.app.pool_ledger import entry, event_entries
from bank.domain.accounts import Side
from bank.domain.errors import ViolationCollector
from bank.domain.pools import PoolRegister, Position, UnitClass
from bank.domain.pools.terms import (
    ConcentrationLimits,
    Participant,
    ParticipantKind,
    PoolTerms,
    validate_terms,
)


def terms(**changes) -> PoolTerms:
    base = dict(pool_id="lancs", display_name="Lancashire", currency="GBP",
                unit_classes=(UnitClass("junior", 0), UnitClass("senior", 1)),
                participants=(Participant("preston", ParticipantKind.COUNCIL, "council-preston"),
                              Participant("bank", ParticipantKind.BANK, "bank-capital")),
                dealing_dates=(date(2025, 1, 1), date(2025, 7, 1)),
                servicing_fee_bps_per_year=25, reserve_target_bps=1_000,
                limits=ConcentrationLimits(500, 2_500, 4_000))
    return PoolTerms(**{**base, **changes})


def violations(t: PoolTerms) -> list[str]:
    v = ViolationCollector()
    validate_terms(t, v)
    return [x.field for x in v.violations]


def test_terms_survive_a_json_round_trip_unchanged():
    assert PoolTerms.from_json(terms().to_json()) == terms()


def test_valid_terms_have_no_violations_and_bad_ones_name_every_field():
    assert violations(terms()) == []
    bad = terms(pool_id="Lancs!", participants=(
        Participant("wigan", ParticipantKind.COUNCIL, "x"),
        Participant("preston", ParticipantKind.FUNDER, "y"),
        Participant("treasury", ParticipantKind.BANK, "")),
        dealing_dates=(date(2025, 1, 1), date(2025, 1, 1)), reserve_target_bps=10_001)
    assert violations(bad) == [
        "pool.pool_id", "pool.participants[0].participant_id", "pool.participants[1].kind",
        "pool.participants[2].participant_id", "pool.participants[2].settlement_account",
        "pool.dealing_dates[1]", "pool.reserve_target_bps"]


def test_periods_run_between_consecutive_dealing_dates():
    t = terms()
    assert t.period_dates(1) == (date(2025, 1, 1), date(2025, 7, 1))
    assert t.period_dates(2) == (date(2025, 7, 1), None)


def test_a_commitment_is_reported_whole_and_unfunded_after_contributions():
    register = PoolRegister(terms().agreement())
    position = Position("preston", "senior")
    register.commit(position, 1_000)
    register.subscribe(position, 400)
    assert (register.commitment_minor(position),
            register.unfunded_commitment_minor(position)) == (1_000, 600)


def test_an_entry_nets_each_account_and_drops_what_does_not_move():
    spec = entry("t", "GBP", [("a", 5), ("b", -5), ("a", -2), ("c", 2), ("d", 0)], "x", {})
    assert spec is not None
    assert [(p.account_id, p.side, p.amount) for p in spec.postings] == [
        ("a", Side.DEBIT, 3), ("b", Side.CREDIT, 5), ("c", Side.DEBIT, 2)]
    assert entry("t", "GBP", [("a", 1), ("a", -1)], "x", {}) is None


def test_a_charge_off_uses_the_provision_first_and_moves_the_banks_side_too():
    (spec,) = event_entries(terms(), 7, 2, "charge_off",
                            {"loan": "l1", "principal": 900, "interest": 100},
                            {"from_provision": 300}, "corrects event 5")
    lines = {(p.account_id, p.side): p.amount for p in spec.postings}
    assert lines == {("pool:lancs:provisions", Side.DEBIT): 300,
                     ("pool:lancs:losses", Side.DEBIT): 700,
                     ("pool:lancs:loans", Side.CREDIT): 900,
                     ("pool:lancs:interest", Side.CREDIT): 100,
                     ("pool:lancs:due", Side.DEBIT): 1_000,
                     ("bank:pool-losses-borne", Side.CREDIT): 1_000}
    assert dict(spec.metadata) == {"pool": "lancs", "event": "7", "kind": "charge_off",
                                   "period": "2", "loan": "l1",
                                   "reference": "corrects event 5"}
    assert spec.transfer_id == "pool:lancs:7:1"
