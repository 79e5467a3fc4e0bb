"""Invariant checks that `python -O` cannot strip.

A failed invariant is a bug in our code (or a corrupted database), never a user mistake: it is
raised as `InvariantViolation`, logged loudly at the edge and mapped to INTERNAL.
"""

from __future__ import annotations

from bank.domain.errors import InvariantViolation


def ensure(condition: bool, message: str) -> None:
    """Raise `InvariantViolation(message)` unless `condition` holds."""
    if not condition:
        raise InvariantViolation(message)
