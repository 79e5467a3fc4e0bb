"""`bank loans ...` against a real server (lists, a loan, the business date, the reports) and
close of business run by the operator on the database, with its progress lines."""

from __future__ import annotations

import grpc
import pytest

from bank.cli import main
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from tests.e2e.loan_support import OPERATOR, LoanClient, approved_loan, member_with_deposit
from tests.helpers import request_id


@pytest.fixture
def bank(server, capsys, database_url):
    def run(*args, who="cli;loan_officer;branch:preston"):
        capsys.readouterr()
        code = main(["--server", f"127.0.0.1:{server.port}", "--plaintext-dev", "--as", who,
                     "--database-url", database_url, *args])
        out, err = capsys.readouterr()
        return code, [" ".join(line.split()) for line in out.splitlines()], err.splitlines()

    return run


def test_close_of_business_from_the_command_line_shows_progress_and_is_idempotent(
        bank, channel: grpc.Channel):
    member_with_deposit(channel)
    approved_loan(channel)
    # The server closes the first day (which also pins the business date to its clock).
    LoanClient(channel, OPERATOR).RunCloseOfBusiness(lpb.RunCloseOfBusinessRequest(
        request_id=request_id()))
    code, out, err = bank("loans", "cob", "--through", "2026-01-03")
    assert (code, err) == (0, [])
    assert out == ["2026-01-02: chunk 1, 1 loans, 1 entries",
                   "2026-01-03: chunk 1, 1 loans, 1 entries",
                   "closed 2 business days (2026-01-02 to 2026-01-03): 2 loan-days, 2 entries; "
                   "the business date is now 2026-01-04"]
    code, out, _ = bank("loans", "cob", "--through", "2026-01-02")
    assert code == 0 and out == ["2026-01-02 is already closed; the business date is "
                                 "2026-01-04. Nothing was written."]
    assert bank("loans", "business-date")[1] == [
        "business date 2026-01-04; last closed 2026-01-03 (1 loans, 1 entries)"]
    code, out, _ = bank("loans", "list")
    assert code == 0 and out[-1] == "1 loans" and out[0].startswith("l1 coop active")
    code, out, _ = bank("loans", "show", "l1")
    assert code == 0 and out[0] == "loans/l1 active member members/coop preston"
    assert any(line.startswith("booked through 2026-01-03") for line in out)
    code, out, _ = bank("loans", "book")
    assert code == 0 and "portfolio at risk 0.00 % (1+ days)" in out[1]
    code, out, _ = bank("loans", "social-value", "--council-area", "preston",
                        who="pb;council;council:preston")
    assert code == 0 and out[0].startswith("preston GBP loans 1")
    code, _, err = bank("loans", "social-value", "--council-area", "lancaster",
                        who="pb;council;council:preston")
    assert code == 1 and "OUT_OF_SCOPE" in err[0]
    code, _, err = bank("loans", "cob", "--through", "3 January")
    assert code == 2 and err == ["bank: error: --through '3 January' is not a date (YYYY-MM-DD)"]
