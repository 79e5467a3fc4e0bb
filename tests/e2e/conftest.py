"""A real gRPC server on port 0 over a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from bank.adapters.clock import FixedClock
from bank.adapters.keys import KeyRing
from bank.adapters.sql import SqlUnitOfWork
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.server import RunningServer, start_server

TELLER = "tess;teller;branch:preston"


@dataclass
class Client:
    """A LedgerService stub that calls as one development principal."""

    channel: grpc.Channel
    principal: str

    def __getattr__(self, method: str) -> Any:
        call = getattr(pb_grpc.LedgerServiceStub(self.channel), method)

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 15)
            kwargs.setdefault("metadata", [("x-bank-principal", self.principal)])
            return call(request, **kwargs)

        return invoke


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing(tmp_path / "keys")


@pytest.fixture
def server(uow: SqlUnitOfWork, clock: FixedClock, keys: KeyRing) -> Iterator[RunningServer]:
    running = start_server(uow, port=0, clock=clock, background=False, keys=keys)
    yield running
    running.stop(grace_s=1)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def ledger(channel: grpc.Channel) -> Client:
    return Client(channel, TELLER)


@pytest.fixture
def as_role(channel: grpc.Channel) -> Any:
    """as_role("regulator") -> a client calling as that role."""
    return lambda role, scope="": Client(channel, f"someone;{role};{scope}")
