from bank.app.accounts import AccountSpec, create_accounts
from bank.app.queries import get_account
from bank.domain.accounts import AccountType, OwnerKind
from bank.domain.identity import SYSTEM


def test_an_opened_account_can_be_read_back(uow, clock):
    spec = AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")
    result = create_accounts(uow, clock, SYSTEM, "req-1", [spec])
    assert result.items[0].error is None
    assert get_account(uow, "cash").currency == "GBP"
