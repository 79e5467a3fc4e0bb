"""Who is acting: a principal with a role and, for council integrations, a scope."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    TELLER = "teller"
    LOAN_OFFICER = "loan_officer"
    APPROVER = "approver"
    COUNCIL = "council"
    REGULATOR = "regulator"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    SYSTEM = "system"  # the server itself: expiry of holds, close of business


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # e.g. "alice" or "preston-backoffice"
    role: Role
    scope: str = ""  # a branch ("branch:preston") or a council ("council:preston")

    def as_record(self) -> dict[str, str]:
        return {"subject": self.subject, "role": self.role.value, "scope": self.scope}


SYSTEM = Principal("ledger", Role.SYSTEM)
