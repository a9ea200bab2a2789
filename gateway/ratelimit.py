"""A token bucket: how many messages (pings aside) a channel reads per second."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most one second's worth saved up (a burst of
    ``rate`` after a quiet second). A rate of 0 means no limit."""

    __slots__ = ("_capacity", "_clock", "_last", "_tokens", "rate")

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._last = clock()

    def wait(self) -> float:
        """Seconds until a token is there (0.0: now)."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self) -> bool:
        """Spend one token if there is one; False means over the limit (nothing spent)."""
        if self.wait() > 0.0:
            return False
        if self.rate > 0:
            self._tokens -= 1.0
        return True
