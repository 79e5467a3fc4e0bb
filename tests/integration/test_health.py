"""gRPC health follows the database: SERVING while it answers, NOT_SERVING when it does not."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from bank.adapters.sql import SqlUnitOfWork, make_engine
from services.server import LEDGER_SERVICE, _check_health


def _status(servicer: health.HealthServicer, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return servicer.Check(request, None).status


def test_health_is_serving_while_the_database_answers(uow):
    servicer = health.HealthServicer()
    _check_health(uow, servicer)
    assert _status(servicer, "") == health_pb2.HealthCheckResponse.SERVING
    assert _status(servicer, LEDGER_SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_health_is_not_serving_when_the_database_is_unreachable():
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    try:
        servicer = health.HealthServicer()
        _check_health(SqlUnitOfWork(engine), servicer)
        assert _status(servicer, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _status(servicer, LEDGER_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        engine.dispose()
