"""The system clock, and a controllable one for tests and demos."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def business_date(self) -> date:
        return datetime.now(UTC).date()


class FixedClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, now_ns: int = 1_767_225_600 * 10**9) -> None:  # 2026-01-01T00:00Z
        self.now = now_ns

    def now_ns(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000_000)

    def business_date(self) -> date:
        return datetime.fromtimestamp(self.now // 1_000_000_000, UTC).date()
