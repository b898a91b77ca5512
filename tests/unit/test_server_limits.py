"""The values API's rate limit and decision cache, on a clock the test moves."""

from __future__ import annotations

import pytest

from strongroom.server.auth import _TtlCache
from strongroom.server.errors import ApiError
from strongroom.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_identity_is_slowed_and_the_others_are_not() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("ci")
    with pytest.raises(ApiError) as refused:
        limiter.take("ci")
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.headers["Retry-After"] == "1"
    limiter.take("someone-else")  # a bucket of their own
    clock.now += 0.5  # one token back at 2 per second
    limiter.take("ci")
    with pytest.raises(ApiError):
        limiter.take("ci")


def test_a_decision_is_forgotten_when_its_time_is_up() -> None:
    clock = Clock()
    cache = _TtlCache(5.0, clock)
    cache.put("key", "allowed")
    clock.now += 4.9
    assert cache.get("key") == "allowed"
    clock.now += 0.2
    assert cache.get("key") is None


def test_a_cache_of_zero_seconds_keeps_nothing() -> None:
    cache = _TtlCache(0.0, Clock())
    cache.put("key", "allowed")
    assert cache.get("key") is None
