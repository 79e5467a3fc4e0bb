"""The `bank` command, run in-process against a real server and real databases."""

from __future__ import annotations

import re
import socket

import pytest

from bank.cli import main
from tests.e2e.support import assert_unchanged, balance, snapshot

TELLER = "cli;teller;branch:preston"


@pytest.fixture
def bank(server, capsys):
    """bank(*args) -> (exit code, stdout lines, stderr lines), as a teller on the test server."""

    def run(*args):
        capsys.readouterr()
        code = main(["--server", f"127.0.0.1:{server.port}", "--plaintext-dev", "--as", TELLER,
                     *args])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err.splitlines()

    return run


def squeeze(lines):
    """Lines with runs of spaces collapsed, so column widths do not matter."""
    return [" ".join(line.split()) for line in lines]


def open_two(bank):
    assert bank("account", "open", "cash", "--type", "asset", "--code", "1000",
                "--owner", "bank:bank") == (0, ["opened accounts/cash"], [])
    assert bank("account", "open", "alice", "--type", "liability", "--code", "2100",
                "--owner", "member:m-1", "--no-overdraft") == (0, ["opened accounts/alice"], [])


@pytest.fixture
def engines(monkeypatch):
    """The engines the offline commands open (the CLI disposes of them; disposing again after
    the test is harmless), so the test can check no pooled connection outlives a command."""
    import bank.adapters.sql

    opened = []
    real = bank.adapters.sql.make_engine

    def tracking(url, **kwargs):
        engine = real(url, **kwargs)
        opened.append(engine)
        return engine

    monkeypatch.setattr(bank.adapters.sql, "make_engine", tracking)
    yield opened
    for engine in opened:
        engine.dispose()


def assert_one_error_line(err, pattern):
    assert len(err) == 1, err
    assert re.fullmatch(pattern, err[0]), err[0]
    assert "Traceback" not in err[0]


# -- the happy path -------------------------------------------------------------------------------
def test_opening_accounts_moving_money_and_reading_a_statement_and_the_trial_balance(
        bank, ledger):
    open_two(bank)
    assert bank("transfer", "cash", "alice", "12.50", "--transfer-id", "t1",
                "--description", "first deposit") == (0, ["recorded transfers/t1 at position 1"],
                                                      [])
    assert bank("transfer", "alice", "cash", "2.25", "--transfer-id", "t2") == (
        0, ["recorded transfers/t2 at position 2"], [])
    assert balance(ledger, "alice") == 1_025

    code, out, err = bank("statement", "alice")
    assert (code, err) == (0, [])
    lines = squeeze(out)
    assert lines[0] == "Statement of accounts/alice (GBP)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d t1 CR 12\.50 GBP bal 12\.50 GBP "
                        r"first deposit", lines[1]), lines[1]
    assert re.fullmatch(r"\S+ \S+ t2 DR 2\.25 GBP bal 10\.25 GBP", lines[2]), lines[2]
    assert lines[3:] == ["closing balance 10.25 GBP"]

    code, out, err = bank("trial-balance")
    assert (code, err) == (0, [])
    assert squeeze(out) == ["GBP ASSET DR 12.50 GBP CR 2.25 GBP",
                            "GBP LIABILITY DR 2.25 GBP CR 12.50 GBP",
                            "GBP TOTAL DR 14.75 GBP CR 14.75 GBP"]

    code, out, err = bank("account", "show", "alice")
    assert (code, err) == (0, [])
    assert squeeze(out) == [
        "accounts/alice liability code 2100 owner member:m-1 open",
        "balance 10.25 GBP available 10.25 GBP",
        "posted debits 2.25 GBP credits 12.50 GBP",
        "pending debits 0.00 GBP credits 0.00 GBP"]
    code, out, _ = bank("account", "list")
    assert squeeze(out) == ["alice LIABILITY OPEN 10.25 GBP", "cash ASSET OPEN 10.25 GBP"]


# -- user mistakes and refusals -------------------------------------------------------------------
def test_a_malformed_amount_or_currency_is_one_error_line_with_exit_code_2(bank, ledger):
    open_two(bank)
    bank("transfer", "cash", "alice", "5.00")
    before = snapshot(ledger)
    for amount, extra, message in (
            ("1.234", [], r"GBP has 2 decimal places: '1\.234'"),
            ("abc", [], r"not an amount: 'abc'"),
            ("-5", [], r"the amount must be a positive number, not '-5'"),
            ("0", [], r"the amount must be a positive number, not '0'"),
            ("NaN", [], r"the amount must be a positive number, not 'NaN'"),
            ("1.5", ["--currency", "XYZ"], r"unknown currency 'XYZ'"),
            ("1", ["--currency", "JPY"], None)):
        code, out, err = bank("transfer", "cash", "alice", amount, *extra)
        if message is None:  # a known currency, only not the accounts' one: a server refusal
            assert code == 1
            assert_one_error_line(err, r"bank: refused: .*JPY.*")
            continue
        assert (code, out) == (2, []), amount
        assert_one_error_line(err, rf"bank: error: {message}")
    assert_unchanged(ledger, before)


def test_a_refused_transfer_exits_1_with_one_line_and_changes_nothing(bank, ledger):
    open_two(bank)
    before = snapshot(ledger)
    code, out, err = bank("transfer", "alice", "cash", "0.01")
    assert (code, out) == (1, [])
    assert_one_error_line(err, r"bank: refused: insufficient funds: .*alice.*")
    code, out, err = bank("statement", "nobody")
    assert (code, out) == (1, [])
    assert_one_error_line(err, r"bank: NOT_FOUND: .* \[ACCOUNT_NOT_FOUND\]")
    assert_unchanged(ledger, before)


def test_an_unreachable_server_exits_1_with_a_clear_message(capsys):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["--server", f"127.0.0.1:{port}", "--plaintext-dev", "--as", TELLER,
                 "trial-balance"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert_one_error_line(err.splitlines(), rf"bank: cannot reach the server at "
                                            rf"127\.0\.0\.1:{port}: is `bank serve` running\?")


def test_a_client_identity_that_does_not_exist_is_a_user_error(capsys, tmp_path):
    code = main(["--server", "127.0.0.1:1", "--pki-dir", str(tmp_path), "--as", "nobody",
                 "trial-balance"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert_one_error_line(err.splitlines(), r"bank: error: no client certificate 'nobody' .*")


# -- the database commands ------------------------------------------------------------------------
def test_db_current_and_upgrade_report_the_schema_revision(capsys, tmp_path, engines):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    def db(command):
        code = main(["--database-url", url, "db", command])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err

    code, out, err = db("current")
    assert (code, err) == (1, "")
    head = re.fullmatch(r"current empty, latest (\w+): run `bank db upgrade`", out[0]).group(1)
    assert db("upgrade") == (0, [f"database at revision {head} (was empty)"], "")
    assert db("current") == (0, [f"current {head}, latest {head}"], "")
    assert db("upgrade") == (0, [f"database at revision {head} (was {head})"], "")


def test_the_demo_is_idempotent_and_leaves_a_consistent_ledger(bank, database_url, capsys,
                                                              engines):
    def offline(*args):
        code = main(["--database-url", database_url, *args])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err

    code, first_demo, err = offline("demo")
    assert (code, err) == (0, "")
    assert first_demo[-1] == "Demo data ready: 9 transfers."
    code, trial_before, err = bank("trial-balance")
    assert (code, err) == (0, [])
    total = squeeze(trial_before)[-1]
    assert re.fullmatch(r"GBP TOTAL DR (\S+) GBP CR \1 GBP", total), total

    code, second_demo, err = offline("demo")
    assert (code, err) == (0, "")
    assert second_demo[-1] == "Demo data ready: 9 transfers."
    assert bank("trial-balance")[1] == trial_before
    code, accounts, _ = bank("account", "list")
    assert len(accounts) == 12
    code, out, _ = bank("account", "show", "m-0001-deposit")  # the demo's card hold
    assert "pending debits 400.00 GBP credits 0.00 GBP" in squeeze(out)

    code, out, err = offline("check")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"checked 12 accounts and \d+ postings: ledger consistent", out[-1])


def test_an_offline_command_closes_its_database_connections_when_it_returns(
        capsys, tmp_path, engines):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for args in (["db", "upgrade"], ["db", "current"], ["check"]):
        assert main(["--database-url", url, *args]) == 0
    capsys.readouterr()
    assert [engine.pool.checkedin() for engine in engines] == [0, 0, 0]


def _offline_client(capsys, *args):
    code = main(["--server", "127.0.0.1:1", "--plaintext-dev", "--as", TELLER, *args])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_an_unknown_owner_kind_is_a_user_error(capsys):
    code, out, err = _offline_client(capsys, "account", "open", "x", "--type", "asset",
                                     "--code", "1000", "--owner", "alien:x")
    assert (code, out) == (2, "")
    assert_one_error_line(err, r"bank: error: .*owner.*")
    assert "ValueError" not in err[0]


def test_an_absurdly_large_amount_is_a_user_error(capsys):
    code, out, err = _offline_client(capsys, "transfer", "a", "b", "1e30")
    assert (code, out) == (2, "")
    assert_one_error_line(err, r"bank: error: .*")
    assert "ValueError" not in err[0]
