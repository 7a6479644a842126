"""Enrollment rate limits: token buckets per client address and per token, in this process.

Each worker process keeps its own buckets (no shared state to reach on every request), so
with N workers a client may get up to N times the configured rate. Buckets live in a bounded
LRU map: a flood of addresses or made-up tokens evicts old buckets instead of growing memory.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from app.config import Settings
from app.errors import RateLimitedError

MAX_BUCKETS = 100_000


class TokenBucket:
    """`rate` tokens a second up to `burst`; `take()` answers 0 when allowed, else the
    seconds to wait. Thread-safe; `clock` is monotonic seconds (injectable for tests)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        now = self._clock()
        with self._lock:
            level, at = self._buckets.pop(key, (self._burst, now))
            level = min(self._burst, level + (now - at) * self._rate)
            wait = 0.0 if level >= 1 else (1 - level) / self._rate
            self._buckets[key] = (level - 1 if wait == 0 else level, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
            return wait


class EnrollmentLimiter:
    """The two buckets an enrollment passes: its client address, then its token."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_address = TokenBucket(
            settings.enroll_rate_per_address, settings.enroll_burst_per_address, clock=clock
        )
        self._by_token = TokenBucket(
            settings.enroll_rate_per_token, settings.enroll_burst_per_token, clock=clock
        )

    def check(self, address: str | None, token: str | None) -> None:
        """Raises:
        RateLimitedError: with the whole seconds to wait (at least 1) for Retry-After."""
        wait = self._by_address.take(f"addr:{address}")
        if wait == 0 and token:
            # Keyed by a hash: the limiter holds no token secret in memory longer than needed.
            wait = self._by_token.take(hashlib.sha256(token.encode()).hexdigest())
            kind = "token"
        else:
            kind = "client address"
        if wait > 0:
            raise RateLimitedError(
                f"too many enrollments from this {kind}; retry later",
                retry_after=max(1, math.ceil(wait)),
            )
