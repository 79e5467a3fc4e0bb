"""`bank members ...` against a real server: onboard, list, show, KYC, groups, erasure request,
and the operator's master key rotation on the database."""

from __future__ import annotations

import pytest

from bank.adapters.member_crypto import MASTER_KEY_DIR, EnvelopeCipher, MasterKeyRing
from bank.app.members import get_member
from bank.cli import main

TELLER = "cli;teller;branch:preston"


@pytest.fixture
def bank(server, capsys):
    def run(*args, who=TELLER):
        capsys.readouterr()
        code = main(["--server", f"127.0.0.1:{server.port}", "--plaintext-dev", "--as", who,
                     *args])
        out, err = capsys.readouterr()
        return code, [" ".join(line.split()) for line in out.splitlines()], err.splitlines()

    return run


def test_members_are_onboarded_listed_shown_and_kept_up_to_date_from_the_command_line(bank):
    code, out, err = bank("members", "onboard", "m-cli", "--legal-form", "individual",
                          "--name", "Ada Lovelace", "--postcode", "pr1 2he", "--address-line",
                          "12 Fishergate", "--locality", "Preston", "--birth-date", "1990-05-17",
                          "--deposit")
    assert (code, err) == (0, [])
    assert out == ["onboarded members/m-cli in preston; share account accounts/m-cli-share, "
                   "deposit account accounts/m-cli-deposit"]
    assert bank("members", "onboard", "m-2", "--legal-form", "cic", "--name", "Café CIC",
                "--postcode", "LA1 1AA")[0] == 0
    code, out, _ = bank("members", "list")
    assert out == ["m-2 cic lancaster kyc pending active",
                   "m-cli individual preston kyc pending active", "2 members"]
    assert bank("members", "list", "--council-area", "lancaster")[1][-1] == "1 members"
    code, out, _ = bank("members", "show", "m-cli")
    assert out[2:] == ["name Ada Lovelace", "born 1990-05-17",
                       "address 12 Fishergate, Preston, PR1 2HE"]
    _, out, _ = bank("members", "show", "m-cli", who="reg;regulator")
    assert out[-1] == "personal data: withheld"
    assert bank("members", "kyc", "m-cli", "verified")[1] == [
        "m-cli individual preston kyc verified active"]
    assert bank("members", "group", "m-cli", "lovelace-family",
                who="lou;loan_officer;branch:preston")[1] == [
        "m-cli individual preston kyc verified active lovelace-family"]
    code, out, _ = bank("members", "erase", "m-cli", who="amy;approver;branch:preston")
    assert code == 0 and out[0].startswith("erasure of members/m-cli waits for a second approver")


def test_mistakes_and_refusals_are_one_line(bank):
    code, _, err = bank("members", "onboard", "m-far", "--legal-form", "company", "--name",
                        "Far Ltd", "--postcode", "M1 1AE")
    assert code == 1 and len(err) == 1 and "OUTSIDE_REGION" in err[0]
    code, _, err = bank("members", "onboard", "m-x", "--legal-form", "individual", "--name",
                        "X", "--postcode", "PR1 2HE", "--birth-date", "17/05/1990")
    assert code == 2 and err == ["bank: error: --birth-date: not a date (YYYY-MM-DD): "
                                 "'17/05/1990'"]
    code, _, err = bank("members", "show", "nobody")
    assert code == 1 and "MEMBER_NOT_FOUND" in err[0]


def test_rotating_the_master_key_rewraps_every_data_key(bank, uow, keys, database_url, capsys):
    for member_id in ("m-1", "m-2"):
        bank("members", "onboard", member_id, "--legal-form", "charity", "--name", "Char",
             "--postcode", "FY1 1AA")
    capsys.readouterr()
    code = main(["--database-url", database_url, "members", "rotate-master-key",
                 "--keys-dir", str(keys.root)])
    out = capsys.readouterr().out
    assert code == 0 and "rewrapped 2 data keys under mk-2" in out
    ring = MasterKeyRing(keys.root / MASTER_KEY_DIR)
    (ring.root / "mk-1.key").unlink()  # nothing needs the old key any more
    view = get_member(uow, EnvelopeCipher(ring), "m-2")
    assert view.personal is not None and view.personal.display_name == "Char"
