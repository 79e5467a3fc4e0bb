"""A client with no generated code can discover and call the API through server reflection."""

from __future__ import annotations

import json

from ops.grpc_call import run
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.helpers import account, request_id


def test_reflection_lists_the_ledger_service(server, capsys):
    assert run([f"127.0.0.1:{server.port}", "list"]) == 0
    assert "peoplesbank.ledger.v1.LedgerService" in capsys.readouterr().out.split()


def test_a_generic_client_reads_an_account_by_reflection_alone(server, ledger, capsys):
    ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(),
                                                   accounts=[account("erin")]))
    code = run([f"127.0.0.1:{server.port}", "call",
                "peoplesbank.ledger.v1.LedgerService/GetAccount", '{"name": "accounts/erin"}',
                "--header", "x-bank-principal: gen;teller"])
    assert code == 0
    body = json.loads(capsys.readouterr().out)
    assert body["name"] == "accounts/erin"
    assert body["state"] == "STATE_OPEN"


def test_a_generic_client_without_identity_is_refused(server, capsys):
    code = run([f"127.0.0.1:{server.port}", "call",
                "peoplesbank.ledger.v1.LedgerService/GetTrialBalance", "{}"])
    assert code == 1
    assert capsys.readouterr().err.startswith("UNAUTHENTICATED")
