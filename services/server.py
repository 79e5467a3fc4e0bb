"""The server factory: one composition root for the gRPC edge.

Sync gRPC server with a thread pool (on this kind of machine it is not slower than grpc.aio for
unary calls, and our storage calls block). Health checking and reflection are registered;
message sizes and keepalive are set explicitly; `stop()` drains in-flight calls within a grace
period.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bank.adapters.clock import SystemClock
from bank.adapters.keys import KeyRing
from bank.adapters.sql import SqlUnitOfWork
from bank.app.group_commit import GroupCommitter
from bank.app.members import member_council_areas
from bank.app.pool_reads import pool_participants
from bank.app.ports import Clock
from bank.app.queries import account_owners, transfer_accounts
from bank.app.transfers import expire_holds
from bank.app.unit import record_denial
from bank.domain import limits
from bank.domain.errors import LedgerError
from bank.domain.identity import Principal
from bank.settings import check_private
from services.approvals import ApprovalServicer
from services.audit import AuditServicer
from services.auth import AuthInterceptor, CertificateResolver, Resolver, dev_header_resolver
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as approvals_pb
from services.generated.peoplesbank.approvals.v1 import (
    approval_service_pb2_grpc as approvals_grpc,
)
from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as audit_pb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as audit_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as loans_pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2_grpc as loans_grpc
from services.generated.peoplesbank.members.v1 import member_service_pb2 as members_pb
from services.generated.peoplesbank.members.v1 import member_service_pb2_grpc as members_grpc
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as pools_pb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2_grpc as pools_grpc
from services.ledger import CommitSignal, LedgerServicer
from services.loans import LoanServicer
from services.members import MemberServicer, member_cipher
from services.observability import LedgerCollector, Metrics, ObservabilityInterceptor
from services.pools import PoolServicer

log = logging.getLogger(__name__)

WORKERS_MAX = 32
BACKGROUND_STOP_S = 10.0
CONCURRENT_RPCS_MAX = 256
GRACE_PERIOD_S = 10.0
HEALTH_CHECK_INTERVAL_S = 5.0
EXPIRY_INTERVAL_S = 1.0
LEDGER_SERVICE = pb.DESCRIPTOR.services_by_name["LedgerService"].full_name
APPROVAL_SERVICE = approvals_pb.DESCRIPTOR.services_by_name["ApprovalService"].full_name
AUDIT_SERVICE = audit_pb.DESCRIPTOR.services_by_name["AuditService"].full_name
MEMBER_SERVICE = members_pb.DESCRIPTOR.services_by_name["MemberService"].full_name
LOAN_SERVICE = loans_pb.DESCRIPTOR.services_by_name["LoanService"].full_name
POOL_SERVICE = pools_pb.DESCRIPTOR.services_by_name["PoolService"].full_name
DEFAULT_KEYS_DIR = "var/keys"

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", limits.MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", limits.MESSAGE_BYTES_MAX),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_connection_idle_ms", 15 * 60_000),
    ("grpc.so_reuseport", 0),
]


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    stopping: threading.Event
    threads: list[threading.Thread]
    metrics: Metrics
    metrics_server: Any = None
    committer: GroupCommitter | None = None
    executor: futures.ThreadPoolExecutor | None = None
    signal: CommitSignal | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.server_port if self.metrics_server else None

    def stop(self, grace_s: float = GRACE_PERIOD_S) -> None:
        """Refuse new calls, let in-flight ones finish within `grace_s`, stop background work."""
        self.stopping.set()
        if self.signal is not None:
            self.signal.notify()  # change-feed watchers wake now and see `stopping`
        self.server.stop(grace_s).wait()
        if self.executor is not None:
            # gRPC stops answering after the grace period but cannot stop a handler that is
            # still running: wait for it (its database work is bounded by its timeouts), so
            # nothing uses the database after stop() returns.
            self.executor.shutdown(wait=True, cancel_futures=True)
        if self.committer is not None:
            self.committer.close(grace_s)
        self.metrics.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        # Background work (health, expiry) notices `stopping` between rounds; wait for a round
        # in progress (its database calls are bounded), so no connection is still checked out
        # when the caller disposes of the engine.
        for thread in self.threads:
            thread.join(timeout=max(grace_s, BACKGROUND_STOP_S))

    def wait(self) -> None:
        self.server.wait_for_termination()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class UowDirectory:
    """The lookups scope checks need, read from the ledger."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def account_owners(self, account_ids: Iterable[str]) -> dict[str, str]:
        return account_owners(self._uow, account_ids)

    def transfer_accounts(self, transfer_id: str) -> set[str]:
        return transfer_accounts(self._uow, transfer_id)

    def member_council_areas(self, member_ids: list[str]) -> dict[str, str]:
        return member_council_areas(self._uow, member_ids)

    def pool_participants(self, pool_id: str) -> set[str]:
        return pool_participants(self._uow, pool_id)


def tls_credentials(pki_root: Path) -> tuple[grpc.ServerCredentials, Resolver]:
    """Server credentials that require a client certificate from the CA in `pki_root`, and the
    resolver that reads principals from those certificates."""
    check_private(pki_root / "server.key", "TLS server key")
    ca_pem = (pki_root / "ca.pem").read_bytes()
    credentials = grpc.ssl_server_credentials(
        [((pki_root / "server.key").read_bytes(), (pki_root / "server.pem").read_bytes())],
        root_certificates=ca_pem, require_client_auth=True)
    return credentials, CertificateResolver(ca_pem, pki_root / "crl.pem")


def start_server(uow: SqlUnitOfWork, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Clock | None = None,
                 credentials: grpc.ServerCredentials | None = None,
                 resolver: Resolver | None = None, background: bool = True,
                 keys: KeyRing | None = None, metrics: Metrics | None = None,
                 metrics_address: tuple[str, int] | None = None) -> RunningServer:
    """Build and start the server; returns it with the port actually bound.

    Without `credentials` the server is a development server: it only binds to loopback and
    identifies callers by the `x-bank-principal` header.
    """
    if credentials is None and not is_loopback(host):
        raise ValueError(f"refusing plaintext on non-loopback address {host!r}: configure TLS")
    clock = clock or SystemClock()
    stopping = threading.Event()
    signal = CommitSignal()
    def on_denied(principal: Principal | None, method: str, error: LedgerError) -> None:
        record_denial(uow, clock, principal, method, error.reason)

    interceptor = AuthInterceptor(resolver or dev_header_resolver, UowDirectory(uow), on_denied)
    metrics = metrics or Metrics()
    metrics.registry.register(LedgerCollector(uow, uow.engine, clock.now_ns))
    executor = futures.ThreadPoolExecutor(max_workers=WORKERS_MAX, thread_name_prefix="rpc")
    server = grpc.server(
        executor,
        interceptors=[ObservabilityInterceptor(metrics), interceptor],
        options=SERVER_OPTIONS, maximum_concurrent_rpcs=CONCURRENT_RPCS_MAX)
    committer = GroupCommitter(uow, clock, observe=metrics.observe_group)
    pb_grpc.add_LedgerServiceServicer_to_server(
        LedgerServicer(uow, clock, signal, stopping, committer), server)
    approvals_grpc.add_ApprovalServiceServicer_to_server(ApprovalServicer(uow, clock), server)
    audit_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(uow, clock, keys or KeyRing(Path(DEFAULT_KEYS_DIR))), server)
    members_grpc.add_MemberServiceServicer_to_server(
        MemberServicer(uow, clock, member_cipher(keys)), server)
    loans_grpc.add_LoanServiceServicer_to_server(LoanServicer(uow, clock), server)
    pools_grpc.add_PoolServiceServicer_to_server(PoolServicer(uow, clock, stopping), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (LEDGER_SERVICE, APPROVAL_SERVICE, AUDIT_SERVICE, MEMBER_SERVICE, POOL_SERVICE,
         LOAN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    bound = (server.add_secure_port(address, credentials) if credentials
             else server.add_insecure_port(address))
    if bound == 0:
        raise OSError(f"could not bind {address}")
    server.start()
    metrics_server = metrics.serve(*metrics_address) if metrics_address else None
    threads = []
    if background:
        threads = [
            _loop("health", HEALTH_CHECK_INTERVAL_S, stopping,
                  lambda: _check_health(uow, health_servicer)),
            _loop("expiry", EXPIRY_INTERVAL_S, stopping,
                  lambda: _expire(uow, clock, signal)),
        ]
    else:
        _check_health(uow, health_servicer)
    return RunningServer(server, bound, stopping, threads, metrics, metrics_server, committer,
                         executor, signal)


def _loop(name: str, interval_s: float, stopping: threading.Event,
          work: object) -> threading.Thread:
    def run() -> None:
        while not stopping.is_set():
            try:
                work()  # type: ignore[operator]
            except Exception:
                log.exception("background %s work failed; will retry", name)
            stopping.wait(interval_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _check_health(uow: SqlUnitOfWork, servicer: health.HealthServicer) -> None:
    """SERVING only while the database answers."""
    try:
        with uow.read(timeout_s=2.0) as r:
            r.head()
        status = health_pb2.HealthCheckResponse.SERVING
    except Exception:
        status = health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", LEDGER_SERVICE, APPROVAL_SERVICE, AUDIT_SERVICE, MEMBER_SERVICE,
                    POOL_SERVICE):
        servicer.set(service, status)
    servicer.set(LOAN_SERVICE, status)


def _expire(uow: SqlUnitOfWork, clock: Clock, signal: CommitSignal) -> None:
    """Release holds past their timeout; a cheap read first, so idle sweeps write nothing."""
    with uow.read() as r:
        due = r.expired_holds(clock.now_ns(), 1)
    if not due:
        return
    try:
        result = expire_holds(uow, clock, f"expire-{uuid.uuid4()}")
    except LedgerError as error:
        log.warning("expiring holds failed: %s", error.message)
        return
    log.info("expired %d holds", len(result.items))
    signal.notify()
