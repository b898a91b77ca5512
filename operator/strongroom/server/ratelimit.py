"""A token bucket per caller: one identity cannot starve the others (or the store).

Keyed by the authenticated UID (or username), so one tenant's CI loop is slowed without slowing
anyone else; refusals are 429 with ``Retry-After``. Buckets idle long enough to be full again are
forgotten, so memory follows the number of active callers, not of callers ever seen.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

from strongroom.server.errors import ApiError


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the rate limit needs a rate above 0 and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    def check(self, caller: str) -> None:
        """Raise 429 if ``caller`` has no allowance left, without spending any."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (float(self.burst), now))
        if min(float(self.burst), tokens + (now - at) * self.rate) < 1:
            wait = math.ceil((1 - tokens) / self.rate)
            raise ApiError("rate_limited", "too many refused requests from this address; retry "
                           "later", headers={"Retry-After": str(max(wait, 1))})  # fmt: skip

    def spend(self, caller: str) -> None:
        """Spend one of ``caller``'s allowance, never raising (a failure is charged)."""
        with contextlib.suppress(ApiError):
            self.take(caller)

    def take(self, caller: str) -> None:
        """Spend one request of ``caller``'s allowance, or raise 429."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1 - tokens) / self.rate)
            raise ApiError("rate_limited", "too many requests from this identity; retry later",
                           headers={"Retry-After": str(wait)})  # fmt: skip
        self._buckets[caller] = (tokens - 1, now)
        if len(self._buckets) > 10_000:
            self._forget(now)

    def _forget(self, now: float) -> None:
        full = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
