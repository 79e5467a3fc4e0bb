"""The one table from domain errors to gRPC status codes, with google.rpc details.

`to_status` builds a `google.rpc.Status` (ErrorInfo always; BadRequest field violations for
INVALID_ARGUMENT; PreconditionFailure for FAILED_PRECONDITION). Handlers never call
`context.abort` themselves: the `guarded` decorator turns a raised `LedgerError` into the status
and an unexpected exception into INTERNAL (logged with its traceback, never sent to the client).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bank.domain import errors as e

log = logging.getLogger(__name__)

DOMAIN = "peoplesbank.coop"
DETAIL_TEXT_MAX = 300  # keep details small: a large status reaches clients as RESOURCE_EXHAUSTED
VIOLATIONS_MAX = 20

# Ordered from the most specific class: the first match wins.
CODES: tuple[tuple[type[e.LedgerError], grpc.StatusCode], ...] = (
    (e.LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.Aborted, grpc.StatusCode.ABORTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (e.InvariantViolation, grpc.StatusCode.INTERNAL),
)


def code_of(error: e.LedgerError) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: e.LedgerError) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error (also used per item in batch results)."""
    code = code_of(error)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=DOMAIN,
        metadata={k[:64]: v[:DETAIL_TEXT_MAX] for k, v in list(error.metadata.items())[:8]})
    details = [_pack(info)]
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED) and (
            error.violations):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field[:DETAIL_TEXT_MAX], description=v.description[:DETAIL_TEXT_MAX])
            for v in error.violations[:VIOLATIONS_MAX]])))
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        subject = next(iter(error.metadata.values()), "")
        details.append(_pack(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=error.reason, subject=subject[:DETAIL_TEXT_MAX],
                description=error.message[:DETAIL_TEXT_MAX])])))
    return status_pb2.Status(code=code.value[0], message=error.message[:DETAIL_TEXT_MAX * 2],
                             details=details)


OK_STATUS = status_pb2.Status(code=code_pb2.OK)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Wrap a unary handler: domain errors become rich statuses, bugs become INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except e.LedgerError as error:
            _abort(context, error)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            _abort(context, e.InvariantViolation("internal error; it has been logged"))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def guarded_stream(method: F) -> F:
    """`guarded` for server-streaming handlers (generators)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from method(self, request, context)
        except e.LedgerError as error:
            _abort(context, error)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            _abort(context, e.InvariantViolation("internal error; it has been logged"))

    return wrapper  # type: ignore[return-value]


def _abort(context: grpc.ServicerContext, error: e.LedgerError) -> None:
    if isinstance(error, e.InvariantViolation):
        log.error("invariant violated: %s", error.message)
    context.abort_with_status(rpc_status.to_status(to_status(error)))
