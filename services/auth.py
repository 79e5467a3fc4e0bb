"""Authentication and authorisation: one interceptor and one policy table.

The interceptor wraps every handler. It resolves the caller's `Principal`, checks the policy
table (`services/policy.py`) for the method and the request, and publishes the principal to
the handler through `current_principal()`.
A call with no usable identity is UNAUTHENTICATED; a role the table does not allow is
PERMISSION_DENIED. Nothing runs before this check.

Identity comes from the transport:
- mTLS: the verified client certificate (`CertificateResolver`): CN names the principal, OU
  the role, a `urn:peoplesbank:scope:` URI the scope; revoked serials (CA-signed CRL) are refused.
- development plaintext on loopback only: the `x-bank-principal` metadata header,
  `subject;role[;scope]`. The server refuses to start plaintext on a non-loopback address.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

from bank.adapters.pki import PkiError, principal_of, revoked_serials
from bank.domain.errors import (
    FieldViolation,
    InvalidArgument,
    LedgerError,
    PermissionDenied,
    Unauthenticated,
)
from bank.domain.identity import Principal, Role
from services.errors import to_status
from services.observability import principal_var
from services.policy import Directory, authorise

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "x-bank-principal"
PRINCIPAL_PART_MAX = 128  # what the audit and approval records hold
# Infrastructure services that need no principal (they expose no member data or money).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being handled; the interceptor guarantees one is set."""
    principal = _principal.get()
    assert principal is not None, "handler ran without the auth interceptor"
    return principal


def principal_from_header(value: str) -> Principal:
    parts = value.split(";")
    if len(parts) not in (2, 3) or not parts[0] or len(value) > 256:
        raise Unauthenticated("BAD_PRINCIPAL", f"{PRINCIPAL_HEADER} must be subject;role[;scope]")
    try:
        role = Role(parts[1])
    except ValueError:
        raise Unauthenticated("UNKNOWN_ROLE", f"unknown role {parts[1][:32]!r}") from None
    if role is Role.SYSTEM:
        raise Unauthenticated("UNKNOWN_ROLE", "the system role cannot be claimed by a client")
    scope = parts[2] if len(parts) == 3 else ""
    if len(parts[0]) > PRINCIPAL_PART_MAX or len(scope) > PRINCIPAL_PART_MAX:
        raise Unauthenticated("BAD_PRINCIPAL", f"subject and scope are at most "
                              f"{PRINCIPAL_PART_MAX} characters")
    return Principal(parts[0], role, scope)


Resolver = Callable[[grpc.ServicerContext], Principal]


class CertificateResolver:
    """Identity from the verified client certificate (mTLS), refusing revoked ones.

    gRPC has already checked the chain to our CA and the validity period during the handshake
    (an expired or foreign certificate never gets here). This reads the principal from the
    certificate and checks its serial against the CA-signed CRL, reloaded when the file changes.
    """

    def __init__(self, ca_pem: bytes, crl_path: Path | None) -> None:
        self._ca_pem = ca_pem
        self._crl_path = crl_path
        self._crl_mtime_ns = -1
        self._revoked: frozenset[int] = frozenset()
        self._lock = threading.Lock()

    def _revoked_now(self) -> frozenset[int]:
        if self._crl_path is None:
            return frozenset()
        try:
            mtime = self._crl_path.stat().st_mtime_ns
        except FileNotFoundError:
            raise Unauthenticated("CRL_UNAVAILABLE", "the revocation list is missing; "
                                  "refusing all certificates until it is restored") from None
        with self._lock:
            if mtime != self._crl_mtime_ns:
                try:
                    self._revoked = frozenset(revoked_serials(self._crl_path.read_bytes(),
                                                              self._ca_pem))
                except (PkiError, ValueError) as error:
                    raise Unauthenticated("CRL_UNAVAILABLE",
                                          f"the revocation list is unusable: {error}") from None
                self._crl_mtime_ns = mtime
            return self._revoked

    def __call__(self, context: grpc.ServicerContext) -> Principal:
        pem = context.auth_context().get("x509_pem_cert")
        if not pem:
            raise Unauthenticated("NO_CLIENT_CERTIFICATE", "a client certificate is required")
        try:
            principal, serial = principal_of(pem[0])
        except (PkiError, ValueError) as error:
            raise Unauthenticated("BAD_CLIENT_CERTIFICATE", str(error)) from None
        if serial in self._revoked_now():
            raise Unauthenticated("CERTIFICATE_REVOKED",
                                  f"the certificate of {principal.subject!r} has been revoked",
                                  metadata={"subject": principal.subject})
        return principal


_HEADER_PRINCIPALS: dict[str, Principal] = {}  # header value -> its principal (valid ones)
HEADER_PRINCIPALS_MAX = 4_096


def _header_principal(value: str) -> Principal:
    """`principal_from_header`, remembered: callers send the same few values on every call.
    Only valid values are kept (a refused one is parsed, and refused, every time)."""
    principal = _HEADER_PRINCIPALS.get(value)
    if principal is None:
        principal = principal_from_header(value)
        if len(_HEADER_PRINCIPALS) >= HEADER_PRINCIPALS_MAX:
            _HEADER_PRINCIPALS.clear()
        _HEADER_PRINCIPALS[value] = principal
    return principal


def dev_header_resolver(context: grpc.ServicerContext) -> Principal:
    for key, value in context.invocation_metadata():
        if key == PRINCIPAL_HEADER:
            return _header_principal(str(value))
    raise Unauthenticated("NO_PRINCIPAL", "no identity: present a client certificate (or, on a "
                          f"loopback development server, the {PRINCIPAL_HEADER} header)")


DenialRecorder = Callable[[Principal | None, str, LedgerError], None]


class Undecodable:
    """Stands in for a request whose bytes do not parse, so the handler wrapper can answer
    INVALID_ARGUMENT with details instead of grpcio's bare INTERNAL."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # DecodeError and friends: the bytes are the caller's fault
            return Undecodable(error)

    return parse


def _refuse_undecodable(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise InvalidArgument("MALFORMED_REQUEST", "the request bytes do not parse as the "
                              "method's request message",
                              violations=(FieldViolation("request", "is not a valid protobuf "
                                                         "message of the request type"),))


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Resolves and authorises the principal before any handler runs.

    Every refusal is logged and passed to `on_denied`, which records it in the audit log.
    """

    def __init__(self, resolve: Resolver, directory: Directory,
                 on_denied: DenialRecorder | None = None) -> None:
        self._resolve = resolve
        self._directory = directory
        self._on_denied = on_denied

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        resolve, directory, on_denied = self._resolve, self._directory, self._on_denied

        def check(request: Any, context: grpc.ServicerContext
                  ) -> contextvars.Token[Principal | None]:
            principal: Principal | None = None
            try:
                principal = resolve(context)
                _refuse_undecodable(request)
                authorise(method, principal, request, directory)
            except LedgerError as error:
                log.info("denied %s to %s: %s", method,
                         principal.subject if principal else "unidentified caller", error.reason)
                # Refusals of identified callers are audited; unidentified ones are only logged,
                # so anonymous traffic cannot grow the audit log (or hold its lock).
                if on_denied is not None and principal is not None and isinstance(
                        error, PermissionDenied):
                    try:
                        on_denied(principal, method, error)
                    except Exception:
                        log.exception("could not record a denial in the audit log")
                context.abort_with_status(rpc_status.to_status(to_status(error)))
            assert principal is not None
            principal_var.set(f"{principal.subject}/{principal.role.value}")  # for the logs
            return _principal.set(principal)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                token = check(request, context)
                try:
                    return inner(request, context)
                finally:
                    _principal.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Any:
                # No reset: a generator may be resumed in another context; the next call on
                # this thread sets its own principal before its handler runs.
                check(request, context)
                yield from inner_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        return handler
