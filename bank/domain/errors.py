"""The one domain error tree. It knows nothing of transports.

    LedgerError                      base; carries a reason (UPPER_SNAKE_CASE) and metadata
    ├── InvalidArgument              malformed input; carries field violations
    │   └── LimitExceeded            a named size limit was exceeded (batch, page, metadata)
    ├── NotFound                     a named resource does not exist
    ├── AlreadyExists                an id was reused with different content
    ├── FailedPrecondition           a business rule refused the change (funds, status, ...)
    ├── Unauthenticated              no usable identity
    ├── PermissionDenied             identity known, action not allowed for its role/scope
    ├── Aborted                      concurrency conflict; safe to retry
    ├── Unavailable                  a dependency (the database) is down; retry later
    ├── DeadlineExceeded             the caller's deadline passed before the work finished
    └── InvariantViolation           a bug: something that must hold did not

`services/errors.py` maps this tree to gRPC status codes in one table. When several rules are
broken at once, field violations are reported in the order the fields appear in the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldViolation:
    """One broken rule on one field; `field` is a path such as `transfers[2].postings[0].amount`."""

    field: str
    description: str


class LedgerError(Exception):
    """Base of every error the domain and the use cases raise on purpose."""

    kind: ClassVar[str] = "LEDGER_ERROR"

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = violations
        self.metadata = dict(metadata or {})

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record, so a stored failure can be replayed exactly."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "message": self.message,
            "violations": [[v.field, v.description] for v in self.violations],
            "metadata": self.metadata,
        }

    @staticmethod
    def from_record(record: dict[str, Any]) -> LedgerError:
        """Rebuild an error from `to_record()` output."""
        cls = _KINDS[record["kind"]]
        error: LedgerError = cls(
            record["reason"],
            record["message"],
            violations=tuple(FieldViolation(f, d) for f, d in record["violations"]),
            metadata=dict(record["metadata"]),
        )
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(LedgerError):
    kind = "INVALID_ARGUMENT"


class LimitExceeded(InvalidArgument):
    kind = "LIMIT_EXCEEDED"


class NotFound(LedgerError):
    kind = "NOT_FOUND"


class AlreadyExists(LedgerError):
    kind = "ALREADY_EXISTS"


class FailedPrecondition(LedgerError):
    kind = "FAILED_PRECONDITION"


class Unauthenticated(LedgerError):
    kind = "UNAUTHENTICATED"


class PermissionDenied(LedgerError):
    kind = "PERMISSION_DENIED"


class Aborted(LedgerError):
    kind = "ABORTED"


class Unavailable(LedgerError):
    kind = "UNAVAILABLE"


class DeadlineExceeded(LedgerError):
    kind = "DEADLINE_EXCEEDED"


class InvariantViolation(LedgerError):
    kind = "INTERNAL"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__("INVARIANT_VIOLATED", message, **kwargs)

    @staticmethod
    def _build(reason: str, message: str, **kwargs: Any) -> InvariantViolation:
        return InvariantViolation(message, **kwargs)


_KINDS: dict[str, Any] = {
    cls.kind: cls
    for cls in (
        InvalidArgument,
        LimitExceeded,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Aborted,
        Unavailable,
        DeadlineExceeded,
    )
}
_KINDS["INTERNAL"] = InvariantViolation._build


def invalid(field_path: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    """Shorthand for a one-field `InvalidArgument`."""
    return InvalidArgument(
        reason,
        f"{field_path}: {description}",
        violations=(FieldViolation(field_path, description),),
        metadata={"field": field_path},
    )


@dataclass
class ViolationCollector:
    """Collects every broken rule of a request, in field order, then raises them together."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def raise_if_any(self, reason: str = "INVALID_FIELD") -> None:
        if self.violations:
            first = self.violations[0]
            extra = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
            raise InvalidArgument(
                reason,
                f"{first.field}: {first.description}{extra}",
                violations=tuple(self.violations),
                metadata={"field": first.field},
            )
