"""Authentication and authorisation: one interceptor and one policy table.

The interceptor wraps every handler. It resolves the caller's `Principal`, checks the policy
table for the method, and publishes the principal to the handler through `current_principal()`.
A call with no usable identity is UNAUTHENTICATED; a role the table does not allow is
PERMISSION_DENIED. Nothing runs before this check.

Identity comes from the transport:
- mTLS (production): the verified client certificate (see issue 3 work in `services/identity`).
- development plaintext on loopback only: the `x-bank-principal` metadata header,
  `subject;role[;scope]`. The server refuses to start plaintext on a non-loopback address.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from bank.domain.errors import LedgerError, PermissionDenied, Unauthenticated
from bank.domain.identity import Principal, Role
from services.errors import to_status

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "x-bank-principal"
LEDGER = "/peoplesbank.ledger.v1.LedgerService/"

READERS = frozenset({Role.TELLER, Role.LOAN_OFFICER, Role.APPROVER, Role.REGULATOR,
                     Role.AUDITOR, Role.OPERATOR})
MONEY_MOVERS = frozenset({Role.TELLER, Role.LOAN_OFFICER})

# Method -> roles allowed. A method missing from this table is refused for everyone.
POLICY: dict[str, frozenset[Role]] = {
    LEDGER + "CreateAccounts": MONEY_MOVERS,
    LEDGER + "CloseAccount": frozenset({Role.TELLER}),
    LEDGER + "CreateTransfers": MONEY_MOVERS,
    LEDGER + "GetAccount": READERS,
    LEDGER + "ListAccounts": READERS,
    LEDGER + "GetTransfer": READERS,
    LEDGER + "ListAccountEntries": READERS,
    LEDGER + "GetAccountBalance": READERS,
    LEDGER + "GetTrialBalance": READERS,
    LEDGER + "WatchEntries": frozenset({Role.REGULATOR, Role.AUDITOR, Role.OPERATOR,
                                        Role.TELLER}),
}
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
    return Principal(parts[0], role, parts[2] if len(parts) == 3 else "")


Resolver = Callable[[grpc.ServicerContext], Principal]


def dev_header_resolver(context: grpc.ServicerContext) -> Principal:
    for key, value in context.invocation_metadata():
        if key == PRINCIPAL_HEADER:
            return principal_from_header(str(value))
    raise Unauthenticated("NO_PRINCIPAL", "no identity: present a client certificate (or, on a "
                          f"loopback development server, the {PRINCIPAL_HEADER} header)")


def authorise(method: str, principal: Principal) -> None:
    allowed = POLICY.get(method)
    if allowed is None or principal.role not in allowed:
        short = method.rsplit("/", 1)[-1]
        raise PermissionDenied("ROLE_NOT_ALLOWED",
                               f"role {principal.role.value} may not call {short}",
                               metadata={"role": principal.role.value, "method": method})


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Resolves and authorises the principal before any handler runs."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        resolve = self._resolve

        def check(context: grpc.ServicerContext) -> contextvars.Token[Principal | None]:
            try:
                principal = resolve(context)
                authorise(method, principal)
            except LedgerError as error:
                log.info("denied %s: %s", method, error.reason)
                context.abort_with_status(rpc_status.to_status(to_status(error)))
            return _principal.set(principal)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                token = check(context)
                try:
                    return inner(request, context)
                finally:
                    _principal.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Any:
                # No reset: a generator may be resumed in another context; the next call on
                # this thread sets its own principal before its handler runs.
                check(context)
                yield from inner_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler
