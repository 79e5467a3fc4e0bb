"""mTLS identity: only certificates from the bank's CA, valid now and not revoked, get in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bank.adapters.pki import Pki, PkiError, principal_of
from bank.domain.identity import Principal, Role
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.server import RunningServer, start_server, tls_credentials
from tests.helpers import error_info


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki")
    pki.ensure_demo()
    return pki


@pytest.fixture
def tls_server(uow, clock, pki) -> Iterator[RunningServer]:
    credentials, resolver = tls_credentials(pki.root)
    running = start_server(uow, port=0, clock=clock, credentials=credentials,
                           resolver=resolver, background=False)
    yield running
    running.stop(grace_s=1)


def _stub(server: RunningServer, ca: Path, cert: Path | None, key: Path | None):
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None)
    channel = grpc.secure_channel(f"localhost:{server.port}", credentials)
    return channel, pb_grpc.LedgerServiceStub(channel)


def _trial_balance(server: RunningServer, pki: Pki, name: str) -> pb.TrialBalance:
    cert, key = pki.client_paths(name)
    channel, stub = _stub(server, pki.ca_cert_path, cert, key)
    with channel:
        return stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=5)


def test_a_certificate_from_the_ca_identifies_its_principal_and_role(tls_server, pki):
    assert isinstance(_trial_balance(tls_server, pki, "regulator"), pb.TrialBalance)
    with pytest.raises(grpc.RpcError) as caught:
        _trial_balance(tls_server, pki, "council-preston")
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_revoked_certificate_is_refused_without_restarting_the_server(tls_server, pki):
    assert isinstance(_trial_balance(tls_server, pki, "auditor"), pb.TrialBalance)
    pki.revoke("auditor")
    with pytest.raises(grpc.RpcError) as caught:
        _trial_balance(tls_server, pki, "auditor")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "CERTIFICATE_REVOKED"
    assert isinstance(_trial_balance(tls_server, pki, "regulator"), pb.TrialBalance)


def test_an_expired_certificate_is_refused_at_the_handshake(tls_server, pki):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    pki.issue_client("expired", Principal("old", Role.REGULATOR), days=1, not_before=long_ago)
    with pytest.raises(grpc.RpcError) as caught:
        _trial_balance(tls_server, pki, "expired")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_a_foreign_ca_is_refused_at_the_handshake(tls_server, pki, tmp_path):
    foreign = Pki(tmp_path / "foreign")
    foreign.ensure_demo()
    cert, key = foreign.client_paths("regulator")
    channel, stub = _stub(tls_server, pki.ca_cert_path, cert, key)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_client_without_a_certificate_is_refused(tls_server, pki):
    channel, stub = _stub(tls_server, pki.ca_cert_path, None, None)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_identity_header_is_ignored_on_a_tls_server(tls_server, pki):
    cert, key = pki.client_paths("council-preston")
    channel, stub = _stub(tls_server, pki.ca_cert_path, cert, key)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=5,
                             metadata=[("x-bank-principal", "boss;regulator")])
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_is_refused_on_a_non_loopback_address(uow, clock):
    with pytest.raises(ValueError, match="non-loopback"):
        start_server(uow, host="0.0.0.0", port=0, clock=clock, background=False)


def test_certificates_name_principal_role_and_scope(pki):
    principal, _ = principal_of(pki.client_paths("council-lancaster")[0].read_bytes())
    assert principal == Principal("lancaster-backoffice", Role.COUNCIL, "council:lancaster")


def test_revoking_an_unknown_certificate_is_a_clear_error(pki):
    with pytest.raises(PkiError, match="no client certificate named 'ghost'"):
        pki.revoke("ghost")


def test_the_generic_client_speaks_mtls(tls_server, pki, capsys):
    from ops.grpc_call import run

    cert, key = pki.client_paths("regulator")
    code = run([f"localhost:{tls_server.port}", "call",
                "peoplesbank.ledger.v1.LedgerService/GetTrialBalance", "{}",
                "--cacert", str(pki.ca_cert_path), "--cert", str(cert), "--key", str(key)])
    assert code == 0
    assert capsys.readouterr().out.strip().startswith("{")


def test_serving_with_production_tls_material_never_creates_or_replaces_a_ca(tmp_path):
    from bank.cli import _tls

    pki = Pki(tmp_path / "prod")
    pki.ensure_demo()
    (pki.root / "ca.key").unlink()  # production: the CA key is not on the host
    before = {p.name: p.read_bytes() for p in pki.root.glob("*.pem")}
    _tls(pki.root)
    assert {p.name: p.read_bytes() for p in pki.root.glob("*.pem")} == before
    assert not (pki.root / "ca.key").exists()
    with pytest.raises(PkiError, match="a CA already exists"):
        pki.init_ca()
