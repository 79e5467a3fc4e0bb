"""AuditService over gRPC: a regulator streams a bundle and verifies it offline."""

from __future__ import annotations

import grpc
import pytest

from bank.demo import seed
from bank.offline.checkpoint import verify_checkpoint
from bank.offline.verify import verify_bundle
from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as pb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2_grpc as pb_grpc

REGULATOR = [("x-bank-principal", "pra-examiner;regulator")]


def test_a_regulator_streams_a_bundle_that_verifies_offline(uow, clock, keys, channel,
                                                            tmp_path):
    seed(uow, clock, say=lambda _line: None)
    stub = pb_grpc.AuditServiceStub(channel)
    checkpoint = stub.GetCheckpoint(pb.GetCheckpointRequest(), metadata=REGULATOR, timeout=30)
    assert verify_checkpoint(checkpoint.note, keys.verifiers()).size == checkpoint.tree_size
    files: dict[str, bytearray] = {}
    finished: list[str] = []
    for chunk in stub.ExportBundle(pb.ExportBundleRequest(), metadata=REGULATOR, timeout=60):
        assert chunk.path not in finished, "a file's chunks must be consecutive"
        files.setdefault(chunk.path, bytearray()).extend(chunk.data)
        if chunk.last:
            finished.append(chunk.path)
    assert set(finished) == set(files)
    for path, data in files.items():
        target = tmp_path / "bundle" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(data))
    summary = verify_bundle(tmp_path / "bundle", keys.verifiers())
    assert summary.startswith(f"bundle verified: tree size {checkpoint.tree_size}")


def test_a_teller_may_not_export(channel):
    stub = pb_grpc.AuditServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ExportBundle(pb.ExportBundleRequest(),
                               metadata=[("x-bank-principal", "tess;teller")], timeout=10))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_malformed_export_request_names_the_field(channel):
    stub = pb_grpc.AuditServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ExportBundle(pb.ExportBundleRequest(accounts=["nope"]), metadata=REGULATOR,
                               timeout=10))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "accounts[0]" in caught.value.details()
