"""AuditService: checkpoints and streamed export bundles."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from bank.adapters.keys import KeyRing
from bank.app.audit import sign_checkpoint
from bank.app.export import ExportSpec, export_bundle
from bank.app.ports import Clock, UnitOfWork
from bank.domain.errors import ViolationCollector, invalid
from services import convert as cv
from services.errors import guarded, guarded_stream
from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as pb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as pb_grpc

EXPORT_ACCOUNTS_MAX = 100


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock, keys: KeyRing) -> None:
        self.uow = uow
        self.clock = clock
        self.keys = keys

    @guarded
    def GetCheckpoint(self, request: pb.GetCheckpointRequest,
                      context: grpc.ServicerContext) -> pb.SignedCheckpoint:
        checkpoint = sign_checkpoint(self.uow, self.clock, self.keys.ensure())
        return pb.SignedCheckpoint(tree_size=checkpoint.tree_size,
                                   root_hash=checkpoint.root_hash, note=checkpoint.note)

    @guarded_stream
    def ExportBundle(self, request: pb.ExportBundleRequest,
                     context: grpc.ServicerContext) -> Iterator[pb.BundleChunk]:
        v = ViolationCollector()
        start = (cv.timestamp_in(request.start_time, "start_time", v)
                 if request.HasField("start_time") else None)
        end = (cv.timestamp_in(request.end_time, "end_time", v)
               if request.HasField("end_time") else None)
        if len(request.accounts) > EXPORT_ACCOUNTS_MAX:
            v.add("accounts", f"must name at most {EXPORT_ACCOUNTS_MAX} accounts")
        accounts = tuple(cv.parse_name(name, "accounts", f"accounts[{i}]", v)
                         for i, name in enumerate(request.accounts[:EXPORT_ACCOUNTS_MAX]))
        if request.previous_tree_size < 0:
            v.add("previous_tree_size", "must not be negative")
        v.raise_if_any()
        if start is not None and end is not None and start >= end:
            raise invalid("end_time", "must be after start_time")
        spec = ExportSpec(start, end, accounts, request.previous_tree_size or None)
        previous: pb.BundleChunk | None = None
        for path, chunk in export_bundle(self.uow, self.clock, self.keys.ensure(), spec):
            if previous is not None:
                previous.last = previous.path != path
                yield previous
            previous = pb.BundleChunk(path=path, data=chunk)
        if previous is not None:
            previous.last = True
            yield previous
