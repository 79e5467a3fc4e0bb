"""A generic gRPC client that knows nothing of our protos: it learns them by server reflection.

    python ops/grpc_call.py 127.0.0.1:50051 list --cacert var/pki/ca.pem \
        --cert var/pki/clients/teller.pem --key var/pki/clients/teller.key
    python ops/grpc_call.py 127.0.0.1:50051 describe peoplesbank.ledger.v1.LedgerService
    python ops/grpc_call.py 127.0.0.1:50051 call \
        peoplesbank.ledger.v1.LedgerService/GetAccount '{"name": "accounts/bank-cash"}' \
        --header 'x-bank-principal: you;teller'

It is what grpcurl does, in Python, so it runs anywhere the project's dependencies are installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server")
    parser.add_argument("verb", choices=["list", "describe", "call"])
    parser.add_argument("target", nargs="?", help="service, or Service/Method for call")
    parser.add_argument("body", nargs="?", default="{}", help="request as JSON (call)")
    parser.add_argument("--header", action="append", default=[], help="'key: value' metadata")
    parser.add_argument("--cacert", help="CA certificate (PEM): use TLS")
    parser.add_argument("--cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", help="client private key (PEM) for mTLS")
    args = parser.parse_args(argv)
    if args.cacert:
        credentials = grpc.ssl_channel_credentials(
            Path(args.cacert).read_bytes(), Path(args.key).read_bytes() if args.key else None,
            Path(args.cert).read_bytes() if args.cert else None)
        channel_cm = grpc.secure_channel(args.server, credentials)
    else:
        channel_cm = grpc.insecure_channel(args.server)
    with channel_cm as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        if args.verb == "list":
            for name in database.get_services():
                print(name)
            return 0
        if not args.target:
            parser.error("a target is required")
        if args.verb == "describe":
            service = pool.FindServiceByName(args.target)
            for method in service.methods:
                print(f"rpc {method.name}({method.input_type.full_name}) returns "
                      f"({'stream ' if method.server_streaming else ''}"
                      f"{method.output_type.full_name})")
            return 0
        service_name, _, method_name = args.target.partition("/")
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(args.body, request_cls())
        metadata = [tuple(part.strip() for part in h.split(":", 1)) for h in args.header]
        path = f"/{service_name}/{method_name}"
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        call = kind(path, request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=response_cls.FromString)
        try:
            responses = call(request, metadata=metadata, timeout=30)
            for response in (responses if method.server_streaming else [responses]):
                print(json.dumps(json_format.MessageToDict(response), indent=2))
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
