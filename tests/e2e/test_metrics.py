"""The documented Prometheus series exist on the metrics port and move with traffic."""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as apb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.observability import JsonFormatter
from services.server import start_server
from tests.helpers import account, request_id, transfer


@pytest.fixture
def metered(uow, clock, keys):
    running = start_server(uow, port=0, clock=clock, background=False, keys=keys,
                           metrics_address=("127.0.0.1", 0))
    yield running
    running.stop(grace_s=1)


def scrape_text(running) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics",
                                timeout=5) as response:
        return str(response.read().decode())


def scrape(running) -> dict[str, float]:
    text = scrape_text(running)
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def test_the_documented_series_move_with_traffic(metered, uow, clock):
    import grpc

    from tests.e2e.conftest import TELLER, Client

    with grpc.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        ledger = Client(channel, TELLER)
        before = scrape(metered)
        ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(), accounts=[
            account("cash", "ASSET", owner=("BANK", "bank")), account("alice")]))
        ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id(), transfers=[
            transfer("t1", "cash", "alice", 100), transfer("t2", "cash", "alice", 200)]))
        with pytest.raises(grpc.RpcError):
            ledger.GetAccount(pb.GetAccountRequest(name="accounts/nobody"))
        apb_grpc.AuditServiceStub(channel).GetCheckpoint(
            apb.GetCheckpointRequest(), metadata=[("x-bank-principal", "ops;operator")])
        after = scrape(metered)
    ok = 'bank_rpc_requests_total{code="OK",method="CreateTransfers"}'
    assert after[ok] == before.get(ok, 0) + 1
    assert after['bank_rpc_requests_total{code="NOT_FOUND",method="GetAccount"}'] == 1
    assert after['bank_rpc_latency_seconds_count{method="CreateTransfers"}'] == 1
    assert after['bank_batch_items_sum{method="CreateTransfers"}'] == 2
    assert after["bank_audit_tree_size"] == before["bank_audit_tree_size"] + 2
    assert before["bank_audit_last_checkpoint_age_seconds"] == -1
    assert after["bank_audit_last_checkpoint_age_seconds"] >= 0
    assert "bank_db_pool_connections_in_use" in after
    assert "# TYPE bank_command_retries_total counter" in scrape_text(metered)


def test_access_logs_are_json_with_request_id_and_principal_and_no_payload(metered, caplog):
    import grpc

    from tests.e2e.conftest import TELLER, Client

    caplog.set_level(logging.INFO, logger="bank.access")
    rid = request_id()
    with grpc.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        Client(channel, TELLER).CreateAccounts(pb.CreateAccountsRequest(
            request_id=rid, accounts=[account("secret-holder-name")]))
    records = [r for r in caplog.records if getattr(r, "rpc", "") == "CreateAccounts"]
    assert records
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["rpc"] == "CreateAccounts" and line["code"] == "OK"
    assert line["request_id"] == rid
    assert line["principal"] == "/".join(TELLER.split(";")[:2])
    assert "secret-holder-name" not in json.dumps(line)
